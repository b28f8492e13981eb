/* Non-blocking connects through the shim, the way event loops make them
 * (tests/nonblocking.rs).
 *
 *   nonblock_connect MODE IP PORT [N]
 *
 * MODE:
 *   epoll-before  N sockets registered with epoll (EPOLLOUT|EPOLLET)
 *                 before their connect;
 *   epoll-after   registered after it (EPOLLOUT|EPOLLET|EPOLLONESHOT);
 *   poll, select, ppoll, pselect
 *                 waited for with poll(2), select(2), ppoll(2) or
 *                 pselect(2) (the last two with a signal mask).
 *   dup           each socket dup()ed while connecting; poll waits for
 *                 both numbers, and both must then be connected and echo.
 *   dup-close     each socket dup()ed while connecting, then one of the
 *                 two closed (the first for even I, the copy for odd);
 *                 the other's connect must finish and echo.
 *   fork          the process forks once every connect is under way: the
 *                 child's poll must say POLLERR and its SO_ERROR
 *                 ECONNABORTED (then 0) for each (it prints "child N
 *                 ECONNABORTED"), the parent, once the child is gone,
 *                 finishes every connect and echoes.
 *   unhooked      as poll, and while connecting, writes by sendfile(2),
 *                 splice(2), pwritev2(2) and libc's syscall(SYS_write)
 *                 and syscall(SYS_writev) must say EAGAIN as send does
 *                 (none of the bytes may reach the proxy mid-handshake).
 *   Each: connect() must say EINPROGRESS; right after it, while the
 *   handshake is held back by the test's relay, a second connect says
 *   EALREADY, getpeername ENOTCONN, send EAGAIN and SO_ERROR 0. Once
 *   writable: SO_ERROR 0, getpeername names IP:PORT, and "ping I" comes
 *   back from the echo target. Prints one summary line.
 *   error         one connect, waited for with poll; prints the errno
 *                 SO_ERROR reports (or connect's own, if it failed at once).
 *   close         one connect through a proxy that never answers, closed
 *                 mid-handshake: within 10 s no fd refers to its socket
 *                 any more (the shim's copy went, and the proxy
 *                 connection with it), and the process's open fds (after
 *                 a first connect started the shim's engine) are what
 *                 they were; prints "fds back", "leaked the socket" or
 *                 "leaked N".
 *   close-syscall the same, closed with syscall(SYS_close, fd).
 * Every wait is bounded (10 s per wait), and exits 1 on any surprise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in dst;

static void die(const char *what) {
    printf("FAIL %s: %s\n", what, strerror(errno));
    exit(1);
}

static const char *name(int e) {
    switch (e) {
    case 0: return "0";
    case EINPROGRESS: return "EINPROGRESS";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EALREADY: return "EALREADY";
    case EAGAIN: return "EAGAIN";
    case ENOTCONN: return "ENOTCONN";
    default: return strerror(e);
    }
}

static int start(void) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0) die("socket");
    return s;
}

static int so_error(int s) {
    int e = -1;
    socklen_t len = sizeof e;
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &len) != 0) die("getsockopt");
    return e;
}

/* The checks of a connect under way (the relay holds the handshake). */
static void while_connecting(int s) {
    if (connect(s, (struct sockaddr *)&dst, sizeof dst) == 0 || errno != EALREADY) {
        printf("FAIL second connect: %s\n", name(errno));
        exit(1);
    }
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    if (getpeername(s, (struct sockaddr *)&peer, &len) == 0 || errno != ENOTCONN) {
        printf("FAIL getpeername while connecting: %s\n", name(errno));
        exit(1);
    }
    if (send(s, "x", 1, MSG_NOSIGNAL) >= 0 || errno != EAGAIN) {
        printf("FAIL send while connecting: %s\n", name(errno));
        exit(1);
    }
    if (so_error(s) != 0) {
        printf("FAIL SO_ERROR while connecting\n");
        exit(1);
    }
}

/* Writes by calls that are not send/write, while connecting: EAGAIN. */
static void unhooked_writes(int s) {
    static int file = -1, pipe_fds[2];
    if (file < 0) {
        char path[] = "/tmp/nonblock-connect-XXXXXX";
        file = mkstemp(path);
        if (file < 0) die("mkstemp");
        unlink(path);
        if (write(file, "junk", 4) != 4) die("write file");
        if (pipe2(pipe_fds, O_NONBLOCK) != 0) die("pipe2");
    }
    off_t at = 0;
    ssize_t r = sendfile(s, file, &at, 4);
    if (r >= 0 || errno != EAGAIN) {
        printf("FAIL sendfile while connecting: %zd %s\n", r, name(r < 0 ? errno : 0));
        exit(1);
    }
    if (write(pipe_fds[1], "junk", 4) != 4) die("write pipe");
    r = splice(pipe_fds[0], NULL, s, NULL, 4, SPLICE_F_NONBLOCK);
    if (r >= 0 || errno != EAGAIN) {
        printf("FAIL splice while connecting: %zd %s\n", r, name(r < 0 ? errno : 0));
        exit(1);
    }
    char drain[4];
    if (read(pipe_fds[0], drain, 4) != 4) die("drain pipe");
    struct iovec iov = {"junk", 4};
    r = pwritev2(s, &iov, 1, -1, 0);
    if (r >= 0 || errno != EAGAIN) {
        printf("FAIL pwritev2 while connecting: %zd %s\n", r, name(r < 0 ? errno : 0));
        exit(1);
    }
    r = syscall(SYS_write, s, "junk", 4);
    if (r >= 0 || errno != EAGAIN) {
        printf("FAIL syscall(SYS_write) while connecting: %zd %s\n", r, name(r < 0 ? errno : 0));
        exit(1);
    }
    r = syscall(SYS_writev, s, &iov, 1);
    if (r >= 0 || errno != EAGAIN) {
        printf("FAIL syscall(SYS_writev) while connecting: %zd %s\n", r, name(r < 0 ? errno : 0));
        exit(1);
    }
}

