/* The C full walk: what every inode -> pid lookup on Linux has to pay once.
 *
 * `ss -p`, `netstat -p`, lsof and psutil all find a socket's process the same way:
 * list /proc, open /proc/<pid>/fd of every process, readlink every descriptor and
 * keep the "socket:[<inode>]" ones. This program does exactly that, once per
 * request, in plain C (getdents64 with a 64 KiB buffer, readlinkat relative to the
 * fd directory, one open-addressing table inode -> lowest pid), single-threaded, as
 * ss does. It is the yardstick for tcpsnap's cold take(pids=True).
 *
 * Mode "full" adds what take(pids=True) also does on a cold start: the netlink
 * dump of the TCP table (AF_INET and AF_INET6, the states ss -ta shows) and the
 * lookup of every row's inode in the walk's table.
 *
 * Usage:
 *   procwalk walk|full       one untimed warm-up, then one timed run; prints
 *                            "<ns> <fds> <sockets> <rows> <matched> <dump_ns>"
 *   procwalk serve           for each line "walk K" or "full K" on stdin, K timed
 *                            runs (one line each, as above), then a line ".";
 *                            exits on EOF. Lets a harness interleave it with others.
 *
 * Durations are CLOCK_MONOTONIC nanoseconds around the whole run (walk, or dump +
 * walk + match). Build: gcc -O2 -o procwalk procwalk.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>

#define BUF_SIZE (64 * 1024)
#define DUMP_STATES 0x1FFE

static char dbuf[BUF_SIZE] __attribute__((aligned(8)));
static char rbuf[BUF_SIZE] __attribute__((aligned(8)));
static int procfd;

/* inode -> lowest pid, open addressing; inode 0 = empty */
struct slot { uint64_t inode; uint32_t pid; };
static struct slot *tab;
static size_t tcap, tcount;

static void die(const char *what, int err)
{
    fprintf(stderr, "procwalk: %s: %s\n", what, strerror(err));
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static size_t hash(uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 20) & (tcap - 1); }

static void tab_reset(size_t want)
{
    size_t cap = 1024;
    while (cap < want * 2)
        cap *= 2;
    if (cap != tcap) {
        free(tab);
        tab = malloc(cap * sizeof *tab);
        if (!tab)
            die("malloc", ENOMEM);
        tcap = cap;
    }
    memset(tab, 0, tcap * sizeof *tab);
    tcount = 0;
}

static void tab_grow(void);

static void tab_put(uint64_t inode, uint32_t pid)
{
    size_t i;
    if ((tcount + 1) * 2 > tcap)
        tab_grow();
    for (i = hash(inode); tab[i].inode; i = (i + 1) & (tcap - 1))
        if (tab[i].inode == inode) {
            if (pid < tab[i].pid)
                tab[i].pid = pid;
            return;
        }
    tab[i].inode = inode;
    tab[i].pid = pid;
    tcount++;
}

static void tab_grow(void)
{
    struct slot *old = tab;
    size_t ocap = tcap, i;
    tcap *= 2;
    tab = calloc(tcap, sizeof *tab);
    if (!tab)
        die("calloc", ENOMEM);
    tcount = 0;
    for (i = 0; i < ocap; i++)
        if (old[i].inode)
            tab_put(old[i].inode, old[i].pid);
    free(old);
}

static uint32_t tab_get(uint64_t inode)
{
    size_t i;
    for (i = hash(inode); tab[i].inode; i = (i + 1) & (tcap - 1))
        if (tab[i].inode == inode)
            return tab[i].pid;
    return 0;
}

