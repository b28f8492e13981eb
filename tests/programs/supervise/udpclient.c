/* A static UDP client for tests/supervise_udp.rs (built with musl-gcc -static):
 * one request, one reply, through the supervisor's UDP ASSOCIATE.
 *   udpclient MODE IP PORT PAYLOAD [close]
 *     sendto    unconnected: sendto, then recvfrom with an address
 *     sendmsg   unconnected: sendmsg, then recvmsg with an address
 *     sendmmsg  unconnected: "PAYLOAD-1" and "PAYLOAD-2" in one sendmmsg,
 *               then two recvfroms (two reply lines)
 *     connect   connect, send, recv (no address), then getpeername
 *     stray     bind first, print "port N", wait for a line on stdin (the
 *               test sends a stray datagram meanwhile), then as sendto
 *     dup       sendto, then recvfrom on a dup() of the socket; prints
 *               "dup in range" when the copy is not the lowest free fd
 *     lowcopy   sendto, then dup2 the socket to fd 10 (prints "dup2: errno
 *               N" if refused), then recvfrom on fd 10 if it succeeded,
 *               else on the socket
 *     read      sendto, then read (no address: printed as from 0.0.0.0:0)
 *     readv     sendto, then readv into two pieces (likewise)
 *     recvmmsg  sendto, then recvmmsg (MSG_WAITFORONE) of up to two messages (prints the
 *               first, from its source, and "messages N")
 *     splice    sendto, then splice from the socket into a pipe, and read
 *               the pipe (printed as from 0.0.0.0:0), or "splice: errno N"
 *     aio       sendto, then an AIO read of the socket (io_submit), or
 *               "io_submit: errno N"
 *     fdnum     print "fd N", the socket's number, and exit
 *     pinned    dup2 the socket to fd 10 first, then as sendto
 *     passed    pass the socket to itself over a Unix socketpair
 *               (SCM_RIGHTS) first, then as sendto
 * With "close": after the reply, closes the socket, prints "closed" and
 * waits for a line on stdin before it exits.
 * Prints "reply PAYLOAD from IP:PORT" (the source the program was told;
 * for connect, its peer), or "CALL: errno N" and exits 1. Every receive is
 * bounded by SO_RCVTIMEO (20 s).
 */
#define _GNU_SOURCE /* sendmmsg */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* struct iocb and io_event of linux/aio_abi.h (little-endian layout). */
struct iocb_ {
    unsigned long long data;
    unsigned key, rw_flags;
    unsigned short opcode;
    short reqprio;
    unsigned fildes;
    unsigned long long buf, nbytes;
    long long offset;
    unsigned long long reserved2;
    unsigned flags, resfd;
};
struct io_event_ {
    unsigned long long data, obj;
    long long res, res2;
};

static int fail(const char *call) {
    printf("%s: errno %d\n", call, errno);
    return 1;
}

