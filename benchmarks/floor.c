/* The floor: the cheapest possible version of tcpsnap's netlink capture.
 *
 * Same request as src/tcpsnap/_netlink.pyx: by default one TCPDIAG_GETSOCK dump
 * (struct inet_diag_req: the kernel walks its TCP hash once for both families),
 * or with FLOOR_V2=1 SOCK_DIAG_BY_FAMILY with inet_diag_req_v2, one dump for AF_INET
 * then one for AF_INET6 (tcpsnap's fallback); IPPROTO_TCP, idiag_states = 0x1FFE,
 * idiag_ext = 0, cookie = INET_DIAG_NOCOOKIE, one socket reused across dumps,
 * a 64 KiB receive buffer, recv(..., MSG_TRUNC). It only counts the rows: no
 * parsing, no copying, no Python. Whatever take() spends above this is ours.
 * With FLOOR_INFO=1 the dumps also ask for INET_DIAG_INFO and INET_DIAG_CONG
 * (idiag_ext, as Snapshotter(tcp_info=True) does): the kernel then fills struct
 * tcp_info and the algorithm's name into every message, still only counted here.
 *
 * Usage:
 *   floor K        one untimed warm-up dump, then K timed dumps; one line each:
 *                  "<ns> <rows> <dump_intr>"
 *   floor serve    for each line "K" on stdin, K timed dumps as above, then a
 *                  line "."; exits on EOF. Lets a harness interleave the floor
 *                  with other methods while the socket stays open and warm.
 *   floor netns-serve PATH...
 *                  one socket made inside each network namespace PATH (setns into
 *                  it, socket, setns back: what tcpsnap.netns does), then as serve,
 *                  each timed dump being one dump of every namespace in turn; the
 *                  line is "<ns> <rows> <dump_intr>" for the whole round.
 *
 * Durations are CLOCK_MONOTONIC nanoseconds around both families' dumps (what
 * one Snapshotter.take() does). Build: gcc -O2 -o floor floor.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#define RECV_SIZE (64 * 1024)          /* DEFAULT_RECV in _netlink.pyx */
#define DUMP_STATES 0x1FFE             /* TCP states 1..12, as ss -ta */

static char rbuf[RECV_SIZE] __attribute__((aligned(8)));
static uint32_t seq;
static int want_v6 = 1;
static int single_walk = 1;   /* FLOOR_V2=1 in the environment: two v2 dumps instead */
static uint8_t ext;           /* FLOOR_INFO=1: idiag_ext asks for INET_DIAG_INFO and _CONG */

static void die(const char *what, int err)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(err));
    exit(2);
}

static int open_diag(void)
{
    struct sockaddr_nl sa;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0)
        die("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", errno);
    memset(&sa, 0, sizeof(sa));
    sa.nl_family = AF_NETLINK;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect", errno);
    return fd;
}

