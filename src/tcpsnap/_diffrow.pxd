# The diff's row-level C (_diff.pyx), inline: event codes, how two rows of one connection
# compare, and changes mode's carry of owners (``Differ.diff(carry=)``: while the diff
# matches rows, each takes its previous row's pid and process code; the rows whose owner
# must be looked up again are listed, holding the previous values until ``Differ.fixup``
# settles them). No module of its own.
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from tcpsnap._row cimport tcpsnap_row
from tcpsnap._u64set cimport u64set_add, u64set_has

# Event codes: the index of each name in changes.EVENTS (the `event` column's dictionary).
cdef enum event_code:
    EV_SNAPSHOT = 0    # marker row of an ordinary snapshot (family 0)
    EV_KEYFRAME = 1    # marker of a keyframe snapshot; and its rows that did not change
    EV_OPENED = 2
    EV_STATE = 3       # the state changed (other fields may have too)
    EV_CHANGED = 4     # any other field changed: queues, pid, process, addresses...
    EV_CLOSED = 5
    EV_QUEUES = 6      # only rx_queue / tx_queue changed (a connection with a cookie):
                       # recorded as cookie, family, state and the queues, all else 0
    EV_COUNTERS = 7    # with tcp_info: only its counters (and maybe the queues) moved:
                       # recorded as a queues event plus the whole tcp_info

# The tcp_info rows aligned with prev and cur (both NULL: no tcp_info), their width and
# which of their bytes count as a change (mask[k] != 0: timers such as last_data_sent do not).
cdef struct info_args:
    const uint8_t *prev
    const uint8_t *cur
    const uint8_t *mask
    Py_ssize_t width


cdef struct carry_args:
    const uint64_t *dead    # owners whose rows are looked up again: open-addressing set of
    uint64_t dmask          # dmask + 1 slots (0 = empty), NULL when empty
    const uint64_t *chg     # ...and sockets (inodes), likewise
    uint64_t cmask
    int64_t *need_j         # the rows listed: index into cur...
    int64_t *need_i         # ...and into prev (-1: new)
    Py_ssize_t n_need
    uint64_t *stale_ino     # prev rows matched whose inode changed: inode and cookie
    uint64_t *stale_ck
    Py_ssize_t n_stale
    uint64_t *pids          # set of the pids carried
    uint64_t pmask
    Py_ssize_t n_pids
    int overflow            # the set filled up: pids incomplete
    uint32_t last, last2


cdef inline uint64_t mix64(uint64_t h) noexcept nogil:
    # splitmix64 finaliser: cookies are sequential, so spread them over the table
    h ^= h >> 30
    h *= <uint64_t>0xBF58476D1CE4E5B9ULL
    h ^= h >> 27
    h *= <uint64_t>0x94D049BB133111EBULL
    h ^= h >> 31
    return h


cdef enum:
    ID_OFF = 4        # identity of a cookie-less row: bytes 4..47 (ports, addresses,
    ID_LEN = 44       # scope ids) and the family (byte 0)
    Q_OFF = 56        # rx_queue, tx_queue: bytes 56..63
    Q_END = 64


cdef inline uint64_t hash_row(const tcpsnap_row *r) noexcept nogil:
    cdef uint64_t h, w
    cdef const uint8_t *p
    cdef int i
    if r.cookie != 0:
        return mix64(r.cookie)
    h = <uint64_t>r.family * <uint64_t>0x9E3779B97F4A7C15ULL
    p = (<const uint8_t *>r) + ID_OFF
    for i in range(0, ID_LEN, 4):
        w = 0
        memcpy(&w, p + i, 4)
        h = mix64(h ^ w)
    return h


cdef inline bint same_id(const tcpsnap_row *a, const tcpsnap_row *b) noexcept nogil:
    if a.cookie != 0 or b.cookie != 0:
        return a.cookie == b.cookie
    return a.family == b.family and memcmp((<const char *>a) + ID_OFF, (<const char *>b) + ID_OFF, ID_LEN) == 0


cdef inline bint info_moved(const uint8_t *a, const uint8_t *b, const uint8_t *mask,
                        Py_ssize_t width) noexcept nogil:
    """Whether a byte ``mask`` marks differs between two tcp_info rows."""
    cdef Py_ssize_t k
    for k in range(width):
        if mask[k] and a[k] != b[k]:
            return True
    return False


