# Declarations shared by every compiled module, on every platform: the row every backend
# writes, and how a backend reaches the row array it writes into. Helpers are inline so that
# cimporting them adds no import of another compiled module.
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

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


cdef inline tcpsnap_row *rows_pointer(object rows, Py_ssize_t *cap) except NULL:
    """The row pointer and capacity of a backend's row array (a C-contiguous ROW_DTYPE numpy
    array). The caller keeps the array object alive as long as it uses the pointer."""
    cdef Py_buffer b
    PyObject_GetBuffer(rows, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    cap[0] = b.len // sizeof(tcpsnap_row)
    PyBuffer_Release(&b)       # numpy buffers do not move while the array lives
    if cap[0] == 0:
        raise ValueError("a backend row array needs at least one row")
    return <tcpsnap_row *>b.buf


cdef inline object check_out_array(object out):
    """Validate a caller's output array; raise ValueError saying what is wrong."""
    from tcpsnap._schema import ROW_DTYPE    # a .pxd cannot import at module level
    dtype = getattr(out, "dtype", None)
    if dtype is None or dtype != ROW_DTYPE:
        raise ValueError(f"out must be a numpy array of tcpsnap.ROW_DTYPE, got dtype {dtype!r}")
    if out.ndim != 1:
        raise ValueError(f"out must be 1-dimensional, got {out.ndim} dimensions")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return out
