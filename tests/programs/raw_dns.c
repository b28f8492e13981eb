/* The resolver entry points that bypass getaddrinfo (tests/dns_raw.rs).
 * Usage: raw_dns NAME1 NAME2 NAME3
 *   getaddrinfo_a(GAI_WAIT) of NAME1, then getaddrinfo_a(GAI_NOWAIT) of
 *   NAME2 with a SIGEV_SIGNAL notification and gai_suspend, then
 *   res_query(NAME3, IN, A). Prints one line per call:
 *     gai_wait rc=0 err=0 addr=198.18.0.1
 *     gai_nowait rc=0 suspend=0 err=0 addr=198.18.0.2 signal=1 value=42
 *     res_query rc=-1 h_errno=3 errno=111
 *   Every wait is bounded (gai_suspend 10 s, sigtimedwait 10 s). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static void first_addr(const struct gaicb *req, char *out, size_t len) {
    snprintf(out, len, "-");
    for (struct addrinfo *ai = req->ar_result; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, out, len);
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: raw_dns NAME1 NAME2 NAME3\n");
        return 2;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    char addr[INET6_ADDRSTRLEN];

    /* GAI_WAIT */
    struct gaicb wait_req = {.ar_name = argv[1], .ar_service = "80", .ar_request = &hints};
    struct gaicb *wait_list[] = {&wait_req};
    int rc = getaddrinfo_a(GAI_WAIT, wait_list, 1, NULL);
    int err = gai_error(&wait_req);
    first_addr(&wait_req, addr, sizeof addr);
    printf("gai_wait rc=%d err=%d addr=%s\n", rc, err, addr);
    fflush(stdout);
    if (wait_req.ar_result)
        freeaddrinfo(wait_req.ar_result);

    /* GAI_NOWAIT with a queued signal; blocked so sigtimedwait collects it. */
    int signo = SIGRTMIN;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct gaicb nowait_req = {.ar_name = argv[2], .ar_service = "80", .ar_request = &hints};
    struct gaicb *nowait_list[] = {&nowait_req};
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = signo;
    sev.sigev_value.sival_int = 42;
    rc = getaddrinfo_a(GAI_NOWAIT, nowait_list, 1, &sev);
    const struct gaicb *suspend_list[] = {&nowait_req};
    struct timespec limit = {.tv_sec = 10};
    int suspend = gai_suspend(suspend_list, 1, &limit);
    err = gai_error(&nowait_req);
    first_addr(&nowait_req, addr, sizeof addr);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int got = sigtimedwait(&set, &info, &limit);
    printf("gai_nowait rc=%d suspend=%d err=%d addr=%s signal=%d value=%d\n", rc, suspend, err, addr, got == signo,
           got == signo ? info.si_value.sival_int : -1);
    fflush(stdout);
    if (nowait_req.ar_result)
        freeaddrinfo(nowait_req.ar_result);

    /* res_query */
    unsigned char answer[NS_PACKETSZ];
    h_errno = 0;
    errno = 0;
    rc = res_query(argv[3], ns_c_in, ns_t_a, answer, sizeof answer);
    int saved_errno = errno;
    printf("res_query rc=%d h_errno=%d errno=%d\n", rc, h_errno, saved_errno);
    fflush(stdout);
    return 0;
}
