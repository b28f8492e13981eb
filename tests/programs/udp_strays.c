/* Datagrams the shim must drop, against a program that polls and then
 * reads with a blocking recvfrom: a dropped datagram must not make poll
 * say "readable" (the read would then wait with no limit).
 * Usage: udp_strays HOST PORT KIND...
 *   HOST:PORT is reached through the proxy; the scripted proxy of
 *   tests/udp_strays.rs echoes "echo:X" as X, and answers "stray:KIND" by
 *   sending a datagram of that KIND to us, which the shim must drop.
 * For each KIND prints "KIND quiet" (poll saw nothing within a second) or
 * "KIND readable got N" / "KIND readable hung" (the read did not return
 * within 5 s); then checks that a good echo still gets through.
 * Also: recvfrom with an address buffer and a NULL length is EFAULT. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_alarm(int sig) { (void)sig; }

static int fd;
static struct sockaddr_in to;

static void ask(const char *what) {
    if (sendto(fd, what, strlen(what), 0, (struct sockaddr *)&to, sizeof to) < 0) {
        perror("sendto");
        exit(1);
    }
}

/* poll for `ms`, then (if readable) a blocking read bounded by an alarm. */
static void poll_then_read(const char *tag, int ms, const char *want) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, ms);
    if (ready == 0) {
        printf("%s quiet\n", tag);
        return;
    }
    char buf[256];
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    alarm(5);
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
    alarm(0);
    if (n < 0) {
        printf("%s readable hung\n", tag);
    } else if (want) {
        int ok = (size_t)n == strlen(want) && memcmp(buf, want, (size_t)n) == 0 && from.sin_port == to.sin_port &&
                 from.sin_addr.s_addr == to.sin_addr.s_addr;
        printf("%s readable %s\n", tag, ok ? "ok" : "wrong");
    } else {
        printf("%s readable got %zd\n", tag, n);
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART: the read returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
    to = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    ask("echo:first");
    poll_then_read("first", 10000, "first");
    for (int i = 3; i < argc; i++) {
        char what[64];
        snprintf(what, sizeof what, "stray:%s", argv[i]);
        ask(what);
        poll_then_read(argv[i], 1000, NULL);
        snprintf(what, sizeof what, "echo:after-%s", argv[i]);
        ask(what);
        snprintf(what, sizeof what, "after-%s", argv[i]);
        poll_then_read(what, 10000, what);
    }
    /* An address buffer without a length: the kernel says EFAULT. */
    ask("echo:nolen");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    poll(&p, 1, 10000);
    char buf[64];
    struct sockaddr_in from;
    alarm(5);
    ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_PEEK, (struct sockaddr *)&from, NULL);
    alarm(0);
    printf("null addrlen %zd %s\n", n, n < 0 && errno == EFAULT ? "EFAULT" : strerror(errno));
    return 0;
}
