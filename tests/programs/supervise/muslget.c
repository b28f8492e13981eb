/* A C client for tests/supervise.rs, built static with musl-gcc (musl's
 * resolver sends its queries with an unconnected sendto to each nameserver
 * and takes the answers with recvfrom, checking their source) and dynamic
 * with gcc (glibc's resolver, which sorts the addresses it got by RFC 6724
 * after a UDP connect to each):
 *   muslget NAME PORT   getaddrinfo(NAME), connect to the first address that
 *                       takes, print "resolved ADDR" on stderr, send a GET,
 *                       print the body; "getaddrinfo: MESSAGE" and exit 1 if
 *                       the name does not resolve
 */
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: muslget NAME PORT\n");
        return 2;
    }
    struct addrinfo hints = {0}, *res, *ai;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(argv[1], argv[2], &hints, &res);
    if (rc != 0) {
        printf("getaddrinfo: %s\n", gai_strerror(rc));
        return 1;
    }
    int s = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        char host[NI_MAXHOST] = "?";
        getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, NULL, 0, NI_NUMERICHOST);
        fprintf(stderr, "resolved %s\n", host);
        s = socket(ai->ai_family, SOCK_STREAM, 0);
        if (s >= 0 && connect(s, ai->ai_addr, ai->ai_addrlen) == 0) break;
        perror("connect");
        if (s >= 0) close(s);
        s = -1;
    }
    freeaddrinfo(res);
    if (s < 0) return 1;
    char req[512];
    snprintf(req, sizeof req, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", argv[1]);
    if (write(s, req, strlen(req)) < 0) {
        perror("write");
        return 1;
    }
    static char buf[65536];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof buf - 1 && (n = read(s, buf + got, sizeof buf - 1 - got)) > 0) got += n;
    buf[got] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    printf("%s", body ? body + 4 : buf);
    close(s);
    return 0;
}
