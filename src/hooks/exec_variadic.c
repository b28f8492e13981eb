/* execl, execlp, execle: variadic, so written in C (stable Rust cannot
 * define a variadic function). Each gathers its arguments into an array
 * and calls the non-variadic form, which is our hook in hooks/exec.rs
 * (the symbol resolves to the preloaded library first): the child's
 * environment is checked there. Reached from the exported names by a
 * jump (hooks/exec.rs: variadic_trampoline); hidden, so never exported. */
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

/* The arguments after arg0, up to the NULL: how many there are. */
#define COUNT_ARGS(last, n)                                   \
    do {                                                      \
        va_list ap_;                                          \
        va_start(ap_, last);                                  \
        n = 1;                                                \
        while (va_arg(ap_, const char *) != NULL) n++;        \
        va_end(ap_);                                          \
    } while (0)

#define GATHER_ARGS(last, argv, n, ap)                        \
    do {                                                      \
        va_start(ap, last);                                   \
        argv[0] = (char *)last;                               \
        for (size_t i_ = 1; i_ <= n; i_++)                    \
            argv[i_] = va_arg(ap, char *);                    \
    } while (0)

__attribute__((visibility("hidden"))) int socksify_execl(const char *path, const char *arg, ...) {
    size_t n;
    COUNT_ARGS(arg, n);
    char *argv[n + 1];
    va_list ap;
    GATHER_ARGS(arg, argv, n, ap);
    va_end(ap);
    return execv(path, argv);
}

__attribute__((visibility("hidden"))) int socksify_execlp(const char *file, const char *arg, ...) {
    size_t n;
    COUNT_ARGS(arg, n);
    char *argv[n + 1];
    va_list ap;
    GATHER_ARGS(arg, argv, n, ap);
    va_end(ap);
    return execvp(file, argv);
}

__attribute__((visibility("hidden"))) int socksify_execle(const char *path, const char *arg, ...) {
    size_t n;
    COUNT_ARGS(arg, n);
    char *argv[n + 1];
    va_list ap;
    GATHER_ARGS(arg, argv, n, ap);
    char *const *envp = va_arg(ap, char *const *); /* after the NULL */
    va_end(ap);
    return execve(path, argv, envp);
}
