# Declarations for the Windows backend: the native fetch layer, one extern block per header.
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "_win/tcpfetch.h" nogil:
    enum:
        TCPFETCH_TCP4
        TCPFETCH_TCP6
        TCPFETCH_OWNER_PID4
        TCPFETCH_OWNER_PID6
        TCPFETCH_NTABLES
    enum:
        TCPFETCH_OK
        TCPFETCH_WINERR
        TCPFETCH_CHANGING
        TCPFETCH_NOMEM
        TCPFETCH_BADARG
    enum:
        TCPFETCH_ERROR_NOT_SUPPORTED
        TCPFETCH_ERROR_INSUFFICIENT_BUFFER

    ctypedef struct tcpfetch_t:
        unsigned max_attempts
        uint32_t initial_size
        uint64_t fetches
        uint64_t calls
        uint64_t retries
        uint64_t grows
        uint64_t busy

    ctypedef struct tcpfetch_layout:
        int32_t header_size
        int32_t stride
        int32_t row_size
        int32_t family
        int32_t off_state
        int32_t off_laddr
        int32_t off_lscope
        int32_t off_lport
        int32_t off_raddr
        int32_t off_rscope
        int32_t off_rport
        int32_t off_pid
        int32_t off_offload

    void tcpfetch_init(tcpfetch_t *f)
    void tcpfetch_free(tcpfetch_t *f)
    int tcpfetch(tcpfetch_t *f, int table, const unsigned char **buf, size_t *len, uint32_t *winerr)
    int tcpfetch_get_layout(int table, tcpfetch_layout *out)
    const char *tcpfetch_call_name(int table)
    const char *tcpfetch_error_name(uint32_t winerr)
    void tcpfetch_error_message(uint32_t winerr, char *out, size_t n)

cdef extern from "_win/estats.h" nogil:
    enum:
        TCPESTATS_READY
        TCPESTATS_NO_DLL
        TCPESTATS_NO_EXPORT
        TCPESTATS_NOT_ELEVATED
        TCPESTATS_NOT_OPENED
    ctypedef struct tcpestats_conn:
        uint8_t family
        uint8_t local_addr[16]
        uint8_t remote_addr[16]
        uint16_t local_port, remote_port
        uint32_t local_scope_id, remote_scope_id
    ctypedef struct tcpestats_t:
        int state
        const char *missing
        int v6
        uint64_t enabled
        uint64_t reads
        uint64_t failures
    int tcpestats_open(tcpestats_t *e)
    uint32_t tcpestats_enable(tcpestats_t *e, const tcpestats_conn *c)
    uint32_t tcpestats_read(tcpestats_t *e, const tcpestats_conn *c, uint8_t *data, size_t dlen,
                            uint8_t *path, size_t plen, int *got)
