/* A UDP socket connected (through the shim) to an echo server, written
 * with the calls the shim does not hook: each must either reach the target
 * or fail with an errno, never report success for a datagram that is
 * thrown away. Then `connect(AF_UNSPEC)` and a `sendto` on the same socket:
 * the datagram must reach the target and its echo come back.
 *
 * Usage: udp_unhooked HOST PORT TOKEN
 * Prints `NAME RC ERRNO` for each unhooked call (its payload is NAME-TOKEN),
 * then `send echo ok`, `unspec RC`, `sendto-after-unspec RC` and
 * `echo-after-unspec ok|ERRNO` (the wait for the echo is bounded by
 * SO_RCVTIMEO).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static char token[128];

static const char *name(int e) {
    switch (e) {
    case 0: return "-";
    case EDESTADDRREQ: return "EDESTADDRREQ";
    case EINVAL: return "EINVAL";
    case ESPIPE: return "ESPIPE";
    case EXDEV: return "EXDEV";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EAGAIN: return "EAGAIN";
    case ENOTCONN: return "ENOTCONN";
    default: return strerror(e);
    }
}

static void report(const char *what, long rc) {
    printf("%s %ld %s\n", what, rc, rc < 0 ? name(errno) : "-");
    fflush(stdout);
}

/* What call NAME sends: NAME-TOKEN. */
static int payload(const char *what, char *out, size_t size) {
    return snprintf(out, size, "%s-%s", what, token);
}

/* A file holding NAME-TOKEN, at offset 0. */
static int file_with(const char *what) {
    char path[] = "/tmp/udp-unhooked-XXXXXX";
    int f = mkstemp(path);
    if (f < 0) { perror("mkstemp"); exit(1); }
    unlink(path);
    char buf[256];
    int n = payload(what, buf, sizeof buf);
    if (write(f, buf, n) != n) { perror("write file"); exit(1); }
    lseek(f, 0, SEEK_SET);
    return f;
}

static int echo(int fd, const char *want) {
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0) return errno;
    buf[n] = 0;
    return strcmp(buf, want) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    alarm(60);
    snprintf(token, sizeof token, "%s", argv[3]);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&to, sizeof to) != 0) { perror("connect"); return 1; }
    char buf[256];
    int n = payload("send", buf, sizeof buf);
    if (send(fd, buf, n, 0) != n) { perror("send"); return 1; }
    int e = echo(fd, buf);
    printf("send echo %s\n", e == 0 ? "ok" : name(e));

    /* pwritev2 at offset -1: a writev by another name. */
    n = payload("pwritev2", buf, sizeof buf);
    struct iovec iov = {buf, (size_t)n};
    report("pwritev2", pwritev2(fd, &iov, 1, -1, 0));
    /* pwritev: sockets have no offset (ESPIPE from the kernel itself). */
    n = payload("pwritev", buf, sizeof buf);
    iov.iov_len = n;
    report("pwritev", pwritev(fd, &iov, 1, 0));
    /* sendfile from a file. */
    int f = file_with("sendfile");
    report("sendfile", sendfile(fd, f, NULL, 256));
    close(f);
    /* splice from a pipe. */
    int p[2];
    if (pipe(p) != 0) { perror("pipe"); return 1; }
    n = payload("splice", buf, sizeof buf);
    if (write(p[1], buf, n) != n) { perror("write pipe"); return 1; }
    report("splice", splice(p[0], NULL, fd, NULL, n, 0));
    /* vmsplice into the pipe, then splice to the socket. */
    char drain[512];
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    while (read(p[0], drain, sizeof drain) > 0) {}
    fcntl(p[0], F_SETFL, 0);
    n = payload("vmsplice", buf, sizeof buf);
    struct iovec viov = {buf, (size_t)n};
    if (vmsplice(p[1], &viov, 1, 0) != n) { perror("vmsplice"); return 1; }
    report("vmsplice-splice", splice(p[0], NULL, fd, NULL, n, 0));
    /* copy_file_range from a file. */
    f = file_with("copy_file_range");
    report("copy_file_range", copy_file_range(f, NULL, fd, NULL, 256, 0));
    close(f);

    /* The socket still works through the shim. */
    n = payload("after", buf, sizeof buf);
    if (send(fd, buf, n, 0) != n) { perror("send after"); return 1; }
    e = echo(fd, buf);
    printf("after echo %s\n", e == 0 ? "ok" : name(e));

    /* connect(AF_UNSPEC) dissolves the peer; sendto names it again. */
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    report("unspec", connect(fd, &unspec, sizeof unspec));
    n = payload("unspec", buf, sizeof buf);
    report("sendto-after-unspec", sendto(fd, buf, n, 0, (struct sockaddr *)&to, sizeof to));
    struct sockaddr_in from;
    socklen_t fromlen = sizeof from;
    char got[512];
    ssize_t m = recvfrom(fd, got, sizeof got - 1, 0, (struct sockaddr *)&from, &fromlen);
    if (m < 0) {
        printf("echo-after-unspec %s\n", name(errno));
    } else {
        got[m] = 0;
        printf("echo-after-unspec %s\n", strcmp(got, buf) == 0 && from.sin_port == to.sin_port ? "ok" : "WRONG");
    }
    return 0;
}
