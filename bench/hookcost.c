/* Per-call cost of calls on fds the shim does not own.
 *
 *   hookcost MODE ITERATIONS     prints "ns=<ns per call, best of 10 batches>"
 *
 * MODE  write     write(1 byte) to /dev/null
 *       sendrecv  send + recv of 1 byte over a loopback TCP connection
 *                 (ns are per pair: one send and one recv)
 *       sendto    sendto(1 byte) to a UDP socket on 127.0.0.1 (bypassed by
 *                 the default SOCKSIFY_NO_PROXY); the receiver is drained
 *                 with raw syscalls, which no LD_PRELOAD hook sees
 *       read      read(1 byte) from a pipe kept full with raw write syscalls
 *       udprecvfrom  recvfrom(1 byte, with the source address) on a plain
 *                 UDP socket on 127.0.0.1, kept fed by a connected sender
 *                 (raw send, no address: outside any filter)
 *       udprecvmsg   the same with recvmsg (msg_name set)
 *       udpread      the same with read (no address)
 *       tcprecvmsg   recvmsg(1 byte, msg_name set) on a loopback TCP
 *                 connection kept full with raw writes
 * Only the call named is made through libc; helpers use inline `syscall`
 * instructions (RAW in common.h, not libc's syscall(), which a shim may
 * hook) so that with a shim loaded only the hook under test is measured. */
#include "common.h"
#include <fcntl.h>

#define BATCHES 10

/* A loopback TCP connection set up with raw syscalls: no shim sees its
 * creation (Dante's library crashes on the accept otherwise), so it is an
 * fd no shim owns by construction. */
