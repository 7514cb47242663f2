# What the netlink dump does per row besides parsing it, inline (cimporting adds no import):
# the cgroup attribute of a message, and each dump's cookies -- repeats dropped, and each
# timewait row (TIME_WAIT, orphaned FIN_WAIT2) given its connection's cgroup from the dumps before.
from libc.stdint cimport uint16_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset
from tcpsnap._row cimport tcpsnap_row, room
from tcpsnap._tcp_info cimport tcpsnap_tcp_info
from tcpsnap._u64set cimport u64_mix, u64set_add, u64set_del, u64set_has

cdef enum:
    INET_DIAG_CGROUP_ID = 21       # include/uapi/linux/inet_diag.h
    LOOK = 8                       # rows the alignment looks ahead, in either dump
    HK_Y = 1                       # scratch entry: a previous dump's socket not met in order
    HK_CARRIED = 2                 # ...a socket of the dump before that the previous one missed
    HK_NEW = 3                     # ...a socket neither had


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



# ---------------------------------------------------------------- the dumper's cookie state
#
# What a dump must give every row: each socket once (a dump resumes by position inside a hash
# bucket, so a socket inserted or removed meanwhile shifts the others and one can come twice;
# so can a socket rehashed during the dump -- a full socket and the timewait socket that
# replaces it share a cookie, a connect() retried after a failure moves buckets), and each
# timewait row the cgroup its full socket had in the dump before, or in the one before that
# (a dump can miss a socket that moves meanwhile). Keeping the first row of each cookie and
# a 2-dump memory of cookie -> cgroup is what dedupe_by_cookie plus a table per dump did, at
# the price of hashing every row twice a dump.
#
# A table dumped again is mostly the same sockets in the same order (the kernel walks the
# same hash buckets), so each row is first compared with the previous dump's rows in order
# (a cursor, looking LOOK rows ahead on either side to step over sockets that came or went):
# a row found there is a socket of the previous dump met once -- the previous rows are
# unique -- and takes its cgroup from there. Only the rest (new sockets, moved ones,
# repeats) are looked up, in a scratch table of the previous rows not met in order, the
# carried sockets and the new ones, and in the set of the previous dump's cookies: a cookie
# in that set but not among the rows not met was met in order, so this row is a repeat (the
# rare case; the first of its rows is kept, found by a scan). The result is exactly the
# keep-the-first dedupe and 2-dump memory (tests/test_netlink_parser.py checks it against a
# model over random dumps; tests/test_netlink_prefix.py the dumper's whole path). Cost: none
# when nothing changed (the parser takes the rows found in order up to the first change:
# nl_result.fast), one sequential pass over the rest; a few probes per socket that came,
# went or moved.

cdef struct hent:
    uint64_t key                   # a cookie (0: empty)
    Py_ssize_t idx                 # HK_Y: index into ys; HK_CARRIED: into cc/cg
    int kind
    int used                       # a row of this dump has it


cdef struct cookie_state:
    uint64_t *pc                   # the previous dump's cookies, in dump order (never 0)...
    uint64_t *pg                   # ...and their cgroup ids (after inheritance)
    Py_ssize_t np
    size_t pcap
    uint64_t *nc                   # this dump's, being written (then swapped with pc/pg)
    uint64_t *ng
    size_t ncap
    uint64_t *cc                   # carried: sockets of the dump before the previous one
    uint64_t *cg                   # that the previous one missed, with a cgroup
    Py_ssize_t ncar
    size_t ccap
    uint64_t *set                  # pc's cookies: open addressing, 0 empty, at most half full
    size_t setcap
    Py_ssize_t setn
    Py_ssize_t *xs                 # scratch: this dump's rows not met in order
    size_t xcap
    Py_ssize_t *ys                 # ...the previous rows not met in order
    size_t ycap
    unsigned char *drop            # ...rows dropped as repeats
    size_t dcap
    hent *h                        # ...ys, cc and the new cookies by cookie
    size_t hcap


