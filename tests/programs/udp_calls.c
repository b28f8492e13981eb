/* The UDP calls Python does not reach, through whatever the shim decides:
 * SO_RCVTIMEO, MSG_DONTWAIT, epoll readiness and recvmmsg on a socket whose
 * datagrams go through a UDP association.
 * Usage: udp_calls HOST PORT (an echo server); prints one line per check.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    alarm(30);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    char buf[256];

    /* The first datagram opens the association; its echo must come back
     * from the target's address, as a direct reply would. */
    if (sendto(fd, "open", 4, 0, (struct sockaddr *)&to, sizeof to) != 4) { perror("sendto"); return 1; }
    struct sockaddr_in from;
    socklen_t fromlen = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen);
    printf("first %zd from_target %d\n", n, n == 4 && from.sin_port == to.sin_port && from.sin_addr.s_addr == to.sin_addr.s_addr);

    /* Nothing queued: MSG_DONTWAIT says EAGAIN at once. */
    n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    printf("dontwait %s\n", n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? "EAGAIN" : "WRONG");

    /* SO_RCVTIMEO: a blocking recv gives up after the timeout. */
    struct timeval tv = {0, 200 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    double t0 = now();
    n = recv(fd, buf, sizeof buf, 0);
    double waited = now() - t0;
    printf("rcvtimeo %s waited_enough %d\n", n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? "EAGAIN" : "WRONG", waited >= 0.15);

    /* epoll: readable once the echo is back. */
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    struct epoll_event got;
    printf("epoll_idle %d\n", epoll_wait(ep, &got, 1, 0));
    sendto(fd, "poll", 4, 0, (struct sockaddr *)&to, sizeof to);
    int ready = epoll_wait(ep, &got, 1, 10000);
    printf("epoll_ready %d in %d\n", ready, ready == 1 && (got.events & EPOLLIN) != 0);
    n = recv(fd, buf, sizeof buf, 0);
    printf("after_epoll %zd %.4s\n", n, n > 0 ? buf : "");

    /* recvmmsg: three echoes, each its own message with its own source. */
    const char *words[3] = {"one", "three", "fifteen"};
    for (int i = 0; i < 3; i++) sendto(fd, words[i], strlen(words[i]), 0, (struct sockaddr *)&to, sizeof to);
    char bufs[3][64];
    struct iovec iov[3];
    struct sockaddr_in names[3];
    struct mmsghdr msgs[3];
    memset(msgs, 0, sizeof msgs);
    int total = 0, good = 0;
    while (total < 3) {
        for (int i = 0; i < 3; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &names[i];
            msgs[i].msg_hdr.msg_namelen = sizeof names[i];
        }
        struct timeval wait = {10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
        int m = recvmmsg(fd, msgs, 3 - total, MSG_WAITFORONE, NULL);
        if (m <= 0) { perror("recvmmsg"); break; }
        for (int i = 0; i < m; i++) {
            const char *want = words[total + i];
            good += msgs[i].msg_len == strlen(want) && memcmp(bufs[i], want, strlen(want)) == 0
                    && names[i].sin_port == to.sin_port && names[i].sin_addr.s_addr == to.sin_addr.s_addr;
        }
        total += m;
    }
    printf("recvmmsg %d good %d\n", total, good);
    return 0;
}