/* The walk: every socket descriptor of every process into the table. */
static void walk(long *nfds, long *nsocks)
{
    long got, off, fds = 0, socks = 0;
    tab_reset(tcount > 1024 ? tcount : 1024);
    if (lseek(procfd, 0, SEEK_SET) < 0)
        die("lseek(/proc)", errno);
    while ((got = getdents64(procfd, dbuf, sizeof dbuf)) > 0) {
        for (off = 0; off < got;) {
            struct dirent64 *d = (struct dirent64 *)(dbuf + off);
            char path[32];
            int fdd;
            long g, o;
            uint32_t pid;
            off += d->d_reclen;
            if (d->d_name[0] < '1' || d->d_name[0] > '9')
                continue;
            pid = (uint32_t)strtoul(d->d_name, NULL, 10);
            snprintf(path, sizeof path, "%u/fd", pid);
            fdd = openat(procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fdd < 0)
                continue;                       /* gone, or not ours to read */
            while ((g = getdents64(fdd, rbuf, sizeof rbuf)) > 0) {
                for (o = 0; o < g;) {
                    struct dirent64 *e = (struct dirent64 *)(rbuf + o);
                    char link[64];
                    ssize_t k;
                    o += e->d_reclen;
                    if (e->d_name[0] < '0' || e->d_name[0] > '9')
                        continue;
                    fds++;
                    k = readlinkat(fdd, e->d_name, link, sizeof link);
                    if (k > 9 && memcmp(link, "socket:[", 8) == 0) {
                        socks++;
                        tab_put(strtoull(link + 8, NULL, 10), pid);
                    }
                }
            }
            close(fdd);
        }
    }
    if (got < 0)
        die("getdents64(/proc)", errno);
    *nfds = fds;
    *nsocks = socks;
}

/* The netlink dump, as floor.c / tcpsnap do it, looking each row's inode up. */
static int diag_fd = -1;
static uint32_t seq;

static void dump_family(int family, long *rows, long *matched)
{
    struct {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = ++seq;
    req.r.sdiag_family = family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = DUMP_STATES;
    req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    while (send(diag_fd, &req, sizeof req, 0) < 0)
        if (errno != EINTR)
            die("send", errno);
    for (;;) {
        ssize_t got = recv(diag_fd, dbuf, sizeof dbuf, 0);
        struct nlmsghdr *h;
        if (got < 0) {
            if (errno == EINTR)
                continue;
            die("recv", errno);
        }
        for (h = (struct nlmsghdr *)dbuf; NLMSG_OK(h, (size_t)got); h = NLMSG_NEXT(h, got)) {
            if (h->nlmsg_seq != seq)
                continue;
            if (h->nlmsg_type == NLMSG_DONE)
                return;
            if (h->nlmsg_type == NLMSG_ERROR)
                return;                          /* no IPv6: nothing to count */
            if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
                struct inet_diag_msg *m = NLMSG_DATA(h);
                (*rows)++;
                if (m->idiag_inode && tab_get(m->idiag_inode))
                    (*matched)++;
            }
        }
    }
}

static void run(int full, FILE *out)
{
    long fds = 0, socks = 0, rows = 0, matched = 0;
    uint64_t t0 = now_ns(), t1 = 0;
    walk(&fds, &socks);
    if (full) {
        t1 = now_ns();
        if (diag_fd < 0) {
            struct sockaddr_nl sa;
            diag_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
            if (diag_fd < 0)
                die("socket(NETLINK_SOCK_DIAG)", errno);
            memset(&sa, 0, sizeof sa);
            sa.nl_family = AF_NETLINK;
            if (connect(diag_fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                die("connect", errno);
        }
        dump_family(AF_INET, &rows, &matched);
        dump_family(AF_INET6, &rows, &matched);
    }
    {
        uint64_t t2 = now_ns();
        fprintf(out, "%llu %ld %ld %ld %ld %llu\n", (unsigned long long)(t2 - t0), fds, socks,
                rows, matched, (unsigned long long)(full ? t2 - t1 : 0));
    }
}

int main(int argc, char **argv)
{
    char line[64], mode[16];
    int k, i;
    procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (procfd < 0)
        die("open(/proc)", errno);
    if (argc == 2 && (strcmp(argv[1], "walk") == 0 || strcmp(argv[1], "full") == 0)) {
        int full = strcmp(argv[1], "full") == 0;
        run(full, stdout);                      /* warm-up: dentries, page cache */
        run(full, stdout);
        return 0;
    }
    if (argc != 2 || strcmp(argv[1], "serve") != 0) {
        fprintf(stderr, "usage: procwalk walk|full|serve\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "%15s %d", mode, &k) != 2)
            continue;
        for (i = 0; i < k; i++)
            run(strcmp(mode, "full") == 0, stdout);
        puts(".");
    }
    return 0;
}
