/* UDP through a SOCKS5 relay or direct.
 *
 *   udp plain|socks5 rr|oneway COUNT TARGET PROXY|- EXPECT_OCTET
 *     rr      COUNT sequential 32-byte request/response pairs   prints "ops=<pairs/s> lost=N"
 *     oneway  COUNT 32-byte datagrams back to back, then a 'finish' datagram;
 *             the target answers how many arrived and when the last did:
 *             prints "dps=<delivered/s from the first send to the last arrival> got=N"
 *             (datagrams a relay drops are not counted: the figure is what
 *             gets through, not what the sender managed to write)
 * plain   sendto()/recvfrom() to TARGET: direct, or through a shim.
 * socks5  UDP ASSOCIATE on a TCP control connection to PROXY, then
 *         datagrams with the RFC 1928 header to the relay: the floor.
 * Every answer carries the last octet of the source address the target saw;
 * anything but EXPECT_OCTET aborts the run. */
#include "common.h"

#define SIZE 32
static int socks;
static struct sockaddr_in target, relay;

static void send_dgram(int fd, const char *payload, size_t len) {
    char buf[10 + 2048];
    const char *p = payload;
    const struct sockaddr_in *to = &target;
    if (socks) {
        buf[0] = buf[1] = buf[2] = 0;
        buf[3] = 1;
        memcpy(buf + 4, &target.sin_addr, 4);
        memcpy(buf + 8, &target.sin_port, 2);
        memcpy(buf + 10, payload, len);
        p = buf;
        len += 10;
        to = &relay;
    }
    if (sendto(fd, p, len, 0, (const struct sockaddr *)to, sizeof *to) != (ssize_t)len) die("sendto");
}

/* Returns the payload length, or -1 on timeout. */
static ssize_t recv_dgram(int fd, char *out, size_t cap) {
    char buf[10 + 2048];
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return -1;
    if (n < 0) die("recvfrom");
    const char *p = buf;
    if (socks) {
        if (n < 10 || buf[3] != 1) fail("udp: reply without an IPv4 SOCKS header");
        if (memcmp(buf + 4, &target.sin_addr, 4) || memcmp(buf + 8, &target.sin_port, 2)) fail("udp: relay reports another source");
        p += 10;
        n -= 10;
    } else if (from.sin_addr.s_addr != target.sin_addr.s_addr || from.sin_port != target.sin_port) {
        fail("udp: reply reported from another source than the target");
    }
    if ((size_t)n > cap) n = (ssize_t)cap;
    memcpy(out, p, (size_t)n);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 7) fail("usage: udp plain|socks5 rr|oneway COUNT TARGET PROXY|- EXPECT_OCTET");
    socks = !strcmp(argv[1], "socks5");
    int rr = !strcmp(argv[2], "rr");
    long count = atol(argv[3]);
    target = parse_addr(argv[4]);
    int expect = atoi(argv[6]);
    int ctl = -1;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    if (socks) {
        /* Bind first and name our port in the request (RFC 1928 section 7):
         * servers accept datagrams only from the port a request names. */
        struct sockaddr_in proxy = parse_addr(argv[5]), mine = {.sin_family = AF_INET};
        socklen_t len = sizeof mine;
        if (bind(fd, (struct sockaddr *)&mine, sizeof mine) || getsockname(fd, (struct sockaddr *)&mine, &len)) die("bind");
        mine.sin_addr.s_addr = 0; /* the IP is the control connection's */
        ctl = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(ctl, (struct sockaddr *)&proxy, sizeof proxy)) die("connect to proxy");
        socks5_request(ctl, 3, &mine, &relay);
        if (relay.sin_addr.s_addr == 0) relay.sin_addr = proxy.sin_addr;
    }
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    set_timeouts(fd, 1000);
    char msg[SIZE], in[2048];
    memset(msg, 'x', sizeof msg);
    if (rr) {
        long lost = 0;
        uint64_t t0 = 0;
        for (long i = -20; i < count; i++) { /* 20 warm-up pairs */
            if (i == 0) t0 = now_ns();
            msg[0] = 'r';
            send_dgram(fd, msg, sizeof msg);
            ssize_t n = recv_dgram(fd, in, sizeof in);
            if (n < 0) {
                if (++lost > 50) fail("udp: more than 50 requests lost");
                continue;
            }
            if ((unsigned char)in[0] != expect) {
                fprintf(stderr, "udp: target saw 127.0.0.%u, expected 127.0.0.%d\n", (unsigned char)in[0], expect);
                return 3;
            }
        }
        double s = (now_ns() - t0) / 1e9;
        printf("ops=%.1f lost=%ld\n", count / s, lost);
    } else {
        msg[0] = 'f'; /* reset the target's count, and open the association */
        send_dgram(fd, msg, sizeof msg);
        if (recv_dgram(fd, in, sizeof in) < 18) fail("udp: no answer to the first 'finish'");
        set_timeouts(fd, 300);
        uint64_t t0 = now_ns();
        msg[0] = 'o';
        for (long i = 0; i < count; i++) send_dgram(fd, msg, sizeof msg);
        msg[0] = 'f';
        for (int attempt = 0;; attempt++) {
            if (attempt == 20) fail("udp: no answer to 'finish'");
            send_dgram(fd, msg, sizeof msg);
            ssize_t n = recv_dgram(fd, in, sizeof in);
            if (n == 18 && in[0] == 'F') break;
        }
        uint64_t got, last;
        memcpy(&got, in + 1, 8);
        memcpy(&last, in + 10, 8);
        if (got == 0 || last <= t0) fail("udp: no one-way datagram arrived");
        double s = (last - t0) / 1e9;
        if ((unsigned char)in[9] != expect) {
            fprintf(stderr, "udp: target saw 127.0.0.%u, expected 127.0.0.%d\n", (unsigned char)in[9], expect);
            return 3;
        }
        printf("dps=%.1f got=%llu\n", got / s, (unsigned long long)got);
    }
    if (ctl >= 0) close(ctl);
    return 0;
}
