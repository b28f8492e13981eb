/* The destination every benchmark talks to: one TCP and one UDP socket on
 * 127.0.0.1, served by one epoll loop.
 *
 *   target TCP_ADDR UDP_ADDR      prints "tcp=PORT udp=PORT" once listening
 *
 * Every answer carries the last octet of the peer address the target saw
 * (1 = direct from the client on 127.0.0.1, 2 = the bundled server's
 * --bind-out 127.0.0.2, 3 = Dante's external 127.0.0.3), so each client
 * proves which path its traffic took, on every connection or datagram.
 *
 * TCP: the first byte picks the mode.
 *   'e'  one-shot echo: the byte is answered with one byte, the octet, and
 *        the target closes first. The client then reads EOF before closing,
 *        so TIME_WAIT stays on the listening side: 10^5 sequential
 *        connections from one client address would otherwise run out of
 *        ephemeral ports (EADDRNOTAVAIL) long before the run ends.
 *   'b'  bulk sink: count the bytes; at EOF answer 8 bytes of count (LE)
 *        and the octet, then close.
 * UDP: the first byte of each datagram picks the action.
 *   'r'  request/response: the datagram comes back, byte 0 = the octet.
 *   'o'  one-way: counted, no answer.
 *   'f'  finish: answer 'F', the one-way count (8 bytes LE), the octet,
 *        and the CLOCK_MONOTONIC time the last 'o' arrived (8 bytes LE, ns;
 *        the clock is system-wide, so the client can subtract its start);
 *        the count restarts. */
#include "common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>

#define MAXFD 65536
static unsigned char mode[MAXFD];
static unsigned char octet[MAXFD];
static uint64_t counted[MAXFD];
static char buf[1 << 18];

static uint8_t last_octet(const struct sockaddr_in *a) {
    return ((const uint8_t *)&a->sin_addr)[3];
}

static int bind_socket(int type, const char *addr) {
    struct sockaddr_in a = parse_addr(addr);
    int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (type == SOCK_DGRAM) {
        int big = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    }
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (type == SOCK_STREAM && listen(fd, 1024) < 0) die("listen");
    return fd;
}

static uint16_t port_of(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static void close_conn(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    mode[fd] = 0;
    counted[fd] = 0;
}

static void serve_tcp(int ep, int fd) {
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) {
            if (n == 0 && mode[fd] == 'b') {
                unsigned char reply[9];
                memcpy(reply, &counted[fd], 8);
                reply[8] = octet[fd];
                if (write(fd, reply, sizeof reply) != sizeof reply) { /* client gone: nothing to prove */ }
            }
            close_conn(ep, fd);
            return;
        }
        size_t skip = 0;
        if (!mode[fd]) {
            mode[fd] = (unsigned char)buf[0];
            skip = mode[fd] == 'b' ? 1 : 0;
        }
        if (mode[fd] == 'b') {
            counted[fd] += (uint64_t)n - skip;
        } else if (mode[fd] == 'e') {
            if (write(fd, &octet[fd], 1) != 1) { /* client gone: nothing to prove */ }
            close_conn(ep, fd);
            return;
        } else {
            close_conn(ep, fd);
            return;
        }
    }
}

static void serve_udp(int fd) {
    static uint64_t oneway, last_ns;
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&peer, &len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return;
        if (n == 0) continue;
        if (buf[0] == 'o') {
            oneway++;
            last_ns = now_ns();
        } else if (buf[0] == 'r') {
            buf[0] = (char)last_octet(&peer);
            sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, len);
        } else if (buf[0] == 'f') {
            char reply[18] = {'F'};
            memcpy(reply + 1, &oneway, 8);
            reply[9] = (char)last_octet(&peer);
            memcpy(reply + 10, &last_ns, 8);
            oneway = 0;
            last_ns = 0;
            sendto(fd, reply, sizeof reply, 0, (struct sockaddr *)&peer, len);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) fail("usage: target TCP_ADDR UDP_ADDR");
    signal(SIGPIPE, SIG_IGN);
    int lfd = bind_socket(SOCK_STREAM, argv[1]);
    int ufd = bind_socket(SOCK_DGRAM, argv[2]);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = ufd;
    epoll_ctl(ep, EPOLL_CTL_ADD, ufd, &ev);
    printf("tcp=%u udp=%u\n", port_of(lfd), port_of(ufd));
    fflush(stdout);
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(ep, events, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    struct sockaddr_in peer;
                    socklen_t len = sizeof peer;
                    int c = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    if (c >= MAXFD) { close(c); continue; }
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    octet[c] = last_octet(&peer);
                    mode[c] = 0;
                    counted[c] = 0;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP};
                    cev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
            } else if (fd == ufd) {
                serve_udp(ufd);
            } else {
                serve_tcp(ep, fd);
            }
        }
    }
}