cdef enum:
    NO_EVENT = 255    # _event: the row is not written
    BLOCK = 32        # diff_in_place: rows compared with one memcmp (3 KiB)


cdef inline uint8_t classify(const tcpsnap_row *prev, const int32_t *pproc, Py_ssize_t i,
                              const tcpsnap_row *cur, const int32_t *cproc, Py_ssize_t j,
                              bint with_info, const info_args *info) noexcept nogil:
    """How prev[i] became cur[j] (one identity): 1 = unchanged, else its event code."""
    cdef const tcpsnap_row *p = &prev[i]
    cdef const tcpsnap_row *c = &cur[j]
    if c.state != p.state:
        return EV_STATE
    if memcmp(c, p, sizeof(tcpsnap_row)) != 0 or cproc[j] != pproc[i]:
        # busy connections change only their queues, snapshot after snapshot: such an
        # event needs the cookie and the queues, not the whole row
        if (cproc[j] == pproc[i] and c.cookie != 0
                and memcmp(c, p, Q_OFF) == 0
                and memcmp((<const char *>c) + Q_END, (<const char *>p) + Q_END,
                           sizeof(tcpsnap_row) - Q_END) == 0):
            return EV_COUNTERS if with_info else EV_QUEUES
        return EV_CHANGED
    if with_info and info_moved(info.prev + i * info.width, info.cur + j * info.width,
                            info.mask, info.width):
        return EV_COUNTERS
    return 1


cdef inline uint8_t event_of(uint8_t matched, int keyframe) noexcept nogil:
    """A row's event code from _classify's (0: not in the previous table), or NO_EVENT."""
    if matched == 0:
        return EV_OPENED
    if matched == 1:
        return EV_KEYFRAME if keyframe else NO_EVENT
    if (matched == EV_QUEUES or matched == EV_COUNTERS) and keyframe:
        return EV_CHANGED          # a keyframe holds whole rows
    return matched


cdef inline void need_row(carry_args *ca, Py_ssize_t j, Py_ssize_t i) noexcept nogil:
    ca.need_j[ca.n_need] = j
    ca.need_i[ca.n_need] = i
    ca.n_need += 1


cdef inline void carry_one(const tcpsnap_row *prev, const int32_t *pproc, Py_ssize_t i,
                            tcpsnap_row *cur, int32_t *cproc, Py_ssize_t j,
                            carry_args *ca) noexcept nogil:
    """cur[j] (prev[i]'s connection) takes prev[i]'s pid and process code: for good where
    neither can have changed, else for now (listed in ca.need)."""
    cdef const tcpsnap_row *p = &prev[i]
    cdef tcpsnap_row *c = &cur[j]
    cdef uint32_t pid = p.pid
    if c.inode == 0 and p.inode == 0:
        c.pid = 0                         # TIME_WAIT, request sockets: no owner, no name
        cproc[j] = -1
        return
    c.pid = pid
    cproc[j] = pproc[i]
    if p.inode != c.inode:
        if p.inode != 0:                  # its entry is no longer any row's
            ca.stale_ino[ca.n_stale] = p.inode
            ca.stale_ck[ca.n_stale] = p.cookie
            ca.n_stale += 1
        need_row(ca, j, i)
        return
    if (pid == 0 or (ca.dmask and u64set_has(ca.dead, ca.dmask, pid))
            or (ca.cmask and u64set_has(ca.chg, ca.cmask, c.inode))):
        need_row(ca, j, i)                   # unresolved, or its owner changed since
        return
    if pid != ca.last and pid != ca.last2:   # (two: loopback connections' ends alternate)
        ca.last2 = ca.last
        ca.last = pid
        if not u64set_has(ca.pids, ca.pmask, pid):
            if (ca.n_pids + 1) * 2 > <Py_ssize_t>(ca.pmask + 1):
                ca.overflow = 1
            else:
                u64set_add(ca.pids, ca.pmask, pid)
                ca.n_pids += 1


cdef inline void carry_reset(carry_args *ca, Py_ssize_t nset) noexcept:
    ca.n_need = ca.n_stale = ca.n_pids = 0
    ca.overflow = 0
    ca.last = ca.last2 = 0
    memset(ca.pids, 0, nset * sizeof(uint64_t))


