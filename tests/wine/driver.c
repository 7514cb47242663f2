/* A Windows program (mingw-w64) that drives tcpsnap's native fetch layer, tcpfetch.c, as the
 * Windows extension runs it, for tests/test_windows_wine.py to run under Wine.
 *
 *   driver.exe OUTDIR
 *
 * It opens its own loopback sockets in as many TCP states as it can make (newer Wine lists only
 * sockets that Wine processes own), fetches the tables with tcpfetch, and writes to OUTDIR:
 *   tcptable2.bin, tcp6table2.bin, tcpext4_ownerpid.bin, tcpext6_ownerpid.bin  (raw buffers)
 *   grow4.bin, grow6.bin     (the grown-table fetches, see below)
 *   result.json              (its pid, the sockets it made, layouts, counters, fault checks,
 *                             and what tcpestats_open() found: Wine exports no GetPerTcpConnectionEStats)
 * then prints READY, keeps every socket open until OUTDIR\release exists (so that ss can be run
 * meanwhile), and exits.
 *
 * The grown-table retry is done for real: a tcpfetch_t starting with a 4-byte buffer probes the
 * size, grows with headroom, and its before_retry hook then opens more connections than the
 * headroom holds, so the next call says ERROR_INSUFFICIENT_BUFFER again and the loop must grow
 * once more before it succeeds.
 */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iphlpapi.h>
#include <tcpestats.h>
#include <stddef.h>

#include "tcpfetch.h"
#include "estats.h"

#define MAX_SOCKS 1024
#define GROW_PAIRS 100      /* per family: 200 rows, more than the 4 KiB + 25% headroom */

/* MIB_TCP_STATE values */
enum { ST_LISTEN = 2, ST_SYN_SENT = 3, ST_ESTAB = 5, ST_FIN_WAIT1 = 6, ST_FIN_WAIT2 = 7,
       ST_CLOSE_WAIT = 8, ST_CLOSING = 9, ST_LAST_ACK = 10, ST_TIME_WAIT = 11 };

static char outdir[MAX_PATH];
static SOCKET held[MAX_SOCKS];
static int nheld;

/* The JSON list of sockets, built as we go. */
static char *socks_json;
static size_t socks_len, socks_cap;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "driver: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (WSAGetLastError=%d)\n", WSAGetLastError());
    va_end(ap);
    exit(2);
}

static void jappend(const char *fmt, ...)
{
    va_list ap;
    int n;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(socks_json + socks_len, socks_cap - socks_len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < socks_cap - socks_len) {
            socks_len += (size_t)n;
            return;
        }
        socks_cap = socks_cap ? socks_cap * 2 : 65536;
        socks_json = realloc(socks_json, socks_cap);
        if (!socks_json)
            die("out of memory");
    }
}

static SOCKET hold(SOCKET s)
{
    if (nheld >= MAX_SOCKS)
        die("too many sockets");
    held[nheld++] = s;
    return s;
}

static int fam_of(int af) { return af == AF_INET6 ? 6 : 4; }

static void addr_str(const struct sockaddr_storage *ss, char *host, size_t n, int *port)
{
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, n);
        *port = ntohs(a->sin6_port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, n);
        *port = ntohs(a->sin_port);
    }
}

/* Record a socket and the row the table should show for it. owned: the socket is still open
 * in this process (its row carries our pid). The peer is getpeername()'s when connected, else
 * rhost:rport (NULL: the unspecified address, as a listener shows). */
static void record_peer(const char *name, SOCKET s, int af, int state, int owned, int connected,
                        const char *rhost, int rport)
{
    struct sockaddr_storage l, r;
    int ll = sizeof(l), rl = sizeof(r), lport = 0;
    char lh[64], rh[64];
    memset(&l, 0, sizeof(l));
    memset(&r, 0, sizeof(r));
    if (getsockname(s, (struct sockaddr *)&l, &ll) != 0)
        die("getsockname(%s)", name);
    addr_str(&l, lh, sizeof(lh), &lport);
    if (connected) {
        if (getpeername(s, (struct sockaddr *)&r, &rl) != 0)
            die("getpeername(%s)", name);
        addr_str(&r, rh, sizeof(rh), &rport);
    } else {
        snprintf(rh, sizeof(rh), "%s", rhost ? rhost : (af == AF_INET6 ? "::" : "0.0.0.0"));
    }
    jappend("%s{\"name\":\"%s\",\"family\":%d,\"state\":%d,\"local\":\"%s\",\"lport\":%d,"
            "\"remote\":\"%s\",\"rport\":%d,\"owned\":%s}\n",
            socks_len > 1 ? "," : "", name, fam_of(af), state, lh, lport, rh, rport,
            owned ? "true" : "false");
}

