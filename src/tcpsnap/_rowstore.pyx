# cython: language_level=3, boundscheck=False, wraparound=False
"""The row group store's copies (``tcpsnap.record.rowgroup.RowGroupStore``), compiled.

``put_columns`` copies a batch's columns into the store in one call that lets the GIL go
for all of them, where the store made two numpy calls per column (``any`` then the copy:
~30 columns, each a GIL hand-back, each read twice). ``repeat_row`` copies one row of
every column to the end (changes mode's lone markers at a slow interval), where the
store ran a Python loop over the columns: ~0.1 ms cold, once a snapshot, on the writer
thread (benchmarks/RESULTS.md, "Writer cost in full mode", session 9). Both keep the
store's rule: a run of zeros is not written where the column holds zeros already (never
written since it was allocated: it stays the kernel's zero page). Built on every
platform (no system call).
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp, memcpy, memset

cdef enum:
    MAX_COLUMNS = 4096


cdef char _ZEROS[4096]  # static: all 0


cdef inline bint _zero(const char *p, Py_ssize_t n) noexcept nogil:
    # all n bytes 0: memcmp against zeros a page at a time (libc's vector compare; a byte
    # loop made the store's append twice as slow as numpy's any()); returns at the first
    # block that is not (a column's first values, mostly)
    cdef Py_ssize_t k
    while n > 0:
        k = n if n < 4096 else 4096
        if memcmp(p, _ZEROS, k) != 0:
            return False
        p += k
        n -= k
    return True


def put_columns(list dst, list dirty, list index, list src, Py_ssize_t r):
    """For each ``k``: ``src[k]`` (1-D, C-contiguous, ``n`` values, the dtype of the column)
    into ``dst[index[k]][r:r + n]`` unless it is all 0 and the column holds 0 there
    already (row ``r`` at or past ``dirty[index[k]]``, the end of what was ever written);
    ``dirty`` is updated as ``RowGroupStore._put`` does. One hand-back of the GIL for all
    the copies. ValueError for a length, size or itemsize that does not match (nothing
    copied then)."""
    cdef Py_ssize_t k, m = len(index), n = -1, i, d, lo, hi
    cdef Py_buffer *views
    cdef char **dp
    cdef const char **sp
    cdef Py_ssize_t *size
    cdef Py_ssize_t *dr
    cdef Py_ssize_t *item
    cdef char *wrote
    cdef int got = 0
    if len(src) != m:
        raise ValueError(f"{len(src)} sources for {m} columns")
    if m == 0:
        return
    if m > MAX_COLUMNS:
        raise ValueError(f"at most {MAX_COLUMNS} columns, got {m}")
    views = <Py_buffer *>malloc(2 * m * sizeof(Py_buffer))
    dp = <char **>malloc(m * sizeof(char *))
    sp = <const char **>malloc(m * sizeof(char *))
    size = <Py_ssize_t *>malloc(m * sizeof(Py_ssize_t))
    dr = <Py_ssize_t *>malloc(m * sizeof(Py_ssize_t))
    item = <Py_ssize_t *>malloc(m * sizeof(Py_ssize_t))
    wrote = <char *>malloc(m)
    if not (views and dp and sp and size and dr and item and wrote):
        free(views); free(dp); free(sp); free(size); free(dr); free(item); free(wrote)
        raise MemoryError()
    try:
        for k in range(m):
            i = index[k]
            PyObject_GetBuffer(dst[i], &views[2 * k], PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
            got += 1
            PyObject_GetBuffer(src[k], &views[2 * k + 1], PyBUF_C_CONTIGUOUS)
            got += 1
            if views[2 * k].ndim != 1 or views[2 * k + 1].ndim != 1 \
                    or views[2 * k].itemsize != views[2 * k + 1].itemsize:
                raise ValueError(f"column {i}: a source of another shape or itemsize")
            if n < 0:
                n = views[2 * k + 1].shape[0]
            elif views[2 * k + 1].shape[0] != n:
                raise ValueError(f"column {i}: {views[2 * k + 1].shape[0]} values for {n} rows")
            if r < 0 or r + n > views[2 * k].shape[0]:
                raise ValueError(f"column {i}: rows {r}:{r + n} outside its {views[2 * k].shape[0]}")
            item[k] = views[2 * k].itemsize
            dp[k] = <char *>views[2 * k].buf
            sp[k] = <const char *>views[2 * k + 1].buf
            size[k] = n * item[k]
            dr[k] = dirty[i]
        with nogil:
            for k in range(m):
                wrote[k] = not _zero(sp[k], size[k])
                if wrote[k]:
                    memcpy(dp[k] + r * item[k], sp[k], size[k])
                elif r < dr[k]:
                    # zeros where something was written before
                    hi = dr[k] if dr[k] < r + n else r + n
                    memset(dp[k] + r * item[k], 0, (hi - r) * item[k])
        for k in range(m):
            if wrote[k] and r + n > dr[k]:
                dirty[<Py_ssize_t>index[k]] = r + n
    finally:
        for k in range(got):
            PyBuffer_Release(&views[k])
        free(views); free(dp); free(sp); free(size); free(dr); free(item); free(wrote)


cdef class Columns:
    """A store's columns (1-D C-contiguous arrays, or None) as C pointers, for
    ``repeat_row``: their buffers (and so the arrays) are held until this is dropped;
    the store makes a new one whenever it allocates new arrays. ValueError for an array
    that is not 1-D, BufferError for one that is not C-contiguous and writable."""
    # fields: _rowstore.pxd (tcpsnap._quiet reads them too)

    def __cinit__(self, list arrays):
        cdef Py_ssize_t i
        self.n = len(arrays)
        self.views = <Py_buffer *>malloc(max(self.n, 1) * sizeof(Py_buffer))
        self.held = <bint *>malloc(max(self.n, 1) * sizeof(bint))
        if self.views == NULL or self.held == NULL:
            raise MemoryError()
        for i in range(self.n):
            self.held[i] = False
        for i in range(self.n):
            a = arrays[i]
            if a is None:
                continue
            PyObject_GetBuffer(a, &self.views[i], PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
            self.held[i] = True
            if self.views[i].ndim != 1:
                raise ValueError(f"column {i}: {self.views[i].ndim} dimensions")

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.views != NULL and self.held != NULL:
            for i in range(self.n):
                if self.held[i]:
                    PyBuffer_Release(&self.views[i])
        free(self.views)
        free(self.held)


def repeat_row(Columns values, list dirty, Columns valid, list vdirty, list given, Py_ssize_t row,
               Py_ssize_t r):
    """Row ``row`` of every column ``i`` of ``values`` (None: a column not kept here,
    skipped) copied to row ``r``, or ``given[i]`` (an int, not None) written there as an
    8-byte integer (the column must be 8 bytes wide); a value of 0 is written only where
    row ``r`` is before ``dirty[i]``, as ``RowGroupStore.repeat_row`` did in Python;
    ``valid``'s column ``i`` (bool, or None) row ``row`` copied to row ``r``, ``vdirty[i]``
    moved past it. ValueError for a row outside a column or mismatched lengths (checked
    before anything is written)."""
    repeat_into(values, dirty, valid, vdirty, given, row, r)


cdef int repeat_into(Columns values, list dirty, Columns valid, list vdirty, list given, Py_ssize_t row,
                     Py_ssize_t r) except -1:
    # ``repeat_row`` (its doc), callable from C (tcpsnap._quiet's lone markers)
    cdef Py_ssize_t i, m = values.n, it
    cdef Py_buffer *v
    cdef char *p
    cdef int64_t x
    cdef bint nz
    if valid.n != m or len(dirty) != m or len(vdirty) != m or len(given) != m:
        raise ValueError(f"{m} columns, {valid.n} validities, {len(dirty)}, {len(vdirty)}, {len(given)}")
    for i in range(m):
        for c in (values, valid):
            v = &(<Columns>c).views[i]
            if (<Columns>c).held[i] and (row < 0 or row >= v.shape[0] or r < 0 or r >= v.shape[0]):
                raise ValueError(f"column {i}: rows {row}, {r} outside its {v.shape[0]}")
        if values.held[i] and given[i] is not None and values.views[i].itemsize != 8:
            raise ValueError(f"column {i}: a given value needs 8-byte values, not {values.views[i].itemsize}")
        if valid.held[i] and valid.views[i].itemsize != 1:
            raise ValueError(f"column {i}: a validity of {valid.views[i].itemsize}-byte values")
    for i in range(m):
        if not values.held[i]:
            continue
        v = &values.views[i]
        it = v.itemsize
        p = <char *>v.buf
        g = given[i]
        if g is not None:
            x = g
            nz = x != 0
            if nz or r < <Py_ssize_t>dirty[i]:
                memcpy(p + r * 8, &x, 8)
        else:
            nz = not _zero(p + row * it, it)
            if nz or r < <Py_ssize_t>dirty[i]:
                memcpy(p + r * it, p + row * it, it)
        if (nz or r < <Py_ssize_t>dirty[i]) and r + 1 > <Py_ssize_t>dirty[i]:
            dirty[i] = r + 1
        if valid.held[i]:
            p = <char *>valid.views[i].buf
            p[r] = p[row]
            if r + 1 > <Py_ssize_t>vdirty[i]:
                vdirty[i] = r + 1
    return 0


def spread(values, ends, Py_ssize_t snapshots, Py_ssize_t start, Py_ssize_t stop, out):
    """Rows ``start:stop`` of a column kept one value a snapshot: ``out[k]`` (8-byte
    values, ``stop - start`` of them) = ``values[j]`` for the snapshot ``j`` holding row
    ``start + k``, snapshot ``j`` ending at row ``ends[j]`` (int64, ascending, the first
    ``snapshots``). What ``np.repeat`` of the values by each snapshot's rows in the range
    gives, filled without the GIL. ValueError for widths other than 8 bytes, rows past
    the last snapshot, or arrays too short."""
    cdef const int64_t[::1] v = values
    cdef const int64_t[::1] e = ends
    cdef int64_t[::1] o = out
    cdef Py_ssize_t j, k, lo, hi
    cdef int64_t x
    if snapshots < 0 or snapshots > e.shape[0] or snapshots > v.shape[0]:
        raise ValueError(f"{snapshots} snapshots for {e.shape[0]} ends and {v.shape[0]} values")
    if start < 0 or stop < start or o.shape[0] != stop - start:
        raise ValueError(f"rows {start}:{stop} into {o.shape[0]}")
    if stop > start and (snapshots == 0 or e[snapshots - 1] < stop):
        raise ValueError(f"rows {start}:{stop} past the last snapshot's end")
    with nogil:
        j = 0
        while j < snapshots and e[j] <= start:   # the snapshot holding row start
            j += 1
        k = start
        while k < stop:
            hi = e[j] if e[j] < stop else stop
            x = v[j]
            for lo in range(k, hi):
                o[lo - start] = x
            k = hi if hi > k else k
            j += 1
