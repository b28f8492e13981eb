/* A dynamic program that connects with the syscall instruction itself, not
 * libc's connect() or syscall(): LD_PRELOAD cannot see it, the supervisor
 * can. rawconnect IP PORT: connect, send a GET, print the answer. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static long raw_connect(long fd, const void *addr, long len) {
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "0"((long)SYS_connect), "D"(fd), "S"(addr), "d"(len) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_connect;
    register long x0 __asm__("x0") = fd;
    register long x1 __asm__("x1") = (long)addr;
    register long x2 __asm__("x2") = len;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    ret = x0;
#else
#error "rawconnect: add this architecture's system call instruction"
#endif
    return ret;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    long rc = raw_connect(s, &a, sizeof a);
    if (rc != 0) {
        fprintf(stderr, "connect: %s\n", strerror((int)-rc));
        return 1;
    }
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    if (write(s, req, strlen(req)) < 0) return 1;
    char buf[4096];
    ssize_t n;
    while ((n = read(s, buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
    return 0;
}