static int tcp_pair(int *b) {
    int l = (int)RAW(SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
    struct sockaddr_in a = parse_addr("127.0.0.1:0");
    socklen_t len = sizeof a;
    if (RAW(SYS_bind, l, &a, sizeof a, 0, 0, 0) || RAW(SYS_listen, l, 1, 0, 0, 0, 0)) die("listen");
    RAW(SYS_getsockname, l, &a, &len, 0, 0, 0);
    int c = (int)RAW(SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
    if (RAW(SYS_connect, c, &a, sizeof a, 0, 0, 0)) die("connect");
    *b = (int)RAW(SYS_accept, l, 0, 0, 0, 0, 0);
    if (*b < 0) die("accept");
    int one = 1;
    RAW(SYS_setsockopt, c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one, 0);
    RAW(SYS_close, l, 0, 0, 0, 0, 0);
    return c;
}

/* A UDP socket on 127.0.0.1 and a sender connected to it (both raw). */
static int udp_pair(int *sender) {
    int r = (int)RAW(SYS_socket, AF_INET, SOCK_DGRAM, 0, 0, 0, 0);
    struct sockaddr_in a = parse_addr("127.0.0.1:0");
    socklen_t len = sizeof a;
    int big = 4 << 20;
    if (RAW(SYS_bind, r, &a, sizeof a, 0, 0, 0)) die("bind");
    RAW(SYS_getsockname, r, &a, &len, 0, 0, 0);
    RAW(SYS_setsockopt, r, SOL_SOCKET, SO_RCVBUF, &big, sizeof big, 0);
    *sender = (int)RAW(SYS_socket, AF_INET, SOCK_DGRAM, 0, 0, 0, 0);
    if (RAW(SYS_connect, *sender, &a, sizeof a, 0, 0, 0)) die("connect");
    return r;
}

/* One recvmsg of 1 byte with room for the source address. */
static ssize_t recvmsg1(int fd, char *byte) {
    struct sockaddr_in from;
    struct iovec iov = {.iov_base = byte, .iov_len = 1};
    struct msghdr m = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1};
    return recvmsg(fd, &m, 0);
}

int main(int argc, char **argv) {
    if (argc != 3) fail("usage: hookcost write|sendrecv|sendto|read|udprecvfrom|udprecvmsg|udpread|tcprecvmsg ITERATIONS");
    const char *mode = argv[1];
    long per_batch = atol(argv[2]) / BATCHES;
    if (per_batch < 1) fail("ITERATIONS too small");
    char byte = 'x', sink[4096];
    int fd = -1, peer = -1;
    struct sockaddr_in dst;
    int m = 0;
    if (!strcmp(mode, "write")) {
        m = 1;
        fd = open("/dev/null", O_WRONLY);
    } else if (!strcmp(mode, "sendrecv")) {
        m = 2;
        fd = tcp_pair(&peer);
    } else if (!strcmp(mode, "sendto")) {
        m = 3;
        peer = socket(AF_INET, SOCK_DGRAM, 0);
        dst = parse_addr("127.0.0.1:0");
        socklen_t len = sizeof dst;
        if (bind(peer, (struct sockaddr *)&dst, sizeof dst)) die("bind");
        getsockname(peer, (struct sockaddr *)&dst, &len);
        fd = socket(AF_INET, SOCK_DGRAM, 0);
    } else if (!strcmp(mode, "read")) {
        m = 4;
        int p[2];
        if (pipe(p)) die("pipe");
        fd = p[0];
        peer = p[1];
    } else if (!strcmp(mode, "udprecvfrom") || !strcmp(mode, "udprecvmsg") || !strcmp(mode, "udpread")) {
        m = !strcmp(mode, "udprecvfrom") ? 5 : !strcmp(mode, "udprecvmsg") ? 6 : 8;
        fd = udp_pair(&peer);
    } else if (!strcmp(mode, "tcprecvmsg")) {
        m = 7;
        fd = tcp_pair(&peer);
        int tmp = fd; /* read on the accepted end, write on the connected one */
        fd = peer;
        peer = tmp;
    } else {
        fail("unknown mode");
    }
    if (fd < 0) die("setup");
    memset(sink, 'x', sizeof sink);
    uint64_t ns[BATCHES + 1];
    for (int b = 0; b <= BATCHES; b++) { /* batch 0 warms up */
        uint64_t t0 = now_ns();
        for (long i = 0; i < per_batch; i++) {
            switch (m) {
            case 1:
                if (write(fd, &byte, 1) != 1) die("write");
                break;
            case 2:
                if (send(fd, &byte, 1, 0) != 1) die("send");
                if (recv(peer, &byte, 1, 0) != 1) die("recv");
                break;
            case 3:
                if (sendto(fd, &byte, 1, 0, (struct sockaddr *)&dst, sizeof dst) != 1) die("sendto");
                if ((i & 31) == 31)
                    while (RAW(SYS_recvfrom, peer, sink, sizeof sink, MSG_DONTWAIT, 0, 0) > 0) {}
                break;
            case 4:
                if ((i & 4095) == 0 && RAW(SYS_write, peer, sink, sizeof sink, 0, 0, 0) != (long)sizeof sink) die("fill pipe");
                if (read(fd, &byte, 1) != 1) die("read");
                break;
            case 5:
            case 6:
            case 8: {
                if ((i & 63) == 0)
                    for (int k = 0; k < 64; k++)
                        if (RAW(SYS_sendto, peer, &byte, 1, 0, 0, 0) != 1) die("feed");
                struct sockaddr_in from;
                socklen_t flen = sizeof from;
                ssize_t n = m == 5 ? recvfrom(fd, &byte, 1, 0, (struct sockaddr *)&from, &flen) : m == 6 ? recvmsg1(fd, &byte) : read(fd, &byte, 1);
                if (n != 1) die("recv");
                break;
            }
            case 7:
                if ((i & 4095) == 0 && RAW(SYS_sendto, peer, sink, sizeof sink, 0, 0, 0) != (long)sizeof sink) die("fill");
                if (recvmsg1(fd, &byte) != 1) die("recvmsg");
                break;
            }
        }
        ns[b] = now_ns() - t0;
    }
    qsort(ns + 1, BATCHES, sizeof ns[0], cmp_u64);
    double best = ns[1]; /* the least disturbed batch: other tenants only ever add time */
    printf("ns=%.2f\n", best / per_batch);
    return 0;
}
