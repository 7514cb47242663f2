/* tcpfetch: the Windows TCP tables (IP Helper) into buffers it owns and reuses.
 *
 * Plain C, no Python: tcpsnap's Windows extension calls it with the GIL released, and
 * tests/wine/driver.c runs the very same code under Wine. This header needs no Windows
 * header, so Cython (and any platform) can read it; tcpfetch.c is built on Windows only
 * and links iphlpapi.
 *
 * One tcpfetch_t per user (tcpsnap: one per Snapshotter); never shared between threads
 * without a lock, never a global.
 */
#ifndef TCPSNAP_TCPFETCH_H
#define TCPSNAP_TCPFETCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The tables tcpfetch knows. */
enum tcpfetch_table {
    TCPFETCH_TCP4 = 0,        /* GetTcpTable2(.., Order=FALSE): MIB_TCPTABLE2 */
    TCPFETCH_TCP6 = 1,        /* GetTcp6Table2(.., Order=FALSE): MIB_TCP6TABLE2 */
    TCPFETCH_OWNER_PID4 = 2,  /* GetExtendedTcpTable(AF_INET, TCP_TABLE_OWNER_PID_ALL) */
    TCPFETCH_OWNER_PID6 = 3,  /* GetExtendedTcpTable(AF_INET6, TCP_TABLE_OWNER_PID_ALL) */
    TCPFETCH_NTABLES = 4
};

enum tcpfetch_status {
    TCPFETCH_OK = 0,
    TCPFETCH_WINERR = 1,      /* the call failed; *winerr is its return code */
    TCPFETCH_CHANGING = 2,    /* every one of max_attempts calls said ERROR_INSUFFICIENT_BUFFER
                                 or STATUS_UNSUCCESSFUL: the table kept changing; *winerr is the last */
    TCPFETCH_NOMEM = 3,       /* the buffer could not be (re)allocated */
    TCPFETCH_BADARG = 4       /* no such table */
};

/* Return codes tcpfetch acts on (winerror.h / ntstatus.h values, spelled out so that this
 * header needs no Windows header). */
#define TCPFETCH_NO_ERROR                  0u
#define TCPFETCH_ERROR_NOT_SUPPORTED       50u
#define TCPFETCH_ERROR_INVALID_PARAMETER   87u
#define TCPFETCH_ERROR_INSUFFICIENT_BUFFER 122u
#define TCPFETCH_STATUS_UNSUCCESSFUL       0xC0000001u

#define TCPFETCH_DEFAULT_ATTEMPTS     8u
#define TCPFETCH_DEFAULT_INITIAL_SIZE 16384u

/* The IP Helper call for one table: (buffer, in/out size) -> Windows return code.
 * tcpfetch_iphlpapi is the real one; tests may put a wrapper around it. */
typedef uint32_t (*tcpfetch_call_fn)(void *ctx, int table, void *buf, uint32_t *size);

/* Called after a call said ERROR_INSUFFICIENT_BUFFER and the buffer has grown, right before
 * the next call: a test opens sockets here to make the table outgrow the headroom. */
typedef void (*tcpfetch_hook_fn)(void *ctx, int table, unsigned attempt, uint32_t needed);

typedef struct tcpfetch_buffer {
    unsigned char *data;
    uint32_t cap;             /* bytes allocated */
} tcpfetch_buffer;

typedef struct tcpfetch {
    tcpfetch_buffer buf[TCPFETCH_NTABLES];
    unsigned max_attempts;    /* calls per fetch before TCPFETCH_CHANGING */
    uint32_t initial_size;    /* bytes allocated before a table's first call */
    /* counters, cumulative over the life of the struct */
    uint64_t fetches;         /* tcpfetch() calls that returned TCPFETCH_OK */
    uint64_t calls;           /* IP Helper calls made */
    uint64_t retries;         /* calls that said the table changed under us: ERROR_INSUFFICIENT_BUFFER
                                 after the buffer was grown to the size asked for, or
                                 STATUS_UNSUCCESSFUL (a first call's ERROR_INSUFFICIENT_BUFFER is
                                 the size probe, not a retry) */
    uint64_t grows;           /* buffer (re)allocations */
    uint64_t busy;            /* STATUS_UNSUCCESSFUL returns (counted in retries too) */
    /* test seams, NULL in production */
    tcpfetch_call_fn call;    /* NULL: tcpfetch_iphlpapi */
    void *call_ctx;
    tcpfetch_hook_fn before_retry;
    void *hook_ctx;
} tcpfetch_t;

/* Where each field sits in a table, as the SDK headers this file was compiled with say
 * (offsetof / sizeof). -1: not in this table. */
typedef struct tcpfetch_layout {
    int32_t header_size;      /* offsetof(table struct, table) */
    int32_t stride;           /* sizeof(row struct): distance between rows */
    int32_t row_size;
    int32_t family;           /* 4 or 6 */
    int32_t off_state, off_laddr, off_lscope, off_lport;
    int32_t off_raddr, off_rscope, off_rport, off_pid, off_offload;
} tcpfetch_layout;

/* Zero the struct and set the defaults; allocates nothing. */
void tcpfetch_init(tcpfetch_t *f);
/* Free the buffers; the struct can be used again (it reallocates). */
void tcpfetch_free(tcpfetch_t *f);

/* Fetch one table into f's buffer for it. On TCPFETCH_OK, *buf / *len are the table's bytes,
 * valid until the next tcpfetch() for the same table or tcpfetch_free(). Otherwise *winerr
 * holds the Windows return code (0 for NOMEM / BADARG). Never touches Python; safe to run
 * without the GIL. */
int tcpfetch(tcpfetch_t *f, int table, const unsigned char **buf, size_t *len, uint32_t *winerr);

/* The real IP Helper call (ctx unused). */
uint32_t tcpfetch_iphlpapi(void *ctx, int table, void *buf, uint32_t *size);

/* Layout of a table from the SDK headers; 0 on success, -1 for no such table. */
int tcpfetch_get_layout(int table, tcpfetch_layout *out);

/* "GetTcpTable2", ...: the call behind a table, for error messages. */
const char *tcpfetch_call_name(int table);
/* "ERROR_INSUFFICIENT_BUFFER", ... for the codes above, NULL for others. */
const char *tcpfetch_error_name(uint32_t winerr);
/* The system's message for a Windows error code (FormatMessage) into out; "" if it has none. */
void tcpfetch_error_message(uint32_t winerr, char *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
