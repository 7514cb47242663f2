# cython: language_level=3, boundscheck=False, wraparound=False
"""The writer's transpose: rows (``ROW_DTYPE``, 96 bytes each) into one array per column.

Arrow and Parquet want columns; numpy copies a field out of a structured array with a
strided loop per field, so 16 fields meant 16 passes over the rows (13-21 ms per 100k
rows, benchmarks/RESULTS.md "Footprint"). ``split`` reads each row once, without the
GIL, and writes every wanted field into its own new contiguous array, which Arrow then
wraps without copying. Built on every platform (no system call here).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t, int32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memcmp, memset
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS

import numpy as np

cdef enum:
    NOGIL_BYTES = 16 << 20  # put_rows: smaller copies keep the GIL (see there)
    MAX_FIELDS = 64
    BLOCK = 256            # rows per block: 24 KiB of 96-byte rows


def split(rows, fields):
    """``{name: array}`` for each ``(name, offset, dtype)`` of ``fields``: the ``dtype``
    (a numpy dtype, its shape included: ``("u1", (16,))`` gives an ``(n, 16)`` array)
    read at byte ``offset`` of each row of ``rows``, a 1-D structured array whose
    itemsize holds every field. Non-contiguous rows are copied first. ValueError for a
    field outside the row or more than 64 fields; TypeError for rows that are not a
    structured numpy array."""
    cdef Py_ssize_t n, i, end, itemsize
    cdef int nf = len(fields), f
    cdef size_t off[MAX_FIELDS]
    cdef size_t size[MAX_FIELDS]
    cdef char *dst[MAX_FIELDS]
    cdef const char *base
    cdef uint8_t[::1] bv
    cdef const uint8_t[::1] rv
    cdef char *b0
    cdef size_t pad
    if not isinstance(rows, np.ndarray) or rows.dtype.fields is None:
        raise TypeError("rows must be a structured numpy array")
    if rows.ndim != 1:
        raise ValueError("rows must be 1-dimensional")
    if nf > MAX_FIELDS:
        raise ValueError(f"at most {MAX_FIELDS} fields, got {nf}")
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    n = len(rows)
    itemsize = rows.dtype.itemsize
    out = {}
    # one block for all columns (each starts 64-byte aligned): one allocation, and its
    # address read once
    specs = []
    total = 0
    for name, o, dt in fields:
        dt = np.dtype(dt)
        if o < 0 or o + dt.itemsize > itemsize:
            raise ValueError(f"field {name!r} ({dt.itemsize} bytes at {o}) is outside a row of {itemsize} bytes")
        specs.append((name, o, dt, total))
        total += (n * dt.itemsize + 63) & ~63
    block = np.empty(total + 64, np.uint8)
    bv = block
    b0 = <char *>&bv[0]
    pad = (64 - (<uintptr_t>b0 & 63)) & 63
    for f, (name, o, dt, at) in enumerate(specs):
        a = block[pad + at:pad + at + n * dt.itemsize].view(dt.base)
        out[name] = a.reshape((n,) + dt.shape) if dt.shape else a
        off[f] = o
        size[f] = dt.itemsize
        dst[f] = b0 + pad + <size_t>at
    if n == 0:
        return out
    rv = rows.view(np.uint8)
    base = <const char *>&rv[0]
    with nogil:
        # blocks of rows that stay in the L1 cache while each field is copied out of them
        # by a loop of its own (one fixed-size move per row)
        i = 0
        while i < n:
            end = i + BLOCK if i + BLOCK < n else n
            for f in range(nf):
                copy_field(base, itemsize, i, end, off[f], size[f], dst[f])
            i = end
    return out


cdef inline void copy_field(const char *base, Py_ssize_t itemsize, Py_ssize_t i0, Py_ssize_t i1,
                            size_t off, size_t sz, char *dst) noexcept nogil:
    cdef Py_ssize_t i
    cdef const char *src = base + i0 * itemsize + off
    if sz == 8:
        for i in range(i0, i1):
            memcpy(dst + i * 8, src, 8)
            src += itemsize
    elif sz == 4:
        for i in range(i0, i1):
            memcpy(dst + i * 4, src, 4)
            src += itemsize
    elif sz == 2:
        for i in range(i0, i1):
            memcpy(dst + i * 2, src, 2)
            src += itemsize
    elif sz == 1:
        for i in range(i0, i1):
            dst[i] = src[0]
            src += itemsize
    elif sz == 16:
        for i in range(i0, i1):
            memcpy(dst + i * 16, src, 16)
            src += itemsize
    else:
        for i in range(i0, i1):
            memcpy(dst + i * sz, src, sz)
            src += itemsize


cdef inline uint64_t mix(const char *p, size_t sz) noexcept nogil:
    """A hash of sz bytes (whole words folded in, then the tail), finished by a multiply."""
    cdef uint64_t h = sz, w
    cdef uint32_t w4
    cdef size_t i = 0
    while i + 8 <= sz:
        memcpy(&w, p + i, 8)
        h = (h ^ w) * <uint64_t>0x9E3779B97F4A7C15ULL
        h ^= h >> 29
        i += 8
    if i + 4 <= sz:
        memcpy(&w4, p + i, 4)
        h = (h ^ w4) * <uint64_t>0x9E3779B97F4A7C15ULL
        h ^= h >> 29
        i += 4
    while i < sz:
        h = (h ^ <uint8_t>p[i]) * <uint64_t>0x9E3779B97F4A7C15ULL
        i += 1
    return h ^ (h >> 32)


def dictionary_encode(keys):
    """``(first, codes)`` for a C-contiguous array of fixed-size keys (1-D of any
    dtype, or 2-D: one row of bytes per key): ``first`` (int64) the index of each
    distinct key's first occurrence, in order of first occurrence, ``codes`` (int32)
    each key's position in ``first``; ``keys[first][codes]`` equals ``keys``. What
    ``pyarrow.compute.dictionary_encode`` gives, by an open-addressing hash in C, so
    the recorder does without ``pyarrow.compute`` (about 8 MiB resident). ValueError
    for a non-contiguous array or more than 2**31 - 1 keys."""
    cdef Py_ssize_t n, i
    cdef size_t sz, cap, mask, s, ndist = 0
    cdef const char *base
    cdef const uint8_t[::1] kv
    cdef int32_t[::1] codes
    cdef int64_t[::1] first
    cdef int32_t *slots
    cdef int32_t *grown
    cdef int32_t j
    cdef uint64_t h
    cdef bint oom = False
    if not isinstance(keys, np.ndarray) or not keys.flags.c_contiguous:
        raise ValueError("keys must be a C-contiguous numpy array")
    n = keys.shape[0] if keys.ndim else 0
    if n > 0x7FFFFFFF:
        raise ValueError("at most 2**31 - 1 keys")
    codes_a = np.empty(n, np.int32)
    first_a = np.empty(n, np.int64)
    if n == 0:
        return first_a, codes_a
    sz = keys.nbytes // n
    kv = keys.reshape(-1).view(np.uint8)
    base = <const char *>&kv[0]
    codes = codes_a
    first = first_a
    cap = 1024
    slots = <int32_t *>malloc(cap * sizeof(int32_t))
    if slots == NULL:
        raise MemoryError()
    memset(slots, 0xFF, cap * sizeof(int32_t))
    with nogil:
        mask = cap - 1
        for i in range(n):
            h = mix(base + i * sz, sz)
            s = h & mask
            while True:
                j = slots[s]
                if j < 0:
                    # a new key: its first row, and the table doubled past half full
                    slots[s] = <int32_t>ndist
                    first[ndist] = i
                    codes[i] = <int32_t>ndist
                    ndist += 1
                    if ndist * 2 > cap:
                        grown = <int32_t *>malloc(cap * 2 * sizeof(int32_t))
                        if grown == NULL:
                            oom = True
                            break
                        memset(grown, 0xFF, cap * 2 * sizeof(int32_t))
                        cap *= 2
                        mask = cap - 1
                        for s in range(ndist):
                            h = mix(base + first[s] * sz, sz) & mask
                            while grown[h] >= 0:
                                h = (h + 1) & mask
                            grown[h] = <int32_t>s
                        free(slots)
                        slots = grown
                    break
                if memcmp(base + first[j] * sz, base + i * sz, sz) == 0:
                    codes[i] = j
                    break
                s = (s + 1) & mask
            if oom:
                break
    free(slots)
    if oom:
        raise MemoryError()
    return first_a[:ndist], codes_a


def put_rows(dst, Py_ssize_t at, src):
    """Copy the rows of ``src`` into ``dst[at:at + len(src)]``: both C-contiguous 1-D arrays
    of one dtype (``ROW_DTYPE``...), as one ``memcpy`` of bytes (numpy copies a structured
    array field by field). Below 16 MiB the GIL is kept: numpy would let it go, and the
    capture thread that copies a snapshot into its batch then waits to get it back until
    the writer's Python lets go (benchmarks/RESULTS.md, "Rate at --interval 0"). ValueError
    for other dtypes or shapes, or rows that do not fit."""
    cdef Py_buffer bd, bs
    cdef Py_ssize_t item, n
    if not isinstance(dst, np.ndarray) or not isinstance(src, np.ndarray) or dst.dtype != src.dtype:
        raise ValueError("put_rows: dst and src must be numpy arrays of one dtype")
    if dst.ndim != 1 or src.ndim != 1:
        raise ValueError("put_rows: dst and src must be 1-dimensional")
    n = len(src)
    if at < 0 or at + n > len(dst):
        raise ValueError(f"put_rows: {n} rows at {at} do not fit in {len(dst)}")
    if n == 0:
        return
    item = dst.dtype.itemsize
    PyObject_GetBuffer(dst, &bd, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    try:
        PyObject_GetBuffer(src, &bs, PyBUF_C_CONTIGUOUS)
        try:
            if n * item >= NOGIL_BYTES:
                with nogil:
                    memcpy(<char *>bd.buf + at * item, bs.buf, n * item)
            else:
                memcpy(<char *>bd.buf + at * item, bs.buf, n * item)
        finally:
            PyBuffer_Release(&bs)
    finally:
        PyBuffer_Release(&bd)
