# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""TCP internals: the C row of ``TCP_INFO_DTYPE`` checked at import, and the parsers of
``_tcp_info.h`` on bytes from anywhere (tests and tools: recorded attributes in, rows out),
Linux's ``struct tcp_info`` and Windows' GetPerTcpConnectionEStats structs alike.

The capture path (``_netlink``, ``_destroy``) cimports the parsers from ``_tcp_info.pxd``;
this module only proves they agree with ``tcpsnap._schema`` and lets Python call them.
"""

from cpython.buffer cimport PyBuffer_Release, PyBUF_SIMPLE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memset

import numpy as np

from tcpsnap._row cimport get_buffer
from tcpsnap._tcp_info cimport (tcpsnap_tcp_info, tcpsnap_tcp_info_field, tcp_info_from_attr,
                                tcp_info_cong, tcp_info_fields, info_attrs, info_seen, TCP_INFO_KNOWN,
                                tcp_info_from_estats, ESTATS_DATA_ROD_SIZE, ESTATS_PATH_ROD_SIZE,
                                estats_plan, estats_key, estats_plan_init, estats_plan_free,
                                estats_plan_run, ESTATS_DEFAULT_CAP)
from tcpsnap._row cimport tcpsnap_row
from tcpsnap._schema import ROW_DTYPE, TCP_INFO_DTYPE, TCP_INFO_KERNEL, TCP_INFO_KNOWN_LEN


def tcp_info_layout():
    """``{field: (offset here, size here, offset in struct tcp_info, size there)}`` of every
    field the C parser reads from the kernel, as compiled, plus the fields of our own
    (``congestion``, ``tcp_info_len``, ``estats``: kernel offset -1) and ``"itemsize"``."""
    cdef size_t n, i
    cdef const tcpsnap_tcp_info_field *f = tcp_info_fields(&n)
    cdef tcpsnap_tcp_info t
    cdef char *b = <char *>&t
    out = {f[i].name.decode(): (f[i].off, f[i].size, f[i].koff, f[i].ksize) for i in range(n)}
    out["congestion"] = (<char *>&t.congestion[0] - b, 16, -1, 0)
    out["tcp_info_len"] = (<char *>&t.tcp_info_len - b, 2, -1, 0)
    out["estats"] = (<char *>&t.estats - b, 1, -1, 0)
    out["itemsize"] = sizeof(tcpsnap_tcp_info)
    return out


def _check_layout():
    layout = tcp_info_layout()
    fields = TCP_INFO_DTYPE.fields or {}
    bad = [name for name, (off, size, koff, ksize) in (
        (k, v) for k, v in layout.items() if k != "itemsize")
        if name not in fields or fields[name][1] != off or fields[name][0].itemsize != size
        or (koff >= 0 and TCP_INFO_KERNEL.get(name) != (koff, ksize))]
    if (bad or layout["itemsize"] != TCP_INFO_DTYPE.itemsize or len(layout) - 1 != len(fields)
            or TCP_INFO_KNOWN != TCP_INFO_KNOWN_LEN):
        raise ImportError(f"struct tcpsnap_tcp_info (_tcp_info.h) differs from TCP_INFO_DTYPE "
                          f"(_schema.py): {', '.join(bad) or 'size or field set'}")


_check_layout()


def parse_info(info=None, cong=None):
    """One ``TCP_INFO_DTYPE`` row (an array of shape (1,)) from the payloads of an
    ``INET_DIAG_INFO`` attribute (``info``: a raw struct tcp_info of any length, or None:
    absent) and an ``INET_DIAG_CONG`` one (``cong``: the name's bytes, or None). What the
    dump does per row. TypeError or ValueError for what is not a C-contiguous buffer."""
    cdef Py_buffer b
    out = np.zeros(1, dtype=TCP_INFO_DTYPE)
    cdef tcpsnap_tcp_info *row = <tcpsnap_tcp_info *><size_t>out.ctypes.data
    if info is not None:
        get_buffer(info, &b, PyBUF_SIMPLE, "info")
        try:
            tcp_info_from_attr(<const uint8_t *>b.buf, b.len, row)
        finally:
            PyBuffer_Release(&b)
    if cong is not None:
        get_buffer(cong, &b, PyBUF_SIMPLE, "cong")
        try:
            tcp_info_cong(<const uint8_t *>b.buf, b.len, row)
        finally:
            PyBuffer_Release(&b)
    return out


def parse_attributes(attrs):
    """The attributes that follow an ``inet_diag_msg`` (netlink rtattrs, 4-aligned) ->
    ``(row, cgroup_id, len_max, longer)``: the ``TCP_INFO_DTYPE`` row (shape (1,)) the
    dump writes, the ``INET_DIAG_CGROUP_ID`` (0: none), the longest ``INET_DIAG_INFO``
    seen and how many were longer than known. A malformed attribute ends the walk (what
    came before it is kept), as in the dump."""
    cdef Py_buffer b
    cdef info_seen seen
    cdef uint64_t cg
    memset(&seen, 0, sizeof(seen))
    out = np.zeros(1, dtype=TCP_INFO_DTYPE)
    get_buffer(attrs, &b, PyBUF_SIMPLE, "attrs")
    try:
        cg = info_attrs(<const char *>b.buf, b.len, <tcpsnap_tcp_info *><size_t>out.ctypes.data, &seen)
    finally:
        PyBuffer_Release(&b)
    return out, cg, seen.len_max, seen.longer


#: Bytes of TCP_ESTATS_DATA_ROD_v0 and TCP_ESTATS_PATH_ROD_v0 (Windows, tcpestats.h).
ESTATS_SIZES = (ESTATS_DATA_ROD_SIZE, ESTATS_PATH_ROD_SIZE)


def parse_estats(data=None, path=None):
    """One ``TCP_INFO_DTYPE`` row (shape (1,)) from a connection's Windows extended
    statistics, as ``GetPerTcpConnectionEStats`` returns its read-only dynamic structs:
    ``data`` a TCP_ESTATS_DATA_ROD_v0 (96 bytes), ``path`` a TCP_ESTATS_PATH_ROD_v0 (160
    bytes); None or a shorter buffer: not read. ``estats`` says which were read
    (``ESTATS_DATA``, ``ESTATS_PATH``); the fields they do not fill are null in Arrow
    (``_schema.ESTATS_FIELDS``). Times in ms there become µs here. The counts are since
    collection was enabled for the connection (tcpsnap enables it when it first sees the
    connection), not since it opened. TypeError or ValueError for a bad buffer."""
    cdef Py_buffer db, pb
    cdef const uint8_t *dp = NULL
    cdef const uint8_t *pp = NULL
    cdef size_t dl = 0, pl = 0
    out = np.zeros(1, dtype=TCP_INFO_DTYPE)
    if data is not None:
        get_buffer(data, &db, PyBUF_SIMPLE, "data")
        dp, dl = <const uint8_t *>db.buf, db.len
    try:
        if path is not None:
            get_buffer(path, &pb, PyBUF_SIMPLE, "path")
            pp, pl = <const uint8_t *>pb.buf, pb.len
        try:
            tcp_info_from_estats(dp, dl, pp, pl, <tcpsnap_tcp_info *><size_t>out.ctypes.data)
        finally:
            if path is not None:
                PyBuffer_Release(&pb)
    finally:
        if data is not None:
            PyBuffer_Release(&db)
    return out


#: Connections whose EStats a Windows snapshot reads at most (``WindowsDumper.estats_cap``).
ESTATS_CAP = ESTATS_DEFAULT_CAP


def _rows_arg(rows):
    if not isinstance(rows, np.ndarray) or rows.dtype != ROW_DTYPE or rows.ndim != 1:
        raise TypeError("rows: a one-dimensional ROW_DTYPE numpy array")
    return np.ascontiguousarray(rows)


def estats_keys(rows):
    """The key each ``ROW_DTYPE`` row has in ``EstatsPlan`` (uint64 array, shape (n,)): a
    64-bit FNV-1a hash of family, addresses, ports and scope ids; state, pid and the rest do
    not count. TypeError for anything but ROW_DTYPE rows."""
    rows = _rows_arg(rows)
    cdef Py_ssize_t i, n = len(rows)
    out = np.empty(n, np.uint64)
    cdef uint64_t[::1] o = out
    cdef const tcpsnap_row *r = <const tcpsnap_row *><size_t>rows.ctypes.data
    for i in range(n):
        o[i] = estats_key(&r[i])
    return out


cdef class EstatsPlan:
    """Which rows a Windows snapshot asks ``GetPerTcpConnectionEStats`` about, snapshot after
    snapshot: the C plan the Windows backend runs (``_win/estats_plan.h``), here for any
    platform. Only ESTABLISHED rows count. ``step(rows)`` returns ``(fresh, pick)``, row
    indices (int64 arrays): ``fresh`` the connections not in the previous snapshot (collection
    is enabled for them now: their counts start when tcpsnap first saw them), ``pick`` at most
    ``cap`` connections to read, in key order from the one after the last read, wrapping:
    every connection is read within ceil(n / cap) snapshots. ValueError for a cap < 1,
    MemoryError when the plan's arrays cannot grow."""

    cdef estats_plan p

    def __cinit__(self, cap=ESTATS_DEFAULT_CAP):
        if int(cap) < 1:
            raise ValueError(f"cap must be at least 1 connection, not {cap}")
        estats_plan_init(&self.p, int(cap))

    def __dealloc__(self):
        estats_plan_free(&self.p)

    @property
    def cap(self):
        return self.p.cap

    @property
    def cursor(self):
        """The key of the last connection read (None before any)."""
        return self.p.cursor if self.p.has_cursor else None

    def step(self, rows):
        rows = _rows_arg(rows)
        if estats_plan_run(&self.p, <const tcpsnap_row *><size_t>rows.ctypes.data, len(rows)) < 0:
            raise MemoryError("EstatsPlan: cannot grow its arrays")
        fresh = np.array(<uint32_t[:self.p.nfresh]>self.p.fresh, np.int64) if self.p.nfresh else np.empty(0, np.int64)
        pick = np.array(<uint32_t[:self.p.npick]>self.p.pick, np.int64) if self.p.npick else np.empty(0, np.int64)
        return fresh, pick
