/* tcpfetch: GetTcpTable2 / GetTcp6Table2 / GetExtendedTcpTable into reused buffers.
 * See tcpfetch.h. Windows only (MSVC or mingw-w64); links iphlpapi. */

#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0600     /* Vista: GetTcpTable2 / GetTcp6Table2 */
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif

/* Order matters: ws2tcpip.h brings ws2ipdef.h (IN6_ADDR), which iphlpapi.h needs before it
 * declares GetTcp6Table2 and the IPv6 rows. */
#include <winsock2.h>
#include <ws2tcpip.h>
#include <iphlpapi.h>

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tcpfetch.h"

/* Our spelled-out codes must be the SDK's. */
typedef char tcpfetch_check_no_error[(NO_ERROR == TCPFETCH_NO_ERROR) ? 1 : -1];
typedef char tcpfetch_check_insufficient[(ERROR_INSUFFICIENT_BUFFER == TCPFETCH_ERROR_INSUFFICIENT_BUFFER) ? 1 : -1];
typedef char tcpfetch_check_not_supported[(ERROR_NOT_SUPPORTED == TCPFETCH_ERROR_NOT_SUPPORTED) ? 1 : -1];
typedef char tcpfetch_check_invalid[(ERROR_INVALID_PARAMETER == TCPFETCH_ERROR_INVALID_PARAMETER) ? 1 : -1];
/* The size arguments are ULONG / DWORD: 32 bits on every Windows ABI. */
typedef char tcpfetch_check_ulong[(sizeof(ULONG) == sizeof(uint32_t) && sizeof(DWORD) == sizeof(uint32_t)) ? 1 : -1];

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

uint32_t tcpfetch_iphlpapi(void *ctx, int table, void *buf, uint32_t *size)
{
    ULONG sz = *size;
    DWORD dsz = *size;
    uint32_t r;
    (void)ctx;
    switch (table) {
    case TCPFETCH_TCP4:
        r = GetTcpTable2((PMIB_TCPTABLE2)buf, &sz, FALSE);
        *size = sz;
        return r;
    case TCPFETCH_TCP6:
        r = GetTcp6Table2((PMIB_TCP6TABLE2)buf, &sz, FALSE);
        *size = sz;
        return r;
    case TCPFETCH_OWNER_PID4:
        r = GetExtendedTcpTable(buf, &dsz, FALSE, AF_INET, TCP_TABLE_OWNER_PID_ALL, 0);
        *size = dsz;
        return r;
    case TCPFETCH_OWNER_PID6:
        r = GetExtendedTcpTable(buf, &dsz, FALSE, AF_INET6, TCP_TABLE_OWNER_PID_ALL, 0);
        *size = dsz;
        return r;
    default:
        return ERROR_INVALID_PARAMETER;
    }
}

/* Room for what the call asked for, plus headroom for the rows that appear before the next
 * call: a quarter more and 4 KiB (146 IPv4 / 68 IPv6 rows of MIB_TCP(6)ROW2). */
static uint32_t with_headroom(uint32_t needed)
{
    uint64_t want = (uint64_t)needed + needed / 4 + 4096;
    return want > 0xFFFFFFF0u ? 0xFFFFFFF0u : (uint32_t)want;
}

static int set_capacity(tcpfetch_t *f, tcpfetch_buffer *b, uint32_t cap)
{
    /* The old contents are not needed: free first, so the peak is one buffer. */
    free(b->data);
    b->data = (unsigned char *)malloc(cap ? cap : 1);
    b->cap = b->data ? cap : 0;
    if (!b->data)
        return -1;
    f->grows++;
    return 0;
}

