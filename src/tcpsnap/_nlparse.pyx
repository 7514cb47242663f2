# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Linux backend's parser, cookie dedupe and filter audit on bytes from anywhere: what
``NetlinkDumper`` runs, for tests and tools (recorded netlink messages in, rows out)."""

from cpython.buffer cimport PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from tcpsnap._row cimport tcpsnap_row, check_out_array, get_buffer, index_arg, int_arg, int_text
from tcpsnap._netlink cimport nl_cursor, nl_result, nl_status, nl_parse, NL_MORE, NL_DONE, NL_FULL, NL_ERROR, NL_MALFORMED
from tcpsnap._cookies cimport dedupe_by_cookie, cookie_state, cookie_room, cookie_dedupe, cookie_free
from tcpsnap._bcaudit cimport bc_audit
from tcpsnap._tcp_info cimport tcpsnap_tcp_info


def audit_bytecode(bytecode):
    """Check an inet_diag filter program as the kernel's audit does; ValueError saying
    what is wrong and where, TypeError for what is not a buffer. What ``set_filter`` runs."""
    cdef Py_buffer b
    cdef Py_ssize_t where = 0
    cdef const char *why
    get_buffer(bytecode, &b, PyBUF_SIMPLE, "bytecode")
    try:
        why = bc_audit(<const uint8_t *>b.buf, b.len, &where)
    finally:
        PyBuffer_Release(&b)
    if why != NULL:
        raise ValueError(f"inet_diag bytecode rejected at byte {where}: {why.decode()}")


def parse_messages(data, out, seq):
    """Parse recorded netlink bytes into ``out``; return (rows, status, error, dump_intr).

    For tests and tools: the same parser ``dump()`` runs, on bytes from anywhere.
    Status is one of "more", "done", "full", "error", "malformed".
    Bad arguments: TypeError for data that is not a buffer or a seq that is not an integer;
    ValueError for data that is not C-contiguous, any wrong kind of out (check_out_array),
    a seq outside 0..2**32-1.
    """
    cdef Py_buffer inb, outb
    cdef nl_cursor cur
    cdef nl_result res
    cdef nl_status st
    cdef uint32_t cseq = int_arg(seq, "seq", 0, 0xFFFFFFFF)
    check_out_array(out)
    get_buffer(data, &inb, PyBUF_SIMPLE, "data")
    try:
        get_buffer(out, &outb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
        try:
            cur.buf = <const char *>inb.buf
            cur.len = inb.len
            cur.off = 0
            memset(&res, 0, sizeof(res))
            with nogil:
                st = nl_parse(&cur, cseq, <tcpsnap_row *>outb.buf,
                              outb.len // sizeof(tcpsnap_row), &res)
        finally:
            PyBuffer_Release(&outb)
    finally:
        PyBuffer_Release(&inb)
    names = {NL_MORE: "more", NL_DONE: "done", NL_FULL: "full", NL_ERROR: "error",
             NL_MALFORMED: "malformed"}
    return res.n, names[st], res.error, bool(res.dump_intr)


cdef Py_ssize_t _rows_arg(out, n, info, tcpsnap_tcp_info **ip) except -1:
    # dedupe_rows' and CookieTable.dedupe's arguments, checked; the row count
    check_out_array(out)
    i = index_arg(n, "n")
    if i < 0 or i > len(out):
        raise ValueError(f"n={int_text(i)} outside 0..{len(out)}")
    if info is not None:
        from numpy import ndarray
        from tcpsnap._schema import TCP_INFO_DTYPE
        if (not isinstance(info, ndarray) or info.dtype != TCP_INFO_DTYPE or info.ndim != 1
                or not info.flags.c_contiguous or not info.flags.writeable or len(info) < i):
            raise ValueError(f"info must be a writeable C-contiguous TCP_INFO_DTYPE array of at least {i} rows")
        ip[0] = <tcpsnap_tcp_info *><size_t>info.ctypes.data
    return i


def dedupe_rows(out, n, info=None):
    """Remove repeated sockets (same cookie) from ``out[:n]`` in place, keeping the
    first of each; return the new count. What ``dump()`` does after every dump (which
    also gives cgroups from the dumps before: ``CookieTable``).
    ``info``: the rows' internals (a C-contiguous TCP_INFO_DTYPE array of at least n),
    moved with them. Bad arguments: ValueError for any wrong kind of out
    (check_out_array) or info, or an n outside 0..len(out), TypeError for an n that is
    not an integer."""
    cdef Py_buffer outb
    cdef Py_ssize_t want = 64, kept
    cdef uint64_t *slots
    cdef tcpsnap_tcp_info *ip = NULL
    cdef Py_ssize_t cn = _rows_arg(out, n, info, &ip)
    while want < 2 * cn:
        want *= 2
    slots = <uint64_t *>malloc(want * sizeof(uint64_t))
    if slots == NULL:
        raise MemoryError()
    try:
        get_buffer(out, &outb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
        try:
            with nogil:
                kept = dedupe_by_cookie(<tcpsnap_row *>outb.buf, cn, slots, want, NULL, ip)
        finally:
            PyBuffer_Release(&outb)
    finally:
        free(slots)
    return kept


cdef class CookieTable:
    """What ``NetlinkDumper.dump()`` does to each dump's rows after parsing them, on rows
    from anywhere (tests, tools): ``dedupe(out, n, info=None)`` removes repeated sockets
    from ``out[:n]`` in place (the first row of each cookie stays; cookie 0 is never a
    repeat), gives each row whose ``cgroup_id`` is 0 the one its cookie had in the previous
    call's rows or, if that one lacked the socket, in the call before (a TIME_WAIT row has
    no cgroup of its own), and returns the rows kept. Arguments as ``dedupe_rows``'."""

    cdef cookie_state st

    def __dealloc__(self):
        cookie_free(&self.st)

    def dedupe(self, out, n, info=None):
        cdef Py_buffer outb
        cdef Py_ssize_t kept, i
        cdef tcpsnap_tcp_info *ip = NULL
        cdef Py_ssize_t cn = _rows_arg(out, n, info, &ip)
        cdef tcpsnap_row *rows
        # what the parser writes as it makes the rows (nl_result.ckc, .ckg), from the rows here
        if cookie_room(&self.st, cn) < 0:
            raise MemoryError()
        get_buffer(out, &outb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
        try:
            rows = <tcpsnap_row *>outb.buf
            with nogil:
                for i in range(cn):
                    self.st.nc[i] = rows[i].cookie
                    self.st.ng[i] = rows[i].cgroup_id
                kept = cookie_dedupe(&self.st, rows, cn, ip, 0)
        finally:
            PyBuffer_Release(&outb)
        if kept < 0:
            raise MemoryError()
        return kept

    def parse(self, data, out, seq):
        """``parse_messages(data, out, seq)`` then ``dedupe(out, rows)``, the way
        ``NetlinkDumper.dump()`` runs them: the parser writes each row's cookie and cgroup
        into this table and checks the rows against the previous call's in order as it
        writes them (the rows from the first on found where that call had them are given
        their cgroups there; the dedupe starts after them). Returns ``(kept, status,
        in_order)``: the rows kept, the parser's status (as parse_messages'), how many
        leading rows the parser took in order. Arguments as parse_messages'."""
        cdef Py_buffer inb, outb
        cdef nl_cursor cur
        cdef nl_result res
        cdef nl_status st
        cdef Py_ssize_t cap, kept
        cdef uint32_t cseq = int_arg(seq, "seq", 0, 0xFFFFFFFF)
        check_out_array(out)
        cap = len(out)
        if cookie_room(&self.st, cap) < 0:
            raise MemoryError()
        get_buffer(data, &inb, PyBUF_SIMPLE, "data")
        try:
            get_buffer(out, &outb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "out")
            try:
                cur.buf = <const char *>inb.buf
                cur.len = inb.len
                cur.off = 0
                memset(&res, 0, sizeof(res))
                res.ckc, res.ckg = self.st.nc, self.st.ng
                res.pc, res.pg, res.np = self.st.pc, self.st.pg, self.st.np
                with nogil:
                    st = nl_parse(&cur, cseq, <tcpsnap_row *>outb.buf, cap, &res)
                    kept = cookie_dedupe(&self.st, <tcpsnap_row *>outb.buf, res.n, NULL, res.fast)
            finally:
                PyBuffer_Release(&outb)
        finally:
            PyBuffer_Release(&inb)
        if kept < 0:
            raise MemoryError()
        names = {NL_MORE: "more", NL_DONE: "done", NL_FULL: "full", NL_ERROR: "error",
                 NL_MALFORMED: "malformed"}
        return kept, names[st], res.fast

    @property
    def carried(self):
        """Sockets remembered from the call before the last one (which lacked them)."""
        return self.st.ncar
