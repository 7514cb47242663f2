# Declarations for the Windows backend: the native fetch layer, one extern block per header.
from libc.stdint cimport int32_t, uint32_t, uint64_t

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