cdef inline uint64_t _mix(uint64_t c) noexcept nogil:
    return u64_mix(c)


cdef inline int _room(void **p, size_t *cap, Py_ssize_t need, size_t item) noexcept nogil:
    # p holds at least need items (contents kept), from 64; -1 when out of memory
    return room(p, cap, <size_t>need, item, 64)


cdef inline int _room2(uint64_t **a, uint64_t **b, size_t *cap, Py_ssize_t need) noexcept nogil:
    # two arrays of the same room (cookies and their cgroups), contents kept
    cdef size_t ca = cap[0], cb = cap[0]
    if _room(<void **>a, &ca, need, sizeof(uint64_t)) < 0 or _room(<void **>b, &cb, need, sizeof(uint64_t)) < 0:
        return -1
    cap[0] = ca if ca < cb else cb
    return 0


cdef inline bint _set_has(const uint64_t *s, Py_ssize_t cap, uint64_t c) noexcept nogil:
    # the previous dump's cookies (_u64set.pxd's set; cap 0: none yet)
    return cap != 0 and u64set_has(s, <uint64_t>cap - 1, c)


cdef inline int _set_rebuild(cookie_state *s, const uint64_t *keys, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t want = 64, i
    while want < 2 * n:
        want *= 2
    if want > s.setcap or want * 8 < s.setcap:
        free(s.set)
        s.set = NULL
        s.setcap = s.setn = 0
        if _room(<void **>&s.set, &s.setcap, want, sizeof(uint64_t)) < 0:
            return -1
        s.setcap = want
    memset(s.set, 0, s.setcap * sizeof(uint64_t))
    for i in range(n):
        u64set_add(s.set, <uint64_t>s.setcap - 1, keys[i])
    s.setn = n
    return 0


cdef inline hent *_h_find(hent *h, uint64_t mask, uint64_t c) noexcept nogil:
    # the entry of cookie c, or the empty one where it would go
    cdef uint64_t i = _mix(c) & mask
    while h[i].key != 0 and h[i].key != c:
        i = (i + 1) & mask
    return &h[i]


cdef inline bint _ahead(const uint64_t *ck, Py_ssize_t i, Py_ssize_t n, uint64_t c) noexcept nogil:
    # whether cookie c is among the LOOK rows after row i
    cdef Py_ssize_t d
    for d in range(i + 1, i + 1 + LOOK if i + 1 + LOOK < n else n):
        if ck[d] == c:
            return True
    return False


cdef inline void _first_only(cookie_state *s, tcpsnap_row *rows, Py_ssize_t n, uint64_t c) noexcept nogil:
    # cookie c came twice, once met in order: keep its first row, which takes its cgroup
    # from the previous dump's row
    cdef Py_ssize_t t, keep = -1
    for t in range(n):
        if rows[t].cookie == c and not s.drop[t]:
            if keep < 0:
                keep = t
            else:
                s.drop[t] = 1
    if keep >= 0 and rows[keep].cgroup_id == 0:
        for t in range(s.np):
            if s.pc[t] == c:
                rows[keep].cgroup_id = s.pg[t]
                break


cdef inline void cookie_reset(cookie_state *s) noexcept nogil:
    """Forget every dump before (the next dump is as a first one): after an error."""
    s.np = s.ncar = s.setn = 0
    if s.set != NULL:
        memset(s.set, 0, s.setcap * sizeof(uint64_t))


cdef inline void cookie_free(cookie_state *s) noexcept nogil:
    free(s.pc)
    free(s.pg)
    free(s.nc)
    free(s.ng)
    free(s.cc)
    free(s.cg)
    free(s.set)
    free(s.xs)
    free(s.ys)
    free(s.drop)
    free(s.h)
    memset(s, 0, sizeof(cookie_state))


cdef inline int cookie_room(cookie_state *s, Py_ssize_t n) noexcept nogil:
    """Make s.nc and s.ng hold n rows' cookies and cgroup ids (contents kept): where the
    parser (nl_result.ckc, .ckg) or a caller writes row i's as it makes the rows, for
    cookie_dedupe. 0, or -1 when out of memory. The pointers move: take them after this."""
    return _room2(&s.nc, &s.ng, &s.ncap, n)


cdef inline Py_ssize_t cookie_dedupe(cookie_state *s, tcpsnap_row *rows, Py_ssize_t n,
                                     tcpsnap_tcp_info *info, Py_ssize_t fast) noexcept nogil:
    """Drop repeated sockets from rows[:n] (the first row of each cookie stays; info, or
    NULL: the rows' internals, moved with them), give each row without a cgroup the one its
    cookie had in the previous dump or, carried, the one before; remember this dump for the
    next. Row i's cookie and cgroup id are read from s.nc[i] and s.ng[i] (cookie_room),
    where the parser wrote them: not from the rows, which a large table has pushed out of
    the cache by now, and those arrays become this dump's memory in place (the rows are
    written only where a cgroup is given or a row moves). fast: the first rows' cookies are
    the previous dump's first ones, in order (nc[i] == pc[i] for i < fast), and these rows
    have their cgroups already (nl_result.fast): the in-order pass would take each of them
    first and starts after them. Returns the rows kept, -1 when out of memory (then
    cookie_reset)."""
    cdef Py_ssize_t i, j = fast, f, d, t, k, nx = 0, ny = 0, nn = fast, w, steps, hn = 0, last
    cdef uint64_t c, g, g0, hmask = 0
    cdef uint64_t *tmp
    cdef uint64_t *pc
    cdef uint64_t *pg
    cdef uint64_t *nc
    cdef uint64_t *ng
    cdef hent *e
    cdef bint drops = False, used
    if (_room(<void **>&s.xs, &s.xcap, n, sizeof(Py_ssize_t)) < 0
            or _room(<void **>&s.drop, &s.dcap, n, 1) < 0
            or _room(<void **>&s.ys, &s.ycap, s.np, sizeof(Py_ssize_t)) < 0
            or _room2(&s.nc, &s.ng, &s.ncap, n) < 0):
        return -1
    # 1. In order against the previous dump (row i against pc[j], LOOK on either side). This
    # dump's cookies and cgroups are compacted in place (nn <= i: entries after i, which
    # _ahead reads, are still the parser's), written only where they change.
    pc, pg, nc, ng = s.pc, s.pg, s.nc, s.ng    # locals: the row stores below may alias s
    for i in range(fast, n):
        c = nc[i]
        if c == 0:                     # the kernel never reports 0; such rows are kept as they are
            continue
        g0 = g = ng[i]
        if j < s.np and pc[j] == c:    # the common case, what the loop below finds first
            if g == 0 and pg[j] != 0:
                g = rows[i].cgroup_id = pg[j]
            if nn != i or g != g0:
                nc[nn] = c
                ng[nn] = g
            j += 1
            nn += 1
            continue
        steps = 0
        while True:
            f = -1
            last = j + 1 + LOOK if j + 1 + LOOK < s.np else s.np
            for d in range(j, last):
                if s.pc[d] == c:
                    f = d
                    break
            if f >= 0:
                while j < f:           # previous rows passed over: gone, or further on
                    s.ys[ny] = j
                    ny += 1
                    j += 1
                j = f + 1
                if g == 0 and s.pg[f] != 0:
                    g = rows[i].cgroup_id = s.pg[f]
                if nn != i:
                    s.nc[nn] = c
                    s.ng[nn] = g
                elif g != g0:
                    s.ng[nn] = g
                nn += 1
                break
            if j < s.np and steps < LOOK and not _ahead(s.nc, i, n, s.pc[j]):
                s.ys[ny] = j           # pc[j] is not coming soon: pass over it
                ny += 1
                j += 1
                steps += 1
                continue
            s.xs[nx] = i               # new, moved or repeated: looked up below
            nx += 1
            if nn != i:
                s.nc[nn] = c
                s.ng[nn] = g
            nn += 1
            break
    while j < s.np:
        s.ys[ny] = j
        ny += 1
        j += 1
    # 2. The rows not met in order, by cookie.
    if nx:
        hn = 64
        while hn < 2 * (nx + ny + s.ncar):
            hn *= 2
        if _room(<void **>&s.h, &s.hcap, hn, sizeof(hent)) < 0:
            cookie_reset(s)
            return -1
        memset(s.h, 0, hn * sizeof(hent))
        hmask = <uint64_t>hn - 1
        for k in range(ny):
            e = _h_find(s.h, hmask, s.pc[s.ys[k]])
            e.key = s.pc[s.ys[k]]
            e.idx = k
            e.kind = HK_Y
        for k in range(s.ncar):
            e = _h_find(s.h, hmask, s.cc[k])
            e.key = s.cc[k]
            e.idx = k
            e.kind = HK_CARRIED
        memset(s.drop, 0, n)
        for t in range(nx):
            i = s.xs[t]
            if s.drop[i]:
                continue
            c = rows[i].cookie
            e = _h_find(s.h, hmask, c)
            if e.key == c:
                if e.used:             # a repeat among these rows: the first stays
                    s.drop[i] = 1
                    drops = True
                    continue
                e.used = 1
                if rows[i].cgroup_id == 0:
                    rows[i].cgroup_id = s.pg[s.ys[e.idx]] if e.kind == HK_Y else (
                        s.cg[e.idx] if e.kind == HK_CARRIED else 0)
                continue
            if _set_has(s.set, s.setcap, c):
                _first_only(s, rows, n, c)   # also met in order: the kernel repeated it
                drops = True
                continue
            e.key = c
            e.kind = HK_NEW
            e.used = 1
        # this dump's cookies and cgroups again, now that these rows have theirs
        nn = 0
        w = 0
        for i in range(n):
            if drops and s.drop[i]:
                continue
            if w != i:
                rows[w] = rows[i]
                if info != NULL:
                    info[w] = info[i]
            c = rows[w].cookie
            if c != 0:
                s.nc[nn] = c
                s.ng[nn] = rows[w].cgroup_id
                nn += 1
            w += 1
    else:
        w = n
    # 3. What the next dump needs: the previous rows gone now with a cgroup are carried
    # (once); the set of cookies follows this dump's.
    if _room2(&s.cc, &s.cg, &s.ccap, ny) < 0:
        cookie_reset(s)
        return -1
    k = 0
    for t in range(ny):
        c = s.pc[s.ys[t]]
        used = nx > 0 and _h_find(s.h, hmask, c).used
        if not used and s.pg[s.ys[t]] != 0:
            s.cc[k] = c
            s.cg[k] = s.pg[s.ys[t]]
            k += 1
    s.ncar = k
    if nx or ny or s.setcap == 0:
        if (nx + ny) * 4 > nn or 2 * (s.setn + nx) > s.setcap:
            if _set_rebuild(s, s.nc, nn) < 0:
                cookie_reset(s)
                return -1
        else:
            for t in range(ny):
                c = s.pc[s.ys[t]]
                if not (nx > 0 and _h_find(s.h, hmask, c).used):
                    u64set_del(s.set, <uint64_t>s.setcap - 1, c)
                    s.setn -= 1
            for k in range(hn):        # the new and the carried met now join (HK_Y are in)
                e = &s.h[k]
                if e.used and e.kind != HK_Y:
                    u64set_add(s.set, <uint64_t>s.setcap - 1, e.key)
                    s.setn += 1
    tmp = s.pc
    s.pc = s.nc
    s.nc = tmp
    tmp = s.pg
    s.pg = s.ng
    s.ng = tmp
    k = s.pcap
    s.pcap = s.ncap
    s.ncap = k
    s.np = nn
    return w
