/* Socket calls given pointers that point nowhere, on sockets the shim
 * owns (a proxied TCP connection, a UDP socket with an association) and on
 * one it does not: each must fail with EFAULT, as the kernel answers, and
 * never crash the program.
 * A read-only page is the third kind, for the calls that write.
 * Usage: wild_pointers HOST UDP_ECHO_PORT TCP_ECHO_PORT (reached through the proxy)
 * Prints "CALL POINTER errno" for each call, then "alive". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *name(int rc) {
    if (rc >= 0) return "succeeded";
    return errno == EFAULT ? "EFAULT" : strerror(errno);
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    alarm(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sockaddr_in echo = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    struct sockaddr_in tcp = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
    inet_pton(AF_INET, argv[1], &echo.sin_addr);
    inet_pton(AF_INET, argv[1], &tcp.sin_addr);
    /* Two kinds of bad pointer: in the first page, and an unmapped page
     * among mapped ones (what a use-after-munmap leaves). */
    void *low = (void *)16;
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(page, 4096);
    void *wild[] = {low, page};
    const char *wname[] = {"low", "unmapped"};

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {10, 0};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64];
    sendto(u, "open", 4, 0, (struct sockaddr *)&echo, sizeof echo);
    recv(u, buf, sizeof buf, 0);
    int t = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(t, (struct sockaddr *)&tcp, sizeof tcp) != 0) return 3;

    for (int w = 0; w < 2; w++) {
        void *p = wild[w];
        const char *pn = wname[w];
        socklen_t len = sizeof echo;
        struct sockaddr_in sa;
        int fresh = socket(AF_INET, SOCK_STREAM, 0);
        printf("connect-tcp %s %s\n", pn, name(connect(fresh, p, sizeof echo)));
        close(fresh);
        int fresh_udp = socket(AF_INET, SOCK_DGRAM, 0);
        printf("connect-udp %s %s\n", pn, name(connect(fresh_udp, p, sizeof echo)));
        close(fresh_udp);
        printf("sendto-addr %s %s\n", pn, name((int)sendto(u, "x", 1, 0, p, sizeof echo)));
        if (w == 0) {
            /* A socket the shim does not own: its fast path reads only what
             * a program's memory can be (see the README's limits). */
            int other = socket(AF_INET, SOCK_DGRAM, 0);
            printf("sendto-unowned %s %s\n", pn, name((int)sendto(other, "x", 1, 0, p, sizeof echo)));
            printf("sendmsg-unowned %s %s\n", pn, name((int)sendmsg(other, p, 0)));
            close(other);
        }
        /* One datagram queued for each receive below. */
        sendto(u, "queued", 6, 0, (struct sockaddr *)&echo, sizeof echo);
        printf("recvfrom-addr %s %s\n", pn, name((int)recvfrom(u, buf, sizeof buf, 0, p, &len)));
        sendto(u, "queued", 6, 0, (struct sockaddr *)&echo, sizeof echo);
        printf("recvfrom-len %s %s\n", pn, name((int)recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&sa, p)));
        sendto(u, "queued", 6, 0, (struct sockaddr *)&echo, sizeof echo);
        printf("recv-buf %s %s\n", pn, name((int)recv(u, p, sizeof buf, 0)));
        printf("recvmsg-msg %s %s\n", pn, name((int)recvmsg(u, p, MSG_DONTWAIT)));
        printf("sendmsg-msg %s %s\n", pn, name((int)sendmsg(u, p, 0)));
        len = sizeof sa;
        printf("getpeername-addr %s %s\n", pn, name(getpeername(t, p, &len)));
        printf("getpeername-len %s %s\n", pn, name(getpeername(t, (struct sockaddr *)&sa, p)));
    }
    /* A read-only page: read, it is fine; written, EFAULT. */
    char *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    socklen_t len = sizeof echo;
    sendto(u, "queued", 6, 0, (struct sockaddr *)&echo, sizeof echo);
    printf("recvfrom-addr readonly %s\n", name((int)recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)ro, &len)));
    sendto(u, "queued", 6, 0, (struct sockaddr *)&echo, sizeof echo);
    printf("recvfrom-len readonly %s\n", name((int)recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)buf, (socklen_t *)ro)));
    sendto(u, "queued", 6, 0, (struct sockaddr *)&echo, sizeof echo);
    printf("recv-buf readonly %s\n", name((int)recv(u, ro, sizeof buf, 0)));
    len = sizeof echo;
    printf("getpeername-addr readonly %s\n", name(getpeername(t, (struct sockaddr *)ro, &len)));
    /* The sockets still work. */
    sendto(u, "still", 5, 0, (struct sockaddr *)&echo, sizeof echo);
    ssize_t n;
    do n = recv(u, buf, sizeof buf, 0); while (n == 6 && memcmp(buf, "queued", 6) == 0);
    printf("udp after %zd %.*s\n", n, (int)(n > 0 ? n : 0), buf);
    printf("alive\n");
    return 0;
}
