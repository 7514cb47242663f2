# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Changes mode: the diff of two consecutive snapshots, in C.

A connection's identity is its socket cookie (Linux: unique per socket for the life of
the boot, and kept by its TIME_WAIT successor if the kernel had given it one by then:
``tcpsnap._events`` has how changes mode joins the two otherwise), or, where the cookie is 0
(Windows), the family, addresses, ports and scope ids. One open-addressing hash table holds the current
snapshot's identities; the previous snapshot's rows probe it. Cost: one hash and one
96-byte compare per row, no allocation (the Differ reuses its buffers), no GIL.

The common case costs less: a table with the previous one's identities in the same
order (the kernel lists an unchanged table alike, dump after dump, so at ``--interval 0``
most snapshots) is compared in place, 32 rows per ``memcmp`` where nothing changed, and
only the rows that changed are copied; the hash table still indexes it (same identities,
same places). The first identity out of place puts those rows back and hashes instead.
The results are the same either way (``tests/test_diff.py`` holds both to a model).

The Differ keeps the table before the last diff too: ``rollback`` undoes a diff, so a
caller that learns more about a table after diffing it (changes mode asks the kernel about
the sockets a dump missed) can diff the table it completed instead.

A row "changed" when any of its 96 bytes or its process name differs: the recording must
rebuild every field a full recording holds (``tcpsnap.changes`` has the contract); when only
its queues did (and it has a cookie), the event is the narrower "queues".

With ``diff(..., carry=)`` (changes mode with pids: ``tcpsnap.pids``, "Changes mode") the
table comes without its pids: while matching, each row takes its previous row's pid and
process code, and the rows whose owner may have changed are listed for a lookup
(``carried``); ``fixup`` then settles their events (``tests/test_carry_owners.py`` holds it
to a plain diff of the completed table).

