/* TCP connections many at a time on one epoll loop, the way event loops
 * make them: non-blocking connect + 1-byte echo + close, INFLIGHT
 * connections under way at every moment (a new one starts as soon as one
 * ends), COUNT in all.
 *
 *   tcpflight plain|socks5 COUNT INFLIGHT TARGET PROXY|- EXPECT_OCTET
 *       prints "cps=<connections per second> rss_kib=<own peak RSS>"
 *
 * plain   a non-blocking connect() to TARGET, EPOLLOUT, SO_ERROR: direct,
 *         or through whatever LD_PRELOAD shim the harness loaded (socksify
 *         finishes the SOCKS handshake in its background engine).
 * socks5  a non-blocking connect() to PROXY and SOCKS5 spoken here, in
 *         lock-step (greeting, method selection, request, reply), each step
 *         when epoll says the socket is ready: the floor for a shim doing
 *         the same in the background.
 * Every connection is registered with epoll (level-triggered) right after
 * its connect and re-armed (EPOLL_CTL_MOD) for each step. The answer byte
 * is the last octet of the address the target saw; anything but
 * EXPECT_OCTET aborts the run (see tcpconn.c, target.c: the target closes
 * first, the client reads EOF, then closes). */
#include "common.h"
#include <sys/epoll.h>

#define MAXFLIGHT 1024

enum step { CONNECTING, GREETED, REQUESTED, ECHOING, DRAINING };

struct conn {
    int fd;
    enum step step;
    uint8_t in[16];
    size_t have, want;
};

static struct conn conns[MAXFLIGHT];
static int socks, expect, ep;
static struct sockaddr_in target, proxy;

static void arm(struct conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) != 0) die("epoll_ctl");
}

static void begin(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    const struct sockaddr_in *to = socks ? &proxy : &target;
    if (connect(c->fd, (const struct sockaddr *)to, sizeof *to) != 0 && errno != EINPROGRESS) die("connect");
    c->step = CONNECTING;
    c->have = 0;
    arm(c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* Sends LEN bytes the socket is ready for (small: one write), then waits
 * for WANT bytes back. */
static void send_then_read(struct conn *c, const void *buf, size_t len, size_t want, enum step next) {
    if (write(c->fd, buf, len) != (ssize_t)len) die("write");
    c->step = next;
    c->have = 0;
    c->want = want;
    arm(c, EPOLLIN, EPOLL_CTL_MOD);
}

/* Reads what is there; 1 once WANT bytes have come. */
static int gather(struct conn *c) {
    ssize_t n = read(c->fd, c->in + c->have, c->want - c->have);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (n == 0) { errno = 0; die("read: unexpected EOF"); }
    if (n < 0) die("read");
    c->have += (size_t)n;
    return c->have == c->want;
}

/* One readiness event of C; returns 1 when the connection is over. */
static int advance(struct conn *c) {
    static const uint8_t greeting[3] = {5, 1, 0};
    char e = 'e';
    switch (c->step) {
    case CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) die("getsockopt");
        if (err) { errno = err; die("connect (SO_ERROR)"); }
        if (socks) send_then_read(c, greeting, sizeof greeting, 2, GREETED);
        else send_then_read(c, &e, 1, 1, ECHOING);
        return 0;
    }
    case GREETED: {
        if (!gather(c)) return 0;
        if (c->in[0] != 5 || c->in[1] != 0) fail("socks5: method not accepted");
        uint8_t req[10] = {5, 1, 0, 1};
        memcpy(req + 4, &target.sin_addr, 4);
        memcpy(req + 8, &target.sin_port, 2);
        send_then_read(c, req, sizeof req, 10, REQUESTED);
        return 0;
    }
    case REQUESTED:
        if (!gather(c)) return 0;
        if (c->in[0] != 5 || c->in[1] != 0) {
            fprintf(stderr, "socks5: request refused, reply %u\n", c->in[1]);
            exit(2);
        }
        send_then_read(c, &e, 1, 1, ECHOING);
        return 0;
    case ECHOING:
        if (!gather(c)) return 0;
        if (c->in[0] != expect) {
            fprintf(stderr, "tcpflight: the target saw the connection from 127.0.0.%u, expected 127.0.0.%d\n", c->in[0], expect);
            exit(3);
        }
        c->step = DRAINING;
        /* fall through: the EOF may be there already */
    case DRAINING: {
        char x;
        ssize_t n = read(c->fd, &x, 1);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        if (n != 0) fail("tcpflight: expected EOF after the echo");
        close(c->fd); /* also leaves the epoll set */
        return 1;
    }
    }
    return 0;
}

/* COUNT connections, INFLIGHT at a time. */
static void run(long count, int inflight) {
    long started = 0, done = 0;
    for (int i = 0; i < inflight && started < count; i++, started++) begin(&conns[i]);
    struct epoll_event evs[MAXFLIGHT];
    while (done < count) {
        int k = epoll_wait(ep, evs, MAXFLIGHT, 10000);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) fail("tcpflight: nothing ready within 10 s");
        for (int j = 0; j < k; j++) {
            struct conn *c = evs[j].data.ptr;
            if (!advance(c)) continue;
            done++;
            if (started < count) {
                begin(c);
                started++;
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 7) fail("usage: tcpflight plain|socks5 COUNT INFLIGHT TARGET PROXY|- EXPECT_OCTET");
    socks = !strcmp(argv[1], "socks5");
    long count = atol(argv[2]);
    int inflight = atoi(argv[3]);
    if (inflight < 1 || inflight > MAXFLIGHT) fail("INFLIGHT must be 1..1024");
    target = parse_addr(argv[4]);
    if (socks) proxy = parse_addr(argv[5]);
    expect = atoi(argv[6]);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    run(inflight, inflight); /* warm-up */
    uint64_t t0 = now_ns();
    run(count, inflight);
    double s = (now_ns() - t0) / 1e9;
    printf("cps=%.1f rss_kib=%ld\n", count / s, peak_rss_kib());
    return 0;
}
