# The diff's row-level C (_diff.pyx), inline: event codes, how two rows of one connection
# compare, the diff in place (the common case), and changes mode's carry of owners
# (``Differ.diff(carry=)``: while the diff matches rows, each takes its previous row's pid
# and process code; the rows whose owner must be looked up again are listed, holding the
# previous values until ``Differ.fixup`` settles them). No module of its own.
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from tcpsnap._row cimport tcpsnap_row
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_C_CONTIGUOUS, PyBUF_WRITABLE
from tcpsnap._u64set cimport u64set_add, u64set_has

cdef extern from *:
    # A prefetch on any compiler this module builds with (GCC, Clang, MSVC on x86; a no-op
    # elsewhere): diff_in_place asks for the rows a few blocks ahead, both tables being out
    # of the caches at a snapshot a second, and the hardware's own prefetch stopping at
    # each 4 KiB page
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define tcpsnap_diff_prefetch(p) __builtin_prefetch((const void *)(p))
    #elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    #include <xmmintrin.h>
    #define tcpsnap_diff_prefetch(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
    #else
    #define tcpsnap_diff_prefetch(p) ((void)0)
    #endif
    """
    void prefetch_row "tcpsnap_diff_prefetch"(const void *p) noexcept nogil

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


cdef inline Py_ssize_t diff_lookup(const tcpsnap_row *cur, const int32_t *slots, Py_ssize_t nslots,
                            uint64_t cookie) noexcept nogil:
    """Index into cur of the row with this cookie, after a diff (-1: none): the probe of the
    slots it left."""
    cdef uint64_t mask = <uint64_t>nslots - 1
    cdef uint64_t h = mix64(cookie) & mask
    cdef int32_t s
    if cookie == 0:
        return -1
    while True:
        s = slots[h]
        if s == 0:
            return -1
        if cur[s - 1].cookie == cookie:
            return s - 1
        h = (h + 1) & mask


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
    AHEAD = 3 * BLOCK # ...and prefetched this many rows ahead (9 KiB)


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


cdef inline bint carry_same(const tcpsnap_row *prev, const int32_t *pproc, tcpsnap_row *cur,
                            int32_t *cproc, Py_ssize_t k, uint32_t last, uint32_t last2) noexcept nogil:
    """carry_one's common row, in fewer instructions: where the dead and changed sets are
    empty and cur[k] is prev[k]'s socket (one nonzero cookie) with the same nonzero inode
    and an owner (pid != 0) already in the pid set's last two, carry_one would only copy
    the pid and process code: done here, True. Else nothing written, False (carry_one's
    turn)."""
    cdef const tcpsnap_row *p = &prev[k]
    cdef tcpsnap_row *c = &cur[k]
    cdef uint32_t pid = p.pid
    if (c.cookie != p.cookie or c.cookie == 0 or c.inode != p.inode or c.inode == 0
            or pid == 0 or (pid != last and pid != last2)):
        return False
    c.pid = pid
    cproc[k] = pproc[k]
    return True


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


cdef inline Py_ssize_t set_items(const uint64_t *st, Py_ssize_t m, uint32_t *out, Py_ssize_t n_out,
                                 bint write) noexcept nogil:
    """The nonzero keys of the set st[:m], in its order, as uint32: written to out
    (write), else compared with out[:n_out]. Their count; -1 where they differ from it."""
    cdef Py_ssize_t k, n = 0
    for k in range(m):
        if st[k]:
            if write:
                out[n] = <uint32_t>st[k]
            elif n >= n_out or out[n] != <uint32_t>st[k]:
                return -1
            n += 1
    return n if write or n == n_out else -1


cdef inline Py_ssize_t diff_in_place(tcpsnap_row *prev, int32_t *pproc, const tcpsnap_row *cur,
                              const int32_t *cproc, Py_ssize_t n, int keyframe,
                              int64_t *ev_idx, uint8_t *ev_code, tcpsnap_row *undo_rows,
                              int32_t *undo_proc, int64_t *undo_idx, Py_ssize_t *n_undo,
                              const info_args *info, tcpsnap_row *cur_w, int32_t *cproc_w,
                              carry_args *ca) noexcept nogil:
    """The common case of ``Differ.diff``, without the hash: cur[:n] holds prev[:n]'s
    identities in the same order (a table that did not change, or only in place). Fills
    ev_idx/ev_code as diff_tables would and writes the rows that changed (and their process
    codes) into prev, their old bytes into undo_rows/undo_proc/undo_idx (capacity n; *n_undo
    of them). Returns the number of events, or -1 (prev as it was, *n_undo 0) at the first
    position whose identity differs. The slots diff_tables left for prev stay valid for
    diff_lookup. With ``ca``, cur_w / cproc_w are cur / cproc, written as carry_args says."""
    cdef bint with_info = info != NULL and info.cur != NULL and info.prev != NULL
    cdef Py_ssize_t i = 0, k, ne = 0, nu = 0, end
    cdef uint8_t m, code
    # no owner dead, no socket changed hands: carry_same takes the common row
    cdef bint quiet_sets = ca != NULL and ca.dmask == 0 and ca.cmask == 0
    while i < n:
        if i + AHEAD + BLOCK <= n:
            for k in range(0, BLOCK * sizeof(tcpsnap_row), 64):
                prefetch_row(<const char *>&prev[i + AHEAD] + k)
                prefetch_row(<const char *>&cur[i + AHEAD] + k)
        if ca != NULL:
            # owners first, a block at a time while its rows are in the cache (an identity
            # out of place is left alone: the hash diff takes over below)
            end = min(i + BLOCK, n)
            for k in range(i, end):
                if quiet_sets and carry_same(prev, pproc, cur_w, cproc_w, k, ca.last, ca.last2):
                    continue
                if not same_id(&cur[k], &prev[k]):
                    break
                carry_one(prev, pproc, k, cur_w, cproc_w, k, ca)
        if not with_info and i + BLOCK <= n and memcmp(&cur[i], &prev[i], BLOCK * sizeof(tcpsnap_row)) == 0 \
                and memcmp(&cproc[i], &pproc[i], BLOCK * sizeof(int32_t)) == 0:
            # a block of rows alike, byte for byte (one memcmp, not one a row): unchanged
            if keyframe:
                for k in range(i, i + BLOCK):
                    ev_idx[ne] = k
                    ev_code[ne] = EV_KEYFRAME
                    ne += 1
            i += BLOCK
            continue
        end = min(i + BLOCK, n)
        while i < end:
            if not same_id(&cur[i], &prev[i]):
                # another table: put back what was written and let the hash diff do it
                for k in range(nu):
                    memcpy(&prev[undo_idx[k]], &undo_rows[k], sizeof(tcpsnap_row))
                    pproc[undo_idx[k]] = undo_proc[k]
                n_undo[0] = 0
                return -1
            m = classify(prev, pproc, i, cur, cproc, i, with_info, info)
            if m != 1 and (memcmp(&cur[i], &prev[i], sizeof(tcpsnap_row)) != 0 or cproc[i] != pproc[i]):
                memcpy(&undo_rows[nu], &prev[i], sizeof(tcpsnap_row))
                undo_proc[nu] = pproc[i]
                undo_idx[nu] = i
                nu += 1
                memcpy(&prev[i], &cur[i], sizeof(tcpsnap_row))
                pproc[i] = cproc[i]
            code = event_of(m, keyframe)
            if code != NO_EVENT:
                ev_idx[ne] = i
                ev_code[ne] = code
                ne += 1
            i += 1
    n_undo[0] = nu
    return ne


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


# Differ._buf: the Differ's own buffers whose data pointers it keeps between calls
cdef enum:
    B_PREV, B_PPROC, B_OLD, B_OLDPROC, B_UNDO, B_EVI, B_EVC, B_NEED, B_NEEDI, B_STI, B_STC, B_PIDS, B_POUT, B_COUNT


cdef inline void *carry_ptr(object arr, str name) except? NULL:
    """The data of an array diff(carry=) writes, or ValueError unless C-contiguous and
    writeable (numpy's buffer says both)."""
    cdef Py_buffer b
    try:
        PyObject_GetBuffer(arr, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError):
        raise ValueError(f"diff(carry=) writes {name}: it must be C-contiguous and writeable") from None
    PyBuffer_Release(&b)                 # numpy buffers do not move while the array lives
    return b.buf


cdef inline const void *contig_ptr(object arr) except? NULL:
    """The data of a C-contiguous numpy array, or NULL (not C-contiguous: copy it)."""
    cdef Py_buffer b
    try:
        PyObject_GetBuffer(arr, &b, PyBUF_SIMPLE | PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError):
        return NULL
    PyBuffer_Release(&b)
    return b.buf
