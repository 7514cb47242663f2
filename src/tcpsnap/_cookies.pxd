# What the netlink dump does per row besides parsing it, inline (cimporting adds no import):
# the cgroup attribute of a message, and the table of a dump's cookies -- repeats dropped,
# and each timewait row (TIME_WAIT, orphaned FIN_WAIT2) given its connection's cgroup from the previous dump.
from libc.stdint cimport uint16_t, uint64_t
from libc.string cimport memcpy, memset
from tcpsnap._row cimport tcpsnap_row
from tcpsnap._tcp_info cimport tcpsnap_tcp_info

cdef enum:
    INET_DIAG_CGROUP_ID = 21       # include/uapi/linux/inet_diag.h

# a table entry carried over from the dump before (its socket missing from this one): kept
# once more, not twice. Cgroup ids are inode numbers, far below 2**63. (A C constant: a
# variable here would make a module of this .pxd.)
cdef extern from *:
    """
    #define TCPSNAP_CARRIED (1ULL << 63)
    """
    const uint64_t CARRIED "TCPSNAP_CARRIED"


cdef inline uint64_t cgroup_attr(const char *a, Py_ssize_t rem) noexcept nogil:
    # The attributes after inet_diag_msg (struct rtattr: u16 length, u16 type, 4-aligned).
    # Full sockets carry INET_DIAG_CGROUP_ID (Linux >= 5.7, no privilege needed), the inode
    # of their cgroup-v2 directory; timewait and request sockets do not: 0 then.
    cdef uint16_t alen, atype
    cdef uint64_t v = 0
    while rem >= 4:
        memcpy(&alen, a, 2)
        memcpy(&atype, a + 2, 2)
        if alen < 4 or alen > rem:
            return 0
        if atype == INET_DIAG_CGROUP_ID and alen >= 12:
            memcpy(&v, a + 4, 8)
            return v
        alen = (alen + 3) & ~3
        if alen >= rem:
            return 0
        a += alen
        rem -= alen
    return 0


cdef inline Py_ssize_t dedupe_by_cookie(tcpsnap_row *rows, Py_ssize_t n, uint64_t *slots,
                                        Py_ssize_t nslots, uint64_t *vals,
                                        tcpsnap_tcp_info *info) noexcept nogil:
    # info (or NULL): the rows' internals, kept aligned with them
    cdef Py_ssize_t i, w = 0
    cdef uint64_t c, h, mask = <uint64_t>nslots - 1
    cdef bint dup
    memset(slots, 0, nslots * sizeof(uint64_t))
    for i in range(n):
        c = rows[i].cookie
        if c != 0:                         # the kernel never reports 0; keep such rows
            h = ((c * <uint64_t>0x9E3779B97F4A7C15ULL) >> 20) & mask
            dup = False
            while slots[h] != 0:
                if slots[h] == c:
                    dup = True
                    break
                h = (h + 1) & mask
            if dup:
                continue
            slots[h] = c
            if vals != NULL:
                vals[h] = rows[i].cgroup_id
        if w != i:
            rows[w] = rows[i]
            if info != NULL:
                info[w] = info[i]
        w += 1
    return w


cdef inline Py_ssize_t _slot(const uint64_t *slots, uint64_t mask, uint64_t c) noexcept nogil:
    # where dedupe_by_cookie put cookie c, or -1
    cdef uint64_t h = ((c * <uint64_t>0x9E3779B97F4A7C15ULL) >> 20) & mask
    while slots[h] != 0:
        if slots[h] == c:
            return <Py_ssize_t>h
        h = (h + 1) & mask
    return -1


cdef inline void inherit_cgroups(tcpsnap_row *rows, Py_ssize_t n, uint64_t *slots, uint64_t *vals,
                                 Py_ssize_t nslots, const uint64_t *pslots, const uint64_t *pvals,
                                 Py_ssize_t npslots) noexcept nogil:
    # A timewait socket has no cgroup attribute but keeps its full socket's cookie: take
    # the cgroup the previous dump saw under that cookie (slots/vals: this dump's cookie ->
    # cgroup table from dedupe_by_cookie; pslots/pvals: the previous dump's). Not only
    # TIME_WAIT rows: an orphaned FIN_WAIT2 socket becomes a timewait socket too (state
    # FIN_WAIT2, no attribute). Cost: one probe per row without a cgroup.
    cdef Py_ssize_t i, j
    cdef uint64_t c
    if npslots == 0:
        return
    for i in range(n):
        if rows[i].cgroup_id != 0 or rows[i].cookie == 0:
            continue
        c = rows[i].cookie
        j = _slot(pslots, <uint64_t>npslots - 1, c)
        if j >= 0 and pvals[j] != 0:
            rows[i].cgroup_id = pvals[j] & ~CARRIED
            j = _slot(slots, <uint64_t>nslots - 1, c)
            if j >= 0:
                vals[j] = rows[i].cgroup_id


cdef inline Py_ssize_t carry_over(uint64_t *slots, uint64_t *vals, Py_ssize_t nslots,
                                  const uint64_t *pslots, const uint64_t *pvals,
                                  Py_ssize_t npslots) noexcept nogil:
    # A dump can miss a socket that moves meanwhile (a full socket becoming a timewait one is
    # removed from the hash and another inserted): keep the previous dump's cookies that this
    # dump lacks for one more dump, so that the timewait row seen next still finds its
    # cgroup. Returns the entries added; the caller sizes `slots` for them (at most
    # half full). Cost: one pass over the previous table.
    cdef Py_ssize_t j, added = 0
    cdef uint64_t c, h, mask = <uint64_t>nslots - 1
    for j in range(npslots):
        c = pslots[j]
        if c == 0 or pvals[j] == 0 or (pvals[j] & CARRIED):
            continue
        h = ((c * <uint64_t>0x9E3779B97F4A7C15ULL) >> 20) & mask
        while slots[h] != 0 and slots[h] != c:
            h = (h + 1) & mask
        if slots[h] == 0:
            slots[h] = c
            vals[h] = pvals[j] | CARRIED
            added += 1
    return added
