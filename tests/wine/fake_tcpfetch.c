/* A stand-in for src/tcpsnap/_win/tcpfetch.c, for tests on Linux only.
 *
 * tcpsnap._windows (the real Cython backend) is linked against this instead of the IP Helper
 * layer, so that it can be built and run here: each table's tcpfetch() hands out the bytes the
 * test set with tcpfetch_fake_set() (buffers Wine returned, or hand-made ones), or fails with
 * the status and Windows error code the test chose. Everything above tcpfetch() -- the GIL
 * release, the shared parser, row growth, the error helper, the counters -- is the real code.
 */
#include <stdlib.h>
#include <string.h>

#include "tcpfetch.h"

static struct {
    unsigned char *data;
    size_t len;
    int status;
    uint32_t winerr;
    int calls;
} fake[TCPFETCH_NTABLES];

void tcpfetch_fake_set(int table, const unsigned char *data, size_t len, int status, uint32_t winerr)
{
    free(fake[table].data);
    fake[table].data = malloc(len ? len : 1);
    memcpy(fake[table].data, data, len);
    fake[table].len = len;
    fake[table].status = status;
    fake[table].winerr = winerr;
    fake[table].calls = 0;
}

int tcpfetch_fake_calls(int table)
{
    return fake[table].calls;
}

void tcpfetch_init(tcpfetch_t *f)
{
    memset(f, 0, sizeof(*f));
    f->max_attempts = TCPFETCH_DEFAULT_ATTEMPTS;
    f->initial_size = TCPFETCH_DEFAULT_INITIAL_SIZE;
}

void tcpfetch_free(tcpfetch_t *f)
{
    int i;
    for (i = 0; i < TCPFETCH_NTABLES; i++) {
        free(f->buf[i].data);
        f->buf[i].data = NULL;
        f->buf[i].cap = 0;
    }
}

int tcpfetch(tcpfetch_t *f, int table, const unsigned char **buf, size_t *len, uint32_t *winerr)
{
    tcpfetch_buffer *b;
    *buf = NULL;
    *len = 0;
    *winerr = 0;
    if (table < 0 || table >= TCPFETCH_NTABLES)
        return TCPFETCH_BADARG;
    fake[table].calls++;
    f->calls++;
    if (fake[table].status != TCPFETCH_OK) {
        *winerr = fake[table].winerr;
        return fake[table].status;
    }
    b = &f->buf[table];
    if (b->cap < fake[table].len) {      /* like the real one: the buffer belongs to f */
        free(b->data);
        b->data = malloc(fake[table].len);
        b->cap = (uint32_t)fake[table].len;
        f->grows++;
    }
    memcpy(b->data, fake[table].data, fake[table].len);
    *buf = b->data;
    *len = fake[table].len;
    f->fetches++;
    return TCPFETCH_OK;
}

/* The x86_64 SDK's layouts (tests/test_windows_wine.py checks them against mingw-w64's). */
int tcpfetch_get_layout(int table, tcpfetch_layout *out)
{
    static const tcpfetch_layout l[TCPFETCH_NTABLES] = {
        {4, 28, 28, 4, 0, 4, -1, 8, 12, -1, 16, 20, 24},
        {4, 60, 60, 6, 48, 0, 16, 20, 24, 40, 44, 52, 56},
        {4, 24, 24, 4, 0, 4, -1, 8, 12, -1, 16, 20, -1},
        {4, 56, 56, 6, 48, 0, 16, 20, 24, 40, 44, 52, -1},
    };
    if (table < 0 || table >= TCPFETCH_NTABLES)
        return -1;
    *out = l[table];
    return 0;
}

const char *tcpfetch_call_name(int table)
{
    static const char *n[TCPFETCH_NTABLES] = {
        "GetTcpTable2", "GetTcp6Table2", "GetExtendedTcpTable(AF_INET, TCP_TABLE_OWNER_PID_ALL)",
        "GetExtendedTcpTable(AF_INET6, TCP_TABLE_OWNER_PID_ALL)"};
    return table >= 0 && table < TCPFETCH_NTABLES ? n[table] : "(no such table)";
}

const char *tcpfetch_error_name(uint32_t winerr)
{
    switch (winerr) {
    case TCPFETCH_ERROR_NOT_SUPPORTED: return "ERROR_NOT_SUPPORTED";
    case TCPFETCH_ERROR_INVALID_PARAMETER: return "ERROR_INVALID_PARAMETER";
    case TCPFETCH_ERROR_INSUFFICIENT_BUFFER: return "ERROR_INSUFFICIENT_BUFFER";
    case TCPFETCH_STATUS_UNSUCCESSFUL: return "STATUS_UNSUCCESSFUL";
    default: return NULL;
    }
}

