/* Children between vfork (or posix_spawn) and exec that close, dup2 over
 * and close_range the fds they inherited: the parent's proxied sockets
 * must carry on as before. (A vfork child shares the parent's memory, so
 * a shim that updates its tables there changes the parent's.)
 * Usage: vfork_close HOST UDP_ECHO_PORT TCP_ECHO_PORT
 * Prints one line per check. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static struct sockaddr_in addr(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    return a;
}

static int open_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n;
}

/* One unconnected round trip: "ok" if the payload and the source are exact. */
static const char *round_trip(int u, const struct sockaddr_in *to, const char *msg) {
    static char verdict[160];
    char b[256] = {0};
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    if (sendto(u, msg, strlen(msg), 0, (const struct sockaddr *)to, sizeof *to) < 0) return "send failed";
    ssize_t n = recvfrom(u, b, sizeof b - 1, 0, (struct sockaddr *)&from, &flen);
    if (n < 0) return "recv failed";
    if ((size_t)n != strlen(msg) || memcmp(b, msg, (size_t)n) != 0) {
        snprintf(verdict, sizeof verdict, "payload %zd bytes %02x %02x %02x %02x", n, (unsigned char)b[0], (unsigned char)b[1],
                 (unsigned char)b[2], (unsigned char)b[3]);
        return verdict;
    }
    if (from.sin_port != to->sin_port || from.sin_addr.s_addr != to->sin_addr.s_addr) return "wrong source";
    return "ok";
}

static const char *connected_trip(int c, const char *msg) {
    char b[256] = {0};
    if (send(c, msg, strlen(msg), 0) < 0) return "send failed";
    ssize_t n = recv(c, b, sizeof b - 1, 0);
    if (n < 0) return "recv failed (lost)";
    return (size_t)n == strlen(msg) && memcmp(b, msg, (size_t)n) == 0 ? "ok" : "wrong payload";
}

static const char *peer_check(int t, const struct sockaddr_in *dst) {
    struct sockaddr_in p;
    socklen_t len = sizeof p;
    if (getpeername(t, (struct sockaddr *)&p, &len) != 0) return "getpeername failed";
    return p.sin_port == dst->sin_port && p.sin_addr.s_addr == dst->sin_addr.s_addr ? "ok" : "reports another peer";
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    alarm(60);
    struct sockaddr_in echo = addr(argv[1], atoi(argv[2])), tcp = addr(argv[1], atoi(argv[3]));
    int u = socket(AF_INET, SOCK_DGRAM, 0), c = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {10, 0};
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    connect(c, (struct sockaddr *)&echo, sizeof echo);
    int rc = connect(t, (struct sockaddr *)&tcp, sizeof tcp);
    printf("before udp %s connected %s tcp %d %s\n", round_trip(u, &echo, "one"), connected_trip(c, "two"), rc, peer_check(t, &tcp));
    int fds = open_fds();
    const char *kinds[] = {"posix_spawn", "vfork-close_range", "vfork-close-dup2", "vfork-closefrom"};
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 10; i++) {
            pid_t pid;
            if (k == 0) {
                posix_spawn_file_actions_t fa;
                posix_spawn_file_actions_init(&fa);
                posix_spawn_file_actions_addclose(&fa, u);
                posix_spawn_file_actions_adddup2(&fa, 0, c);
                posix_spawn_file_actions_addclose(&fa, t);
                char *args[] = {"/bin/true", NULL};
                if (posix_spawn(&pid, "/bin/true", &fa, NULL, args, environ) != 0) return 3;
                posix_spawn_file_actions_destroy(&fa);
            } else if ((pid = vfork()) == 0) {
                if (k == 1) {
                    close_range(3, ~0U, 0);
                } else if (k == 2) {
                    close(u);
                    dup2(0, c);
                    dup3(0, t, 0);
                } else {
                    closefrom(3);
                }
                char *args[] = {"/bin/true", NULL};
                execve("/bin/true", args, environ);
                _exit(127);
            }
            int status;
            waitpid(pid, &status, 0);
        }
        printf("after %s udp %s connected %s tcp %s fds %+d\n", kinds[k], round_trip(u, &echo, kinds[k]), connected_trip(c, kinds[k]),
               peer_check(t, &tcp), open_fds() - fds);
    }
    return 0;
}
