/* A static C client for tests/supervise.rs (built with gcc -static).
 *   sxconn http IP PORT        connect, print "peer IP:PORT" (getpeername) and
 *                              "local family F length N" (getsockname) on
 *                              stderr, send a GET, print the answer
 *   sxconn twice IP PORT       http, print "first: ANSWER", wait for a line on
 *                              stdin, connect again, print "second: errno N"
 *   sxconn fork IP PORT N      fork N children that each exec "sxconn http"
 *   sxconn udp IP PORT         sendto, then connect, a UDP socket; print
 *                              "sendto: errno N" and "connect: errno N", and
 *                              after a connect that worked "send: errno N"
 *   sxconn uring - -           io_uring_setup; print "io_uring_setup: errno N"
 *   sxconn nodump IP PORT      http, after making itself undumpable (no process
 *                              of the same user may read its memory)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_in addr_of(const char *ip, const char *port) {
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(port));
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

/* Connects and fetches; returns the connect errno (0 on success). */
static int http(const char *ip, const char *port, const char *prefix) {
    struct sockaddr_in a = addr_of(ip, port);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(s);
        return e;
    }
    struct sockaddr_in peer = {0};
    socklen_t plen = sizeof peer;
    char text[INET_ADDRSTRLEN] = "?";
    if (getpeername(s, (struct sockaddr *)&peer, &plen) == 0) inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
    fprintf(stderr, "peer %s:%d\n", text, ntohs(peer.sin_port));
    struct sockaddr_storage local;
    socklen_t llen = sizeof local;
    if (getsockname(s, (struct sockaddr *)&local, &llen) == 0) fprintf(stderr, "local family %d length %u\n", local.ss_family, (unsigned)llen);
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    if (write(s, req, strlen(req)) < 0) return errno;
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof buf - 1 && (n = read(s, buf + got, sizeof buf - 1 - got)) > 0) got += n;
    buf[got] = 0;
    /* One line: the body after the header. */
    char *body = strstr(buf, "\r\n\r\n");
    printf("%s%s\n", prefix, body ? body + 4 : buf);
    fflush(stdout);
    close(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: sxconn http|twice|fork|udp IP PORT [N]\n");
        return 2;
    }
    const char *mode = argv[1], *ip = argv[2], *port = argv[3];
    if (!strcmp(mode, "nodump") && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        perror("prctl");
        return 2;
    }
    if (!strcmp(mode, "http") || !strcmp(mode, "nodump")) {
        int e = http(ip, port, "");
        if (e) fprintf(stderr, "connect: %s\n", strerror(e));
        return e ? 1 : 0;
    }
    if (!strcmp(mode, "twice")) {
        int e = http(ip, port, "first: ");
        if (e) printf("first: errno %d\n", e);
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 1;
        e = http(ip, port, "second: ");
        if (e) printf("second: errno %d\n", e);
        return 0;
    }
    if (!strcmp(mode, "fork") && argc > 4) {
        int n = atoi(argv[4]);
        for (int i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0) {
                execl("/proc/self/exe", argv[0], "http", ip, port, (char *)NULL);
                _exit(127);
            }
        }
        int status, failed = 0;
        while (wait(&status) > 0)
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
        return failed ? 1 : 0;
    }
    if (!strcmp(mode, "udp")) {
        struct sockaddr_in a = addr_of(ip, port);
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        int rc = sendto(s, "leak", 4, 0, (struct sockaddr *)&a, sizeof a);
        printf("sendto: errno %d\n", rc < 0 ? errno : 0);
        rc = connect(s, (struct sockaddr *)&a, sizeof a);
        printf("connect: errno %d\n", rc < 0 ? errno : 0);
        if (rc == 0) {
            rc = send(s, "leak", 4, 0);
            printf("send: errno %d\n", rc < 0 ? errno : 0);
        }
        return 0;
    }
    if (!strcmp(mode, "uring")) {
        char params[120] = {0}; /* struct io_uring_params, zeroed */
        long fd = syscall(SYS_io_uring_setup, 4, params);
        printf("io_uring_setup: errno %d\n", fd < 0 ? errno : 0);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
