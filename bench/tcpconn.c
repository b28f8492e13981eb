/* Sequential TCP connections: connect + 1-byte echo + close (the target
 * closes first; the client reads EOF, then closes).
 *
 *   tcpconn plain|socks5|socks5-pipelined COUNT TARGET PROXY|- EXPECT_OCTET
 *       prints "cps=<connections per second> rss_kib=<own peak RSS>"
 *
 * plain   connect() to TARGET: direct, or through whatever LD_PRELOAD shim
 *         the harness loaded (socksify, proxychains4, Dante's socksify).
 * socks5  speak SOCKS5 to PROXY ourselves, in lock-step: the floor for any
 *         lock-step shim through the same server.
 * socks5-pipelined  the same with greeting and request in one write: the
 *         floor for a pipelining shim, where the server copes.
 * Each answer byte is the last octet of the address the target saw the
 * connection come from; anything but EXPECT_OCTET (1 direct, 2 bundled
 * server, 3 danted) aborts the run: a number is printed only for the path
 * it claims. */
#include "common.h"

/* socks: 0 plain, 1 lock-step, 2 pipelined */
static void one(int socks, const struct sockaddr_in *target, const struct sockaddr_in *proxy, int expect) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    const struct sockaddr_in *to = socks ? proxy : target;
    if (connect(fd, (const struct sockaddr *)to, sizeof *to)) die("connect");
    if (socks == 1) socks5_request_lockstep(fd, 1, target);
    if (socks == 2) socks5_request(fd, 1, target, NULL);
    char c = 'e';
    write_all(fd, &c, 1);
    read_exact(fd, &c, 1);
    if ((unsigned char)c != expect) {
        fprintf(stderr, "tcpconn: the target saw the connection from 127.0.0.%u, expected 127.0.0.%d\n", (unsigned char)c, expect);
        exit(3);
    }
    /* The target closes first (see target.c): wait for its FIN, through
     * the proxy if there is one, so that TIME_WAIT is not ours. */
    if (read(fd, &c, 1) != 0) fail("tcpconn: expected EOF after the echo");
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 6) fail("usage: tcpconn plain|socks5|socks5-pipelined COUNT TARGET PROXY|- EXPECT_OCTET");
    int socks = !strcmp(argv[1], "socks5") ? 1 : !strcmp(argv[1], "socks5-pipelined") ? 2 : 0;
    long count = atol(argv[2]);
    struct sockaddr_in target = parse_addr(argv[3]), proxy = {0};
    if (socks) proxy = parse_addr(argv[4]);
    int expect = atoi(argv[5]);
    for (int i = 0; i < 20; i++) one(socks, &target, &proxy, expect); /* warm-up */
    uint64_t t0 = now_ns();
    for (long i = 0; i < count; i++) one(socks, &target, &proxy, expect);
    double s = (now_ns() - t0) / 1e9;
    printf("cps=%.1f rss_kib=%ld\n", count / s, peak_rss_kib());
    return 0;
}
