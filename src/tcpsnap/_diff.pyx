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

from tcpsnap._diffrow cimport (AHEAD, BLOCK, EV_CHANGED, EV_COUNTERS, EV_KEYFRAME, EV_OPENED, EV_QUEUES,
                              EV_STATE, NO_EVENT, B_PREV, B_PPROC, B_OLD, B_OLDPROC, B_UNDO, B_EVI, B_EVC,
                              B_NEED, B_NEEDI, B_STI, B_STC, B_PIDS, B_POUT, B_COUNT, carry_one, carry_ptr,
                              carry_reset, classify, contig_ptr, cookies_arg, event_of, fixup_rows, hash_row,
                              diff_in_place, diff_lookup, key_set, need_row, same_id, set_items)
from tcpsnap._row cimport get_buffer
from tcpsnap._schema import ROW_DTYPE

INT32 = np.dtype(np.int32)


cdef inline check_array(object arr, str name, object dtype, str dtype_name):
    """Differ.diff's check of cur and cproc: TypeError unless a numpy array, ValueError
    unless 1-D of ``dtype`` (the same dtype object: no numpy call to compare)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(arr).__name__}")
    d = arr.dtype
    if (d is not dtype and d != dtype) or arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional array of {dtype_name}, "
                         f"got {arr.ndim} dimensions of dtype {arr.dtype!r}")


cdef inline object keys_of(object keys):
    """key_set, but (None, 0) at once for an empty array (every quiet snapshot's)."""
    if isinstance(keys, np.ndarray) and len(keys) == 0:
        return None, 0
    return key_set(keys)

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
        h = hash_row(&cur[i]) & mask
        while True:
            s = slots[h]
            if s == 0:
                slots[h] = <int32_t>(i + 1)
                break
            if same_id(&cur[s - 1], &cur[i]):
                res.duplicate = 1          # the second copy is not in the table
                res.cur_duplicate = 1
                break
            h = (h + 1) & mask
    # 2. each prev row: still there (and how it changed), or closed.
    #    matched[j]: 0 = new, 1 = unchanged, else the event code.
    for i in range(np):
        h = hash_row(&prev[i]) & mask
        j = -1
        while True:
            s = slots[h]
            if s == 0:
                break
            if same_id(&cur[s - 1], &prev[i]):
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
            carry_one(prev, pproc, i, cur_w, cproc_w, j, ca)
        matched[j] = classify(prev, pproc, i, cur, cproc, j, with_info, info)
    # 3. the events, in cur's order; a keyframe lists every row
    if res.duplicate:
        keyframe = 1
    for j in range(nc):
        if ca != NULL and matched[j] == 0:
            need_row(ca, j, -1)               # new: looked up (its event is "opened" anyway)
        code = event_of(matched[j], keyframe)
        if code == NO_EVENT:
            continue
        ev_idx[res.n_events] = j
        ev_code[res.n_events] = code
        res.n_events += 1
    return res


cdef const void *_ptr(object arr, Py_ssize_t itemsize, Py_ssize_t *n) except? NULL:
    """A C-contiguous array's data pointer and length in items (it may be read-only)."""
    cdef Py_buffer b
    get_buffer(arr, &b, PyBUF_SIMPLE | PyBUF_C_CONTIGUOUS, "array")
    n[0] = b.len // itemsize
    PyBuffer_Release(&b)       # numpy buffers do not move while the array lives
    return b.buf


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
    cdef list _held              # the arrays whose data pointers _bp keeps (held: never stale)
    cdef void *_bp[B_COUNT]
    cdef object _no_idx, _no_code, _no_u64, _pid_out   # results kept from call to call

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
        self._held = [None] * B_COUNT
        self._no_idx, self._no_code = np.zeros(0, np.int64), np.zeros(0, np.uint8)
        self._no_u64 = np.zeros(0, np.uint64)
        self._pid_out = np.zeros(0, np.uint32)

    cdef void *_buf(self, object arr, int k, Py_ssize_t itemsize) except? NULL:
        """The data of one of the Differ's own arrays (``k``: which), looked up only when
        that array is another than the last time (none of them is ever resized)."""
        cdef Py_ssize_t n2
        if self._held[k] is not arr:
            self._bp[k] = <void *>_ptr(arr, itemsize, &n2)
            self._held[k] = arr
        return self._bp[k]

    cdef tuple _events(self, Py_ssize_t ne):
        """The first ne events (views of the buffers; the same empty arrays when none)."""
        if ne == 0:
            return self._no_idx, self._no_code
        return self._ev_idx[:ne], self._ev_code[:ne]

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

        ``carry=(dead, changed)``: cur's pids and cproc are not known yet; each row takes
        its previous row's (written into cur and cproc: C-contiguous, writeable) unless it
        is new, has another inode, pid 0, an owner in ``dead`` or an inode in ``changed``
        (``carried()[0]``: the caller fills those, then ``fixup()`` gives the events).
        RuntimeError without a previous table."""
        cdef Py_ssize_t nc, npv = self.n_prev, n2, want, ne, nu = 0
        cdef const tcpsnap_row *cp = NULL
        cdef tcpsnap_row *pw
        cdef tcpsnap_row *uw
        cdef int32_t *ppw
        cdef int32_t *upw
        cdef int64_t *uiw
        cdef const int32_t *cpp = NULL
        cdef diff_result res
        # (at a snapshot a second every call here runs with cold caches, where each numpy
        # call costs microseconds: the checks, pointers and results of the common case
        # below make none)
        check_array(cur, "cur", ROW_DTYPE, "ROW_DTYPE")
        check_array(cproc, "cproc", INT32, "int32")
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
            cw = <tcpsnap_row *>carry_ptr(cur, "cur")
            cpw = <int32_t *>carry_ptr(cproc, "cproc")
            cp, cpp = cw, cpw
            dset, dm = keys_of(carry[0])
            cset, cm = keys_of(carry[1])
        else:
            cp = <const tcpsnap_row *>contig_ptr(cur)
            if cp == NULL:
                cur = np.ascontiguousarray(cur)
                cp = <const tcpsnap_row *>_ptr(cur, sizeof(tcpsnap_row), &n2)
            cpp = <const int32_t *>contig_ptr(cproc)
            if cpp == NULL:
                cproc = np.ascontiguousarray(cproc)
                cpp = <const int32_t *>_ptr(cproc, 4, &n2)
        nc = len(cur)
        if carry is not None:
            if len(self._need) < max(nc, 1):
                k = max(nc, 2 * len(self._need), 1)
                self._need, self._need_i = np.zeros(k, np.int64), np.zeros(k, np.int64)
                self._stale_ino, self._stale_ck = np.zeros(k, np.uint64), np.zeros(k, np.uint64)
            ca.dead = NULL if dset is None else <const uint64_t *>_ptr(dset, 8, &n2)
            ca.dmask = dm
            ca.chg = NULL if cset is None else <const uint64_t *>_ptr(cset, 8, &n2)
            ca.cmask = cm
            ca.need_j = <int64_t *>self._buf(self._need, B_NEED, 8)
            ca.need_i = <int64_t *>self._buf(self._need_i, B_NEEDI, 8)
            ca.stale_ino = <uint64_t *>self._buf(self._stale_ino, B_STI, 8)
            ca.stale_ck = <uint64_t *>self._buf(self._stale_ck, B_STC, 8)
            ca.pids = <uint64_t *>self._buf(self._pids, B_PIDS, 8)
            ca.pmask = len(self._pids) - 1
            carry_reset(&ca, len(self._pids))
            cap = &ca
            self._cur = cur
            self._cproc = cproc
        if len(self._matched) < nc:
            k = max(nc, 2 * len(self._matched))
            self._matched = np.zeros(k, np.uint8)
            self._ev_idx = np.zeros(k, np.int64)
            self._ev_code = np.zeros(k, np.uint8)
        if not nc:
            cp, cpp, cw, cpw = NULL, NULL, NULL, NULL
        cdef int64_t *ei = <int64_t *>self._buf(self._ev_idx, B_EVI, 8)
        cdef uint8_t *ec = <uint8_t *>self._buf(self._ev_code, B_EVC, 1)
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
            pw = <tcpsnap_row *>self._buf(self._prev, B_PREV, sizeof(tcpsnap_row))
            ppw = <int32_t *>self._buf(self._pproc, B_PPROC, 4)
            uw = <tcpsnap_row *>self._buf(self._old, B_OLD, sizeof(tcpsnap_row))
            upw = <int32_t *>self._buf(self._oldproc, B_OLDPROC, 4)
            uiw = <int64_t *>self._buf(self._undo_idx, B_UNDO, 8)
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
                return self._events(ne) + (self._no_rows, self._no_proc, False)
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
            carry_reset(cap, len(self._pids))      # (an in-place attempt's, undone)
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
        if ca == NULL:
            return
        self.carrying = True
        self.n_need = ca.n_need
        self.n_stale = ca.n_stale
        self.ne_carry = ne
        self.pids_overflow = ca.overflow != 0

    def carried(self):
        """After ``diff(carry=)``: ``(need, pids, stale_inodes, stale_cookies)``: the rows
        to look up (int64), the distinct pids carried (uint32), the inodes and cookies
        (uint64) of previous rows whose inode changed. Views; RuntimeError otherwise."""
        if not self.carrying:
            raise RuntimeError("carried() without a diff(carry=) waiting for its fixup()")
        if self.pids_overflow:
            # more owners than the set held: every pid of the table (and a larger set next time)
            pids = np.unique(self._cur["pid"])
            pids = pids[pids != 0].astype(np.uint32)
            self._pids = np.zeros(2 * len(self._pids), np.uint64)
        else:
            pids = self._carried_pids()
        if self.n_need == 0 and self.n_stale == 0:
            return self._no_idx, pids, self._no_u64, self._no_u64
        return (self._need[:self.n_need], pids, self._stale_ino[:self.n_stale],
                self._stale_ck[:self.n_stale])

    def settle(self, end_rows):
        """After ``diff(carry=)``, the quiet table's shortcut of ``carried`` and ``fixup``:
        where no row needs a lookup, no inode changed and the pid set held every owner,
        ``end_rows(cur, need, pids)`` is called with what ``carried()`` would give (an
        empty int64 ``need``, the uint32 pids) and ``fixup()``'s ``(ev_idx, ev_code)`` is
        returned; else None and nothing is done (``carried``, the lookups, ``fixup`` then).
        An exception from ``end_rows`` leaves the diff waiting, as after ``carried()``.
        RuntimeError without a diff(carry=) waiting for its fixup."""
        if not self.carrying:
            raise RuntimeError("settle() without a diff(carry=) waiting for its fixup()")
        if self.n_need or self.n_stale or self.pids_overflow:
            return None
        end_rows(self._cur, self._no_idx, self._carried_pids())
        return self.fixup()              # nothing looked up: fixup's events as they are

    cdef object _carried_pids(self):
        """The pid set's pids (uint32, in its order): the array returned last time while
        they are the same (a table's owners seldom change), else a new one."""
        cdef const uint64_t *st = <const uint64_t *>self._buf(self._pids, B_PIDS, 8)
        cdef Py_ssize_t m = len(self._pids), n, n2
        if set_items(st, m, <uint32_t *>self._buf(self._pid_out, B_POUT, 4), len(self._pid_out), False) < 0:
            out = np.empty(m, np.uint32)
            n = set_items(st, m, <uint32_t *>_ptr(out, 4, &n2), m, True)
            self._pid_out = out[:n]
        return self._pid_out

    def fixup(self):
        """After ``diff(carry=)`` and the lookups: ``(ev_idx, ev_code)`` as a diff of the
        completed table gives them (``_diffrow.fixup_rows``). RuntimeError otherwise."""
        cdef Py_ssize_t n2, ne, nx, nu
        if not self.carrying:
            raise RuntimeError("fixup() without a diff(carry=)")
        self.carrying = False
        ne = self.ne_carry
        cur, cproc = self._cur, self._cproc
        self._cur = self._cproc = None
        if not self.n_need:
            return self._events(ne)
        extra = np.zeros(self.n_need, np.int64)
        nu = self.n_undo
        nx = fixup_rows(<const int64_t *>_ptr(self._need, 8, &n2), <const int64_t *>_ptr(self._need_i, 8, &n2),
                        self.n_need, <const tcpsnap_row *>_ptr(cur, sizeof(tcpsnap_row), &n2),
                        <const int32_t *>_ptr(cproc, 4, &n2),
                        <tcpsnap_row *>_ptr(self._prev, sizeof(tcpsnap_row), &n2),
                        <int32_t *>_ptr(self._pproc, 4, &n2),
                        <tcpsnap_row *>_ptr(self._old, sizeof(tcpsnap_row), &n2),
                        <int32_t *>_ptr(self._oldproc, 4, &n2),
                        <int64_t *>_ptr(self._undo_idx, 8, &n2) if self.in_place else NULL,
                        &nu, self.in_place, <const int64_t *>_ptr(self._ev_idx, 8, &n2),
                        <uint8_t *>_ptr(self._ev_code, 1, &n2), ne,
                        <int64_t *>_ptr(extra, 8, &n2), EV_STATE, EV_OPENED, EV_CHANGED)
        self.n_undo = nu
        if nx:
            # rows that had no event: merged in, in cur's order
            idx = np.concatenate([self._ev_idx[:ne], extra[:nx]])
            codes = np.concatenate([self._ev_code[:ne], np.full(nx, EV_CHANGED, np.uint8)])
            o = np.argsort(idx, kind="stable")
            ne += nx
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
        cookies = cookies_arg(cookies)
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