static void connect_now(int s) {
    if (connect(s, (struct sockaddr *)&dst, sizeof dst) == 0) {
        printf("FAIL connect completed at once\n");
        exit(1);
    }
    if (errno != EINPROGRESS) {
        printf("FAIL connect: %s\n", name(errno));
        exit(1);
    }
}

/* Once writable: connected to dst, and the echo works. */
static void use(int s, int i) {
    if (so_error(s) != 0) {
        printf("FAIL SO_ERROR after writable: %s\n", name(so_error(s)));
        exit(1);
    }
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    if (getpeername(s, (struct sockaddr *)&peer, &len) != 0) die("getpeername");
    if (peer.sin_port != dst.sin_port || peer.sin_addr.s_addr != dst.sin_addr.s_addr) {
        printf("FAIL getpeername names another address\n");
        exit(1);
    }
    char msg[32], got[32];
    int n = snprintf(msg, sizeof msg, "ping %d", i);
    if (send(s, msg, n, MSG_NOSIGNAL) != n) die("send");
    int at = 0;
    while (at < n) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 10000) != 1) die("poll for the echo");
        ssize_t k = recv(s, got + at, n - at, 0);
        if (k <= 0) die("recv");
        at += k;
    }
    if (memcmp(msg, got, n) != 0) {
        printf("FAIL echo mismatch\n");
        exit(1);
    }
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) die("opendir");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own fd */
}

static ino_t inode(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    return st.st_ino;
}

/* How many of our fds refer to socket inode INO. */
static int holders(ino_t ino) {
    char want[64], path[300], link[64];
    snprintf(want, sizeof want, "socket:[%lu]", (unsigned long)ino);
    DIR *d = opendir("/proc/self/fd");
    if (!d) die("opendir");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, link, sizeof link - 1);
        if (k < 0) continue;
        link[k] = 0;
        n += !strcmp(link, want);
    }
    closedir(d);
    return n;
}

