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
    PREFETCH_ROWS = 16             # how far ahead nl_parse asks for the rows' lines

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

# One row from one inet_diag_msg (state already mapped, cgroup from its attributes). On a
# little-endian machine as twelve 8-byte words assembled in registers: a field-by-field
# row is ~20 stores, each one waiting in the store buffer for a line that is not in cache
# (the rows are), and the buffer fills; 12 stores wait less. The cookie and cgroup go to
# ckc[n], ckg[n] (when ckc is set) from registers, never loaded back from the row.
cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #include <arpa/inet.h>
    #include <sys/socket.h>
    #include <linux/inet_diag.h>
    #include "_row.h"
    static inline void tcpsnap_put_row(tcpsnap_row *r, const struct inet_diag_msg *m, uint8_t state,
                                       uint64_t cookie, uint64_t cgroup, uint64_t netns, uint64_t *ckc,
                                       uint64_t *ckg, Py_ssize_t n)
    {
        int v4 = m->idiag_family == AF_INET;
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        char *d = (char *)r;
        uint64_t w;
        uint32_t a;
    #define TCPSNAP_W(off, v) do { w = (v); memcpy(d + (off), &w, 8); } while (0)
        TCPSNAP_W(0, (uint64_t)(v4 ? 4 : 6) | ((uint64_t)state << 8)
                     | ((uint64_t)ntohs(m->id.idiag_sport) << 32) | ((uint64_t)ntohs(m->id.idiag_dport) << 48));
        if (v4) {                                   /* IPv4 in the first 4 bytes, rest zero */
            memcpy(&a, &m->id.idiag_src[0], 4);
            TCPSNAP_W(8, a);
            TCPSNAP_W(16, 0);
            memcpy(&a, &m->id.idiag_dst[0], 4);
            TCPSNAP_W(24, a);
            TCPSNAP_W(32, 0);
        } else {
            memcpy(d + 8, m->id.idiag_src, 16);
            memcpy(d + 24, m->id.idiag_dst, 16);
        }
        TCPSNAP_W(40, (uint64_t)m->id.idiag_if | ((uint64_t)m->id.idiag_if << 32));   /* both scope ids */
        TCPSNAP_W(48, (uint64_t)m->idiag_uid << 32);                                  /* pid 0, uid */
        TCPSNAP_W(56, (uint64_t)m->idiag_rqueue | ((uint64_t)m->idiag_wqueue << 32));
        TCPSNAP_W(64, m->idiag_inode);
        TCPSNAP_W(72, cookie);
        TCPSNAP_W(80, cgroup);
        TCPSNAP_W(88, netns);
    #undef TCPSNAP_W
    #else
        r->family = v4 ? 4 : 6;
        r->state = state;
        r->offload_state = 0;
        r->_reserved = 0;
        r->local_port = ntohs(m->id.idiag_sport);
        r->remote_port = ntohs(m->id.idiag_dport);
        memset(r->local_addr, 0, 32);
        memcpy(r->local_addr, m->id.idiag_src, v4 ? 4 : 16);
        memcpy(r->remote_addr, m->id.idiag_dst, v4 ? 4 : 16);
        r->local_scope_id = r->remote_scope_id = m->id.idiag_if;
        r->pid = 0;
        r->uid = m->idiag_uid;
        r->rx_queue = m->idiag_rqueue;
        r->tx_queue = m->idiag_wqueue;
        r->inode = m->idiag_inode;
        r->cookie = cookie;
        r->cgroup_id = cgroup;
        r->netns = netns;
    #endif
        if (ckc) {
            ckc[n] = cookie;
            ckg[n] = cgroup;
        }
    }
    """
    void put_row "tcpsnap_put_row"(tcpsnap_row *r, const inet_diag_msg *m, uint8_t state, uint64_t cookie,
                                   uint64_t cgroup, uint64_t netns, uint64_t *ckc, uint64_t *ckg,
                                   Py_ssize_t n) noexcept nogil

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
    uint64_t *ckc           # NULL, or row i's cookie goes to ckc[i] and its cgroup id to
    uint64_t *ckg           # ckg[i]: the dedupe's arrays of this dump (cookie_room), which
                            # it reads there, not from rows gone out of cache
    const uint64_t *pc      # the previous dump's cookies and cgroups in order (pc[:np],
    const uint64_t *pg      # pg[:np]; np 0: none), and how many rows from the first on
    Py_ssize_t np           # were each where the previous dump had it: row i's cookie is
    Py_ssize_t fast         # pc[i] (then a cgroup of 0 became pg[i]); cookie_dedupe's
                            # in-order pass would take each so, and starts after them


cdef inline nl_status nl_parse(nl_cursor *cur, uint32_t seq, tcpsnap_row *out, Py_ssize_t cap,
                        nl_result *res) noexcept nogil:
    cdef nlmsghdr h
    cdef const inet_diag_msg *m
    cdef const char *p
    cdef Py_ssize_t rem, step
    cdef uint8_t state
    cdef int err
    cdef uint64_t cgroup, cookie
    cdef nl_status st = NL_MORE
    # the cursor and result in locals, written back once: the row stores may alias anything
    # (byte fields), so fields read through cur and res would be loaded again for every row
    cdef const char *buf = cur.buf
    cdef Py_ssize_t off = cur.off, end = cur.len, n = res.n
    cdef uint64_t *ckc = res.ckc
    cdef uint64_t *ckg = res.ckg
    cdef uint64_t netns = res.netns
    cdef tcpsnap_tcp_info *info = res.info
    cdef const uint64_t *pc = res.pc
    cdef const uint64_t *pg = res.pg
    cdef Py_ssize_t np = res.np, fast = res.fast
    while off < end:
        rem = end - off
        p = buf + off
        if rem < HDR:
            st = NL_MALFORMED
            break
        memcpy(&h, p, HDR)
        if h.nlmsg_len < HDR or h.nlmsg_len > rem:
            st = NL_MALFORMED
            break
        step = NLMSG_ALIGN(h.nlmsg_len)
        if step > rem:
            step = rem
        if h.nlmsg_seq != seq:
            # left over from a dump that was abandoned; never ours to count
            off += step
            continue
        if h.nlmsg_flags & NLM_F_DUMP_INTR:
            res.dump_intr = 1
        if h.nlmsg_type == SOCK_DIAG_BY_FAMILY or h.nlmsg_type == TCPDIAG_GETSOCK:
            if h.nlmsg_len < HDR + sizeof(inet_diag_msg):
                st = NL_MALFORMED
                break
            m = <const inet_diag_msg *>(p + HDR)
            state = LINUX_TO_MIB[m.idiag_state & 15] if m.idiag_state < 16 else 0
            if state == 0 or (m.idiag_family != AF_INET and m.idiag_family != AF_INET6):
                res.skipped += 1
                off += step
                continue
            if n >= cap:
                st = NL_FULL       # cursor stays on this message
                break
            if n + PREFETCH_ROWS < cap:
                # rows go to memory not in cache (a recorder's batch; at 1 s our own rows too,
                # which the kernel's walk has evicted): ask for the lines some rows ahead so
                # that the stores below do not wait for them
                prefetch_w(<const char *>(out + n + PREFETCH_ROWS))
                prefetch_w(<const char *>(out + n + PREFETCH_ROWS) + 64)
            rem = <Py_ssize_t>h.nlmsg_len - HDR - <Py_ssize_t>sizeof(inet_diag_msg)
            cgroup = (cgroup_attr(p + HDR + sizeof(inet_diag_msg), rem) if info == NULL else
                      info_attrs(p + HDR + sizeof(inet_diag_msg), rem, info + n, &res.seen))
            cookie = (<uint64_t>m.id.idiag_cookie[1] << 32) | m.id.idiag_cookie[0]
            if fast == n and n < np and pc[n] == cookie:
                # every row so far where the previous dump had it: this one too (the table
                # did not change up to here), and the dedupe has nothing to do for it
                if cgroup == 0:
                    cgroup = pg[n]     # a timewait row: its connection's
                fast = n + 1
            put_row(out + n, m, state, cookie, cgroup, netns, ckc, ckg, n)
            n += 1
        elif h.nlmsg_type == NLMSG_DONE:
            off += step
            st = NL_DONE
            break
        elif h.nlmsg_type == NLMSG_ERROR:
            if h.nlmsg_len < HDR + 4:
                st = NL_MALFORMED
                break
            memcpy(&err, p + HDR, 4)
            off += step
            if err == 0:
                continue           # an ACK, not an error
            res.error = -err
            st = NL_ERROR
            break
        off += step
    cur.off = off
    res.n = n
    res.fast = fast
    return st