void tcpfetch_error_message(uint32_t winerr, char *out, size_t n)
{
    (void)winerr;
    if (n)
        out[0] = 0;       /* FormatMessage's text exists on Windows only */
}

/* --- tcpestats (src/tcpsnap/_win/estats.c) ------------------------------------------------------
 * The state tcpestats_open() reports is the test's (tcpestats_fake_state); when READY, enabling
 * records the connection and reading hands out a TCP_ESTATS_DATA_ROD_v0 / _PATH_ROD_v0 made from
 * it: DataBytesOut = local port, ThruBytesReceived = remote port, DataSegsOut = the times it was
 * read, SmoothedRtt = 1 + the times it was enabled (ms). A connection never enabled fails to read
 * (ERROR_NOT_FOUND-like), as Windows gives no Rod for it. */
#include "estats.h"

#define FAKE_CONNS 4096
static int fake_state = TCPESTATS_NO_EXPORT;
static const char *fake_missing = "GetPerTcpConnectionEStats";
static int fake_deny_after = -1;          /* enables allowed before ERROR_ACCESS_DENIED (-1: never) */
static struct { tcpestats_conn c; int enabled, reads; } fake_conn[FAKE_CONNS];
static int fake_nconn, fake_enables, fake_reads;

void tcpestats_fake_state(int state, int deny_after)
{
    fake_state = state;
    fake_deny_after = deny_after;
    fake_nconn = fake_enables = fake_reads = 0;
    memset(fake_conn, 0, sizeof(fake_conn));
}

int tcpestats_fake_calls(int reads) { return reads ? fake_reads : fake_enables; }

/* how often the connection with this local port was enabled (what=0) or read (what=1) */
int tcpestats_fake_conn(uint16_t lport, int what)
{
    int i;
    for (i = 0; i < fake_nconn; i++)
        if (fake_conn[i].c.local_port == lport)
            return what ? fake_conn[i].reads : fake_conn[i].enabled;
    return 0;
}

static int fake_find(const tcpestats_conn *c)
{
    int i;
    for (i = 0; i < fake_nconn; i++)
        if (memcmp(&fake_conn[i].c, c, sizeof(*c)) == 0)
            return i;
    return -1;
}

int tcpestats_open(tcpestats_t *e)
{
    memset(e, 0, sizeof(*e));
    e->state = fake_state;
    e->missing = fake_state == TCPESTATS_NO_EXPORT ? fake_missing : NULL;
    e->v6 = 1;
    return e->state;
}

uint32_t tcpestats_enable(tcpestats_t *e, const tcpestats_conn *c)
{
    int i;
    if (e->state != TCPESTATS_READY)
        return 50;
    if (fake_deny_after >= 0 && fake_enables >= fake_deny_after) {
        e->state = TCPESTATS_NOT_ELEVATED;
        return TCPESTATS_ERROR_ACCESS_DENIED;
    }
    fake_enables++;
    i = fake_find(c);
    if (i < 0 && fake_nconn < FAKE_CONNS) {
        i = fake_nconn++;
        fake_conn[i].c = *c;
    }
    if (i >= 0)
        fake_conn[i].enabled++;
    e->enabled++;
    return 0;
}

uint32_t tcpestats_read(tcpestats_t *e, const tcpestats_conn *c, uint8_t *data, size_t dlen,
                        uint8_t *path, size_t plen, int *got)
{
    int i = fake_find(c);
    uint64_t v;
    uint32_t rtt;
    *got = 0;
    if (e->state != TCPESTATS_READY)
        return 50;
    fake_reads++;
    if (i < 0 || !fake_conn[i].enabled) {
        e->failures++;
        return TCPESTATS_ERROR_NOT_FOUND;
    }
    fake_conn[i].reads++;
    memset(data, 0, dlen);
    memset(path, 0, plen);
    v = c->local_port;
    memcpy(data + 0, &v, 8);              /* DataBytesOut */
    v = (uint64_t)fake_conn[i].reads;
    memcpy(data + 8, &v, 8);              /* DataSegsOut */
    v = c->remote_port;
    memcpy(data + 88, &v, 8);             /* ThruBytesReceived */
    rtt = 1 + (uint32_t)fake_conn[i].enabled;
    memcpy(path + 108, &rtt, 4);          /* SmoothedRtt, ms */
    *got = 3;
    e->reads++;
    return 0;
}