static void print_reply(const char *buf, ssize_t n, const struct sockaddr_in *from) {
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &from->sin_addr, ip, sizeof ip);
    printf("reply %.*s from %s:%d\n", (int)n, buf, ip, ntohs(from->sin_port));
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 6 && !strcmp(argv[5], "close"))) {
        fprintf(stderr, "usage: udpclient sendto|sendmsg|connect|stray IP PORT PAYLOAD [close]\n");
        return 2;
    }
    const char *mode = argv[1], *payload = argv[4];
    struct sockaddr_in dst = {0};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) return 2;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) return fail("socket");
    struct timeval tv = {20, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (!strcmp(mode, "stray")) {
        struct sockaddr_in any = {0}, local = {0};
        socklen_t llen = sizeof local;
        any.sin_family = AF_INET;
        if (bind(s, (struct sockaddr *)&any, sizeof any) != 0) return fail("bind");
        getsockname(s, (struct sockaddr *)&local, &llen);
        printf("port %d\n", ntohs(local.sin_port));
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 2;
        mode = "sendto";
    }
    if (!strcmp(mode, "fdnum")) {
        printf("fd %d\n", s);
        return 0;
    }
    int rfd = s; /* the fd the reply is read on */
    if (!strcmp(mode, "pinned")) {
        if (dup2(s, 10) != 10) return fail("dup2");
        mode = "sendto";
    } else if (!strcmp(mode, "passed")) {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) != 0) return fail("socketpair");
        char c = 'x';
        struct iovec iov = {&c, 1};
        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &s, sizeof s);
        if (sendmsg(sp[0], &m, 0) != 1) return fail("sendmsg SCM_RIGHTS");
        mode = "sendto";
    }
    char buf[2048];
    struct sockaddr_in from = {0};
    socklen_t flen = sizeof from;
    ssize_t n;
    if (!strcmp(mode, "splice") || !strcmp(mode, "aio")) {
        if (sendto(s, payload, strlen(payload), 0, (struct sockaddr *)&dst, sizeof dst) != (ssize_t)strlen(payload)) return fail("sendto");
        /* Wait for the reply to be queued (bounded by SO_RCVTIMEO). */
        if (recv(s, buf, 1, MSG_PEEK) < 0) return fail("recv peek");
        if (!strcmp(mode, "splice")) {
            int p[2];
            if (pipe(p) != 0) return fail("pipe");
            if (splice(s, NULL, p[1], NULL, sizeof buf, 0) < 0) return fail("splice");
            n = read(p[0], buf, sizeof buf);
        } else {
            unsigned long ctx = 0;
            if (syscall(SYS_io_setup, 8, &ctx) != 0) return fail("io_setup");
            struct iocb_ cb = {0};
            cb.fildes = s;
            cb.buf = (unsigned long)buf;
            cb.nbytes = sizeof buf;
            struct iocb_ *cbs[1] = {&cb};
            if (syscall(SYS_io_submit, ctx, 1, cbs) != 1) return fail("io_submit");
            struct io_event_ ev;
            if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1) return fail("io_getevents");
            n = ev.res;
        }
    } else if (!strcmp(mode, "read") || !strcmp(mode, "readv") || !strcmp(mode, "recvmmsg")) {
        if (sendto(s, payload, strlen(payload), 0, (struct sockaddr *)&dst, sizeof dst) != (ssize_t)strlen(payload)) return fail("sendto");
        if (!strcmp(mode, "read")) {
            n = read(s, buf, sizeof buf);
            if (n < 0) return fail("read");
        } else if (!strcmp(mode, "readv")) {
            struct iovec in[2] = {{buf, 3}, {buf + 3, sizeof buf - 3}};
            n = readv(s, in, 2);
            if (n < 0) return fail("readv");
        } else {
            struct iovec in[2] = {{buf, sizeof buf / 2}, {buf + sizeof buf / 2, sizeof buf / 2}};
            struct sockaddr_in froms[2];
            struct mmsghdr mm[2];
            memset(mm, 0, sizeof mm);
            for (int i = 0; i < 2; i++) {
                mm[i].msg_hdr.msg_name = &froms[i];
                mm[i].msg_hdr.msg_namelen = sizeof froms[i];
                mm[i].msg_hdr.msg_iov = &in[i];
                mm[i].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(s, mm, 2, MSG_WAITFORONE, NULL);
            if (got < 1) return fail("recvmmsg");
            printf("messages %d\n", got);
            n = mm[0].msg_len;
            from = froms[0];
        }
    } else if (!strcmp(mode, "sendto") || !strcmp(mode, "dup") || !strcmp(mode, "lowcopy")) {
        if (sendto(s, payload, strlen(payload), 0, (struct sockaddr *)&dst, sizeof dst) != (ssize_t)strlen(payload)) return fail("sendto");
        if (!strcmp(mode, "dup")) {
            rfd = dup(s);
            if (rfd < 0) return fail("dup");
            if (rfd >= 64) printf("dup in range\n"); /* lowest free would be 4 */
        } else if (!strcmp(mode, "lowcopy")) {
            if (dup2(s, 10) == 10) rfd = 10;
            else printf("dup2: errno %d\n", errno);
        }
        n = recvfrom(rfd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (n < 0) return fail("recvfrom");
        if (flen != sizeof from) printf("address length %u\n", (unsigned)flen);
    } else if (!strcmp(mode, "sendmsg")) {
        /* The payload in two pieces, and received into two. */
        size_t half = strlen(payload) / 2;
        struct iovec out[2] = {{(void *)payload, half}, {(void *)(payload + half), strlen(payload) - half}};
        struct msghdr m = {0};
        m.msg_name = &dst;
        m.msg_namelen = sizeof dst;
        m.msg_iov = out;
        m.msg_iovlen = 2;
        if (sendmsg(s, &m, 0) != (ssize_t)strlen(payload)) return fail("sendmsg");
        struct iovec in[2] = {{buf, 3}, {buf + 3, sizeof buf - 3}};
        struct msghdr r = {0};
        r.msg_name = &from;
        r.msg_namelen = sizeof from;
        r.msg_iov = in;
        r.msg_iovlen = 2;
        n = recvmsg(s, &r, 0);
        if (n < 0) return fail("recvmsg");
        if (r.msg_namelen != sizeof from || r.msg_flags != 0) printf("namelen %u flags %d\n", (unsigned)r.msg_namelen, r.msg_flags);
    } else if (!strcmp(mode, "sendmmsg")) {
        char one[256], two[256];
        snprintf(one, sizeof one, "%s-1", payload);
        snprintf(two, sizeof two, "%s-2", payload);
        struct iovec iov[2] = {{one, strlen(one)}, {two, strlen(two)}};
        struct mmsghdr mm[2];
        memset(mm, 0, sizeof mm);
        for (int i = 0; i < 2; i++) {
            mm[i].msg_hdr.msg_name = &dst;
            mm[i].msg_hdr.msg_namelen = sizeof dst;
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
        }
        int sent = sendmmsg(s, mm, 2, 0);
        if (sent != 2 || mm[0].msg_len != strlen(one) || mm[1].msg_len != strlen(two)) {
            if (sent < 0) return fail("sendmmsg");
            printf("sendmmsg: sent %d, lengths %u %u\n", sent, mm[0].msg_len, mm[1].msg_len);
            return 1;
        }
        for (int i = 0; i < 2; i++) {
            n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
            if (n < 0) return fail("recvfrom");
            if (i == 0) print_reply(buf, n, &from); /* the second: below */
        }
    } else if (!strcmp(mode, "connect")) {
        if (connect(s, (struct sockaddr *)&dst, sizeof dst) != 0) return fail("connect");
        if (send(s, payload, strlen(payload), 0) != (ssize_t)strlen(payload)) return fail("send");
        n = recv(s, buf, sizeof buf, 0);
        if (n < 0) return fail("recv");
        if (getpeername(s, (struct sockaddr *)&from, &flen) != 0) return fail("getpeername");
    } else {
        return 2;
    }
    print_reply(buf, n, &from);
    if (argc == 6) {
        close(s);
        printf("closed\n");
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 2;
    }
    return 0;
}