/* Whether every fd of socket INO is closed within 10 s. */
static int gone(ino_t ino) {
    for (int i = 0; i < 1000; i++) {
        if (holders(ino) == 0) return 1;
        usleep(10000);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    const char *mode = argv[1];
    dst.sin_family = AF_INET;
    dst.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &dst.sin_addr);
    int n = argc > 4 ? atoi(argv[4]) : 1;
    if (n > 64) n = 64;
    int s[128];

    if (!strcmp(mode, "error")) {
        int fd = start();
        if (connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0) {
            printf("connected at once\n");
            return 0;
        }
        if (errno != EINPROGRESS) {
            printf("connect %s\n", name(errno));
            return 0;
        }
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, 20000) != 1) die("poll");
        int e = so_error(fd);
        int again = so_error(fd);
        printf("so_error %s then %s pollerr %d\n", name(e), name(again), !!(p.revents & POLLERR));
        return 0;
    }
    if (!strcmp(mode, "close") || !strcmp(mode, "close-syscall")) {
        /* The first connect only starts the engine (its fds stay); once
         * no fd holds its socket any more, the count is the baseline. */
        int first = start();
        connect(first, (struct sockaddr *)&dst, sizeof dst);
        ino_t first_ino = inode(first);
        close(first);
        if (!gone(first_ino)) {
            printf("FAIL the first connect's socket is still held\n");
            return 1;
        }
        int before = count_fds();
        int fd = start();
        connect_now(fd);
        ino_t ino = inode(fd);
        if (count_fds() <= before + 1) {
            printf("FAIL the connect under way holds no fd of the shim\n");
            return 1;
        }
        if (!strcmp(mode, "close")) close(fd);
        else if (syscall(SYS_close, fd) != 0) die("syscall(SYS_close)");
        /* Cancelled: the engine's copy of the socket goes (and with it
         * the proxy connection), and so does every other fd of it. */
        if (!gone(ino)) {
            printf("leaked the socket\n");
            return 0;
        }
        int now = count_fds();
        if (now == before) printf("fds back\n");
        else printf("leaked %d\n", now - before);
        return 0;
    }

    int ep = -1;
    if (!strncmp(mode, "epoll", 5)) {
        ep = epoll_create1(0);
        if (ep < 0) die("epoll_create1");
    }
    int before = !strcmp(mode, "epoll-before");
    int dups = !strcmp(mode, "dup"), dup_close = !strcmp(mode, "dup-close");
    /* dup: the copies, waited for and used after the originals */
    int total = dups ? 2 * n : n;
    for (int i = 0; i < n; i++) {
        s[i] = start();
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.u32 = i};
        if (before && epoll_ctl(ep, EPOLL_CTL_ADD, s[i], &ev) != 0) die("epoll_ctl before");
        connect_now(s[i]);
        while_connecting(s[i]);
        if (!strcmp(mode, "unhooked")) unhooked_writes(s[i]);
        ev.events |= EPOLLONESHOT;
        if (!before && ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, s[i], &ev) != 0) die("epoll_ctl after");
        if (dups || dup_close) {
            int d = dup(s[i]);
            if (d < 0) die("dup");
            while_connecting(d);
            if (dups) s[n + i] = d;
            else if (i % 2 == 0) { close(s[i]); s[i] = d; }
            else close(d);
        }
    }
    if (!strcmp(mode, "fork")) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            /* The connects are the parent's: here each has failed. */
            for (int i = 0; i < n; i++) {
                struct pollfd p = {s[i], POLLOUT, 0};
                if (poll(&p, 1, 10000) != 1 || !(p.revents & POLLERR)) {
                    printf("FAIL child poll %#x\n", p.revents);
                    fflush(stdout);
                    _exit(1);
                }
                int e = so_error(s[i]), again = so_error(s[i]);
                if (e != ECONNABORTED || again != 0) {
                    printf("FAIL child so_error %s then %s\n", name(e), name(again));
                    fflush(stdout);
                    _exit(1);
                }
                close(s[i]);
            }
            printf("child %d ECONNABORTED\n", n);
            fflush(stdout);
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) die("waitpid");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            printf("FAIL child status %#x\n", status);
            return 1;
        }
    }
    int done = 0, wakeups = 0;
    int ready[128] = {0};
    while (done < total) {
        int got[128], m = 0;
        if (ep >= 0) {
            struct epoll_event evs[64];
            int k = epoll_wait(ep, evs, 64, 10000);
            if (k <= 0) die("epoll_wait (nothing within 10 s)");
            for (int j = 0; j < k; j++) {
                if (!(evs[j].events & EPOLLOUT)) {
                    printf("FAIL epoll reported %#x without EPOLLOUT\n", evs[j].events);
                    return 1;
                }
                got[m++] = evs[j].data.u32;
            }
        } else if (!strcmp(mode, "poll") || !strcmp(mode, "ppoll") || !strcmp(mode, "unhooked") || dups || dup_close || !strcmp(mode, "fork")) {
            struct pollfd p[128];
            for (int i = 0; i < total; i++) p[i] = (struct pollfd){ready[i] ? -1 : s[i], POLLOUT, 0};
            int k;
            if (!strcmp(mode, "ppoll")) {
                struct timespec ts = {10, 0};
                sigset_t mask;
                sigemptyset(&mask);
                sigaddset(&mask, SIGUSR1);
                k = ppoll(p, total, &ts, &mask);
            } else {
                k = poll(p, total, 10000);
            }
            if (k <= 0) die("poll (nothing within 10 s)");
            for (int i = 0; i < total; i++)
                if (p[i].revents) {
                    if (p[i].revents != POLLOUT) {
                        printf("FAIL poll revents %#x\n", p[i].revents);
                        return 1;
                    }
                    got[m++] = i;
                }
            if (m != k) { printf("FAIL poll counted %d, %d ready\n", k, m); return 1; }
        } else if (!strcmp(mode, "select") || !strcmp(mode, "pselect")) {
            fd_set w;
            FD_ZERO(&w);
            int max = 0;
            for (int i = 0; i < n; i++)
                if (!ready[i]) { FD_SET(s[i], &w); if (s[i] > max) max = s[i]; }
            int k;
            if (!strcmp(mode, "pselect")) {
                struct timespec ts = {10, 0};
                sigset_t mask;
                sigemptyset(&mask);
                sigaddset(&mask, SIGUSR1);
                k = pselect(max + 1, NULL, &w, NULL, &ts, &mask);
            } else {
                struct timeval tv = {10, 0};
                k = select(max + 1, NULL, &w, NULL, &tv);
            }
            if (k <= 0) die("select (nothing within 10 s)");
            for (int i = 0; i < n; i++)
                if (!ready[i] && FD_ISSET(s[i], &w)) got[m++] = i;
            if (m != k) { printf("FAIL select counted %d, %d ready\n", k, m); return 1; }
        } else {
            return 2;
        }
        wakeups++;
        for (int j = 0; j < m; j++) {
            int i = got[j];
            if (ready[i]) {
                printf("FAIL socket %d reported ready twice\n", i);
                return 1;
            }
            ready[i] = 1;
            use(s[i], i % n);
            done++;
        }
    }
    printf("%s %d connected, echoed\n", mode, done);
    return 0;
}
