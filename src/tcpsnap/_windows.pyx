# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Windows backend: GetTcpTable2 and GetTcp6Table2 through the native fetch layer (tcpfetch.c),
rows through the shared MIB parser (tcpsnap._mib.mib_parse).

Each WindowsDumper owns its fetch buffers (a tcpfetch_t) and its row array, and reuses both; the
GIL is released while Windows builds the tables and while rows are parsed. ``offload_state`` and
``pid`` come from the tables; ``uid``, ``inode``, ``cookie`` and the queues stay 0.
"""

import errno
import threading

import numpy as np

from libc.stdint cimport uint32_t
from libc.string cimport memset

from tcpsnap._row cimport tcpsnap_row, rows_pointer, capacity_arg
from tcpsnap._mib cimport (mib_layout, mib_parse, mib_result, mib_status, MIB_OK, MIB_SHORT_HEADER,
                           MIB_SHORT_ROWS, MIB_OUT_TOO_SMALL, MIB_BAD_STATE, MIB_BAD_OFFLOAD)
from tcpsnap._schema import ROW_DTYPE
from tcpsnap._errors import DumpInterrupted

cdef enum:
    STATE_LISTEN = 2


cdef mib_layout _sdk_layout(int table) except *:
    """The table's layout as the SDK headers tcpfetch.c was compiled with say (offsetof/sizeof),
    so padding after dwNumEntries or between rows is whatever this build of Windows has."""
    cdef tcpfetch_layout t
    cdef mib_layout m
    if tcpfetch_get_layout(table, &t) != 0:
        raise ImportError(f"tcpfetch has no layout for table {table}")
    m.header_size = t.header_size
    m.stride = t.stride
    m.row_size = t.row_size
    m.family = t.family
    m.off_state = t.off_state
    m.off_laddr = t.off_laddr
    m.off_lscope = t.off_lscope
    m.off_lport = t.off_lport
    m.off_raddr = t.off_raddr
    m.off_rscope = t.off_rscope
    m.off_rport = t.off_rport
    m.off_pid = t.off_pid
    m.off_offload = t.off_offload
    if m.header_size < 4 or m.stride < m.row_size or m.family not in (4, 6):
        raise ImportError(f"unusable SDK layout for {tcpfetch_call_name(table).decode()}: "
                          f"header {m.header_size}, stride {m.stride}, row {m.row_size}")
    return m


cdef mib_layout LAYOUT4 = _sdk_layout(TCPFETCH_TCP4)
cdef mib_layout LAYOUT6 = _sdk_layout(TCPFETCH_TCP6)


def sdk_layouts():
    """``{"GetTcpTable2": {...}, "GetTcp6Table2": {...}}``: the layouts this build parses with."""
    return {tcpfetch_call_name(TCPFETCH_TCP4).decode(): LAYOUT4,
            tcpfetch_call_name(TCPFETCH_TCP6).decode(): LAYOUT6}


cdef int raise_fetch(int table, int status, uint32_t winerr, str detail=None) except -1:
    """The one place a failed fetch becomes a Python exception; it names the call and the
    Windows error code."""
    cdef const char *name = tcpfetch_error_name(winerr)
    cdef char msg[512]
    call = tcpfetch_call_name(table).decode()
    if status == TCPFETCH_NOMEM:
        raise MemoryError(f"{call}: cannot allocate the table buffer")
    if status == TCPFETCH_BADARG:
        raise ValueError(f"tcpfetch: no table {table}")
    if detail is not None:
        raise OSError(errno.EPROTO, f"{call} returned a table tcpsnap cannot read: {detail}")
    code = f"Windows error {winerr:#x}" if winerr > 0xFFFF else f"Windows error {winerr}"
    if name != NULL:
        code += f" ({name.decode()})"
    if status == TCPFETCH_CHANGING:
        raise DumpInterrupted(f"{call}: the TCP table kept changing: {code} on every retry; "
                              "no consistent snapshot")
    tcpfetch_error_message(winerr, msg, sizeof(msg))
    text = msg.decode("mbcs", "replace") if msg[0] else ""
    raise OSError(0, f"{call} failed: {code}" + (f": {text}" if text else ""), None, winerr)


cdef str _unreadable(mib_status st, const mib_result *res, size_t blen):
    if st == MIB_SHORT_HEADER:
        return f"{blen} bytes, shorter than the header"
    if st == MIB_SHORT_ROWS:
        return f"dwNumEntries={res.count} rows do not fit in its {blen} bytes"
    if st == MIB_BAD_STATE:
        return f"row {res.bad_row}: dwState={res.bad_value} is not a MIB_TCP_STATE"
    if st == MIB_BAD_OFFLOAD:
        return f"row {res.bad_row}: dwOffloadState={res.bad_value} is not a TCP_CONNECTION_OFFLOAD_STATE"
    return f"mib_parse status {<int>st}"


cdef void _clear_listener_peers(tcpsnap_row *r, Py_ssize_t n) noexcept nogil:
    # The SDK: the remote address, scope and port of a LISTEN row "have no meaning" (and
    # the high 16 bits of a port DWORD may be uninitialized): report them as 0 like Linux.
    cdef Py_ssize_t i
    for i in range(n):
        if r[i].state == STATE_LISTEN:
            memset(r[i].remote_addr, 0, 16)
            r[i].remote_port = 0
            r[i].remote_scope_id = 0


cdef class WindowsDumper:
    """Owns one tcpfetch_t (the GetTcpTable2 / GetTcp6Table2 buffers) and one row array.

    Not for concurrent use: one per Snapshotter (a second thread calling ``dump()`` on the same
    instance meanwhile gets RuntimeError instead of sharing the buffers)."""

    cdef tcpfetch_t f
    cdef object _rows
    cdef tcpsnap_row *rowp
    cdef Py_ssize_t cap
    cdef bint closed
    cdef bint want_v6
    cdef object _lock
    cdef readonly unsigned long long dumps
    cdef readonly unsigned long long retries
    cdef readonly unsigned long long skipped
    cdef readonly unsigned long long grows

    def __cinit__(self):
        tcpfetch_init(&self.f)
        self.closed = False

    def __init__(self, capacity=1024):
        """TypeError for a capacity that is not an integer, ValueError below 1 row (or past
        what a Py_ssize_t counts in bytes)."""
        cdef Py_ssize_t cap = capacity_arg(capacity)
        self.want_v6 = True
        self._lock = threading.Lock()
        self._set_rows(np.zeros(cap, dtype=ROW_DTYPE))

    def __dealloc__(self):
        tcpfetch_free(&self.f)

    cdef _set_rows(self, rows):
        self.rowp = rows_pointer(rows, &self.cap)
        self._rows = rows      # keeps the data rowp points into alive

    cdef _grow(self, Py_ssize_t keep, Py_ssize_t need):
        cdef Py_ssize_t newcap = self.cap * 2
        while newcap < need:
            newcap *= 2
        new = np.empty(newcap, dtype=ROW_DTYPE)
        new[:keep] = self._rows[:keep]
        self._set_rows(new)
        self.grows += 1

    @property
    def rows(self):
        """The row array (capacity rows); the first ``dump()`` rows are valid."""
        return self._rows

    @property
    def capacity(self):
        return self.cap

    @property
    def calls(self):
        """IP Helper calls made (a fetch whose buffer fits makes one)."""
        return self.f.calls

    @property
    def buffer_grows(self):
        """(Re)allocations of the fetch buffers."""
        return self.f.grows

    def close(self):
        with self._lock:
            tcpfetch_free(&self.f)
            self.closed = True

    cdef Py_ssize_t _fetch(self, int table, const mib_layout *lay, Py_ssize_t n) except -1:
        """Fetch one table and parse it into rows[n:]; return its row count."""
        cdef const unsigned char *buf = NULL
        cdef size_t blen = 0
        cdef uint32_t winerr = 0
        cdef int st
        cdef mib_status mst = MIB_OK
        cdef mib_result res
        with nogil:
            st = tcpfetch(&self.f, table, &buf, &blen, &winerr)
            if st == TCPFETCH_OK:
                mst = mib_parse(<const char *>buf, <Py_ssize_t>blen, lay, self.rowp + n, self.cap - n, &res)
        if st != TCPFETCH_OK:
            if table == TCPFETCH_TCP6 and st == TCPFETCH_WINERR and winerr == TCPFETCH_ERROR_NOT_SUPPORTED:
                self.want_v6 = False     # no IPv6 stack: no IPv6 table
                return 0
            raise_fetch(table, st, winerr)
        while mst == MIB_OUT_TOO_SMALL:
            self._grow(n, n + res.count)
            with nogil:
                mst = mib_parse(<const char *>buf, <Py_ssize_t>blen, lay, self.rowp + n, self.cap - n, &res)
        if mst != MIB_OK:
            raise_fetch(table, st, 0, _unreadable(mst, &res, blen))
        with nogil:
            _clear_listener_peers(self.rowp + n, res.count)
        return res.count

    def dump(self):
        """Fill ``rows`` with the whole TCP table (IPv4, then IPv6); return the row count.
        Raises DumpInterrupted if the table kept changing through every retry, OSError naming
        the call and the Windows error code otherwise."""
        cdef Py_ssize_t n
        if not self._lock.acquire(False):
            raise RuntimeError("WindowsDumper.dump() called from two threads at once; "
                               "use one Snapshotter per thread")
        try:
            if self.closed:
                raise ValueError("dump on a closed WindowsDumper")
            before = self.f.retries
            n = self._fetch(TCPFETCH_TCP4, &LAYOUT4, 0)
            if self.want_v6:
                n += self._fetch(TCPFETCH_TCP6, &LAYOUT6, n)
            self.retries += self.f.retries - before
            self.dumps += 1
            return n
        finally:
            self._lock.release()