cdef inline Py_ssize_t find_sorted(const int64_t *a, Py_ssize_t n, int64_t x) noexcept nogil:
    """Index of x in ascending a[:n], or -1."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n and a[lo] == x else -1


cdef inline Py_ssize_t fixup_rows(const int64_t *nj, const int64_t *ni, Py_ssize_t n_need,
                                  const tcpsnap_row *cw, const int32_t *cpw, tcpsnap_row *pw,
                                  int32_t *ppw, tcpsnap_row *ow, int32_t *opw, int64_t *uiw,
                                  Py_ssize_t *n_undo, bint in_place, const int64_t *ei, uint8_t *ec,
                                  Py_ssize_t ne, int64_t *extra, uint8_t ev_state, uint8_t ev_opened,
                                  uint8_t ev_changed) noexcept nogil:
    """Differ.fixup: the listed rows' looked-up owners into the kept table (pw / ppw; in
    place, with an undo entry in ow / opw / uiw for a row not written yet), and an event
    for each whose owner or code is not its previous row's: ``changed`` (an ``opened`` or
    ``state`` stays); the rows that had none written to ``extra``, their count returned."""
    cdef Py_ssize_t k, j, i, nu0 = n_undo[0], pos, nx = 0
    cdef uint32_t npid
    cdef int32_t nproc
    for k in range(n_need):
        j = nj[k]
        i = ni[k]
        npid = cw[j].pid
        nproc = cpw[j]
        if in_place:
            # prev[j]: the old row, or cur's copy with the old owner (a row that changed)
            if npid == pw[j].pid and nproc == ppw[j]:
                continue
            if find_sorted(uiw, nu0, j) < 0:       # first write of it: undone by rollback
                memcpy(&ow[n_undo[0]], &pw[j], sizeof(tcpsnap_row))
                opw[n_undo[0]] = ppw[j]
                uiw[n_undo[0]] = j
                n_undo[0] += 1
            memcpy(&pw[j], &cw[j], sizeof(tcpsnap_row))
            ppw[j] = nproc
        else:
            # prev is a copy of cur (old owners); the previous table is ow
            pw[j].pid = npid
            ppw[j] = nproc
            if i < 0 or (npid == ow[i].pid and nproc == opw[i]):
                continue
        pos = find_sorted(ei, ne, j)
        if pos < 0:
            extra[nx] = j
            nx += 1
        elif ec[pos] != ev_state and ec[pos] != ev_opened:
            ec[pos] = ev_changed
    return nx


cdef inline object key_set(object keys):
    """An open-addressing set (uint64, 0 = empty, at most half full) of the nonzero
    ``keys``, and its mask; (None, 0) when there are none."""
    cdef uint64_t m
    cdef Py_ssize_t k
    cdef uint64_t[::1] o
    cdef const uint64_t[::1] src
    import numpy as np
    a = np.ascontiguousarray(keys, np.uint64)
    a = a[a != 0]
    if not len(a):
        return None, 0
    m = 16
    while m < 2 * <uint64_t>len(a):
        m *= 2
    out = np.zeros(m, np.uint64)
    o = out
    src = a
    for k in range(src.shape[0]):
        u64set_add(&o[0], m - 1, src[k])
    return out, m - 1


cdef inline object cookies_arg(object cookies):
    """``cookies`` as a C-contiguous 1-D uint64 array, or TypeError / ValueError naming it."""
    import numpy as np
    a = np.asarray(cookies)
    if a.ndim > 1:
        raise ValueError(f"cookies must be 1-dimensional, got {a.ndim} dimensions")
    if a.dtype.kind == "O":
        # Python ints past int64 (or anything else): what uint64 holds, or say what is wrong
        try:
            a = np.asarray(cookies, dtype=np.uint64)
        except OverflowError:
            raise ValueError("cookies must be integers in 0..2**64-1") from None
        except (TypeError, ValueError):
            raise TypeError("cookies must be integers") from None
    elif a.dtype.kind == "i":
        if (a < 0).any():
            raise ValueError("cookies must be integers in 0..2**64-1, got a negative one")
    elif a.dtype.kind not in "ub" and a.size:
        raise TypeError(f"cookies must be integers, got dtype {a.dtype!r}")
    return np.ascontiguousarray(a, dtype=np.uint64)
