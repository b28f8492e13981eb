/* execl, execlp, execle: variadic, so written in C (stable Rust cannot
 * define a variadic function). Each gathers its arguments into an array
 * and calls the non-variadic form, which is our hook in hooks/exec.rs
 * (the symbol resolves to the preloaded library first): the child's
 * environment is checked there. Reached from the exported names by a
 * jump (hooks/exec.rs: variadic_trampoline); hidden, so never exported. */
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

enum form { FORM_EXECV, FORM_EXECVP, FORM_EXECVE };

/* The arguments after arg0 up to the NULL (and, for execle, the
 * environment after it), gathered on the stack, then the call `form`. */
static int gather_and_exec(enum form form, const char *path, const char *arg0, va_list counting, va_list ap) {
    size_t n = 1;
    while (va_arg(counting, const char *) != NULL) n++;
    char *argv[n + 1];
    argv[0] = (char *)arg0;
    for (size_t i = 1; i <= n; i++) argv[i] = va_arg(ap, char *); /* argv[n]: the NULL */
    switch (form) {
    case FORM_EXECV: return execv(path, argv);
    case FORM_EXECVP: return execvp(path, argv);
    default: return execve(path, argv, va_arg(ap, char *const *));
    }
}

#define VARIADIC_EXEC(name, form)                                          \
    __attribute__((visibility("hidden"))) int name(const char *path, const char *arg, ...) { \
        va_list counting, ap;                                              \
        va_start(counting, arg);                                           \
        va_start(ap, arg);                                                 \
        int rc = gather_and_exec(form, path, arg, counting, ap);           \
        va_end(ap);                                                        \
        va_end(counting);                                                  \
        return rc;                                                         \
    }

VARIADIC_EXEC(socksify_execl, FORM_EXECV)
VARIADIC_EXEC(socksify_execlp, FORM_EXECVP)
VARIADIC_EXEC(socksify_execle, FORM_EXECVE)
