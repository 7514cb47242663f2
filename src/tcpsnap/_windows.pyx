# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Windows backend: GetTcpTable2 and GetTcp6Table2 through the native fetch layer (tcpfetch.c),
rows through the shared MIB parser (tcpsnap._mib.mib_parse).

Each WindowsDumper owns its fetch buffers (a tcpfetch_t) and its row array, and reuses both; the
GIL is released while Windows builds the tables and while rows are parsed. ``offload_state`` and
``pid`` come from the tables; ``uid``, ``inode``, ``cookie`` and the queues stay 0.

With ``set_tcp_info(True)`` it also fills ``tcp_info`` from GetPerTcpConnectionEStats (Data and
Path structs, _win/estats.c) for ESTABLISHED rows, where the calls exist and the process is
elevated: collection is enabled for each connection the first snapshot that sees it, and at
most ``estats_cap`` connections are read per snapshot, in round-robin (_win/estats_plan.h).
Otherwise every internals row is zero (null in a recording) and ``tcp_info_unavailable`` says why.
"""

import errno
import threading

import numpy as np

from libc.stdint cimport uint8_t, uint32_t
from libc.string cimport memcpy, memset

from tcpsnap._row cimport tcpsnap_row, rows_pointer, capacity_arg
from tcpsnap._mib cimport (mib_layout, mib_parse, mib_result, mib_status, MIB_OK, MIB_SHORT_HEADER,
                           MIB_SHORT_ROWS, MIB_OUT_TOO_SMALL, MIB_BAD_STATE, MIB_BAD_OFFLOAD)
from tcpsnap._tcp_info cimport (tcpsnap_tcp_info, tcp_info_from_estats, ESTATS_DATA_ROD_SIZE,
                                ESTATS_PATH_ROD_SIZE, estats_plan, estats_plan_init, estats_plan_free,
                                estats_plan_run, ESTATS_DEFAULT_CAP)
from tcpsnap._schema import ROW_DTYPE, TCP_INFO_DTYPE
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


cdef str _estats_why(const tcpestats_t *e):
    """Why a tcpestats_t gives no internals, or None: the text `tcpsnap show --info` prints."""
    if e.state == TCPESTATS_READY:
        return None
    if e.state == TCPESTATS_NO_EXPORT:
        return (f"iphlpapi.dll does not export {e.missing.decode()} (Wine does not have it; "
                "Windows has it since Vista)")
    if e.state == TCPESTATS_NO_DLL:
        return "iphlpapi.dll could not be loaded"
    if e.state == TCPESTATS_NOT_ELEVATED:
        return ("tcpsnap is not elevated: Windows enables per-connection statistics "
                "(SetPerTcpConnectionEStats) for an administrator's elevated process only")
    return "internals were not asked for (set_tcp_info(True))"


def estats_unavailable():
    """Why this process would get no GetPerTcpConnectionEStats internals (a sentence), or None
    where it would: the calls are resolved (GetProcAddress on iphlpapi.dll) and the token's
    elevation checked, as ``set_tcp_info(True)`` does."""
    cdef tcpestats_t e
    tcpestats_open(&e)
    return _estats_why(&e)


cdef inline void _conn(const tcpsnap_row *r, tcpestats_conn *c) noexcept nogil:
    memset(c, 0, sizeof(tcpestats_conn))      # padding too: the struct is compared whole in tests
    c.family = r.family
    memcpy(c.local_addr, r.local_addr, 16)
    memcpy(c.remote_addr, r.remote_addr, 16)
    c.local_port = r.local_port
    c.remote_port = r.remote_port
    c.local_scope_id = r.local_scope_id
    c.remote_scope_id = r.remote_scope_id


cdef void _estats_fill(tcpestats_t *e, const estats_plan *p, const tcpsnap_row *rows,
                       tcpsnap_tcp_info *info) noexcept nogil:
    # enable every fresh connection (uncapped: its counts start when first seen), then read
    # the picked ones; a connection closed meanwhile fails (ERROR_NOT_FOUND) and stays zero
    cdef tcpestats_conn c
    cdef uint8_t data[96]
    cdef uint8_t path[160]
    cdef int got = 0
    cdef size_t k
    cdef uint32_t i
    cdef const uint8_t *dp
    cdef const uint8_t *pp
    for k in range(p.nfresh):
        _conn(&rows[p.fresh[k]], &c)
        tcpestats_enable(e, &c)
        if e.state != TCPESTATS_READY:     # ERROR_ACCESS_DENIED: not elevated after all
            return
    for k in range(p.npick):
        i = p.pick[k]
        _conn(&rows[i], &c)
        tcpestats_read(e, &c, data, sizeof(data), path, sizeof(path), &got)
        if got:
            dp = data if got & 1 else NULL
            pp = path if got & 2 else NULL
            tcp_info_from_estats(dp, ESTATS_DATA_ROD_SIZE, pp, ESTATS_PATH_ROD_SIZE, &info[i])


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
    cdef tcpestats_t est
    cdef estats_plan plan
    cdef object _info            # TCP_INFO_DTYPE rows, or None before set_tcp_info(True)
    cdef bint info_on

    def __cinit__(self):
        tcpfetch_init(&self.f)
        self.closed = False
        memset(&self.est, 0, sizeof(self.est))
        self.est.state = TCPESTATS_NOT_OPENED
        estats_plan_init(&self.plan, ESTATS_DEFAULT_CAP)

    def __init__(self, capacity=1024):
        """TypeError for a capacity that is not an integer, ValueError below 1 row (or past
        what a Py_ssize_t counts in bytes)."""
        cdef Py_ssize_t cap = capacity_arg(capacity)
        self.want_v6 = True
        self._lock = threading.Lock()
        self._set_rows(np.zeros(cap, dtype=ROW_DTYPE))

    def __dealloc__(self):
        tcpfetch_free(&self.f)
        estats_plan_free(&self.plan)

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

    def set_tcp_info(self, bint enabled):
        """Fill ``tcp_info`` at the next dumps (True) or stop (False; the array is kept).
        The first True resolves the EStats calls and checks elevation."""
        if enabled and self.est.state == TCPESTATS_NOT_OPENED:
            tcpestats_open(&self.est)
        if enabled and self._info is None:
            self._info = np.zeros(self.cap, TCP_INFO_DTYPE)
        self.info_on = enabled

    @property
    def tcp_info(self):
        """``TCP_INFO_DTYPE`` rows aligned with ``rows`` (the first ``dump()`` valid), or None
        without ``set_tcp_info(True)``. A row not read this snapshot is all zero."""
        return self._info if self.info_on else None

    @property
    def tcp_info_seen(self):
        """``(0, 0)``: Windows sends no struct tcp_info (the Linux backend's lengths)."""
        return 0, 0

    @property
    def tcp_info_unavailable(self):
        """Why ``tcp_info`` stays zero (a sentence), or None when EStats are read."""
        return _estats_why(&self.est)

    @property
    def estats_cap(self):
        """Connections read per snapshot at most (default 1,000); ValueError below 1."""
        return self.plan.cap

    @estats_cap.setter
    def estats_cap(self, value):
        if int(value) < 1:
            raise ValueError(f"estats_cap must be at least 1 connection, not {value}")
        self.plan.cap = int(value)

    @property
    def estats_stats(self):
        """``{"enabled", "reads", "failures"}``: connections enabled, read, failed calls."""
        return {"enabled": self.est.enabled, "reads": self.est.reads, "failures": self.est.failures}

    cdef int _fill_info(self, Py_ssize_t n) except -1:
        cdef tcpsnap_tcp_info *info
        cdef int rc = 0
        if len(self._info) < self.cap:
            self._info = np.zeros(self.cap, TCP_INFO_DTYPE)
        info = <tcpsnap_tcp_info *><size_t>self._info.ctypes.data
        with nogil:
            memset(info, 0, n * sizeof(tcpsnap_tcp_info))
            if self.est.state == TCPESTATS_READY:
                rc = estats_plan_run(&self.plan, self.rowp, n)
                if rc == 0:
                    _estats_fill(&self.est, &self.plan, self.rowp, info)
        if rc < 0:
            raise MemoryError("cannot grow the EStats plan")
        return 0

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
            if self.info_on:
                self._fill_info(n)
            self.retries += self.f.retries - before
            self.dumps += 1
            return n
        finally:
            self._lock.release()
