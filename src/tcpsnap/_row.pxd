# Declarations shared by every compiled module, on every platform: the row every backend
# writes, and how a backend reaches the row array it writes into. Helpers are inline so that
# cimporting them adds no import of another compiled module.
from cpython.buffer cimport (PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE,
                             PyBUF_C_CONTIGUOUS)
from cpython.float cimport PyFloat_AsDouble
from cpython.number cimport PyNumber_Index
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport realloc

cdef extern from "_row.h":
    ctypedef struct tcpsnap_row:
        uint8_t  family
        uint8_t  state
        uint8_t  offload_state
        uint8_t  _reserved
        uint16_t local_port
        uint16_t remote_port
        uint8_t  local_addr[16]
        uint8_t  remote_addr[16]
        uint32_t local_scope_id
        uint32_t remote_scope_id
        uint32_t pid
        uint32_t uid
        uint32_t rx_queue
        uint32_t tx_queue
        uint64_t inode
        uint64_t cookie
        uint64_t cgroup_id
        uint64_t netns


# --- arguments -------------------------------------------------------------------------------
# Every compiled entry point checks its arguments with these, so that a bad one raises exactly
# ValueError or TypeError (never BufferError, OverflowError or AttributeError) with one line
# naming it:
#   TypeError   not a buffer where a buffer is read; not an integer (float, str, None...) where
#               an integer is expected; not a number where a float is;
#   ValueError  a buffer that is not C-contiguous, or read-only where it is written (numpy says
#               ValueError for both, and check_out_array always did); an integer or a float
#               outside its range, also one that no C type here could hold (2**64, -1 for a
#               count, 10**400); an output row array of any wrong kind (as ever).

cdef inline str int_text(object i):
    """An integer for a message: its digits, or its size when it has too many to print."""
    if i.bit_length() > 256:
        return f"an integer of {i.bit_length()} bits"
    return str(i)


cdef inline object index_arg(object v, str name):
    """``operator.index(v)``: a Python int, or TypeError naming the argument (no floats, no
    str, no None: what a C integer argument would take, without its OverflowError)."""
    try:
        return PyNumber_Index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(v).__name__}") from None


cdef inline object int_arg(object v, str name, object lo, object hi):
    """``v`` as a Python int in lo..hi: TypeError unless it is an integer, ValueError outside
    the range; both naming the argument. The result fits any C type that holds lo..hi."""
    i = index_arg(v, name)
    if i < lo or i > hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {int_text(i)}")
    return i


cdef inline double float_arg(object v, str name) except? -1.0:
    """``v`` as a C double: TypeError unless it is a number (float or integer), ValueError
    for an integer too large for a double; both naming the argument."""
    try:
        return PyFloat_AsDouble(v)
    except TypeError:
        raise TypeError(f"{name} must be a number, not {type(v).__name__}") from None
    except OverflowError:
        raise ValueError(f"{name} is too large for a float: {int_text(index_arg(v, name))}") from None


cdef inline int get_buffer(object obj, Py_buffer *view, int flags, str name) except -1:
    """``PyObject_GetBuffer(obj, view, flags)``, raising only TypeError (not a buffer at all)
    or ValueError (a buffer, but not C-contiguous, or read-only where PyBUF_WRITABLE is
    asked), naming the argument. Where a memoryview says BufferError and numpy ValueError,
    this says ValueError for both. Release the view with PyBuffer_Release."""
    cdef bint writable = (flags & PyBUF_WRITABLE) != 0
    if not PyObject_CheckBuffer(obj):
        raise TypeError(f"{name} must be a bytes-like object, not {type(obj).__name__}")
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, ValueError) as e:
        what = "a C-contiguous writeable buffer" if writable else "a C-contiguous buffer"
        raise ValueError(f"{name} must be {what} ({e})") from None
    return 0


cdef inline tcpsnap_row *rows_pointer(object rows, Py_ssize_t *cap) except NULL:
    """The row pointer and capacity of a backend's row array (a C-contiguous ROW_DTYPE numpy
    array). The caller keeps the array object alive as long as it uses the pointer."""
    cdef Py_buffer b
    get_buffer(rows, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "rows")
    cap[0] = b.len // sizeof(tcpsnap_row)
    PyBuffer_Release(&b)       # numpy buffers do not move while the array lives
    if cap[0] == 0:
        raise ValueError("a backend row array needs at least one row")
    return <tcpsnap_row *>b.buf


cdef inline Py_ssize_t capacity_arg(object capacity) except -1:
    """A backend's row capacity: 1.. the most rows whose bytes a Py_ssize_t can count.
    Beyond what memory holds, numpy says MemoryError when the array is made."""
    c = index_arg(capacity, "capacity")
    if c < 1:
        raise ValueError("capacity must be at least 1 row")
    return int_arg(c, "capacity", 1, PY_SSIZE_T_MAX // <Py_ssize_t>sizeof(tcpsnap_row))


cdef inline object check_out_array(object out, str name="out"):
    """Validate a caller's output array; raise ValueError saying what is wrong (any wrong
    kind: not a numpy array, dtype, dimensions, not C-contiguous, read-only)."""
    from numpy import ndarray                # a .pxd cannot import at module level
    from tcpsnap._schema import ROW_DTYPE
    if not isinstance(out, ndarray):
        raise ValueError(f"{name} must be a numpy array of tcpsnap.ROW_DTYPE, got {type(out).__name__}")
    dtype = out.dtype
    if dtype != ROW_DTYPE:
        raise ValueError(f"{name} must be a numpy array of tcpsnap.ROW_DTYPE, got dtype {dtype!r}")
    if out.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got {out.ndim} dimensions")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return out


# --- C memory --------------------------------------------------------------------------------

cdef inline int room(void **p, size_t *cap, size_t need, size_t item, size_t first) noexcept nogil:
    """``*p`` (``realloc``'s, or NULL) made to hold at least ``need`` items of ``item``
    bytes, contents kept: at least ``first`` items, doubling; ``*cap`` its room in items.
    0, or -1 when out of memory (``*p`` and ``*cap`` as they were)."""
    cdef size_t c = cap[0]
    cdef void *q
    if need <= c and p[0] != NULL:
        return 0
    if c < first:
        c = first
    while c < need:
        c *= 2
    q = realloc(p[0], c * item)
    if q == NULL:
        return -1
    p[0] = q
    cap[0] = c
    return 0
