# cython: language_level=3, boundscheck=False, wraparound=False
"""The Thrift compact-protocol codec of ``tcpsnap.record.thrift``, compiled.

The writer decodes each of a row group's five in-memory Parquet writers' footers and
encodes the merged row group for the row-group log: ~1.3 ms of Python a row group, all
of it holding the GIL that the capture thread waits for (benchmarks/RESULTS.md, "Writer
cost in full mode", session 9). Same structures, same bytes, same errors as the Python
codec it replaces (``tests/test_thrift_codec.py`` holds them to a copy of it): structs
decode to ``{field_id: (type, value)}`` dicts in field order; integers wider than 63
bits take Python's arithmetic, as before. Built on every platform (no system call).
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

from tcpsnap._errors import ThriftError

# Python integers (never C constants): the bounds of the fast paths
_B63 = int("9223372036854775808")
_B64 = int("18446744073709551616")

# the compact protocol's type ids: C constants here, and module attributes that
# ``tcpsnap.record.thrift`` re-exports (one table)
cpdef enum:
    T_STOP = 0
    T_TRUE = 1
    T_FALSE = 2
    T_BYTE = 3
    T_I16 = 4
    T_I32 = 5
    T_I64 = 6
    T_DOUBLE = 7
    T_BINARY = 8
    T_LIST = 9
    T_SET = 10
    T_MAP = 11
    T_STRUCT = 12
    T_UUID = 13

cdef enum:
    MAX_DEPTH = 64


# ---------------------------------------------------------------- decoding

cdef class _Reader:
    cdef bytes b
    cdef const unsigned char *p
    cdef Py_ssize_t i, n

    def __cinit__(self, bytes b):
        self.b = b
        self.p = <const unsigned char *>PyBytes_AS_STRING(b)
        self.n = PyBytes_GET_SIZE(b)
        self.i = 0

    cdef inline int byte(self) except -1:
        if self.i >= self.n:
            raise ThriftError("truncated thrift data")
        self.i += 1
        return self.p[self.i - 1]

    cdef object varint(self):
        cdef uint64_t out = 0
        cdef int shift = 0, v
        while shift < 63:  # up to 9 bytes: 63 bits, exact in a uint64
            v = self.byte()
            out |= (<uint64_t>(v & 0x7F)) << shift
            if not v & 0x80:
                return out
            shift += 7
        big = out  # wider: Python's integers, as the Python codec
        while True:
            v = self.byte()
            big |= (<object>(v & 0x7F)) << shift
            if not v & 0x80:
                return big
            shift += 7
            if shift > 70:
                raise ThriftError("varint too long")

    cdef object zigzag(self):
        n = self.varint()
        if type(n) is int and n < _B63:
            return (<int64_t>(<uint64_t>n >> 1)) ^ -(<int64_t>(<uint64_t>n & 1))
        return (n >> 1) ^ -(n & 1)

    cdef bytes take(self, Py_ssize_t k):
        if k < 0 or k > self.n - self.i:
            raise ThriftError("truncated thrift data")
        out = PyBytes_FromStringAndSize(<const char *>self.p + self.i, k)
        self.i += k
        return out

    cdef object value(self, int t, int depth):
        cdef int h, et, kt, vt
        if depth > MAX_DEPTH:
            raise ThriftError("thrift data nested too deep")
        if t == T_TRUE or t == T_FALSE:  # a bool inside a list/set/map: one byte
            return self.byte() == T_TRUE
        if t == T_BYTE:
            return self.byte()
        if t == T_I16 or t == T_I32 or t == T_I64:
            return self.zigzag()
        if t == T_DOUBLE:
            return self.take(8)
        if t == T_BINARY:
            k = self.varint()
            if k > self.n - self.i:
                raise ThriftError("truncated thrift data")
            return self.take(k)
        if t == T_UUID:
            return self.take(16)
        if t == T_LIST or t == T_SET:
            h = self.byte()
            size, et = h >> 4, h & 0x0F
            if size == 15:
                size = self.varint()
            items = []
            while size > 0:  # never preallocated: a crafted size fails at the data's end
                items.append(self.value(et, depth + 1))
                size -= 1
            return (et, items)
        if t == T_MAP:
            size = self.varint()
            if size == 0:
                return (0, 0, [])
            h = self.byte()
            kt, vt = h >> 4, h & 0x0F
            pairs = []
            while size > 0:
                k = self.value(kt, depth + 1)
                pairs.append((k, self.value(vt, depth + 1)))
                size -= 1
            return (kt, vt, pairs)
        if t == T_STRUCT:
            return self.struct(depth + 1)
        raise ThriftError(f"unknown thrift type {t}")

    cdef dict struct(self, int depth):
        cdef dict out = {}
        cdef int h, t, delta
        last = 0
        while True:
            h = self.byte()
            if h == T_STOP:
                return out
            t = h & 0x0F
            delta = h >> 4
            fid = last + delta if delta else self.zigzag()
            if t == T_TRUE or t == T_FALSE:
                out[fid] = (T_TRUE, t == T_TRUE)  # normalised: the value says which
            else:
                out[fid] = (t, self.value(t, depth))
            last = fid


def decode_struct(data):
    """One struct from the start of ``data`` (bytes-like): ``{field_id: (type, value)}``.
    ThriftError (a ValueError) for truncated, over-long, too deeply nested or trailing
    data and unknown types."""
    cdef _Reader r = _Reader(bytes(data))
    s = r.struct(0)
    if r.i != r.n:
        raise ThriftError(f"{r.n - r.i} trailing bytes after thrift struct")
    return s


# ---------------------------------------------------------------- encoding

cdef class _Out:
    cdef unsigned char *p
    cdef Py_ssize_t n, cap

    def __cinit__(self):
        self.cap = 4096
        self.p = <unsigned char *>malloc(self.cap)
        if self.p == NULL:
            raise MemoryError()
        self.n = 0

    def __dealloc__(self):
        free(self.p)

    cdef int room(self, Py_ssize_t k) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef unsigned char *q
        if self.n + k <= cap:
            return 0
        while cap < self.n + k:
            cap *= 2
        q = <unsigned char *>realloc(self.p, cap)
        if q == NULL:
            raise MemoryError()
        self.p, self.cap = q, cap
        return 0

    cdef inline int put(self, long v) except -1:
        if v < 0 or v > 255:
            raise ValueError("byte must be in range(0, 256)")  # what bytearray.append says
        if self.n >= self.cap:
            self.room(1)
        self.p[self.n] = <unsigned char>v
        self.n += 1
        return 0

    cdef int extend(self, object v) except -1:
        # what ``bytearray += v`` takes: any object with the buffer protocol, its bytes
        cdef Py_buffer view
        PyObject_GetBuffer(v, &view, PyBUF_SIMPLE)
        try:
            self.room(view.len)
            memcpy(self.p + self.n, view.buf, view.len)
            self.n += view.len
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int varint(self, object n) except -1:
        cdef uint64_t u
        if n < 0:
            raise ThriftError("negative varint")
        if n < _B64:
            u = n
            self.room(10)
            while u >= 0x80:
                self.p[self.n] = <unsigned char>((u & 0x7F) | 0x80)
                self.n += 1
                u >>= 7
            self.p[self.n] = <unsigned char>u
            self.n += 1
            return 0
        while True:  # wider: Python's integers
            b = n & 0x7F
            n >>= 7
            if n:
                self.put(b | 0x80)
            else:
                self.put(b)
                return 0

    cdef int zigzag(self, object n) except -1:
        cdef int64_t v
        if -_B63 <= n < _B63:
            v = n
            self.varint((<uint64_t>v << 1) ^ <uint64_t>(v >> 63))
        else:
            self.varint((n << 1) ^ (n >> 63))
        return 0

    cdef int value(self, object t, object v) except -1:
        if t == T_TRUE or t == T_FALSE:
            self.put(T_TRUE if v else T_FALSE)
        elif t == T_BYTE:
            self.put(v & 0xFF)
        elif t == T_I16 or t == T_I32 or t == T_I64:
            self.zigzag(v)
        elif t == T_DOUBLE or t == T_UUID:
            self.extend(v)
        elif t == T_BINARY:
            self.varint(len(v))
            self.extend(v)
        elif t == T_LIST or t == T_SET:
            et, items = v
            if len(items) < 15:
                self.put((len(items) << 4) | et)
            else:
                self.put(0xF0 | et)
                self.varint(len(items))
            for x in items:
                self.value(et, x)
        elif t == T_MAP:
            kt, vt, items = v
            self.varint(len(items))
            if items:
                self.put((kt << 4) | vt)
                for k, x in items:
                    self.value(kt, k)
                    self.value(vt, x)
        elif t == T_STRUCT:
            if isinstance(v, bytes):  # a struct encoded already (encode_struct)
                self.extend(v)
            else:
                self.struct(v)
        else:
            raise ThriftError(f"unknown thrift type {t}")
        return 0

    cdef int struct(self, object s) except -1:
        last = 0
        for fid in sorted(s):
            t, v = s[fid]
            wire_t = (T_TRUE if v else T_FALSE) if (t == T_TRUE or t == T_FALSE) else t
            delta = fid - last
            if 0 < delta <= 15:
                self.put((delta << 4) | wire_t)
            else:
                self.put(wire_t)
                self.zigzag(fid)
            if not (t == T_TRUE or t == T_FALSE):
                self.value(t, v)
            last = fid
        self.put(T_STOP)
        return 0


def encode_struct(s):
    """``s`` (``{field_id: (type, value)}``, as ``decode_struct`` gives; a struct value may
    be bytes already encoded) in the compact protocol. ThriftError for an unknown type or
    a negative length."""
    cdef _Out out = _Out()
    out.struct(s)
    return PyBytes_FromStringAndSize(<const char *>out.p, out.n)
