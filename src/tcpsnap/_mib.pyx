# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Parser of raw Windows IP Helper TCP tables into tcpsnap rows.

Buffers are walked as a (pointer, length) pair with every read bounds-checked
against the length *before* any row is written, so recorded or hostile bytes
can be fed in from any platform. A LISTEN row's remote address, port and scope id
are zero whatever the buffer holds there (the SDK: they have no meaning).
"""

from cpython.buffer cimport PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy, memset

from tcpsnap._row cimport (tcpsnap_row, check_out_array as _check_out_array, get_buffer, index_arg, int_arg,
                           int_text)

cdef enum:
    MAX_MIB_STATE = 12
    MIB_STATE_LISTEN = 2

# Struct sizes and offsets from the Windows SDK headers (tcpmib.h), x86_64 and arm64 alike.
cdef mib_layout TCPTABLE2 = mib_layout(
    header_size=4, stride=28, row_size=28, family=4,
    off_state=0, off_laddr=4, off_lscope=-1, off_lport=8, off_raddr=12, off_rscope=-1,
    off_rport=16, off_pid=20, off_offload=24)
cdef mib_layout TCP6TABLE2 = mib_layout(
    header_size=4, stride=60, row_size=60, family=6,
    off_state=48, off_laddr=0, off_lscope=16, off_lport=20, off_raddr=24, off_rscope=40,
    off_rport=44, off_pid=52, off_offload=56)
cdef mib_layout TCPTABLE_OWNER_PID = mib_layout(
    header_size=4, stride=24, row_size=24, family=4,
    off_state=0, off_laddr=4, off_lscope=-1, off_lport=8, off_raddr=12, off_rscope=-1,
    off_rport=16, off_pid=20, off_offload=-1)
cdef mib_layout TCP6TABLE_OWNER_PID = mib_layout(
    header_size=4, stride=56, row_size=56, family=6,
    off_state=48, off_laddr=0, off_lscope=16, off_lport=20, off_raddr=24, off_rscope=40,
    off_rport=44, off_pid=52, off_offload=-1)


cdef inline uint32_t _dword(const char *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)          # unaligned-safe; the tables are little-endian like us
    return v


cdef inline uint32_t _port(const char *p) noexcept nogil:
    # A port DWORD holds the port in network order in its low 16 bits (the first two
    # bytes in memory); the high 16 bits are not guaranteed to be zero.
    return ((<uint8_t>p[0]) << 8) | (<uint8_t>p[1])


cdef mib_status mib_parse(const char *buf, Py_ssize_t buflen, const mib_layout *lay,
                          tcpsnap_row *out, Py_ssize_t cap, mib_result *res) noexcept nogil:
    cdef Py_ssize_t n, i, avail
    cdef const char *row
    cdef tcpsnap_row *r
    cdef uint32_t state, offload
    cdef int addrlen = 4 if lay.family == 4 else 16

    res.count = 0
    res.bad_row = -1
    res.bad_value = 0
    if buflen < lay.header_size or buflen < 4:
        return MIB_SHORT_HEADER
    n = <Py_ssize_t>_dword(buf)
    res.count = n
    if n > 0:
        # rows that fit: the last one needs row_size bytes, the others stride each
        avail = buflen - lay.header_size
        if avail < lay.row_size or (avail - lay.row_size) // lay.stride < n - 1:
            return MIB_SHORT_ROWS
    if n > cap:
        return MIB_OUT_TOO_SMALL

    # Validate every row before writing any, so a bad buffer leaves out untouched.
    for i in range(n):
        row = buf + lay.header_size + i * lay.stride
        state = _dword(row + lay.off_state)
        if state < 1 or state > MAX_MIB_STATE:
            res.bad_row = i
            res.bad_value = state
            return MIB_BAD_STATE
        if lay.off_offload >= 0:
            offload = _dword(row + lay.off_offload)
            if offload > 255:
                res.bad_row = i
                res.bad_value = offload
                return MIB_BAD_OFFLOAD

    for i in range(n):
        row = buf + lay.header_size + i * lay.stride
        r = out + i
        memset(r, 0, sizeof(tcpsnap_row))
        r.family = <uint8_t>lay.family
        r.state = <uint8_t>_dword(row + lay.off_state)
        memcpy(r.local_addr, row + lay.off_laddr, addrlen)
        r.local_port = _port(row + lay.off_lport)
        if lay.off_lscope >= 0:
            r.local_scope_id = _dword(row + lay.off_lscope)
        # The SDK: a LISTEN row's remote address, port and scope "have no meaning"; left
        # as found, junk there would make one listener one connection and one peer per
        # snapshot. They stay zero (memset above).
        if r.state != MIB_STATE_LISTEN:
            memcpy(r.remote_addr, row + lay.off_raddr, addrlen)
            r.remote_port = _port(row + lay.off_rport)
            if lay.off_rscope >= 0:
                r.remote_scope_id = _dword(row + lay.off_rscope)
        r.pid = _dword(row + lay.off_pid)
        if lay.off_offload >= 0:
            r.offload_state = <uint8_t>_dword(row + lay.off_offload)
    return MIB_OK


def check_out_array(out):
    """Validate a caller's output array; raise ValueError saying what is wrong (for every
    wrong kind: not a numpy array, not ROW_DTYPE, not 1-D, not C-contiguous, read-only)."""
    return _check_out_array(out)


cdef Py_ssize_t _parse(object buf, object out, mib_layout lay, str what) except -1:
    cdef Py_buffer inb, outb
    cdef mib_result res
    cdef mib_status st
    _check_out_array(out)
    get_buffer(buf, &inb, PyBUF_SIMPLE, "buf")
    try:
        get_buffer(out, &outb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
        try:
            with nogil:
                st = mib_parse(<const char *>inb.buf, inb.len, &lay,
                               <tcpsnap_row *>outb.buf, outb.len // sizeof(tcpsnap_row), &res)
        finally:
            PyBuffer_Release(&outb)
    finally:
        PyBuffer_Release(&inb)
    if st == MIB_OK:
        return res.count
    if st == MIB_SHORT_HEADER:
        raise ValueError(f"{what} buffer is {inb.len} bytes, shorter than its "
                         f"{max(lay.header_size, 4)}-byte header")
    if st == MIB_SHORT_ROWS:
        fits = 0 if inb.len - lay.header_size < lay.row_size else \
            (inb.len - lay.header_size - lay.row_size) // lay.stride + 1
        raise ValueError(f"{what} buffer says dwNumEntries={res.count} but its {inb.len} bytes "
                         f"hold only {fits} rows (header {lay.header_size}, stride {lay.stride})")
    if st == MIB_OUT_TOO_SMALL:
        raise ValueError(f"out holds {len(out)} rows but the {what} buffer has {res.count}: "
                         f"need an array of at least {res.count} rows")
    if st == MIB_BAD_STATE:
        raise ValueError(f"{what} row {res.bad_row}: dwState={res.bad_value} is not a "
                         f"MIB_TCP_STATE (1..12)")
    if st == MIB_BAD_OFFLOAD:
        raise ValueError(f"{what} row {res.bad_row}: dwOffloadState={res.bad_value} is not a "
                         f"TCP_CONNECTION_OFFLOAD_STATE")
    raise AssertionError(f"unknown mib_parse status {st}")  # pragma: no cover


cdef mib_layout _with(mib_layout lay, object header_size, object row_stride, str what) except *:
    """The layout with the caller's header size and row stride, checked: integers (else
    TypeError) from the SDK's sizes up to PY_SSIZE_T_MAX (else ValueError)."""
    h = index_arg(header_size, "header_size")
    s = index_arg(row_stride, "row_stride")
    if s < lay.row_size:
        raise ValueError(f"row_stride {int_text(s)} is smaller than a {what} row ({lay.row_size} bytes)")
    if h < 4:
        raise ValueError(f"header_size {int_text(h)} cannot hold dwNumEntries (4 bytes)")
    lay.header_size = int_arg(h, "header_size", 4, PY_SSIZE_T_MAX)
    lay.stride = int_arg(s, "row_stride", lay.row_size, PY_SSIZE_T_MAX)
    return lay


