/* An fd number reused after the shim's socket was closed where its hooks
 * cannot see (inside fclose, or a raw close syscall), and sockets left as a
 * direct call would leave them.
 * Usage: fd_reuse HOST PROXIED_PORT SINK_PORT REFUSED_PORT
 *   PROXIED_PORT: a UDP echo reached through the proxy;
 *   SINK_PORT: a TCP sink reached directly (bypassed), which records bytes;
 *   REFUSED_PORT: nothing listens there.
 * Prints one line per check. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sockaddr_in addr(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    return a;
}

/* A UDP socket with an association (a proxied peer), then closed unseen. */
static int proxied_udp_then_lost(struct sockaddr_in *echo, int raw) {
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    connect(u, (struct sockaddr *)echo, sizeof *echo);
    char b[16];
    send(u, "ping", 4, 0);
    struct timeval tv = {5, 0};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    recv(u, b, sizeof b, 0);
    if (raw) {
#if defined(__x86_64__)
        long ret;
        __asm__ volatile("syscall" : "=a"(ret) : "a"((long)SYS_close), "D"((long)u) : "rcx", "r11", "memory");
#else
        close(u);
#endif
    } else {
        fclose(fdopen(u, "w"));
    }
    return u;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    alarm(30);
    struct sockaddr_in echo = addr(argv[1], atoi(argv[2])), sink = addr(argv[1], atoi(argv[3])), refused = addr(argv[1], atoi(argv[4]));
    for (int raw = 0; raw <= 1; raw++) {
        int old = proxied_udp_then_lost(&echo, raw);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        int rc = connect(s, (struct sockaddr *)&sink, sizeof sink);
        ssize_t n = send(s, raw ? "raw-close" : "fclose", raw ? 9 : 6, 0);
        printf("%s reused %d connect %d sent %zd\n", raw ? "raw" : "fclose", s == old, rc, n);
        close(s);
    }
    /* A failed proxied connect leaves the socket unconnected and reusable. */
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(t, (struct sockaddr *)&refused, sizeof refused);
    int err = errno;
    struct sockaddr_in peer;
    socklen_t plen = sizeof peer;
    int gp = getpeername(t, (struct sockaddr *)&peer, &plen);
    printf("refused %d %s getpeername %s\n", rc, err == ECONNREFUSED ? "ECONNREFUSED" : strerror(err), gp < 0 && errno == ENOTCONN ? "ENOTCONN" : "CONNECTED");
    rc = connect(t, (struct sockaddr *)&sink, sizeof sink);
    printf("reconnect %d sent %zd\n", rc, send(t, "again", 5, 0));
    close(t);
    /* A dual-stack AF_INET6 UDP socket given an AF_INET address. */
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    rc = connect(u6, (struct sockaddr *)&echo, sizeof echo);
    char b[16] = {0};
    struct timeval tv = {5, 0};
    setsockopt(u6, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t sent = send(u6, "six", 3, 0);
    ssize_t got = recv(u6, b, sizeof b, 0);
    printf("udp6 connect %d sent %zd got %zd %.3s\n", rc, sent, got, b);
    return 0;
}
