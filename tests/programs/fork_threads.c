/* Threads connect while the main thread forks; each child connects too.
 *
 * Written in C, not Python: CPython's own locks (import, codecs) are not
 * fork-safe, and a child stuck there would say nothing about the shim.
 * Usage: fork_threads HOST PORT; prints "threads ok N children ok M".
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 8
#define PER_THREAD 20
#define CHILDREN 20

static struct sockaddr_in target;

/* Connects through whatever the shim decides, sends tag, expects it back. */
static int echo(const char *tag) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0) { close(fd); return 0; }
    size_t len = strlen(tag);
    if (send(fd, tag, len, MSG_NOSIGNAL) != (ssize_t)len) { close(fd); return 0; }
    char buf[64];
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, sizeof buf - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    return got == len && memcmp(buf, tag, len) == 0;
}

static int thread_ok[THREADS];

static void *worker(void *arg) {
    long n = (long)arg;
    char tag[32];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(tag, sizeof tag, "thread-%ld-%d", n, i);
        thread_ok[n] += echo(tag);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    alarm(60); /* a deadlock ends the process instead of hanging the test */
    target.sin_family = AF_INET;
    target.sin_port = htons((unsigned short)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &target.sin_addr);
    pthread_t threads[THREADS];
    for (long n = 0; n < THREADS; n++) pthread_create(&threads[n], NULL, worker, (void *)n);
    pid_t children[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) {
        children[i] = fork();
        if (children[i] == 0) {
            char tag[32];
            snprintf(tag, sizeof tag, "child-%d", i);
            _exit(echo(tag) ? 0 : 1);
        }
        usleep(2000);
    }
    int threads_ok = 0, children_ok = 0;
    for (int n = 0; n < THREADS; n++) {
        pthread_join(threads[n], NULL);
        threads_ok += thread_ok[n];
    }
    for (int i = 0; i < CHILDREN; i++) {
        int status = 0;
        if (children[i] > 0 && waitpid(children[i], &status, 0) == children[i] && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            children_ok++;
    }
    printf("threads ok %d children ok %d\n", threads_ok, children_ok);
    return 0;
}