static void record(const char *name, SOCKET s, int af, int state, int owned, int connected)
{
    record_peer(name, s, af, state, owned, connected, NULL, 0);
}

static void set_int(SOCKET s, int level, int opt, int v, const char *what)
{
    if (setsockopt(s, level, opt, (const char *)&v, sizeof(v)) != 0)
        die("setsockopt(%s)", what);
}

static void nonblocking(SOCKET s, int on)
{
    u_long v = (u_long)on;
    if (ioctlsocket(s, FIONBIO, &v) != 0)
        die("ioctlsocket(FIONBIO)");
}

static void loopback(int af, struct sockaddr_storage *ss, int *len, int port)
{
    memset(ss, 0, sizeof(*ss));
    if (af == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons((u_short)port);
        *len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons((u_short)port);
        *len = sizeof(*a);
    }
}

static int port_of(SOCKET s)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss), port;
    char h[64];
    if (getsockname(s, (struct sockaddr *)&ss, &len) != 0)
        die("getsockname");
    addr_str(&ss, h, sizeof(h), &port);
    return port;
}

static SOCKET tcp(int af)
{
    SOCKET s = socket(af, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        die("socket(%d)", af);
    return s;
}

/* A listener on the loopback address; rcvbuf > 0 sets SO_RCVBUF (inherited by accepted
 * sockets, and it fixes the window they advertise). */
static SOCKET listener(int af, int backlog, int rcvbuf)
{
    struct sockaddr_storage ss;
    int len;
    SOCKET s = tcp(af);
    if (af == AF_INET6)
        set_int(s, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    if (rcvbuf > 0)
        set_int(s, SOL_SOCKET, SO_RCVBUF, rcvbuf, "SO_RCVBUF");
    loopback(af, &ss, &len, 0);
    if (bind(s, (struct sockaddr *)&ss, len) != 0)
        die("bind");
    if (listen(s, backlog) != 0)
        die("listen");
    return s;
}

/* An ESTABLISHED pair through lst: *c the client, *s the accepted socket. */
static void pair(int af, SOCKET lst, int c_rcvbuf, int c_sndbuf, SOCKET *c, SOCKET *s)
{
    struct sockaddr_storage ss;
    int len;
    *c = tcp(af);
    if (c_rcvbuf > 0)
        set_int(*c, SOL_SOCKET, SO_RCVBUF, c_rcvbuf, "SO_RCVBUF");
    if (c_sndbuf > 0)
        set_int(*c, SOL_SOCKET, SO_SNDBUF, c_sndbuf, "SO_SNDBUF");
    loopback(af, &ss, &len, port_of(lst));
    if (connect(*c, (struct sockaddr *)&ss, len) != 0)
        die("connect");
    *s = accept(lst, NULL, NULL);
    if (*s == INVALID_SOCKET)
        die("accept");
}

/* Send until the peer's window is shut and our send buffer is full: data stays queued, so a FIN
 * after it cannot leave. */
static void fill(SOCKET s)
{
    static char junk[16384];
    int idle = 0;
    nonblocking(s, 1);
    while (idle < 5) {
        int n = send(s, junk, sizeof(junk), 0);
        if (n > 0) {
            idle = 0;
            continue;
        }
        if (WSAGetLastError() != WSAEWOULDBLOCK)
            die("send");
        idle++;
        Sleep(20);
    }
}

static void wait_eof(SOCKET s)
{
    char b[64];
    int n;
    nonblocking(s, 0);
    n = recv(s, b, sizeof(b), 0);
    if (n != 0)
        die("expected EOF, recv returned %d", n);
}

static void make_states(int af)
{
    const char *v = af == AF_INET6 ? "6" : "4";
    char name[64];
    SOCKET lst, c, s, lsmall;

    lst = hold(listener(af, 64, 0));
    snprintf(name, sizeof(name), "listen%s", v);
    record(name, lst, af, ST_LISTEN, 1, 0);

    /* ESTABLISHED both ways */
    pair(af, lst, 0, 0, &c, &s);
    hold(c), hold(s);
    snprintf(name, sizeof(name), "estab%s.client", v);
    record(name, c, af, ST_ESTAB, 1, 1);
    snprintf(name, sizeof(name), "estab%s.server", v);
    record(name, s, af, ST_ESTAB, 1, 1);

    /* half-close: the client's FIN is acked, the server has not closed */
    pair(af, lst, 0, 0, &c, &s);
    hold(c), hold(s);
    if (shutdown(c, SD_SEND) != 0)
        die("shutdown");
    wait_eof(s);
    snprintf(name, sizeof(name), "halfclose%s.client", v);
    record(name, c, af, ST_FIN_WAIT2, 1, 1);
    snprintf(name, sizeof(name), "halfclose%s.server", v);
    record(name, s, af, ST_CLOSE_WAIT, 1, 1);

    /* TIME_WAIT: the client closes first, the server follows, the client's socket is gone */
    pair(af, lst, 0, 0, &c, &s);
    snprintf(name, sizeof(name), "timewait%s.client", v);
    record(name, c, af, ST_TIME_WAIT, 0, 1);
    if (shutdown(c, SD_SEND) != 0)
        die("shutdown");
    wait_eof(s);
    closesocket(s);
    wait_eof(c);
    closesocket(c);

    /* FIN_WAIT1: the peer never reads and its window is shut, so our FIN waits behind data */
    lsmall = hold(listener(af, 64, 4096));
    snprintf(name, sizeof(name), "listen%s.small", v);
    record(name, lsmall, af, ST_LISTEN, 1, 0);
    pair(af, lsmall, 0, 8192, &c, &s);
    hold(c), hold(s);
    fill(c);
    if (shutdown(c, SD_SEND) != 0)
        die("shutdown");
    snprintf(name, sizeof(name), "finwait1%s.client", v);
    record(name, c, af, ST_FIN_WAIT1, 1, 1);
    snprintf(name, sizeof(name), "finwait1%s.server", v);
    record(name, s, af, ST_ESTAB, 1, 1);

    /* CLOSING: as above, then the peer closes too; its FIN reaches us while ours is unsent */
    pair(af, lsmall, 0, 8192, &c, &s);
    hold(c), hold(s);
    fill(c);
    if (shutdown(c, SD_SEND) != 0)
        die("shutdown");
    if (shutdown(s, SD_SEND) != 0)
        die("shutdown");
    Sleep(50);
    snprintf(name, sizeof(name), "closing%s.client", v);
    record(name, c, af, ST_CLOSING, 1, 1);
    snprintf(name, sizeof(name), "closing%s.server", v);
    record(name, s, af, ST_FIN_WAIT2, 1, 1);

    /* LAST_ACK: the client half-closes and never reads (small window); the server fills it,
     * then closes: its FIN waits behind the data */
    pair(af, lst, 4096, 0, &c, &s);
    hold(c), hold(s);
    if (shutdown(c, SD_SEND) != 0)
        die("shutdown");
    wait_eof(s);
    set_int(s, SOL_SOCKET, SO_SNDBUF, 8192, "SO_SNDBUF");
    fill(s);
    if (shutdown(s, SD_SEND) != 0)
        die("shutdown");
    snprintf(name, sizeof(name), "lastack%s.client", v);
    record(name, c, af, ST_FIN_WAIT2, 1, 1);
    snprintf(name, sizeof(name), "lastack%s.server", v);
    record(name, s, af, ST_LAST_ACK, 1, 1);
}

/* SYN_SENT: connect to a listener whose accept queue (backlog 0) is full: the SYN is dropped and
 * retransmitted for a minute or two. */
static void make_syn_sent(int af)
{
    struct sockaddr_storage ss;
    int len, i;
    char name[64];
    SOCKET lst = hold(listener(af, 0, 0));
    snprintf(name, sizeof(name), "listen%s.full", af == AF_INET6 ? "6" : "4");
    record(name, lst, af, ST_LISTEN, 1, 0);
    loopback(af, &ss, &len, port_of(lst));
    for (i = 0; i < 16; i++) {
        fd_set w;
        struct timeval tv = {0, 300000};
        SOCKET c = hold(tcp(af));
        nonblocking(c, 1);
        if (connect(c, (struct sockaddr *)&ss, len) == 0)
            continue;
        if (WSAGetLastError() != WSAEWOULDBLOCK)
            die("connect (nonblocking)");
        FD_ZERO(&w);
        FD_SET(c, &w);
        if (select(0, NULL, &w, NULL, &tv) == 0) {
            snprintf(name, sizeof(name), "synsent%s", af == AF_INET6 ? "6" : "4");
            record_peer(name, c, af, ST_SYN_SENT, 1, 0, af == AF_INET6 ? "::1" : "127.0.0.1",
                        port_of(lst));
            return;
        }
    }
    die("no connection stayed in SYN_SENT");
}

/* --- the grown-table fetch ----------------------------------------------------------------- */

struct grow_ctx {
    int opened;            /* connections opened by the hook */
    uint32_t needed[8];    /* sizes the calls asked for */
    int nneeded;
};

static void grow_hook(void *vctx, int table, unsigned attempt, uint32_t needed)
{
    struct grow_ctx *g = vctx;
    int af = table == TCPFETCH_TCP6 ? AF_INET6 : AF_INET, i;
    char name[64];
    SOCKET lst, c, s;
    if (g->nneeded < 8)
        g->needed[g->nneeded++] = needed;
    if (attempt != 0)
        return;
    /* the probe said how big the table is; make it bigger than the buffer just allocated */
    lst = hold(listener(af, GROW_PAIRS + 8, 0));
    snprintf(name, sizeof(name), "grow%s.listen", af == AF_INET6 ? "6" : "4");
    record(name, lst, af, ST_LISTEN, 1, 0);
    for (i = 0; i < GROW_PAIRS; i++) {
        pair(af, lst, 0, 0, &c, &s);
        hold(c), hold(s);
        snprintf(name, sizeof(name), "grow%s.client%d", af == AF_INET6 ? "6" : "4", i);
        record(name, c, af, ST_ESTAB, 1, 1);
        snprintf(name, sizeof(name), "grow%s.server%d", af == AF_INET6 ? "6" : "4", i);
        record(name, s, af, ST_ESTAB, 1, 1);
        g->opened += 2;
    }
}

/* --- fault injection around the real call -------------------------------------------------- */

struct fault {
    int busy_first;        /* return STATUS_UNSUCCESSFUL this many times first */
    int always;            /* nonzero: always return this code */
    int calls;
};

static uint32_t faulty_call(void *vctx, int table, void *buf, uint32_t *size)
{
    struct fault *f = vctx;
    f->calls++;
    if (f->always)
        return (uint32_t)f->always;
    if (f->busy_first > 0) {
        f->busy_first--;
        return TCPFETCH_STATUS_UNSUCCESSFUL;
    }
    return tcpfetch_iphlpapi(NULL, table, buf, size);
}

static uint32_t always_short(void *vctx, int table, void *buf, uint32_t *size)
{
    struct fault *f = vctx;
    (void)table, (void)buf;
    f->calls++;
    *size += 64;           /* a table that grows faster than we can follow */
    return TCPFETCH_ERROR_INSUFFICIENT_BUFFER;
}

/* --- output -------------------------------------------------------------------------------- */

static void write_file(const char *name, const void *data, size_t len)
{
    char path[MAX_PATH + 64];
    FILE *fp;
    snprintf(path, sizeof(path), "%s\\%s", outdir, name);
    fp = fopen(path, "wb");
    if (!fp || fwrite(data, 1, len, fp) != len || fclose(fp) != 0)
        die("cannot write %s", path);
}

static void json_stats(char *out, size_t n, const tcpfetch_t *f)
{
    snprintf(out, n, "{\"fetches\":%llu,\"calls\":%llu,\"retries\":%llu,\"grows\":%llu,\"busy\":%llu}",
             (unsigned long long)f->fetches, (unsigned long long)f->calls,
             (unsigned long long)f->retries, (unsigned long long)f->grows,
             (unsigned long long)f->busy);
}

static void json_layout(char *out, size_t n, int table)
{
    tcpfetch_layout l;
    if (tcpfetch_get_layout(table, &l) != 0)
        die("no layout for %d", table);
    snprintf(out, n, "{\"header_size\":%d,\"stride\":%d,\"row_size\":%d,\"family\":%d,"
             "\"off_state\":%d,\"off_laddr\":%d,\"off_lscope\":%d,\"off_lport\":%d,"
             "\"off_raddr\":%d,\"off_rscope\":%d,\"off_rport\":%d,\"off_pid\":%d,\"off_offload\":%d}",
             l.header_size, l.stride, l.row_size, l.family, l.off_state, l.off_laddr,
             l.off_lscope, l.off_lport, l.off_raddr, l.off_rscope, l.off_rport, l.off_pid,
             l.off_offload);
}

static void fetch_or_die(tcpfetch_t *f, int table, const unsigned char **buf, size_t *len)
{
    uint32_t err;
    int st = tcpfetch(f, table, buf, len, &err);
    if (st != TCPFETCH_OK)
        die("tcpfetch(%s) status %d, Windows error %lu (%s)", tcpfetch_call_name(table), st,
            (unsigned long)err, tcpfetch_error_name(err) ? tcpfetch_error_name(err) : "?");
}

int main(int argc, char **argv)
{
    static const char *files[TCPFETCH_NTABLES] = {
        "tcptable2.bin", "tcp6table2.bin", "tcpext4_ownerpid.bin", "tcpext6_ownerpid.bin"};
    WSADATA wsa;
    tcpfetch_t prod, grow, tf;
    struct grow_ctx gctx[2];
    struct fault fl;
    const unsigned char *buf, *first;
    size_t len;
    uint32_t err;
    int t, st, fam;
    char *json, prodstats[256], growstats[2][256], lay[TCPFETCH_NTABLES][512], release[MAX_PATH + 16];
    size_t jcap;
    FILE *fp;
    /* fault checks, reported as JSON */
    int busy_ok_st, busy_calls, busy_busy, busy_all_st, busy_all_calls, notsup_st, short_st,
        short_calls;
    uint32_t busy_all_err, notsup_err, short_err;
    char notsup_msg[256];
    unsigned long long reuse_calls, reuse_grows;
    int reuse_same;

    if (argc != 2) {
        fprintf(stderr, "usage: driver.exe OUTDIR\n");
        return 2;
    }
    snprintf(outdir, sizeof(outdir), "%s", argv[1]);
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        die("WSAStartup");
    jappend("[");

    make_states(AF_INET);
    make_states(AF_INET6);
    make_syn_sent(AF_INET);
    Sleep(200);            /* let the last FINs and ACKs land */

    /* 1. the grown-table retry, for real, on each table2 */
    for (fam = 0; fam < 2; fam++) {
        t = fam ? TCPFETCH_TCP6 : TCPFETCH_TCP4;
        tcpfetch_init(&grow);
        grow.initial_size = 4;              /* the first call is a pure size probe */
        memset(&gctx[fam], 0, sizeof(gctx[fam]));
        grow.before_retry = grow_hook;
        grow.hook_ctx = &gctx[fam];
        fetch_or_die(&grow, t, &buf, &len);
        write_file(fam ? "grow6.bin" : "grow4.bin", buf, len);
        json_stats(growstats[fam], sizeof(growstats[fam]), &grow);
        tcpfetch_free(&grow);
    }

    /* 2. production use: one tcpfetch_t, default settings, every table; then again, to show
     *    the buffers are reused */
    tcpfetch_init(&prod);
    for (t = 0; t < TCPFETCH_NTABLES; t++) {
        fetch_or_die(&prod, t, &buf, &len);
        write_file(files[t], buf, len);
        json_layout(lay[t], sizeof(lay[t]), t);
    }
    json_stats(prodstats, sizeof(prodstats), &prod);
    reuse_calls = prod.calls;
    reuse_grows = prod.grows;
    fetch_or_die(&prod, TCPFETCH_TCP4, &first, &len);
    fetch_or_die(&prod, TCPFETCH_TCP4, &buf, &len);
    reuse_same = buf == first;
    reuse_calls = prod.calls - reuse_calls;
    reuse_grows = prod.grows - reuse_grows;
    tcpfetch_free(&prod);

    /* 3. the error paths, with the real call behind a fault injector */
    tcpfetch_init(&tf);
    memset(&fl, 0, sizeof(fl));
    fl.busy_first = 2;
    tf.call = faulty_call;
    tf.call_ctx = &fl;
    busy_ok_st = tcpfetch(&tf, TCPFETCH_TCP4, &buf, &len, &err);
    busy_calls = fl.calls;
    busy_busy = (int)tf.busy;
    tcpfetch_free(&tf);

    tcpfetch_init(&tf);
    memset(&fl, 0, sizeof(fl));
    fl.always = (int)TCPFETCH_STATUS_UNSUCCESSFUL;
    tf.call = faulty_call;
    tf.call_ctx = &fl;
    busy_all_st = tcpfetch(&tf, TCPFETCH_TCP6, &buf, &len, &busy_all_err);
    busy_all_calls = fl.calls;
    tcpfetch_free(&tf);

    tcpfetch_init(&tf);
    memset(&fl, 0, sizeof(fl));
    fl.always = (int)TCPFETCH_ERROR_NOT_SUPPORTED;
    tf.call = faulty_call;
    tf.call_ctx = &fl;
    notsup_st = tcpfetch(&tf, TCPFETCH_TCP6, &buf, &len, &notsup_err);
    tcpfetch_error_message(notsup_err, notsup_msg, sizeof(notsup_msg));
    for (t = 0; notsup_msg[t]; t++)     /* keep the JSON string plain */
        if (notsup_msg[t] == '"' || notsup_msg[t] == '\\' || (unsigned char)notsup_msg[t] < 32)
            notsup_msg[t] = ' ';
    tcpfetch_free(&tf);

    tcpfetch_init(&tf);
    memset(&fl, 0, sizeof(fl));
    tf.call = always_short;
    tf.call_ctx = &fl;
    short_st = tcpfetch(&tf, TCPFETCH_TCP4, &buf, &len, &short_err);
    short_calls = fl.calls;
    tcpfetch_free(&tf);

    /* EStats (estats.c): resolved at run time; enabling and reading a connection in a state
     * other than READY must fail cleanly (ERROR_NOT_SUPPORTED), never call through NULL */
    tcpestats_t es;
    tcpestats_conn ec;
    uint8_t erod[96], eprod[160];
    int egot = -1;
    uint32_t een, erd;
    tcpestats_open(&es);
    memset(&ec, 0, sizeof(ec));
    ec.family = 4;
    ec.local_addr[0] = ec.remote_addr[0] = 127;
    ec.local_addr[3] = ec.remote_addr[3] = 1;
    ec.local_port = 1;
    ec.remote_port = 2;
    /* where the SDK (mingw-w64's tcpestats.h) puts the fields _tcp_info.h reads */
#define DOFF(f) (int)offsetof(TCP_ESTATS_DATA_ROD_v0, f)
#define POFF(f) (int)offsetof(TCP_ESTATS_PATH_ROD_v0, f)
    char elay[1024];
    snprintf(elay, sizeof(elay),
             "{\"data_size\":%d,\"path_size\":%d,\"data\":{\"DataBytesOut\":%d,\"DataSegsOut\":%d,"
             "\"DataSegsIn\":%d,\"SegsOut\":%d,\"SegsIn\":%d,\"ThruBytesAcked\":%d,\"ThruBytesReceived\":%d},"
             "\"path\":{\"Timeouts\":%d,\"SubsequentTimeouts\":%d,\"CurTimeoutCount\":%d,\"PktsRetrans\":%d,"
             "\"BytesRetrans\":%d,\"DsackDups\":%d,\"SmoothedRtt\":%d,\"RttVar\":%d,\"MinRtt\":%d,"
             "\"CurRto\":%d,\"CurMss\":%d}}",
             (int)sizeof(TCP_ESTATS_DATA_ROD_v0), (int)sizeof(TCP_ESTATS_PATH_ROD_v0),
             DOFF(DataBytesOut), DOFF(DataSegsOut), DOFF(DataSegsIn), DOFF(SegsOut), DOFF(SegsIn),
             DOFF(ThruBytesAcked), DOFF(ThruBytesReceived),
             POFF(Timeouts), POFF(SubsequentTimeouts), POFF(CurTimeoutCount), POFF(PktsRetrans),
             POFF(BytesRetrans), POFF(DsackDups), POFF(SmoothedRtt), POFF(RttVar), POFF(MinRtt),
             POFF(CurRto), POFF(CurMss));
    een = tcpestats_enable(&es, &ec);
    erd = tcpestats_read(&es, &ec, erod, sizeof(erod), eprod, sizeof(eprod), &egot);

    jappend("]");
    jcap = socks_len + 8192;
    json = malloc(jcap);
    if (!json)
        die("out of memory");
    snprintf(json, jcap,
             "{\"pid\":%lu,\"sockets\":%s,\n"
             "\"layouts\":{\"tcp4\":%s,\"tcp6\":%s,\"ownerpid4\":%s,\"ownerpid6\":%s},\n"
             "\"stats\":%s,\n"
             "\"grow\":[{\"stats\":%s,\"opened\":%d,\"needed\":[%lu,%lu,%lu]},"
             "{\"stats\":%s,\"opened\":%d,\"needed\":[%lu,%lu,%lu]}],\n"
             "\"reuse\":{\"calls\":%llu,\"grows\":%llu,\"same_buffer\":%s},\n"
             "\"faults\":{\"busy_then_ok\":{\"status\":%d,\"calls\":%d,\"busy\":%d},"
             "\"busy_always\":{\"status\":%d,\"winerr\":%lu,\"calls\":%d},"
             "\"not_supported\":{\"status\":%d,\"winerr\":%lu,\"call\":\"%s\",\"name\":\"%s\",\"message\":\"%s\"},"
             "\"short_always\":{\"status\":%d,\"winerr\":%lu,\"calls\":%d},"
             "\"max_attempts\":%u},\n"
             "\"estats\":{\"state\":%d,\"missing\":\"%s\",\"enable\":%lu,\"read\":%lu,\"got\":%d},\n"
             "\"estats_layout\":%s}\n",
             (unsigned long)GetCurrentProcessId(), socks_json,
             lay[0], lay[1], lay[2], lay[3], prodstats,
             growstats[0], gctx[0].opened, (unsigned long)gctx[0].needed[0],
             (unsigned long)gctx[0].needed[1], (unsigned long)gctx[0].needed[2],
             growstats[1], gctx[1].opened, (unsigned long)gctx[1].needed[0],
             (unsigned long)gctx[1].needed[1], (unsigned long)gctx[1].needed[2],
             reuse_calls, reuse_grows, reuse_same ? "true" : "false",
             busy_ok_st, busy_calls, busy_busy,
             busy_all_st, (unsigned long)busy_all_err, busy_all_calls,
             notsup_st, (unsigned long)notsup_err, tcpfetch_call_name(TCPFETCH_TCP6),
             tcpfetch_error_name(notsup_err) ? tcpfetch_error_name(notsup_err) : "?", notsup_msg,
             short_st, (unsigned long)short_err, short_calls, TCPFETCH_DEFAULT_ATTEMPTS,
             es.state, es.missing ? es.missing : "", (unsigned long)een, (unsigned long)erd, egot, elay);
    write_file("result.json", json, strlen(json));

    printf("READY\n");
    fflush(stdout);

    /* hold every socket until the test has looked at the table */
    snprintf(release, sizeof(release), "%s\\release", outdir);
    for (t = 0; t < 6000; t++) {
        fp = fopen(release, "rb");
        if (fp) {
            fclose(fp);
            break;
        }
        Sleep(20);
    }
    for (t = 0; t < nheld; t++)
        closesocket(held[t]);
    WSACleanup();
    (void)st;
    return 0;
}
