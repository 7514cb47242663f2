# TCP internals (issue 14): the C row of TCP_INFO_DTYPE and the parsers of the inet_diag
# attributes that fill it, for every module that receives inet_diag messages (the dump in
# _netlink, the destroy feed in _destroy). The parsers are C (_tcp_info.h), inline:
# cimporting them adds no import of another compiled module.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from "_tcp_info.h" nogil:
    ctypedef struct tcpsnap_tcp_info:
        uint64_t bytes_acked
        uint64_t bytes_received
        uint64_t bytes_sent
        uint64_t bytes_retrans
        uint64_t delivery_rate
        uint64_t pacing_rate
        uint64_t busy_time
        uint64_t rwnd_limited
        uint64_t sndbuf_limited
        uint32_t rtt
        uint32_t rttvar
        uint32_t min_rtt
        uint32_t rcv_rtt
        uint32_t rto
        uint32_t snd_cwnd
        uint32_t snd_ssthresh
        uint32_t snd_mss
        uint32_t rcv_mss
        uint32_t pmtu
        uint32_t total_retrans
        uint32_t retrans
        uint32_t lost
        uint32_t sacked
        uint32_t unacked
        uint32_t rcv_space
        uint32_t notsent_bytes
        uint32_t segs_in
        uint32_t segs_out
        uint32_t data_segs_in
        uint32_t data_segs_out
        uint32_t delivered
        uint32_t dsack_dups
        uint32_t reord_seen
        uint32_t snd_wnd
        uint32_t rcv_wnd
        uint32_t last_data_sent
        uint32_t last_data_recv
        uint32_t last_ack_recv
        uint32_t total_rto_time
        char congestion[16]
        uint16_t tcp_info_len
        uint16_t total_rto
        uint8_t ca_state
        uint8_t backoff
        uint8_t retransmits
        uint8_t estats
    ctypedef struct tcpsnap_tcp_info_field:
        const char *name
        uint16_t koff, ksize, off, size
    const size_t TCP_INFO_KNOWN "TCPSNAP_TCP_INFO_KNOWN"
    # an INET_DIAG_INFO payload -> every tcp_info field of *out (by offset and length:
    # fields the payload does not cover whole are 0) and out.tcp_info_len = length (capped)
    void tcp_info_from_attr(const uint8_t *data, size_t length, tcpsnap_tcp_info *out) noexcept
    # an INET_DIAG_CONG payload -> out.congestion (NUL-padded)
    void tcp_info_cong(const uint8_t *data, size_t length, tcpsnap_tcp_info *out) noexcept
    const tcpsnap_tcp_info_field *tcp_info_fields(size_t *n) noexcept
    # Windows: GetPerTcpConnectionEStats' TCP_ESTATS_DATA_ROD_v0 and _PATH_ROD_v0 (either
    # NULL or short: not read) -> *out, out.estats saying which were read
    void tcp_info_from_estats(const uint8_t *data, size_t dlen, const uint8_t *path, size_t plen,
                              tcpsnap_tcp_info *out) noexcept
    const size_t ESTATS_DATA_ROD_SIZE "TCPSNAP_ESTATS_DATA_ROD_SIZE"
    const size_t ESTATS_PATH_ROD_SIZE "TCPSNAP_ESTATS_PATH_ROD_SIZE"

# Windows: which connections a snapshot reads GetPerTcpConnectionEStats for (at most cap, in
# round-robin) and enables collection for (first seen); plain C on rows (_win/estats_plan.h),
# used by _windows and, through EstatsPlan, by tests on any platform.
from tcpsnap._row cimport tcpsnap_row

cdef extern from "_win/estats_plan.h" nogil:
    ctypedef struct estats_plan:
        size_t cap
        uint64_t cursor
        int has_cursor
        size_t ncur
        size_t nseen
        uint32_t *fresh
        size_t nfresh
        uint32_t *pick
        size_t npick
    const size_t ESTATS_DEFAULT_CAP "TCPSNAP_ESTATS_DEFAULT_CAP"
    uint64_t estats_key(const tcpsnap_row *r) noexcept
    void estats_plan_init(estats_plan *p, size_t cap) noexcept
    void estats_plan_free(estats_plan *p) noexcept
    int estats_plan_run(estats_plan *p, const tcpsnap_row *rows, size_t n) noexcept


cdef enum:
    INET_DIAG_INFO = 2             # include/uapi/linux/inet_diag.h
    INET_DIAG_CONG = 4
    INET_DIAG_CGROUP_ID_ = 21
    # idiag_ext bits asking a dump for them: 1 << (attribute - 1)
    EXT_INFO = 1 << (INET_DIAG_INFO - 1)
    EXT_CONG = 1 << (INET_DIAG_CONG - 1)


cdef struct info_seen:
    # what a dump's INET_DIAG_INFO attributes were like (the recording's metadata)
    uint32_t len_max               # the longest struct tcp_info seen
    uint64_t longer                # attributes longer than TCP_INFO_KNOWN (parsed up to it)


cdef inline uint64_t info_attrs(const char *a, Py_ssize_t rem, tcpsnap_tcp_info *out,
                                info_seen *seen) noexcept nogil:
    # The attributes after inet_diag_msg (struct rtattr: u16 length, u16 type, 4-aligned),
    # in one pass: INET_DIAG_INFO and INET_DIAG_CONG into *out (every field written: a
    # socket without them, TIME_WAIT or a request socket, gets zeros), and the
    # INET_DIAG_CGROUP_ID value returned (0: none), as _cookies.cgroup_attr does when
    # internals are not asked.
    cdef uint16_t alen, atype
    cdef Py_ssize_t step
    cdef uint64_t cg = 0
    cdef const uint8_t *info = NULL
    cdef const uint8_t *cong = NULL
    cdef size_t ilen = 0, clen = 0
    while rem >= 4:
        memcpy(&alen, a, 2)
        memcpy(&atype, a + 2, 2)
        if alen < 4 or alen > rem:
            break
        if atype == INET_DIAG_INFO:
            info, ilen = <const uint8_t *>a + 4, alen - 4
        elif atype == INET_DIAG_CONG:
            cong, clen = <const uint8_t *>a + 4, alen - 4
        elif atype == INET_DIAG_CGROUP_ID_ and alen >= 12:
            memcpy(&cg, a + 4, 8)
        step = (<Py_ssize_t>alen + 3) & ~3     # in a Py_ssize_t: 65535 rounds to 65536, not 0
        if step >= rem:
            break
        a += step
        rem -= step
    if info != NULL:
        # writes every kernel field and tcp_info_len; the rest is ours to set
        tcp_info_from_attr(info, ilen, out)
        if ilen > seen.len_max:
            seen.len_max = ilen
        if ilen > TCP_INFO_KNOWN:
            seen.longer += 1
    else:
        memset(out, 0, sizeof(tcpsnap_tcp_info))
    if cong != NULL:
        tcp_info_cong(cong, clen, out)
    else:
        memset(out.congestion, 0, sizeof(out.congestion))
    out.estats = 0
    return cg
