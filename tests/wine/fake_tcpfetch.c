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
