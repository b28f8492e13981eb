/* An fd number the shim knew, closed where its hooks cannot see (a raw
 * close system call), then handed out again by another call that creates
 * fds: socketpair, dup, fcntl(F_DUPFD), a descriptor received with
 * SCM_RIGHTS, pipe. The new fd must behave as the kernel says, with
 * nothing of the old socket's state.
 * Usage: stale_fds HOST PORT (a UDP echo reached through the proxy).
 * Prints one line per check. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sockaddr_in echo;

static void raw_close(int fd) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"((long)SYS_close), "D"((long)fd) : "rcx", "r11", "memory");
#else
#error "raw close: x86_64 only"
#endif
}

/* A connected UDP socket with an association (one round trip), then
 * closed unseen. Returns its number. */
static int proxied_udp_then_lost(void) {
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    connect(u, (struct sockaddr *)&echo, sizeof echo);
    struct timeval tv = {10, 0};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[16];
    send(u, "ping", 4, 0);
    recv(u, b, sizeof b, 0);
    raw_close(u);
    return u;
}

/* `fd` (reusing `old`) and `peer` are the two ends of a stream pair:
 * the bytes go across as they are, both ways. */
static void check_pair(const char *tag, int old, int fd, int peer) {
    char b[32] = {0};
    ssize_t sent = send(fd, "across", 6, 0);
    int serr = errno;
    ssize_t got = recv(peer, b, sizeof b, MSG_DONTWAIT);
    ssize_t back = send(peer, "back", 4, 0);
    char c[32] = {0};
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    poll(&pfd, 1, 10000);
    ssize_t got2 = recv(fd, c, sizeof c, MSG_DONTWAIT);
    printf("%s reused %d send %zd%s%s recv %zd %.*s reply %zd %.*s\n", tag, fd == old, sent, sent < 0 ? " " : "", sent < 0 ? strerror(serr) : "", got,
           (int)(got > 0 ? got : 0), b, back == 4 ? got2 : -1, (int)(got2 > 0 ? got2 : 0), c);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    echo = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &echo.sin_addr);

    /* socketpair */
    int old = proxied_udp_then_lost();
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    check_pair("socketpair", old, sv[0], sv[1]);
    close(sv[0]);
    close(sv[1]);

    /* dup and fcntl(F_DUPFD) of an fd the shim never knew */
    int base[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, base);
    old = proxied_udp_then_lost();
    int d = dup(base[0]);
    check_pair("dup", old, d, base[1]);
    close(d);
    old = proxied_udp_then_lost();
    d = fcntl(base[0], F_DUPFD, old);
    check_pair("fcntl", old, d, base[1]);
    close(d);

    /* SCM_RIGHTS: an fd received over a unix socket */
    int carrier[2], passed[2];
    socketpair(AF_UNIX, SOCK_DGRAM, 0, carrier);
    socketpair(AF_UNIX, SOCK_STREAM, 0, passed);
    old = proxied_udp_then_lost();
    char cbuf[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &passed[0], sizeof(int));
    sendmsg(carrier[0], &m, 0);
    char x;
    char rbuf[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec riov = {.iov_base = &x, .iov_len = 1};
    struct msghdr r = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = rbuf, .msg_controllen = sizeof rbuf};
    int received = -1;
    if (recvmsg(carrier[1], &r, 0) == 1 && CMSG_FIRSTHDR(&r)) memcpy(&received, CMSG_DATA(CMSG_FIRSTHDR(&r)), sizeof(int));
    check_pair("scm_rights", old, received, passed[1]);
    close(received);
    close(passed[0]);

    /* The shim's own control connection closed unseen; a pipe takes its
     * number: the program's close of the pipe really closes it. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    connect(u, (struct sockaddr *)&echo, sizeof echo);
    struct timeval tv = {10, 0};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    send(u, "ping", 4, 0);
    recv(u, &x, 1, 0);
    int ctrl = -1;
    for (int fd = 3; fd < 64 && ctrl < 0; fd++) {
        struct stat st;
        int known = fd == u || fd == base[0] || fd == base[1] || fd == carrier[0] || fd == carrier[1] || fd == passed[1];
        if (!known && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) ctrl = fd;
    }
    raw_close(ctrl);
    int p[2];
    if (pipe(p) != 0) return 3;
    int rc = close(p[0]);
    int still_open = fcntl(p[0], F_GETFD) >= 0;
    printf("pipe reused %d close %d %s\n", p[0] == ctrl, rc, still_open ? "still open" : "closed");
    return 0;
}
