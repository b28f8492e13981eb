/* exec_cleared MODE PROGRAM [ARGS...]: starts PROGRAM with an empty
 * environment (or after clearenv(): the process's own environment is
 * emptied first), through the call MODE names, as a program that wants a
 * clean child would. Exits with the child's status (the exec forms do
 * not return unless they fail: then 127). tests/exec_env.rs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int spawned(int rc, pid_t pid) {
    int status;
    if (rc != 0) {
        fprintf(stderr, "exec_cleared: spawn: %s\n", strerror(rc));
        return 127;
    }
    if (waitpid(pid, &status, 0) < 0) return 127;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: exec_cleared MODE PROGRAM [ARGS...]\n");
        return 2;
    }
    const char *mode = argv[1];
    char **args = argv + 2;
    char *empty[] = {NULL};
    pid_t pid = 0;
    int rc;
    if (!strcmp(mode, "execve")) {
        execve(args[0], args, empty);
    } else if (!strcmp(mode, "execvpe")) {
        execvpe(args[0], args, empty);
    } else if (!strcmp(mode, "execle")) {
        /* Up to three arguments, enough for the tests. */
        execle(args[0], args[0], args[1], args[1] ? args[2] : NULL, args[1] && args[2] ? args[3] : NULL, (char *)NULL, empty);
    } else if (!strcmp(mode, "execl")) {
        clearenv();
        execl(args[0], args[0], args[1], args[1] ? args[2] : NULL, args[1] && args[2] ? args[3] : NULL, (char *)NULL);
    } else if (!strcmp(mode, "execlp")) {
        clearenv();
        setenv("PATH", "/usr/bin:/bin", 1);
        execlp(args[0], args[0], args[1], args[1] ? args[2] : NULL, args[1] && args[2] ? args[3] : NULL, (char *)NULL);
    } else if (!strcmp(mode, "execvp")) {
        clearenv();
        setenv("PATH", "/usr/bin:/bin", 1);
        execvp(args[0], args);
    } else if (!strcmp(mode, "fexecve")) {
        int fd = open(args[0], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 127;
        fexecve(fd, args, empty);
    } else if (!strcmp(mode, "execveat")) {
        execveat(AT_FDCWD, args[0], args, empty, 0);
    } else if (!strcmp(mode, "syscall")) {
        syscall(SYS_execve, args[0], args, empty);
    } else if (!strcmp(mode, "posix_spawn")) {
        rc = posix_spawn(&pid, args[0], NULL, NULL, args, empty);
        return spawned(rc, pid);
    } else if (!strcmp(mode, "posix_spawnp")) {
        rc = posix_spawnp(&pid, args[0], NULL, NULL, args, empty);
        return spawned(rc, pid);
    } else if (!strcmp(mode, "vfork")) {
        pid = vfork();
        if (pid == 0) {
            execve(args[0], args, empty);
            _exit(127);
        }
        return spawned(pid < 0 ? errno : 0, pid);
    } else {
        fprintf(stderr, "exec_cleared: unknown mode %s\n", mode);
        return 2;
    }
    fprintf(stderr, "exec_cleared: %s %s: %s\n", mode, args[0], strerror(errno));
    return 127;
}
