/* Shared helpers for the benchmark clients in bench/ (compiled by
 * scripts/bench with gcc -O2 into target/bench/).
 *
 * Every client prints exactly one result line on stdout, `key=value ...`,
 * and exits non-zero with a message on stderr when anything is off: a
 * benchmark that measured the wrong path must not print a number. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static inline void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(2);
}

static inline void fail(const char *msg) {
    fprintf(stderr, "%s\n", msg);
    exit(2);
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* "127.0.0.1:8080" -> sockaddr_in (IPv4 only: every benchmark address is
 * on 127.0.0.0/8). */
static inline struct sockaddr_in parse_addr(const char *s) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) fail("address must be IP:PORT");
    memcpy(host, s, colon - s);
    host[colon - s] = 0;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) fail("bad IPv4 address");
    return a;
}

static inline void write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write");
        p += n;
        len -= (size_t)n;
    }
}

static inline void read_exact(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) { errno = 0; die("read: unexpected EOF"); }
        if (n < 0) die("read");
        p += n;
        len -= (size_t)n;
    }
}

static inline void set_timeouts(int fd, int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* SOCKS5 as a client that knows the server wants no authentication, in
 * lock-step as RFC 1928 describes it (and as every server copes with): the
 * greeting, the 2-byte method selection, the request, the 10-byte IPv4
 * reply. The floor for any lock-step shim. */
static inline void socks5_request_lockstep(int fd, uint8_t cmd, const struct sockaddr_in *dst) {
    uint8_t greeting[3] = {5, 1, 0}, req[10] = {5, cmd, 0, 1}, in[10];
    write_all(fd, greeting, sizeof greeting);
    read_exact(fd, in, 2);
    if (in[0] != 5 || in[1] != 0) fail("socks5: method not accepted");
    memcpy(req + 4, &dst->sin_addr, 4);
    memcpy(req + 8, &dst->sin_port, 2);
    write_all(fd, req, sizeof req);
    read_exact(fd, in, sizeof in);
    if (in[0] != 5 || in[1] != 0) {
        fprintf(stderr, "socks5: request refused, reply %u\n", in[1]);
        exit(2);
    }
}

/* The same, pipelined: the greeting and the request go out in one write
 * (one round trip), then the 2-byte method selection and the 10-byte IPv4
 * reply are read together. The floor for any shim, for servers that cope
 * (not microsocks). Returns the bound address in *bound. */
static inline void socks5_request(int fd, uint8_t cmd, const struct sockaddr_in *dst, struct sockaddr_in *bound) {
    uint8_t out[3 + 10] = {5, 1, 0, 5, cmd, 0, 1};
    memcpy(out + 7, &dst->sin_addr, 4);
    memcpy(out + 11, &dst->sin_port, 2);
    write_all(fd, out, sizeof out);
    uint8_t in[2 + 10];
    read_exact(fd, in, sizeof in);
    if (in[0] != 5 || in[1] != 0) fail("socks5: method not accepted");
    if (in[2] != 5 || in[3] != 0) {
        fprintf(stderr, "socks5: request refused, reply %u\n", in[3]);
        exit(2);
    }
    if (in[5] != 1) fail("socks5: reply is not IPv4 (benchmark expects 127.0.0.0/8)");
    if (bound) {
        memset(bound, 0, sizeof *bound);
        bound->sin_family = AF_INET;
        memcpy(&bound->sin_addr, in + 6, 4);
        memcpy(&bound->sin_port, in + 10, 2);
    }
}

/* A system call no LD_PRELOAD hook can see: libc's syscall() is itself a
 * symbol a shim may interpose (socksify does, to catch raw-syscall users). */
static inline long raw_syscall6(long n, long a, long b, long c, long d, long e, long f) {
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    if (ret < 0 && ret > -4096) { errno = (int)-ret; return -1; }
    return ret;
#else
    return syscall(n, a, b, c, d, e, f);
#endif
}
#define RAW(n, a, b, c, d, e, f) raw_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

static inline long peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static inline int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