With tcp_info (``diff(..., info=)``: one tcp_info row per table row, any fixed-width
dtype), a row whose table fields are unchanged but whose counters moved -- any byte of its
tcp_info row that ``info_mask`` marks, so timers that move on every sample do not count --
or whose queues alone changed is a "counters" event (the queues event's fields plus the
whole tcp_info row); every other event carries the whole tcp_info row anyway.
"""

from cpython.buffer cimport PyBuffer_Release, PyBUF_SIMPLE, PyBUF_C_CONTIGUOUS
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

import numpy as np

from tcpsnap._row cimport get_buffer
from tcpsnap._schema import ROW_DTYPE

cdef enum:
    ID_OFF = 4        # identity of a cookie-less row: bytes 4..47 (ports, addresses,
    ID_LEN = 44       # scope ids) and the family (byte 0)
    Q_OFF = 56        # rx_queue, tx_queue: bytes 56..63
    Q_END = 64


cdef inline uint64_t _mix(uint64_t h) noexcept nogil:
    # splitmix64 finaliser: cookies are sequential, so spread them over the table
    h ^= h >> 30
    h *= <uint64_t>0xBF58476D1CE4E5B9ULL
    h ^= h >> 27
    h *= <uint64_t>0x94D049BB133111EBULL
    h ^= h >> 31
    return h


cdef inline uint64_t _hash(const tcpsnap_row *r) noexcept nogil:
    cdef uint64_t h, w
    cdef const uint8_t *p
    cdef int i
    if r.cookie != 0:
        return _mix(r.cookie)
    h = <uint64_t>r.family * <uint64_t>0x9E3779B97F4A7C15ULL
    p = (<const uint8_t *>r) + ID_OFF
    for i in range(0, ID_LEN, 4):
        w = 0
        memcpy(&w, p + i, 4)
        h = _mix(h ^ w)
    return h


cdef inline bint _same_id(const tcpsnap_row *a, const tcpsnap_row *b) noexcept nogil:
    if a.cookie != 0 or b.cookie != 0:
        return a.cookie == b.cookie
    return a.family == b.family and memcmp((<const char *>a) + ID_OFF, (<const char *>b) + ID_OFF, ID_LEN) == 0


cdef inline bint _moved(const uint8_t *a, const uint8_t *b, const uint8_t *mask,
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


cdef inline uint8_t _classify(const tcpsnap_row *prev, const int32_t *pproc, Py_ssize_t i,
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
    if with_info and _moved(info.prev + i * info.width, info.cur + j * info.width,
                            info.mask, info.width):
        return EV_COUNTERS
    return 1


cdef inline uint8_t _event(uint8_t matched, int keyframe) noexcept nogil:
    """A row's event code from _classify's (0: not in the previous table), or NO_EVENT."""
    if matched == 0:
        return EV_OPENED
    if matched == 1:
        return EV_KEYFRAME if keyframe else NO_EVENT
    if (matched == EV_QUEUES or matched == EV_COUNTERS) and keyframe:
        return EV_CHANGED          # a keyframe holds whole rows
    return matched


cdef Py_ssize_t diff_in_place(tcpsnap_row *prev, int32_t *pproc, const tcpsnap_row *cur,
                              const int32_t *cproc, Py_ssize_t n, int keyframe,
                              int64_t *ev_idx, uint8_t *ev_code, tcpsnap_row *undo_rows,
                              int32_t *undo_proc, int64_t *undo_idx, Py_ssize_t *n_undo,
                              const info_args *info, tcpsnap_row *cur_w, int32_t *cproc_w,
                              carry_args *ca) noexcept nogil:
    cdef bint with_info = info != NULL and info.cur != NULL and info.prev != NULL
    cdef Py_ssize_t i = 0, k, ne = 0, nu = 0, end
    cdef uint8_t m, code
    while i < n:
        if ca != NULL:
            # owners first, a block at a time while its rows are in the cache (an identity
            # out of place is left alone: the hash diff takes over below)
            end = min(i + BLOCK, n)
            for k in range(i, end):
                if not _same_id(&cur[k], &prev[k]):
                    break
                _carry_one(prev, pproc, k, cur_w, cproc_w, k, ca)
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
            if not _same_id(&cur[i], &prev[i]):
                # another table: put back what was written and let the hash diff do it
                for k in range(nu):
                    memcpy(&prev[undo_idx[k]], &undo_rows[k], sizeof(tcpsnap_row))
                    pproc[undo_idx[k]] = undo_proc[k]
                n_undo[0] = 0
                return -1
            m = _classify(prev, pproc, i, cur, cproc, i, with_info, info)
            if m != 1 and (memcmp(&cur[i], &prev[i], sizeof(tcpsnap_row)) != 0 or cproc[i] != pproc[i]):
                memcpy(&undo_rows[nu], &prev[i], sizeof(tcpsnap_row))
                undo_proc[nu] = pproc[i]
                undo_idx[nu] = i
                nu += 1
                memcpy(&prev[i], &cur[i], sizeof(tcpsnap_row))
                pproc[i] = cproc[i]
            code = _event(m, keyframe)
            if code != NO_EVENT:
                ev_idx[ne] = i
                ev_code[ne] = code
                ne += 1
            i += 1
    n_undo[0] = nu
    return ne


cdef diff_result diff_tables(const tcpsnap_row *prev, const int32_t *pproc, Py_ssize_t np,
                             const tcpsnap_row *cur, const int32_t *cproc, Py_ssize_t nc,
                             int keyframe, int32_t *slots, Py_ssize_t nslots, uint8_t *matched,
                             int64_t *ev_idx, uint8_t *ev_code, int64_t *closed_idx,
                             const info_args *info, tcpsnap_row *cur_w, int32_t *cproc_w,
                             carry_args *ca) noexcept nogil:
    cdef diff_result res
    cdef bint with_info = info != NULL and info.cur != NULL and info.prev != NULL
    cdef Py_ssize_t i, j
    cdef uint64_t mask = <uint64_t>nslots - 1, h
    cdef int32_t s
    cdef uint8_t code
    res.n_events = 0
    res.n_closed = 0
    res.duplicate = 0
    res.cur_duplicate = 0
    memset(slots, 0, nslots * sizeof(int32_t))
    memset(matched, 0, nc)
    # 1. cur's identities -> slots (index + 1; 0 = empty)
    for i in range(nc):
        h = _hash(&cur[i]) & mask
        while True:
            s = slots[h]
            if s == 0:
                slots[h] = <int32_t>(i + 1)
                break
            if _same_id(&cur[s - 1], &cur[i]):
                res.duplicate = 1          # the second copy is not in the table
                res.cur_duplicate = 1
                break
            h = (h + 1) & mask
    # 2. each prev row: still there (and how it changed), or closed.
    #    matched[j]: 0 = new, 1 = unchanged, else the event code.
    for i in range(np):
        h = _hash(&prev[i]) & mask
        j = -1
        while True:
            s = slots[h]
            if s == 0:
                break
            if _same_id(&cur[s - 1], &prev[i]):
                j = s - 1
                break
            h = (h + 1) & mask
        if j < 0:
            closed_idx[res.n_closed] = i
            res.n_closed += 1
            continue
        if matched[j]:
            res.duplicate = 1              # prev repeats an identity
            continue
        if ca != NULL:
            _carry_one(prev, pproc, i, cur_w, cproc_w, j, ca)
        matched[j] = _classify(prev, pproc, i, cur, cproc, j, with_info, info)
    # 3. the events, in cur's order; a keyframe lists every row
    if res.duplicate:
        keyframe = 1
    for j in range(nc):
        if ca != NULL and matched[j] == 0:
            _need(ca, j, -1)               # new: looked up (its event is "opened" anyway)
        code = _event(matched[j], keyframe)
        if code == NO_EVENT:
            continue
        ev_idx[res.n_events] = j
        ev_code[res.n_events] = code
        res.n_events += 1
    return res


cdef Py_ssize_t diff_lookup(const tcpsnap_row *cur, const int32_t *slots, Py_ssize_t nslots,
                            uint64_t cookie) noexcept nogil:
    cdef uint64_t mask = <uint64_t>nslots - 1
    cdef uint64_t h = _mix(cookie) & mask
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


cdef inline bint _in_set(const uint64_t *set_, uint64_t mask, uint64_t key) noexcept nogil:
    """Whether ``key`` (not 0) is in an open-addressing set of ``mask + 1`` slots (0: empty)."""
    cdef uint64_t h = _mix(key) & mask
    while set_[h] != 0:
        if set_[h] == key:
            return True
        h = (h + 1) & mask
    return False


cdef inline void _set_add(uint64_t *set_, uint64_t mask, uint64_t key) noexcept nogil:
    cdef uint64_t h = _mix(key) & mask
    while set_[h] != 0:
        if set_[h] == key:
            return
        h = (h + 1) & mask
    set_[h] = key


cdef inline void _need(carry_args *ca, Py_ssize_t j, Py_ssize_t i) noexcept nogil:
    ca.need_j[ca.n_need] = j
    ca.need_i[ca.n_need] = i
    ca.n_need += 1


cdef inline void _carry_one(const tcpsnap_row *prev, const int32_t *pproc, Py_ssize_t i,
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
        _need(ca, j, i)
        return
    if (pid == 0 or (ca.dmask and _in_set(ca.dead, ca.dmask, pid))
            or (ca.cmask and _in_set(ca.chg, ca.cmask, c.inode))):
        _need(ca, j, i)                   # unresolved, or its owner changed since
        return
    if pid != ca.last and pid != ca.last2:   # (two: loopback connections' ends alternate)
        ca.last2 = ca.last
        ca.last = pid
        if not _in_set(ca.pids, ca.pmask, pid):
            if (ca.n_pids + 1) * 2 > <Py_ssize_t>(ca.pmask + 1):
                ca.overflow = 1
            else:
                _set_add(ca.pids, ca.pmask, pid)
                ca.n_pids += 1


cdef inline void _carry_reset(carry_args *ca, Py_ssize_t nset) noexcept:
    ca.n_need = ca.n_stale = ca.n_pids = 0
    ca.overflow = 0
    ca.last = ca.last2 = 0
    memset(ca.pids, 0, nset * sizeof(uint64_t))


cdef object _key_set(object keys):
    """An open-addressing set (uint64, 0 = empty, at most half full) of the nonzero
    ``keys``, and its mask; (None, 0) when there are none."""
    cdef Py_ssize_t k, n2
    cdef uint64_t m, key
    a = np.ascontiguousarray(keys, np.uint64)
    a = a[a != 0]
    if not len(a):
        return None, 0
    m = 16
    while m < 2 * <uint64_t>len(a):
        m *= 2
    out = np.zeros(m, np.uint64)
    cdef uint64_t *o = <uint64_t *>_ptr(out, 8, &n2)
    cdef const uint64_t *src = <const uint64_t *>_ptr(a, 8, &n2)
    for k in range(len(a)):
        key = src[k]
        _set_add(o, m - 1, key)
    return out, m - 1


cdef const void *_ptr(object arr, Py_ssize_t itemsize, Py_ssize_t *n) except? NULL:
    """A C-contiguous array's data pointer and length in items (it may be read-only)."""
    cdef Py_buffer b
    get_buffer(arr, &b, PyBUF_SIMPLE | PyBUF_C_CONTIGUOUS, "array")
    n[0] = b.len // itemsize
    PyBuffer_Release(&b)       # numpy buffers do not move while the array lives
    return b.buf


