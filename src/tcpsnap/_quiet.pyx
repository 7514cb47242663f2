# cython: language_level=3, boundscheck=False, wraparound=False
"""A changes-mode lone marker's whole write, in one compiled call (the writer thread).

At a slow interval with a quiet table every snapshot reaches the writer as a batch of its
marker row alone, like the one before but for its seq and clocks. The writer's general
path (``Writer._write`` then ``_make_durable``: ``marker_key``, ``LoneMarkers.write``,
``RowGroupStore.repeat_row``, ``LoneMarkers.repeat``, ``Journal.append_repeat``) ran
~170 µs of Python a snapshot with cold caches (benchmarks/RESULTS.md, "bench_where1s").
``QuietMarkers.write`` does the same in one call where the general path would repeat
the store's marker row and then journal the row as a repeat frame of the journal's last
frame: the key compared in place (no key bytes made), the row repeated over the store's
held column pointers, the frame's 62 bytes rewritten in place (only the clocks, seq and
payload CRC change) and written with ``pwrite`` without the GIL. Every other batch, and
this one whenever any condition of that case does not hold, goes the general path: the
state either leaves behind is the same, field by field, and so are the journal's bytes
(tests/test_quiet_markers.py holds it to the general path).
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno, EINTR, EIO
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from tcpsnap._rowstore cimport Columns, repeat_into
from tcpsnap._system cimport ssize_t, off_t, pwrite, fsync, ftruncate, raise_errno

cdef enum:
    M = 4                         # columns a marker's repeat frame carries (markers.PER_SNAPSHOT)
    HEAD = 16                     # payload length, raw length, their CRC
    PREFIX = 2 + 2 * M            # the payload's m and column indices
    FRAME = HEAD + 4 + PREFIX + 8 * M


cdef uint32_t _CRC[256]           # zlib's CRC-32 (reflected 0xEDB88320), a byte at a time


cdef void _crc_table() noexcept:
    cdef uint32_t c, n, k
    for n in range(256):
        c = n
        for k in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else c >> 1
        _CRC[n] = c


_crc_table()


cdef inline uint32_t _crc(uint32_t reg, const uint8_t *p, Py_ssize_t n) noexcept nogil:
    # the CRC register (not inverted) after bytes p[:n]
    while n > 0:
        reg = _CRC[(reg ^ p[0]) & 0xff] ^ (reg >> 8)
        p += 1
        n -= 1
    return reg


cdef inline void _le64(uint8_t *p, int64_t v) noexcept nogil:
    cdef uint64_t u = <uint64_t>v
    cdef int i
    for i in range(8):
        p[i] = <uint8_t>(u >> (8 * i))


cdef inline void _le32(uint8_t *p, uint32_t v) noexcept nogil:
    cdef int i
    for i in range(4):
        p[i] = <uint8_t>(v >> (8 * i))


cdef char *_data(object a, Py_ssize_t need, bint writable) except NULL:
    # the buffer of numpy array ``a`` (C-contiguous: a batch's or the store's), at least
    # ``need`` bytes. Released at once: the memory is the array's, which the caller holds
    # (the batch, the store) for as long as it uses the pointer; nothing here resizes it.
    cdef Py_buffer view
    cdef char *p
    PyObject_GetBuffer(a, &view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    p = <char *>view.buf
    if view.len < need:
        PyBuffer_Release(&view)
        raise ValueError(f"{view.len} bytes, {need} needed")
    PyBuffer_Release(&view)
    return p


cdef int _pwrite_all(int fd, const uint8_t *p, Py_ssize_t n, off_t pos) noexcept nogil:
    # what layout.pwrite_all does (os.pwrite retries EINTR): 0, or the errno
    cdef ssize_t k
    while n > 0:
        k = pwrite(fd, p, n, pos)
        if k < 0:
            if errno == EINTR:
                continue
            return errno
        if k == 0:
            return EIO
        p += k
        n -= k
        pos += k
    return 0


cdef class QuietMarkers:
    """The lone-marker case of one writer (its schema's ``cols``: the indices of
    ``markers.PER_SNAPSHOT``, timestamp first, the others kept per snapshot by the store),
    ``template``: ``journal.repeat_template(cols)``; ``row_size``: a batch row's bytes.
    ``taken`` counts the snapshots it wrote."""
    cdef uint8_t frame[FRAME]
    cdef uint32_t reg0            # the payload CRC's register after its PREFIX bytes
    cdef Py_ssize_t ts_col, sv_seq, sv_cap, sv_mono, row_size
    cdef list given               # repeat_into's: None but the timestamp's column
    cdef readonly Py_ssize_t taken

    def __init__(self, cols, template, Py_ssize_t ncols, Py_ssize_t row_size):
        cdef bytes head = template[0], prefix = template[1]
        if len(cols) != M or len(head) != HEAD or len(prefix) != PREFIX:
            raise ValueError(f"{len(cols)} columns, a head of {len(head)} and a prefix of {len(prefix)} bytes")
        memcpy(self.frame, PyBytes_AS_STRING(head), HEAD)
        memcpy(self.frame + HEAD + 4, PyBytes_AS_STRING(prefix), PREFIX)
        self.reg0 = _crc(0xFFFFFFFF, self.frame + HEAD + 4, PREFIX)
        self.ts_col, self.sv_seq, self.sv_cap, self.sv_mono = cols
        self.row_size = row_size
        self.given = [None] * ncols
        self.taken = 0

    cdef bint _same(self, b, bytes key) except -1:
        # marker_key(b) == key, compared in place. ``key`` is a lone marker's (the
        # journal's last frame's): equal bytes hold its family 0 and EV_SNAPSHOT too
        cdef const char *k = PyBytes_AS_STRING(key)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(key), at = 3, size
        cdef bint has_proc = b.has_proc
        extra = b.extra
        if n < 3 or k[0] != 124 or k[1] != (49 if has_proc else 48) or k[2] != 124:  # b"|1|", b"|0|"
            return False
        if n < at + self.row_size + 2 or memcmp(k + at, _data(b.rows, self.row_size, False), self.row_size):
            return False
        at += self.row_size
        if k[at] != _data(extra[0], 1, False)[0] or k[at + 1] != _data(extra[1], 1, False)[0]:
            return False
        at += 2
        if has_proc:
            if n < at + 4 or memcmp(k + at, _data(b.proc, 4, False), 4):
                return False
            at += 4
            names = b.names
            if names:  # not a marker's (it has no process), but as marker_key says
                joined = "\0".join(names).encode()
                size = len(joined)
                if n < at + size or memcmp(k + at, PyBytes_AS_STRING(joined), size):
                    return False
                at += size
        info, sampled = b.info, b.sampled
        if info is not None and sampled is not None:
            size = info.itemsize
            if n < at + size + 1 or memcmp(k + at, _data(info, size, False), size) \
                    or k[at + size] != _data(sampled, 1, False)[0]:
                return False
            at += size + 1
        return at == n

    def write(self, w, b) -> bool:
        """Batch ``b`` into writer ``w`` and durable in its journal, where it is the case
        this is for (``b`` one snapshot of its marker row alone, like the journal's last
        frame and the store's marker row; ``w`` with nothing pending, its rules making a
        batch durable as it comes, no row group due): what ``w._write(b)`` then
        ``w._make_durable()`` do, and True. False (nothing done) otherwise. Raises what
        the journal's write raises (OSError; the journal unusable after it), the state
        left then as the general path leaves it."""
        cdef Py_ssize_t r, k, row
        cdef int64_t ts, seq, cap, mono
        cdef int err
        cdef int fd
        cdef off_t pos
        cdef uint32_t crc
        if b.n != 1 or b.s != 1:
            return False
        extra = b.extra
        if extra is None:
            return False
        m = w._markers
        jkey = m.jkey
        ref = m.row
        if jkey is None or ref is None or m.pending or ref[0] != jkey:
            return False
        j = w._journal
        if j is None or j._broken or not j._full or w._oldest is not None:
            return False
        if w._app is None or b.file_key != w._file_key:
            return False
        st = w._store
        r = st.rows
        k = st.snapshots
        g = w._guard
        if r != w._journaled or r + 1 >= w.rules.row_group_rows or r + 1 > st.capacity \
                or (g is not None and r + 1 >= g.row_group_rows):
            return False
        held = st._held
        if held is None:
            held = st.held_columns()
        ends = st._ends
        svals = st._svals
        if len(ends) < k + 1 or len(svals[self.sv_seq]) < k + 1 \
                or len(svals[self.sv_cap]) < k + 1 or len(svals[self.sv_mono]) < k + 1:
            return False
        if not self._same(b, <bytes>jkey):
            return False
        ts = (<int64_t *>_data(extra[2], 8, False))[0]
        seq = (<int64_t *>_data(b.seq, 8, False))[0]
        cap = (<int64_t *>_data(b.cap, 8, False))[0]
        mono = (<int64_t *>_data(b.mono, 8, False))[0]
        # Writer._write: the store's marker row again (RowGroupStore.repeat_row)
        row = ref[1]
        (<int64_t *>_data(svals[self.sv_seq], 8 * (k + 1), True))[k] = seq
        (<int64_t *>_data(svals[self.sv_cap], 8 * (k + 1), True))[k] = cap
        (<int64_t *>_data(svals[self.sv_mono], 8 * (k + 1), True))[k] = mono
        given = self.given
        given[self.ts_col] = ts
        try:
            repeat_into(<Columns>held[0], st._dirty, <Columns>held[1], st._vdirty, given, row, r)
        finally:
            given[self.ts_col] = None
        st.rows = r + 1
        (<int64_t *>_data(ends, 8 * (k + 1), True))[k] = r + 1
        st.snapshots = k + 1
        st._marks.append((r + 1, seq))
        w._pending_seq = seq
        w._oldest = b.t_first
        fm = w._file_meta
        fm["snapshots"] += 1
        fm["last_seq"] = seq
        fm["overruns"] += b.overruns
        # Writer._make_durable: the row as a repeat frame of the journal's last one
        cb = w.on_durable
        if cb is not None:
            cb(seq, False)
        _le64(self.frame + HEAD + 4 + PREFIX, ts)
        _le64(self.frame + HEAD + 4 + PREFIX + 8, seq)
        _le64(self.frame + HEAD + 4 + PREFIX + 16, cap)
        _le64(self.frame + HEAD + 4 + PREFIX + 24, mono)
        crc = _crc(self.reg0, self.frame + HEAD + 4 + PREFIX, 8 * M) ^ 0xFFFFFFFF
        _le32(self.frame + HEAD, crc)
        fd = j._fd
        pos = j._pos
        with nogil:
            err = _pwrite_all(fd, self.frame, FRAME, pos)
            if err:
                ftruncate(fd, pos)  # no torn frame left behind (Journal._frame)
        if err:
            j._broken = True
            raise_errno(err)
        j._pos = pos + FRAME
        j.nbytes = pos + FRAME
        if j.fsync:
            with nogil:
                err = 0
                while fsync(fd) < 0:
                    if errno != EINTR:
                        err = errno
                        break
            if err:
                raise_errno(err)
        j.rows += 1
        w._journaled = r + 1
        w.durable_seq = seq
        cb = w.on_durable
        if cb is not None:
            cb(seq, True)
        w._oldest = None
        self.taken += 1
        return True
