/* TCP bulk transfer: BYTES from the client to the target's sink.
 *
 *   bulk plain|socks5 BYTES TARGET PROXY|- EXPECT_OCTET    prints "mbps=<MB/s, 10^6 bytes>"
 *
 * The target answers with the byte count it received and the last octet
 * of the address the connection came from; both are checked. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 6) fail("usage: bulk plain|socks5 BYTES TARGET PROXY|- EXPECT_OCTET");
    int socks = !strcmp(argv[1], "socks5");
    uint64_t bytes = strtoull(argv[2], NULL, 10);
    struct sockaddr_in target = parse_addr(argv[3]), proxy = {0};
    if (socks) proxy = parse_addr(argv[4]);
    int expect = atoi(argv[5]);
    static char buf[1 << 18];
    memset(buf, 'x', sizeof buf);
    uint64_t t0 = now_ns();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    const struct sockaddr_in *to = socks ? &proxy : &target;
    if (connect(fd, (const struct sockaddr *)to, sizeof *to)) die("connect");
    if (socks) socks5_request(fd, 1, &target, NULL);
    char mode = 'b';
    write_all(fd, &mode, 1);
    for (uint64_t left = bytes; left > 0;) {
        size_t n = left < sizeof buf ? (size_t)left : sizeof buf;
        write_all(fd, buf, n);
        left -= n;
    }
    shutdown(fd, SHUT_WR);
    unsigned char reply[9];
    read_exact(fd, reply, sizeof reply);
    double s = (now_ns() - t0) / 1e9;
    uint64_t got;
    memcpy(&got, reply, 8);
    if (got != bytes) { fprintf(stderr, "bulk: target received %llu of %llu bytes\n", (unsigned long long)got, (unsigned long long)bytes); return 3; }
    if (reply[8] != expect) { fprintf(stderr, "bulk: target saw 127.0.0.%u, expected 127.0.0.%d\n", reply[8], expect); return 3; }
    close(fd);
    printf("mbps=%.1f\n", bytes / s / 1e6);
    return 0;
}
