/* connect() is async-signal-safe: a signal handler may call it while the
 * interrupted code is inside the shim (here: a connect waiting on a proxy
 * that never answers). The handler's connect must not go direct, and must
 * not touch the shim's tables mid-update: it fails with EINTR.
 * Usage: signal_connect HOST PORT (a target that should be proxied);
 * prints "main ERRNO handler RC ERRNO". The caller bounds it with a timeout. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in target;
static int handler_socket;
static volatile sig_atomic_t handler_rc = 99, handler_errno = 0;

static void on_alarm(int sig) {
    (void)sig;
    int saved = errno;
    handler_rc = connect(handler_socket, (struct sockaddr *)&target, sizeof target);
    handler_errno = errno;
    errno = saved;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    target.sin_family = AF_INET;
    target.sin_port = htons((unsigned short)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &target.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    handler_socket = socket(AF_INET, SOCK_STREAM, 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, 0);
    alarm(1); /* fires while the connect below waits for the stalled proxy */
    int rc = connect(s, (struct sockaddr *)&target, sizeof target);
    printf("main %d handler %d %d\n", rc < 0 ? errno : 0, (int)handler_rc, (int)handler_errno);
    return 0;
}