cdef object _cookies(object cookies):
    """``cookies`` as a C-contiguous 1-D uint64 array, or TypeError / ValueError naming it."""
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


cdef class Differ:
    """The previous snapshot and the scratch of the diff, reused from one call to the
    next (memory grows with the largest table seen, never per call)."""

    cdef object _prev            # ROW_DTYPE, capacity >= the last table
    cdef object _pproc           # int32 process codes of _prev
    cdef Py_ssize_t n_prev
    cdef object _old, _oldproc   # the table before the last diff, for rollback()
    cdef Py_ssize_t n_old
    cdef bint old_primed, can_rollback, slots_valid
    cdef object _slots, _matched, _ev_idx, _ev_code, _closed_idx
    cdef Py_ssize_t nslots
    cdef readonly bint primed    # a previous snapshot exists
    cdef object _pinfo, _oldinfo # tcp_info rows of _prev / _old (None: none given)
    cdef object _mask            # uint8 per tcp_info byte: 1 = a change counts
    cdef readonly object closed_info   # the last diff's closed rows' tcp_info, or None
    # after a diff in place, rollback() puts back the n_undo rows _old / _oldproc hold at
    # the positions _undo_idx holds
    cdef readonly bint in_place  # the last diff was made in place (diff_in_place)
    cdef Py_ssize_t n_undo
    cdef object _undo_idx
    cdef bint prev_dup           # an identity repeats within _prev: no diff in place
    cdef object _no_rows, _no_proc
    cdef object _need, _need_i, _stale_ino, _stale_ck, _pids   # diff(carry=)'s (and its pid set)
    cdef bint carrying           # a diff(carry=) waits for its fixup()
    cdef object _cur, _cproc     # ...its table and codes
    cdef Py_ssize_t n_need, n_stale, ne_carry
    cdef bint pids_overflow

    def __init__(self, info_mask=None):
        """``info_mask``: for ``diff(..., info=)``, one uint8 per byte of a tcp_info row,
        nonzero where a difference is a change (counters), 0 where it is not (timers)."""
        self._pinfo = None
        self._oldinfo = None
        self.closed_info = None
        self._mask = None if info_mask is None else np.ascontiguousarray(info_mask, np.uint8).ravel()
        self._prev = np.zeros(0, ROW_DTYPE)
        self._pproc = np.zeros(0, np.int32)
        self.n_prev = 0
        self._old = np.zeros(0, ROW_DTYPE)
        self._oldproc = np.zeros(0, np.int32)
        self.n_old = 0
        self.old_primed = False
        self.can_rollback = False
        self.slots_valid = False
        self._slots = np.zeros(64, np.int32)
        self.nslots = 64
        self._matched = np.zeros(0, np.uint8)
        self._ev_idx = np.zeros(0, np.int64)
        self._ev_code = np.zeros(0, np.uint8)
        self._closed_idx = np.zeros(0, np.int64)
        self.primed = False
        self.in_place = False
        self.n_undo = 0
        self._undo_idx = np.zeros(0, np.int64)
        self.prev_dup = False
        # what a diff that closed nothing returns (empty: nothing can be written into them)
        self._no_rows = np.zeros(0, ROW_DTYPE)
        self._no_proc = np.zeros(0, np.int32)
        self._need = np.zeros(0, np.int64)
        self._stale_ino = np.zeros(0, np.uint64)
        self._stale_ck = np.zeros(0, np.uint64)
        self._pids = np.zeros(64, np.uint64)
        self._need_i = np.zeros(0, np.int64)
        self.carrying = False
        self.n_need = self.n_stale = 0

    def reset(self):
        """Forget the previous snapshot: the next diff opens every row."""
        self.n_prev = 0
        self.primed = False
        self.can_rollback = False
        self.slots_valid = False
        self.carrying = False

    def rollback(self):
        """Undo the last ``diff``: the table before it is the previous one again, as if
        that diff had not been made (its results are void; ``lookup`` needs a new diff).
        Once per diff: RuntimeError when there is nothing to undo."""
        cdef Py_ssize_t k
        if not self.can_rollback:
            raise RuntimeError("rollback: no diff to undo")
        if self.in_place:
            # the rows that diff wrote over, back in their places
            for k in range(self.n_undo):
                at = self._undo_idx[k]
                self._prev[at:at + 1].view(np.uint8)[:] = self._old[k:k + 1].view(np.uint8)
                self._pproc[at] = self._oldproc[k]
        else:
            self._prev, self._old = self._old, self._prev
            self._pproc, self._oldproc = self._oldproc, self._pproc
            self.n_prev = self.n_old
            self.primed = self.old_primed
        self._pinfo, self._oldinfo = self._oldinfo, self._pinfo
        self.can_rollback = False
        self.slots_valid = False
        self.carrying = False

    @property
    def rows(self):
        """The previous snapshot (after ``diff``: the one just diffed)."""
        return self._prev[:self.n_prev]

    @property
    def proc(self):
        return self._pproc[:self.n_prev]

    @property
    def info(self):
        """The tcp_info rows of ``rows`` (None when the last diff was given none)."""
        return None if self._pinfo is None else self._pinfo[:self.n_prev]

    def diff(self, cur, cproc, bint keyframe, info=None, carry=None):
        """Diff ``cur`` (ROW_DTYPE) and its int32 process codes ``cproc`` against the
        previous call's; ``cur`` becomes the previous. Returns ``(ev_idx, ev_code,
        closed_rows, closed_proc, duplicate)``: indices into cur and their event codes,
        copies of the rows gone since (with their process codes), and whether an
        identity repeated (the events are then a keyframe). The index arrays are views
        valid until the next call. ``info``: the tcp_info rows of ``cur`` (one per row, a
        1-D array of any fixed-width dtype as wide as ``info_mask``): a row whose counters
        moved is then an event (``EV_COUNTERS`` where nothing else did), compared with the
        previous call's info (none there: not compared); ValueError for another length or
        width, or no ``info_mask``. Bad arguments, before anything changes: TypeError when
        cur or cproc is not a numpy array, ValueError when it is one of the wrong dtype or
        dimensions, or cproc's length is not cur's (any strides and read-only are fine).

        ``carry=(dead, changed)`` (changes mode with pids, ``record.changes``): ``cur``'s
        pids and ``cproc`` are not known yet. Each row the previous table holds takes that
        row's pid and code (written into ``cur`` and ``cproc``, which must then be
        C-contiguous and writeable), for good unless its owner must be looked up again:
        a new row, another inode than before, pid 0 with an inode, a pid in ``dead``
        (owners that exited or were renamed), an inode in ``changed`` (sockets whose
        owner changed) -- those are ``carried()[0]``. The caller writes their pid and
        code into ``cur`` / ``cproc`` and calls ``fixup()``, which gives the events as a
        diff of the completed table would (a row whose owner or name differs from the
        previous is ``changed``). RuntimeError for a carry diff without a previous table.""" 
        cdef Py_ssize_t nc, npv = self.n_prev, n2, want, ne, nu = 0
        cdef const tcpsnap_row *cp
        cdef tcpsnap_row *pw
        cdef tcpsnap_row *uw
        cdef int32_t *ppw
        cdef int32_t *upw
        cdef int64_t *uiw
        cdef const int32_t *cpp
        cdef diff_result res
        for name, arr, dtype, dtype_name in (("cur", cur, ROW_DTYPE, "ROW_DTYPE"), ("cproc", cproc, np.int32, "int32")):
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{name} must be a numpy array, not {type(arr).__name__}")
            if arr.dtype != dtype or arr.ndim != 1:
                raise ValueError(f"{name} must be a 1-dimensional array of {dtype_name}, "
                                 f"got {arr.ndim} dimensions of dtype {arr.dtype!r}")
        if len(cproc) != len(cur):
            raise ValueError(f"cproc holds {len(cproc)} process codes for {len(cur)} rows of cur: "
                             "diff needs as many")
        cdef info_args ia
        cdef const info_args *iap = NULL
        cdef Py_ssize_t w = 0
        if info is not None:
            if self._mask is None:
                raise ValueError("diff with info needs a Differ made with info_mask")
            if not isinstance(info, np.ndarray) or info.ndim != 1 or len(info) != len(cur) \
                    or info.dtype.itemsize != len(self._mask):
                raise ValueError(f"info must be a 1-dimensional array of {len(self._mask)}-byte rows, "
                                 f"one per row of cur ({len(cur)})")
            info = np.ascontiguousarray(info)
            w = info.dtype.itemsize
        cdef carry_args ca
        cdef carry_args *cap = NULL
        cdef tcpsnap_row *cw = NULL
        cdef int32_t *cpw = NULL
        self.carrying = False            # (a carry diff left without its fixup: abandoned)
        if carry is not None:
            if not self.primed:
                raise RuntimeError("diff(carry=) needs a previous table")
            for name, arr in (("cur", cur), ("cproc", cproc)):
                if not (arr.flags.c_contiguous and arr.flags.writeable):
                    raise ValueError(f"diff(carry=) writes {name}: it must be C-contiguous and writeable")
            dset, dm = _key_set(carry[0])
            cset, cm = _key_set(carry[1])
        cur = np.ascontiguousarray(cur)
        cproc = np.ascontiguousarray(cproc)
        nc = len(cur)
        if carry is not None:
            if len(self._need) < max(nc, 1):
                k = max(nc, 2 * len(self._need), 1)
                self._need = np.zeros(k, np.int64)
                self._need_i = np.zeros(k, np.int64)
                self._stale_ino = np.zeros(k, np.uint64)
                self._stale_ck = np.zeros(k, np.uint64)
            ca.dead = NULL if dset is None else <const uint64_t *>_ptr(dset, 8, &n2)
            ca.dmask = dm
            ca.chg = NULL if cset is None else <const uint64_t *>_ptr(cset, 8, &n2)
            ca.cmask = cm
            ca.need_j = <int64_t *>_ptr(self._need, 8, &n2)
            ca.need_i = <int64_t *>_ptr(self._need_i, 8, &n2)
            ca.stale_ino = <uint64_t *>_ptr(self._stale_ino, 8, &n2)
            ca.stale_ck = <uint64_t *>_ptr(self._stale_ck, 8, &n2)
            ca.pids = <uint64_t *>_ptr(self._pids, 8, &n2)
            ca.pmask = len(self._pids) - 1
            _carry_reset(&ca, len(self._pids))
            cap = &ca
            self._cur = cur
            self._cproc = cproc
        if len(self._matched) < nc:
            k = max(nc, 2 * len(self._matched))
            self._matched = np.zeros(k, np.uint8)
            self._ev_idx = np.zeros(k, np.int64)
            self._ev_code = np.zeros(k, np.uint8)
        cp = NULL
        cpp = NULL
        if nc:
            cp = <const tcpsnap_row *>_ptr(cur, sizeof(tcpsnap_row), &n2)
            cpp = <const int32_t *>_ptr(cproc, 4, &n2)
            if cap != NULL:
                cw = <tcpsnap_row *>cp       # the same buffers, checked writeable above
                cpw = <int32_t *>cpp
        cdef int64_t *ei = <int64_t *>_ptr(self._ev_idx, 8, &n2)
        cdef uint8_t *ec = <uint8_t *>_ptr(self._ev_code, 1, &n2)
        if info is not None and self._pinfo is not None and self._pinfo.dtype.itemsize == w \
                and nc and npv:
            ia.prev = <const uint8_t *>_ptr(self._pinfo, w, &n2)
            ia.cur = <const uint8_t *>_ptr(info, w, &n2)
            ia.mask = <const uint8_t *>_ptr(self._mask, 1, &n2)
            ia.width = w
            iap = &ia
        if self.primed and self.slots_valid and not self.prev_dup and nc == npv and nc:
            # the common case: the same connections in the same order (the kernel lists
            # an unchanged table alike, dump after dump): compared row by row in place,
            # no hash, only the rows that changed copied
            if len(self._old) < nc:
                self._old = np.zeros(max(nc, len(self._prev)), ROW_DTYPE)
                self._oldproc = np.zeros(len(self._old), np.int32)
            if len(self._undo_idx) < nc:
                self._undo_idx = np.zeros(max(nc, len(self._prev)), np.int64)
            pw = <tcpsnap_row *>_ptr(self._prev, sizeof(tcpsnap_row), &n2)
            ppw = <int32_t *>_ptr(self._pproc, 4, &n2)
            uw = <tcpsnap_row *>_ptr(self._old, sizeof(tcpsnap_row), &n2)
            upw = <int32_t *>_ptr(self._oldproc, 4, &n2)
            uiw = <int64_t *>_ptr(self._undo_idx, 8, &n2)
            with nogil:
                ne = diff_in_place(pw, ppw, cp, cpp, nc, keyframe, ei, ec, uw, upw, uiw, &nu, iap,
                                   cw, cpw, cap)
            if ne >= 0:
                self.in_place = True
                self.n_undo = nu
                self._carried(cap, ne)
                self.closed_info = None if self._pinfo is None else self._pinfo[:0]
                self._pinfo, self._oldinfo = self._oldinfo, self._pinfo
                self._keep_info(info, nc)
                self.can_rollback = True
                return self._ev_idx[:ne], self._ev_code[:ne], self._no_rows, self._no_proc, False
        want = 64
        while want < 2 * nc:
            want *= 2
        if want > self.nslots:
            self._slots = np.zeros(want, np.int32)
            self.nslots = want
        if len(self._closed_idx) < max(npv, 1):
            self._closed_idx = np.zeros(max(npv, 2 * len(self._closed_idx), 1), np.int64)
        cdef const tcpsnap_row *pp = NULL
        cdef const int32_t *ppp = NULL
        if npv:
            pp = <const tcpsnap_row *>_ptr(self._prev, sizeof(tcpsnap_row), &n2)
            ppp = <const int32_t *>_ptr(self._pproc, 4, &n2)
        cdef int32_t *sl = <int32_t *>_ptr(self._slots, 4, &n2)
        cdef uint8_t *mt = <uint8_t *>_ptr(self._matched, 1, &n2)
        cdef int64_t *ci = <int64_t *>_ptr(self._closed_idx, 8, &n2)
        if cap != NULL:
            _carry_reset(cap, len(self._pids))      # (an in-place attempt's, undone)
        with nogil:
            res = diff_tables(pp, ppp, npv, cp, cpp, nc, keyframe or not self.primed,
                              sl, self.nslots, mt, ei, ec, ci, iap, cw, cpw, cap)
        if not self.primed:
            # the first table: its rows were there before the recording, not opened now
            self._ev_code[:res.n_events] = EV_KEYFRAME
        if res.n_closed:
            closed_idx = self._closed_idx[:res.n_closed]
            closed = self._prev[closed_idx]
            closed_proc = self._pproc[closed_idx]
        else:
            closed_idx, closed, closed_proc = self._closed_idx[:0], self._no_rows, self._no_proc
        # (closed rows' tcp_info: closed_info, until the next call)
        self.closed_info = None if self._pinfo is None else self._pinfo[closed_idx]
        # cur becomes prev (as bytes: a structured copy goes field by field); the old prev
        # is kept, in the other buffer, for rollback()
        self._prev, self._old = self._old, self._prev
        self._pproc, self._oldproc = self._oldproc, self._pproc
        self._pinfo, self._oldinfo = self._oldinfo, self._pinfo
        self.n_old = npv
        self.old_primed = self.primed
        if len(self._prev) < nc:
            self._prev = np.zeros(max(nc, 2 * len(self._prev)), ROW_DTYPE)
            self._pproc = np.zeros(len(self._prev), np.int32)
        if nc:
            self._prev[:nc].view(np.uint8)[:] = cur.view(np.uint8)
            self._pproc[:nc] = cproc
        self._keep_info(info, nc)
        self.n_prev = nc
        self.primed = True
        self.in_place = False
        self.prev_dup = res.cur_duplicate != 0
        self.can_rollback = True
        self.slots_valid = True
        self._carried(cap, res.n_events)
        return (self._ev_idx[:res.n_events], self._ev_code[:res.n_events], closed, closed_proc,
                bool(res.duplicate))

    cdef _carried(self, carry_args *ca, Py_ssize_t ne):
        """After a diff(carry=): what fixup() and carried() need."""
        if ca == NULL:
            return
        self.carrying = True
        self.n_need = ca.n_need
        self.n_stale = ca.n_stale
        self.ne_carry = ne
        self.pids_overflow = ca.overflow != 0

    def carried(self):
        """After ``diff(carry=)``: ``(need, pids, stale_inodes, stale_cookies)``: the rows
        (int64 indices into cur) whose owner must be looked up, the distinct pids carried
        (uint32: their processes are still some row's), and the inodes and cookies (uint64)
        of previous rows whose connection now has another inode (their owner entries are
        no row's any more). Views valid until the next diff. RuntimeError otherwise."""
        if not self.carrying:
            raise RuntimeError("carried() without a diff(carry=) waiting for its fixup()")
        if self.pids_overflow:
            # more owners than the set held: every pid of the table (and a larger set next time)
            pids = np.unique(self._cur["pid"])
            pids = pids[pids != 0].astype(np.uint32)
            self._pids = np.zeros(2 * len(self._pids), np.uint64)
        else:
            pids = self._pids[self._pids != 0].astype(np.uint32)
        return (self._need[:self.n_need], pids, self._stale_ino[:self.n_stale],
                self._stale_ck[:self.n_stale])

    def fixup(self):
        """After ``diff(carry=)`` and the lookups of ``carried()[0]`` (their pid and code
        written into the diff's cur and cproc): the table kept takes them, and the events
        are returned, ``(ev_idx, ev_code)``, as a diff of the completed table gives them
        (a row whose owner or name is not the previous row's: ``changed``, unless it is
        ``opened`` or ``state``). RuntimeError without such a diff."""
        cdef Py_ssize_t k, j, i, n2, ne, nu0, lo, hi, mid
        cdef uint32_t npid
        cdef int32_t nproc
        cdef bint hit
        cdef tcpsnap_row *cw
        cdef int32_t *cpw
        cdef tcpsnap_row *pw
        cdef int32_t *ppw
        cdef tcpsnap_row *ow
        cdef int32_t *opw
        cdef int64_t *uiw
        cdef uint8_t code
        if not self.carrying:
            raise RuntimeError("fixup() without a diff(carry=)")
        self.carrying = False
        ne = self.ne_carry
        cur, cproc = self._cur, self._cproc
        self._cur = self._cproc = None
        if not self.n_need:
            return self._ev_idx[:ne], self._ev_code[:ne]
        cdef const int64_t *nj = <const int64_t *>_ptr(self._need, 8, &n2)
        cdef const int64_t *ni = <const int64_t *>_ptr(self._need_i, 8, &n2)
        cdef const int64_t *ei = <const int64_t *>_ptr(self._ev_idx, 8, &n2)
        cdef uint8_t *ec = <uint8_t *>_ptr(self._ev_code, 1, &n2)
        cw = <tcpsnap_row *>_ptr(cur, sizeof(tcpsnap_row), &n2)
        cpw = <int32_t *>_ptr(cproc, 4, &n2)
        pw = <tcpsnap_row *>_ptr(self._prev, sizeof(tcpsnap_row), &n2)
        ppw = <int32_t *>_ptr(self._pproc, 4, &n2)
        ow = <tcpsnap_row *>_ptr(self._old, sizeof(tcpsnap_row), &n2)
        opw = <int32_t *>_ptr(self._oldproc, 4, &n2)
        uiw = <int64_t *>_ptr(self._undo_idx, 8, &n2) if self.in_place else NULL
        nu0 = self.n_undo
        extra = []
        for k in range(self.n_need):
            j = nj[k]
            i = ni[k]
            npid = cw[j].pid
            nproc = cpw[j]
            if self.in_place:
                # prev[j]: the old row, or cur's copy with the old owner (a row that changed)
                if npid == pw[j].pid and nproc == ppw[j]:
                    continue
                lo, hi, hit = 0, nu0, False          # undo_idx[:nu0] ascends
                while lo < hi:
                    mid = (lo + hi) // 2
                    if uiw[mid] < j:
                        lo = mid + 1
                    else:
                        hi = mid
                hit = lo < nu0 and uiw[lo] == j
                if not hit:                          # first write of it: undone by rollback
                    memcpy(&ow[self.n_undo], &pw[j], sizeof(tcpsnap_row))
                    opw[self.n_undo] = ppw[j]
                    uiw[self.n_undo] = j
                    self.n_undo += 1
                memcpy(&pw[j], &cw[j], sizeof(tcpsnap_row))
                ppw[j] = nproc
            else:
                # prev is a copy of cur (old owners); the previous table is _old
                pw[j].pid = npid
                ppw[j] = nproc
                if i < 0 or (npid == ow[i].pid and nproc == opw[i]):
                    continue
            lo, hi = 0, ne                           # ev_idx[:ne] ascends
            while lo < hi:
                mid = (lo + hi) // 2
                if ei[mid] < j:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < ne and ei[lo] == j:
                code = ec[lo]
                if code != EV_STATE and code != EV_OPENED:
                    ec[lo] = EV_CHANGED
            else:
                extra.append(j)
        if extra:
            idx = np.concatenate([self._ev_idx[:ne], np.array(extra, np.int64)])
            codes = np.concatenate([self._ev_code[:ne], np.full(len(extra), EV_CHANGED, np.uint8)])
            o = np.argsort(idx, kind="stable")
            ne += len(extra)
            self._ev_idx[:ne] = idx[o]
            self._ev_code[:ne] = codes[o]
        return self._ev_idx[:ne], self._ev_code[:ne]

    cdef _keep_info(self, info, Py_ssize_t nc):
        """``info`` (cur's tcp_info rows, or None) into _pinfo, the buffer rollback() does
        not need."""
        if info is None:
            self._pinfo = None
            return
        if self._pinfo is None or self._pinfo.dtype != info.dtype or len(self._pinfo) < nc:
            self._pinfo = np.zeros(max(nc, len(self._prev)), info.dtype)
        if nc:
            self._pinfo[:nc].view(np.uint8)[:] = info.view(np.uint8)

    def lookup(self, cookies):
        """Index into the last diffed table of each cookie (uint64), -1 where absent.
        ``cookies``: unsigned integers (an array of any integer dtype, a sequence, one
        scalar). Bad arguments: TypeError for what is not integers (floats, strings,
        structured rows, None), ValueError for a negative cookie, one past 2**64-1, or
        more than one dimension; RuntimeError after ``rollback`` (diff again first)."""
        cdef Py_ssize_t i, n, n2
        cookies = _cookies(cookies)
        if not self.slots_valid and self.n_prev:
            raise RuntimeError("lookup after rollback: the table it indexes is not diffed yet")
        n = len(cookies)
        out = np.full(n, -1, np.int64)
        if n == 0 or self.n_prev == 0:
            return out
        cdef const uint64_t *ck = <const uint64_t *>_ptr(cookies, 8, &n2)
        cdef int64_t *o = <int64_t *>_ptr(out, 8, &n2)
        cdef const tcpsnap_row *pp = <const tcpsnap_row *>_ptr(self._prev, sizeof(tcpsnap_row), &n2)
        cdef const int32_t *sl = <const int32_t *>_ptr(self._slots, 4, &n2)
        with nogil:
            for i in range(n):
                o[i] = diff_lookup(pp, sl, self.nslots, ck[i])
        return out