# Bad arguments raise exactly ValueError or TypeError, naming the argument: buf not a buffer,
# header_size / row_stride not integers -> TypeError; buf not C-contiguous, any wrong kind of
# out (see check_out_array), sizes out of range (also past PY_SSIZE_T_MAX), and every bad
# buffer content -> ValueError.

def parse_tcptable2(buf, out, *, header_size=4, row_stride=28):
    return _parse(buf, out, _with(TCPTABLE2, header_size, row_stride, "MIB_TCPTABLE2"), "MIB_TCPTABLE2")


def parse_tcp6table2(buf, out, *, header_size=4, row_stride=60):
    return _parse(buf, out, _with(TCP6TABLE2, header_size, row_stride, "MIB_TCP6TABLE2"), "MIB_TCP6TABLE2")


def parse_tcptable_owner_pid(buf, out, *, header_size=4, row_stride=24):
    return _parse(buf, out, _with(TCPTABLE_OWNER_PID, header_size, row_stride, "MIB_TCPTABLE_OWNER_PID"),
                  "MIB_TCPTABLE_OWNER_PID")


def parse_tcp6table_owner_pid(buf, out, *, header_size=4, row_stride=56):
    return _parse(buf, out, _with(TCP6TABLE_OWNER_PID, header_size, row_stride, "MIB_TCP6TABLE_OWNER_PID"),
                  "MIB_TCP6TABLE_OWNER_PID")


def row_layout():
    """``{field: offset}`` of the C struct as compiled, plus ``"itemsize"``."""
    cdef tcpsnap_row r
    cdef char *b = <char *>&r
    return {
        "family": <char *>&r.family - b,
        "state": <char *>&r.state - b,
        "offload_state": <char *>&r.offload_state - b,
        "_reserved": <char *>&r._reserved - b,
        "local_port": <char *>&r.local_port - b,
        "remote_port": <char *>&r.remote_port - b,
        "local_addr": <char *>&r.local_addr[0] - b,
        "remote_addr": <char *>&r.remote_addr[0] - b,
        "local_scope_id": <char *>&r.local_scope_id - b,
        "remote_scope_id": <char *>&r.remote_scope_id - b,
        "pid": <char *>&r.pid - b,
        "uid": <char *>&r.uid - b,
        "rx_queue": <char *>&r.rx_queue - b,
        "tx_queue": <char *>&r.tx_queue - b,
        "inode": <char *>&r.inode - b,
        "cookie": <char *>&r.cookie - b,
        "cgroup_id": <char *>&r.cgroup_id - b,
        "netns": <char *>&r.netns - b,
        "itemsize": sizeof(tcpsnap_row),
    }
