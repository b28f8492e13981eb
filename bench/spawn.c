/* Start-up cost: fork+exec of a no-op dynamically linked program.
 *
 *   spawn COUNT PRELOAD PROGRAM [ARGS...]
 *       prints "us=<µs per exec, best of 10 batches> rss_kib=<median peak RSS of a child>"
 *
 * PRELOAD ("-" for none) becomes the child's LD_PRELOAD; the spawner itself
 * runs without it, so only the child pays for loading a library. The rest
 * of the environment (SOCKS_CONF, PROXYCHAINS_CONF_FILE, ...) is passed on. */
#include "common.h"
#include <spawn.h>
#include <sys/wait.h>

#define BATCHES 10
extern char **environ;

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) fail("usage: spawn COUNT PRELOAD|- PROGRAM [ARGS...]");
    long per_batch = atol(argv[1]) / BATCHES;
    if (per_batch < 1) fail("COUNT too small");
    size_t n = 0;
    while (environ[n]) n++;
    char **envp = calloc(n + 2, sizeof *envp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11)) envp[k++] = environ[i];
    char preload[4096];
    if (strcmp(argv[2], "-")) {
        snprintf(preload, sizeof preload, "LD_PRELOAD=%s", argv[2]);
        envp[k++] = preload;
    }
    envp[k] = NULL;
    uint64_t ns[BATCHES + 1];
    long *rss = calloc((size_t)per_batch * BATCHES, sizeof *rss);
    long nrss = 0;
    for (int b = 0; b <= BATCHES; b++) { /* batch 0 warms up */
        uint64_t t0 = now_ns();
        for (long i = 0; i < per_batch; i++) {
            pid_t pid;
            if (posix_spawn(&pid, argv[3], NULL, NULL, argv + 3, envp)) die("posix_spawn");
            int status;
            struct rusage ru;
            if (wait4(pid, &status, 0, &ru) != pid) die("wait4");
            if (!WIFEXITED(status) || WEXITSTATUS(status)) fail("the no-op program failed");
            if (b) rss[nrss++] = ru.ru_maxrss;
        }
        ns[b] = now_ns() - t0;
    }
    qsort(ns + 1, BATCHES, sizeof ns[0], cmp_u64);
    qsort(rss, (size_t)nrss, sizeof *rss, cmp_long);
    double best = ns[1]; /* the least disturbed batch: other tenants only ever add time */
    printf("us=%.2f rss_kib=%ld\n", best / per_batch / 1000.0, rss[nrss / 2]);
    return 0;
}
