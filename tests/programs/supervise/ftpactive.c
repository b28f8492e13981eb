/* A static active-mode FTP client for tests/supervise_bind.rs (gcc -static):
 *   ftpactive IP PORT NAME [early|poll]
 * Logs in anonymously on the control connection, then does what active FTP
 * does: a TCP socket bound to the control connection's own address, port 0
 * (getsockname of the control socket), listen, getsockname, "PORT" with
 * that address, "RETR NAME", accept the data connection. Prints on stderr
 * "advertised IP:PORT" and "accepted from IP:PORT" (accept's address), and
 * the file's bytes on stdout; "CALL: errno N" and exit 1 on a failed call,
 * "reply: LINE" and exit 1 on an unexpected reply. Reads bounded by
 * SO_RCVTIMEO (20 s).
 * early: getsockname before listen.
 * poll: the listener non-blocking; an accept before PORT (the server
 * cannot have connected: prints "early accept: errno N"), poll for the peer, accept
 * (the new socket must be blocking: "accepted socket is non-blocking"
 * otherwise), then a second accept ("second accept: errno N").
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int ctl;
static char line[1024];

static int fail(const char *call) {
    printf("%s: errno %d\n", call, errno);
    return 1;
}

/* The next reply's last line ("NNN text"); its code. */
static int reply(void) {
    for (;;) {
        size_t n = 0;
        char c;
        while (n < sizeof line - 1) {
            if (read(ctl, &c, 1) != 1) return -1;
            if (c == '\n') break;
            line[n++] = c;
        }
        line[n] = 0;
        if (n >= 4 && line[3] == ' ') return atoi(line);
    }
}

static int command(const char *cmd, int want) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s\r\n", cmd);
    if (write(ctl, buf, strlen(buf)) < 0) return fail("write");
    int code = reply();
    if (code / 100 != want / 100) {
        printf("reply to %s: %s\n", cmd, line);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: ftpactive IP PORT NAME [early|poll]\n");
        return 2;
    }
    const char *mode = argc == 5 ? argv[4] : "plain";
    struct timeval tv = {20, 0};
    struct sockaddr_in srv = {0};
    srv.sin_family = AF_INET;
    srv.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &srv.sin_addr);
    ctl = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ctl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(ctl, (struct sockaddr *)&srv, sizeof srv) != 0) return fail("connect");
    if (reply() != 220) return printf("banner: %s\n", line), 1;
    if (command("USER anonymous", 331) || command("PASS x", 230) || command("TYPE I", 200)) return 1;

    struct sockaddr_in here = {0}, adv = {0}, peer = {0};
    socklen_t len = sizeof here;
    if (getsockname(ctl, (struct sockaddr *)&here, &len) != 0) return fail("getsockname control");
    here.sin_port = 0;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(ls, (struct sockaddr *)&here, sizeof here) != 0) return fail("bind");
    len = sizeof adv;
    if (!strcmp(mode, "early") && getsockname(ls, (struct sockaddr *)&adv, &len) != 0) return fail("getsockname");
    if (listen(ls, 1) != 0) return fail("listen");
    if (strcmp(mode, "early") && getsockname(ls, (struct sockaddr *)&adv, &len) != 0) return fail("getsockname");
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &adv.sin_addr, ip, sizeof ip);
    fprintf(stderr, "advertised %s:%d\n", ip, ntohs(adv.sin_port));
    int polling = !strcmp(mode, "poll");
    if (polling) {
        fcntl(ls, F_SETFL, O_NONBLOCK);
        int early = accept(ls, NULL, NULL);
        fprintf(stderr, "early accept: errno %d\n", early < 0 ? errno : 0);
    }
    unsigned char *a = (unsigned char *)&adv.sin_addr, *p = (unsigned char *)&adv.sin_port;
    char port[128];
    snprintf(port, sizeof port, "PORT %u,%u,%u,%u,%u,%u", a[0], a[1], a[2], a[3], p[0], p[1]);
    if (command(port, 200)) return 1;
    char retr[300];
    snprintf(retr, sizeof retr, "RETR %s", argv[3]);
    if (write(ctl, retr, strlen(retr)) < 0 || write(ctl, "\r\n", 2) < 0) return fail("write");
    if (polling) {
        struct pollfd pfd = {ls, POLLIN, 0};
        if (poll(&pfd, 1, 20000) != 1) return fail("poll");
    }
    len = sizeof peer;
    int ds = accept(ls, (struct sockaddr *)&peer, &len);
    if (ds < 0) return fail("accept");
    if (polling) {
        if (fcntl(ds, F_GETFL) & O_NONBLOCK) fprintf(stderr, "accepted socket is non-blocking\n");
        int again = accept(ls, NULL, NULL);
        fprintf(stderr, "second accept: errno %d\n", again < 0 ? errno : 0);
    }
    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    fprintf(stderr, "accepted from %s:%d\n", ip, ntohs(peer.sin_port));
    setsockopt(ds, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    ssize_t n;
    while ((n = read(ds, buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
    if (n < 0) return fail("read data");
    close(ds);
    int code = reply();
    if (code == 150 || code == 125) code = reply();
    if (code != 226) return printf("after RETR: %s\n", line), 1;
    command("QUIT", 221);
    return 0;
}
