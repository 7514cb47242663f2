# The netlink parser of the Linux backend, shared with the destroy feed (_destroy), which
# receives the same inet_diag messages, and _nlparse (recorded bytes); inline, so each
# module that cimports it has its own copy. System and kernel declarations are in _system.pxd.
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from tcpsnap._row cimport tcpsnap_row
from tcpsnap._tcp_info cimport tcpsnap_tcp_info, info_seen, info_attrs
from tcpsnap._cookies cimport cgroup_attr
from tcpsnap._system cimport (
    ntohs, AF_INET, AF_INET6, nlmsghdr, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP_INTR, NLMSG_ALIGN,
    SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK, inet_diag_msg)

cdef enum:
    HDR = 16                       # sizeof(struct nlmsghdr), checked at _netlink's import

# Linux TCP states (include/net/tcp_states.h) -> MIB_TCP_STATE. 0 = not reported.
# TCP_NEW_SYN_RECV (12) is a request socket of a listener: the SYN_RCVD that ss shows.
cdef extern from *:
    """
    static const unsigned char tcpsnap_linux_to_mib[16] = {0, 5, 3, 4, 6, 7, 11, 1, 8, 10, 2, 9, 4, 0, 0, 0};
    """
    const uint8_t LINUX_TO_MIB "tcpsnap_linux_to_mib"[16]

cdef extern from *:
    """
    static inline void tcpsnap_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 3); }
    """
    void prefetch_w "tcpsnap_prefetch_w"(const void *p) noexcept nogil

# A cursor over received netlink bytes, resumable: parsing stops when `out` is full
# and continues from the same message once the caller has grown it.
cdef struct nl_cursor:
    const char *buf
    Py_ssize_t len
    Py_ssize_t off

cdef enum nl_status:
    NL_MORE = 0        # chunk consumed; receive more
    NL_DONE = 1        # NLMSG_DONE for our sequence number
    NL_FULL = 2        # out is full; grow it and call again
    NL_ERROR = 3       # NLMSG_ERROR; errno in nl_result.error
    NL_MALFORMED = 4   # a header or message runs past the bytes received

cdef struct nl_result:
    Py_ssize_t n            # rows written so far
    int error               # errno from NLMSG_ERROR
    int dump_intr           # NLM_F_DUMP_INTR seen: the table changed mid-dump
    Py_ssize_t skipped      # messages of an unknown family or state
    uint64_t netns          # written into every row's netns (the dumped namespace's inode)
    tcpsnap_tcp_info *info  # NULL: no internals; else row i's INET_DIAG_INFO/CONG go to info[i]
    info_seen seen          # the INET_DIAG_INFO lengths seen (when info is set)
    uint64_t *ck            # NULL, or row i's cookie and cgroup id go to ck[2i], ck[2i + 1]:
                            # the dedupe reads them there, not from rows gone out of cache


cdef inline nl_status nl_parse(nl_cursor *cur, uint32_t seq, tcpsnap_row *out, Py_ssize_t cap,
                        nl_result *res) noexcept nogil:
    cdef nlmsghdr h
    cdef const inet_diag_msg *m
    cdef const char *p
    cdef Py_ssize_t rem, step
    cdef tcpsnap_row *r
    cdef uint8_t state
    cdef int err
    while cur.off < cur.len:
        rem = cur.len - cur.off
        p = cur.buf + cur.off
        if rem < HDR:
            return NL_MALFORMED
        memcpy(&h, p, HDR)
        if h.nlmsg_len < HDR or h.nlmsg_len > rem:
            return NL_MALFORMED
        step = NLMSG_ALIGN(h.nlmsg_len)
        if step > rem:
            step = rem
        if h.nlmsg_seq != seq:
            # left over from a dump that was abandoned; never ours to count
            cur.off += step
            continue
        if h.nlmsg_flags & NLM_F_DUMP_INTR:
            res.dump_intr = 1
        if h.nlmsg_type == NLMSG_DONE:
            cur.off += step
            return NL_DONE
        if h.nlmsg_type == NLMSG_ERROR:
            if h.nlmsg_len < HDR + 4:
                return NL_MALFORMED
            memcpy(&err, p + HDR, 4)
            cur.off += step
            if err == 0:
                continue           # an ACK, not an error
            res.error = -err
            return NL_ERROR
        if h.nlmsg_type == SOCK_DIAG_BY_FAMILY or h.nlmsg_type == TCPDIAG_GETSOCK:
            if h.nlmsg_len < HDR + sizeof(inet_diag_msg):
                return NL_MALFORMED
            m = <const inet_diag_msg *>(p + HDR)
            state = LINUX_TO_MIB[m.idiag_state & 15] if m.idiag_state < 16 else 0
            if state == 0 or (m.idiag_family != AF_INET and m.idiag_family != AF_INET6):
                res.skipped += 1
                cur.off += step
                continue
            if res.n >= cap:
                return NL_FULL     # cursor stays on this message
            r = out + res.n
            if res.n + 4 < cap:
                # rows may go to memory not in cache (a recorder's batch): ask for the lines
                # a few rows ahead so that the stores below do not wait for them
                prefetch_w(<const char *>(r + 4))
                prefetch_w(<const char *>(r + 4) + 64)
            r.state = state
            r.offload_state = 0
            r._reserved = 0
            r.local_port = ntohs(m.id.idiag_sport)
            r.remote_port = ntohs(m.id.idiag_dport)
            if m.idiag_family == AF_INET:
                r.family = 4
                memset(r.local_addr, 0, 32)        # both addresses
                memcpy(r.local_addr, &m.id.idiag_src[0], 4)
                memcpy(r.remote_addr, &m.id.idiag_dst[0], 4)
            else:
                r.family = 6
                memcpy(r.local_addr, &m.id.idiag_src[0], 16)
                memcpy(r.remote_addr, &m.id.idiag_dst[0], 16)
            r.local_scope_id = m.id.idiag_if
            r.remote_scope_id = m.id.idiag_if
            r.pid = 0
            r.uid = m.idiag_uid
            r.rx_queue = m.idiag_rqueue
            r.tx_queue = m.idiag_wqueue
            r.inode = m.idiag_inode
            r.cookie = (<uint64_t>m.id.idiag_cookie[1] << 32) | m.id.idiag_cookie[0]
            rem = <Py_ssize_t>h.nlmsg_len - HDR - <Py_ssize_t>sizeof(inet_diag_msg)
            r.cgroup_id = (cgroup_attr(p + HDR + sizeof(inet_diag_msg), rem) if res.info == NULL else
                           info_attrs(p + HDR + sizeof(inet_diag_msg), rem, res.info + res.n, &res.seen))
            r.netns = res.netns
            if res.ck != NULL:
                res.ck[2 * res.n] = r.cookie
                res.ck[2 * res.n + 1] = r.cgroup_id
            res.n += 1
        cur.off += step
    return NL_MORE
