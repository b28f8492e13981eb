/* close() is async-signal-safe: a signal handler may close sockets while
 * the interrupted code is in the middle of a send through the shim (which
 * may hold a lock at that moment). Nothing may hang.
 * Usage: signal_close HOST PORT (a UDP echo); prints "closed N". The
 * caller bounds it with a timeout.
 * (Found by a review: the shim used to spin forever here.) */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define N 300
static int fds[N];
static volatile sig_atomic_t next = 1;

static void on_alarm(int sig) {
    (void)sig;
    if (next < N) close(fds[next++]);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
        if (sendto(fds[i], "x", 1, 0, (struct sockaddr *)&a, sizeof a) < 0) { perror("sendto"); return 1; }
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 200}, {0, 200}};
    setitimer(ITIMER_REAL, &it, 0);
    char b[8];
    while (next < N) {
        sendto(fds[0], "y", 1, MSG_DONTWAIT, (struct sockaddr *)&a, sizeof a);
        recv(fds[0], b, sizeof b, MSG_DONTWAIT);
    }
    printf("closed %d\n", N - 1);
    return 0;
}