int tcpfetch(tcpfetch_t *f, int table, const unsigned char **buf, size_t *len, uint32_t *winerr)
{
    tcpfetch_buffer *b;
    uint32_t size, r = 0;
    unsigned attempt, attempts;

    *buf = NULL;
    *len = 0;
    *winerr = 0;
    if (table < 0 || table >= TCPFETCH_NTABLES)
        return TCPFETCH_BADARG;
    b = &f->buf[table];
    if (!b->data && set_capacity(f, b, f->initial_size ? f->initial_size : 4) < 0)
        return TCPFETCH_NOMEM;
    attempts = f->max_attempts ? f->max_attempts : 1;

    /* The first call is made with the buffer kept from last time: when the table still fits
     * it is the only call; when it does not, it is the size probe. */
    for (attempt = 0; attempt < attempts; attempt++) {
        size = b->cap;
        r = f->call ? f->call(f->call_ctx, table, b->data, &size)
                    : tcpfetch_iphlpapi(NULL, table, b->data, &size);
        f->calls++;
        if (r == NO_ERROR) {
            /* The SDK documents *size on failure only; Wine sets it to the bytes used. Hand
             * out no more than we own, and never less than the header: the parser checks
             * that dwNumEntries rows fit in what it is given. */
            *buf = b->data;
            *len = (size >= sizeof(DWORD) && size <= b->cap) ? size : b->cap;
            f->fetches++;
            return TCPFETCH_OK;
        }
        if (r == ERROR_INSUFFICIENT_BUFFER) {
            /* On the first call: the size probe. After that: the table grew past the headroom
             * between two calls. A size no larger than what we have would loop forever:
             * double instead. */
            uint32_t needed = size > b->cap ? size : (b->cap > 0x7FFFFFF0u ? 0xFFFFFFF0u : b->cap * 2);
            if (attempt > 0)
                f->retries++;
            if (set_capacity(f, b, with_headroom(needed)) < 0)
                return TCPFETCH_NOMEM;
            if (f->before_retry)
                f->before_retry(f->hook_ctx, table, attempt, needed);
            continue;
        }
        if (r == TCPFETCH_STATUS_UNSUCCESSFUL) {
            /* Documented for heavy load (the table changed size several times in a row
             * while the stack built it): calling again is usually enough. */
            f->busy++;
            f->retries++;
            if (attempt > 0)
                Sleep(1);
            continue;
        }
        *winerr = r;
        return TCPFETCH_WINERR;
    }
    *winerr = r;
    return TCPFETCH_CHANGING;
}

#define OFF(type, field) ((int32_t)offsetof(type, field))
#define LAYOUT(tbl, row, fam) \
    out->header_size = (int32_t)offsetof(tbl, table); \
    out->stride = (int32_t)sizeof(row); \
    out->row_size = (int32_t)sizeof(row); \
    out->family = fam