/* One family's dump; returns the number of SOCK_DIAG_BY_FAMILY messages. */
static long dump_family(int fd, int family, int *intr)
{
    struct {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
    } req;
    struct {
        struct nlmsghdr h;
        struct inet_diag_req r;
    } creq;
    long rows = 0;

    if (family == AF_UNSPEC) {
        /* One walk for both families: the compat request tcpsnap uses by default. */
        memset(&creq, 0, sizeof(creq));
        creq.h.nlmsg_len = sizeof(creq);
        creq.h.nlmsg_type = TCPDIAG_GETSOCK;
        creq.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        creq.h.nlmsg_seq = ++seq;
        creq.r.idiag_family = AF_INET;
        creq.r.idiag_ext = ext;
        creq.r.idiag_states = DUMP_STATES;
        creq.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
        creq.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
        while (send(fd, &creq, sizeof(creq), 0) < 0)
            if (errno != EINTR)
                die("send", errno);
    } else {
        memset(&req, 0, sizeof(req));
        req.h.nlmsg_len = sizeof(req);
        req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        req.h.nlmsg_seq = ++seq;
        req.r.sdiag_family = family;
        req.r.sdiag_protocol = IPPROTO_TCP;
        req.r.idiag_ext = ext;
        req.r.idiag_states = DUMP_STATES;
        req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
        req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
        while (send(fd, &req, sizeof(req), 0) < 0)
            if (errno != EINTR)
                die("send", errno);
    }

    for (;;) {
        ssize_t got = recv(fd, rbuf, RECV_SIZE, MSG_TRUNC);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            die("recv", errno);
        }
        if (got == 0)
            die("recv", EPROTO);
        if (got > RECV_SIZE) {
            fprintf(stderr, "floor: datagram of %zd bytes > %d byte buffer\n", got, RECV_SIZE);
            exit(2);
        }
        int len = (int)got;
        for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_flags & NLM_F_DUMP_INTR)
                *intr = 1;
            if (h->nlmsg_type == NLMSG_DONE)
                return rows;
            if (h->nlmsg_type == NLMSG_ERROR) {
                int err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
                if (err == 0)
                    continue;
                if (family == AF_INET6 && (err == ENOENT || err == EAFNOSUPPORT || err == EOPNOTSUPP)) {
                    want_v6 = 0;
                    return rows;
                }
                die("SOCK_DIAG_BY_FAMILY", err);
            }
            if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY || h->nlmsg_type == TCPDIAG_GETSOCK)
                rows++;
        }
    }
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void timed_dumps(int fd, long k, int print)
{
    for (long i = 0; i < k; i++) {
        int intr = 0;
        long long t0 = now_ns();
        long rows;
        if (single_walk) {
            rows = dump_family(fd, AF_UNSPEC, &intr);
        } else {
            rows = dump_family(fd, AF_INET, &intr);
            if (want_v6)
                rows += dump_family(fd, AF_INET6, &intr);
        }
        long long t1 = now_ns();
        if (print)
            printf("%lld %ld %d\n", t1 - t0, rows, intr);
    }
}

static int open_diag_in(const char *path, int home)
{
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0)
        die(path, errno);
    if (setns(ns, CLONE_NEWNET) < 0)
        die("setns", errno);
    int fd = open_diag();
    if (setns(home, CLONE_NEWNET) < 0)
        die("setns back", errno);
    close(ns);
    return fd;
}

static void netns_serve(int n, char **paths)
{
    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int *fds = calloc(n, sizeof(int));
    char line[64];
    if (home < 0 || !fds)
        die("netns-serve", errno);
    for (int i = 0; i < n; i++)
        fds[i] = open_diag_in(paths[i], home);
    for (int i = 0; i < n; i++)     /* warm-up, untimed */
        timed_dumps(fds[i], 1, 0);
    while (fgets(line, sizeof(line), stdin)) {
        long k = strtol(line, NULL, 10);
        for (long j = 0; j < k; j++) {
            int intr = 0;
            long rows = 0;
            long long t0 = now_ns();
            for (int i = 0; i < n; i++)
                rows += dump_family(fds[i], AF_UNSPEC, &intr);
            long long t1 = now_ns();
            printf("%lld %ld %d\n", t1 - t0, rows, intr);
        }
        printf(".\n");
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    const char *info = getenv("FLOOR_INFO");
    if (info && *info && strcmp(info, "0") != 0)
        ext = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_CONG - 1));
    if (argc >= 3 && strcmp(argv[1], "netns-serve") == 0) {
        netns_serve(argc - 2, argv + 2);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: floor K | floor serve | floor netns-serve PATH...\n");
        return 2;
    }
    const char *v2 = getenv("FLOOR_V2");
    single_walk = !(v2 && *v2 && strcmp(v2, "0") != 0);
    int fd = open_diag();
    if (strcmp(argv[1], "serve") == 0) {
        char line[64];
        while (fgets(line, sizeof(line), stdin)) {
            long k = strtol(line, NULL, 10);
            timed_dumps(fd, k, 1);
            printf(".\n");
            fflush(stdout);
        }
        return 0;
    }
    long k = strtol(argv[1], NULL, 10);
    if (k < 1) {
        fprintf(stderr, "floor: K must be >= 1\n");
        return 2;
    }
    timed_dumps(fd, 1, 0);     /* warm-up, untimed */
    timed_dumps(fd, k, 1);
    return 0;
}