int tcpfetch_get_layout(int table, tcpfetch_layout *out)
{
    switch (table) {
    case TCPFETCH_TCP4:
        LAYOUT(MIB_TCPTABLE2, MIB_TCPROW2, 4);
        out->off_state = OFF(MIB_TCPROW2, dwState);
        out->off_laddr = OFF(MIB_TCPROW2, dwLocalAddr);
        out->off_lscope = -1;
        out->off_lport = OFF(MIB_TCPROW2, dwLocalPort);
        out->off_raddr = OFF(MIB_TCPROW2, dwRemoteAddr);
        out->off_rscope = -1;
        out->off_rport = OFF(MIB_TCPROW2, dwRemotePort);
        out->off_pid = OFF(MIB_TCPROW2, dwOwningPid);
        out->off_offload = OFF(MIB_TCPROW2, dwOffloadState);
        return 0;
    case TCPFETCH_TCP6:
        LAYOUT(MIB_TCP6TABLE2, MIB_TCP6ROW2, 6);
        out->off_state = OFF(MIB_TCP6ROW2, State);
        out->off_laddr = OFF(MIB_TCP6ROW2, LocalAddr);
        out->off_lscope = OFF(MIB_TCP6ROW2, dwLocalScopeId);
        out->off_lport = OFF(MIB_TCP6ROW2, dwLocalPort);
        out->off_raddr = OFF(MIB_TCP6ROW2, RemoteAddr);
        out->off_rscope = OFF(MIB_TCP6ROW2, dwRemoteScopeId);
        out->off_rport = OFF(MIB_TCP6ROW2, dwRemotePort);
        out->off_pid = OFF(MIB_TCP6ROW2, dwOwningPid);
        out->off_offload = OFF(MIB_TCP6ROW2, dwOffloadState);
        return 0;
    case TCPFETCH_OWNER_PID4:
        LAYOUT(MIB_TCPTABLE_OWNER_PID, MIB_TCPROW_OWNER_PID, 4);
        out->off_state = OFF(MIB_TCPROW_OWNER_PID, dwState);
        out->off_laddr = OFF(MIB_TCPROW_OWNER_PID, dwLocalAddr);
        out->off_lscope = -1;
        out->off_lport = OFF(MIB_TCPROW_OWNER_PID, dwLocalPort);
        out->off_raddr = OFF(MIB_TCPROW_OWNER_PID, dwRemoteAddr);
        out->off_rscope = -1;
        out->off_rport = OFF(MIB_TCPROW_OWNER_PID, dwRemotePort);
        out->off_pid = OFF(MIB_TCPROW_OWNER_PID, dwOwningPid);
        out->off_offload = -1;
        return 0;
    case TCPFETCH_OWNER_PID6:
        LAYOUT(MIB_TCP6TABLE_OWNER_PID, MIB_TCP6ROW_OWNER_PID, 6);
        out->off_state = OFF(MIB_TCP6ROW_OWNER_PID, dwState);
        out->off_laddr = OFF(MIB_TCP6ROW_OWNER_PID, ucLocalAddr);
        out->off_lscope = OFF(MIB_TCP6ROW_OWNER_PID, dwLocalScopeId);
        out->off_lport = OFF(MIB_TCP6ROW_OWNER_PID, dwLocalPort);
        out->off_raddr = OFF(MIB_TCP6ROW_OWNER_PID, ucRemoteAddr);
        out->off_rscope = OFF(MIB_TCP6ROW_OWNER_PID, dwRemoteScopeId);
        out->off_rport = OFF(MIB_TCP6ROW_OWNER_PID, dwRemotePort);
        out->off_pid = OFF(MIB_TCP6ROW_OWNER_PID, dwOwningPid);
        out->off_offload = -1;
        return 0;
    default:
        return -1;
    }
}

const char *tcpfetch_call_name(int table)
{
    switch (table) {
    case TCPFETCH_TCP4: return "GetTcpTable2";
    case TCPFETCH_TCP6: return "GetTcp6Table2";
    case TCPFETCH_OWNER_PID4: return "GetExtendedTcpTable(AF_INET, TCP_TABLE_OWNER_PID_ALL)";
    case TCPFETCH_OWNER_PID6: return "GetExtendedTcpTable(AF_INET6, TCP_TABLE_OWNER_PID_ALL)";
    default: return "(no such table)";
    }
}

const char *tcpfetch_error_name(uint32_t winerr)
{
    switch (winerr) {
    case TCPFETCH_NO_ERROR: return "NO_ERROR";
    case TCPFETCH_ERROR_NOT_SUPPORTED: return "ERROR_NOT_SUPPORTED";
    case TCPFETCH_ERROR_INVALID_PARAMETER: return "ERROR_INVALID_PARAMETER";
    case TCPFETCH_ERROR_INSUFFICIENT_BUFFER: return "ERROR_INSUFFICIENT_BUFFER";
    case TCPFETCH_STATUS_UNSUCCESSFUL: return "STATUS_UNSUCCESSFUL";
    case 8u: return "ERROR_NOT_ENOUGH_MEMORY";
    default: return NULL;
    }
}

void tcpfetch_error_message(uint32_t winerr, char *out, size_t n)
{
    DWORD len;
    if (!n)
        return;
    out[0] = 0;
    len = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, winerr,
                         0, out, (DWORD)(n > 0xFFFF ? 0xFFFF : n), NULL);
    if (len >= n)
        len = (DWORD)n - 1;
    /* drop the trailing ".\r\n" FormatMessage ends its messages with */
    while (len > 0 && (out[len - 1] == '\r' || out[len - 1] == '\n' || out[len - 1] == ' ' || out[len - 1] == '.'))
        len--;
    out[len] = 0;
}
