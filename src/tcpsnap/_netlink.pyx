# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Linux backend: the kernel's TCP table through NETLINK_SOCK_DIAG.

One dump walks the kernel's TCP hash tables once for both families: the
TCPDIAG_GETSOCK request (the inet_diag compat request, served by the same code as
SOCK_DIAG_BY_FAMILY, which asks for AF_UNSPEC). A SOCK_DIAG_BY_FAMILY dump with
inet_diag_req_v2 takes one family at a time, so it walks every hash bucket twice, and on
an idle table that walk is most of a dump's cost. Kernels that refuse the compat request
get two v2 dumps instead.

The socket, receive buffer, row array and internals array (``set_tcp_info``) are owned by
one NetlinkDumper and reused; rows are written straight from the received bytes. The GIL is
released while the kernel works and while rows are parsed.

Consistency: the kernel resumes a dump by position inside a hash bucket (between two
datagrams, and every 16 sockets of a bucket: net/ipv4/tcp_diag.c, inet_diag.c), so a
socket created or destroyed while the dump runs can shift the others and be missed or
reported twice; so can a socket rehashed meanwhile (a timewait socket replacing its full
socket keeps its cookie; a connect() retried elsewhere moves buckets). ss has the same
limit; TCP dumps never set NLM_F_DUMP_INTR. Repeats are removed here by socket cookie,
which is unique per socket for the life of the boot, so a snapshot lists each socket at
most once; a dump is compared with the previous one in order and only what changed is
hashed (_cookies.pxd); the parser itself takes the rows found in order up to the first
change, so an unchanged table costs no pass after the parse.

``dump_into`` writes the rows straight into a caller's array (the recorder's batch).
"""

from cpython.buffer cimport PyBuffer_Release, PyBUF_SIMPLE
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport errno, EINTR, ENOBUFS, ENOENT, EAFNOSUPPORT, EOPNOTSUPP, EPROTO
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import os

import numpy as np

from tcpsnap._row cimport (tcpsnap_row, rows_pointer, get_buffer, index_arg, int_arg, capacity_arg, int_text,
                           check_out_array)
from tcpsnap._system cimport (
    ssize_t, sockaddr, socket, connect, send, recv, close, ntohs, AF_UNSPEC, AF_INET, AF_INET6,
    AF_NETLINK, SOCK_RAW, SOCK_CLOEXEC, MSG_TRUNC, IPPROTO_TCP, sockaddr_nl, nlmsghdr,
    NETLINK_SOCK_DIAG, NLMSG_DONE, NLMSG_ERROR, NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLMSG_ALIGN, SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK, inet_diag_req_v2, inet_diag_req,
    inet_diag_msg, INET_DIAG_NOCOOKIE, raise_syscall, open_sock_diag, nlattr,
    INET_DIAG_REQ_BYTECODE)
from tcpsnap._bcaudit cimport bc_audit, MAX_BYTECODE
from tcpsnap._cookies cimport cgroup_attr, cookie_state, cookie_room, cookie_dedupe, cookie_reset, cookie_free
from tcpsnap._tcp_info cimport tcpsnap_tcp_info, info_attrs, EXT_INFO, EXT_CONG
from tcpsnap._schema import ROW_DTYPE, TCP_INFO_DTYPE
import tcpsnap._tcp_info  # noqa: F401 -- its import checks TCP_INFO_DTYPE against the C struct
from tcpsnap._errors import DumpInterrupted

cdef enum:
    # The states `ss -ta` asks for: 1..12 (TCP_BOUND_INACTIVE, 13, is only listed on request).
    DUMP_STATES = 0x1FFE
    MAX_ATTEMPTS = 5               # dumps retried after NLM_F_DUMP_INTR / ENOBUFS
    DEFAULT_RECV = 64 * 1024       # the kernel fills at most ~32 KiB per dump skb
    MAX_RECV = 1 << 30             # a recv_size beyond any datagram (and its doublings)
    REQ_SIZE = 16 + 56             # nlmsghdr + inet_diag_req_v2, checked at import
    COMPAT_REQ_SIZE = 16 + 60      # nlmsghdr + inet_diag_req
    # every Linux state bit idiag_states may hold (TCP_ESTABLISHED 1 .. TCP_NEW_SYN_RECV 12)
    STATE_BITS = 0x1FFE
    NOGIL_ROWS = 1 << 15           # fewer rows are deduped with the GIL kept (see _dedupe)


cdef str _family_name(int family):
    # for error messages only: a dump per namespace must not build it every time
    return {AF_INET: "AF_INET", AF_INET6: "AF_INET6"}.get(family, "TCPDIAG_GETSOCK")


cdef enum pump_status:
    PUMP_DONE = 0
    PUMP_FULL = 1
    PUMP_EINTR = 2
    PUMP_ERRNO = 3       # recv failed; errno in *err
    PUMP_NLERROR = 4     # NLMSG_ERROR; errno in res.error
    PUMP_MALFORMED = 5
    PUMP_TRUNC = 6       # a datagram larger than the receive buffer
    PUMP_SEND = 7        # sending the request failed; errno in *err (EINTR: send again)


cdef class NetlinkDumper:
    """Owns one NETLINK_SOCK_DIAG socket, one receive buffer and one row array."""

    cdef int fd
    cdef char *rbuf
    cdef Py_ssize_t rbuf_size
    cdef uint32_t seq
    cdef nl_cursor cur
    cdef nl_result res
    cdef object _rows
    cdef tcpsnap_row *rowp
    cdef Py_ssize_t cap
    cdef bint want_v6
    cdef bint use_compat           # one TCPDIAG_GETSOCK walk for both families
    cdef cookie_state ck           # the dumps before, by cookie (_cookies.pxd): repeats, cgroups
    # Other namespaces (tcpsnap.netns): sockets opened there by the namespace thread, lent
    # to this dumper, which dumps each in turn into one row array. 0 targets: our own socket.
    cdef int *tfds
    cdef uint64_t *tns
    cdef Py_ssize_t ntargets
    cdef Py_ssize_t cur_t
    cdef object _opener            # ino -> a new socket there (after a failed dump)
    cdef uint64_t own_netns
    cdef bint busy
    cdef bint closed
    cdef uint32_t states           # idiag_states: Linux state bits to dump
    cdef char *req                 # the request: header, inet_diag_req(_v2), bytecode
    cdef size_t unsent             # its size until _pump has sent it, then 0
    cdef char *bc                  # the filter program (MAX_BYTECODE bytes of room)
    cdef Py_ssize_t bc_len         # its length, 0 for none
    cdef object _bytecode
    cdef object _info              # TCP_INFO_DTYPE rows aligned with _rows, or None
    cdef bint _into                # rowp points into dump_into's array
    cdef object _out_ok            # the last array dump_into checked (a recorder reuses a few)
    cdef uint8_t ext               # idiag_ext: the attributes asked for besides the defaults
    # inject_retries (tests): attempts to abort as the kernel's ENOBUFS would, after how many
    # datagrams of each, and the datagrams this attempt has read
    cdef int inj_left
    cdef int inj_after
    cdef int inj_count
    cdef readonly unsigned long long dumps
    cdef readonly unsigned long long retries
    cdef readonly unsigned long long skipped
    cdef readonly unsigned long long grows
    cdef readonly unsigned long long duplicates

    def __cinit__(self):
        # C fields start zeroed (pointers NULL, no bytecode, no internals), objects None
        self.fd = -1
        self.states = DUMP_STATES

    def __init__(self, capacity=1024, recv_size=DEFAULT_RECV, *, bint single_walk=True):
        """Bad arguments: TypeError for a non-integer, ValueError for a capacity below 1 row
        (or past what a Py_ssize_t counts in bytes) or a recv_size outside 8192..2**30."""
        cdef Py_ssize_t cap = capacity_arg(capacity)
        r = index_arg(recv_size, "recv_size")
        if r < 8192:
            raise ValueError("recv_size must be at least 8192 bytes")
        if r > MAX_RECV:
            raise ValueError(f"recv_size must be at most {MAX_RECV} bytes, got {int_text(r)}")
        cdef Py_ssize_t rsize = r
        self.rbuf = <char *>malloc(rsize)
        if self.rbuf == NULL:
            raise MemoryError()
        self.rbuf_size = rsize
        self.req = <char *>malloc(COMPAT_REQ_SIZE + 4 + MAX_BYTECODE)
        self.bc = <char *>malloc(MAX_BYTECODE)
        if self.req == NULL or self.bc == NULL:
            raise MemoryError()
        self.want_v6 = True
        self.use_compat = single_walk
        self._set_rows(np.zeros(cap, dtype=ROW_DTYPE))
        try:
            self.own_netns = os.stat("/proc/self/ns/net").st_ino
        except OSError:
            self.own_netns = 0         # no /proc: rows say 0 (unknown)
        self.res.netns = self.own_netns
        self._open()

    def set_targets(self, targets, opener):
        """Dump these namespaces instead of our own: ``targets`` a sequence of ``(ino, fd)``
        (sockets opened inside each namespace, lent: the caller closes them, never this
        dumper), ``opener(ino)`` returns a fresh socket there after a failed dump. An empty
        sequence goes back to our own namespace."""
        if self.busy:
            raise RuntimeError("set_targets during a dump")
        pairs = [(int_arg(ino, "ino", 0, 0xFFFFFFFFFFFFFFFF), int_arg(fd, "fd", 0, 0x7FFFFFFF)) for ino, fd in targets]
        cdef Py_ssize_t k = len(pairs), i
        cdef int *fds = <int *>malloc((k + 1) * sizeof(int))
        cdef uint64_t *ns = <uint64_t *>malloc((k + 1) * sizeof(uint64_t))
        if fds == NULL or ns == NULL:
            free(fds)
            free(ns)
            raise MemoryError()
        for i in range(k):
            ns[i], fds[i] = pairs[i]
        if self.ntargets == 0 and k > 0 and self.fd >= 0:
            close(self.fd)             # our own socket, unused while targets are set
            self.fd = -1
        elif self.ntargets > 0:
            self.fd = -1               # a lent socket: never ours to close
        free(self.tfds)
        free(self.tns)
        self.tfds, self.tns, self.ntargets = fds, ns, k
        self._opener = opener
        if k == 0:
            self.res.netns = self.own_netns

    def __dealloc__(self):
        if self.fd >= 0 and self.ntargets == 0:
            close(self.fd)
        free(self.rbuf)
        cookie_free(&self.ck)
        free(self.tfds)
        free(self.tns)
        free(self.req)
        free(self.bc)

    cdef _set_rows(self, rows):
        self.rowp = rows_pointer(rows, &self.cap)
        self._rows = rows      # keeps the data rowp points into alive
        self._ck_fit()

    cdef int _ck_fit(self) except -1:
        # the parser writes each row's cookie and cgroup into the dedupe's arrays for this
        # dump (room for every row it may write: cap), which move when they grow and are
        # swapped by each dedupe
        if cookie_room(&self.ck, self.cap) < 0:
            raise MemoryError()
        self.res.ckc = self.ck.nc
        self.res.ckg = self.ck.ng
        self.res.pc = self.ck.pc
        self.res.pg = self.ck.pg
        self.res.np = self.ck.np
        return 0

    def set_tcp_info(self, bint enabled):
        """Ask the next dumps for internals (INET_DIAG_INFO and _CONG) or stop: the .pyi says more."""
        if self.busy:
            raise RuntimeError("set_tcp_info during a dump")
        if enabled and self._info is None:     # kept while off: toggling allocates nothing
            self._info = np.zeros(self.cap, TCP_INFO_DTYPE)
        self.ext = (EXT_INFO | EXT_CONG) if enabled else 0
        self.res.info = <tcpsnap_tcp_info *><size_t>self._info.ctypes.data if enabled else NULL

    @property
    def tcp_info(self):
        return self._info if self.ext else None

    @property
    def tcp_info_seen(self):
        return self.res.seen.len_max, self.res.seen.longer

    cdef int _open(self) except -1:
        if self.ntargets > 0:
            # a lent socket: the namespace thread replaces (and closes) it
            self.fd = -1
            fd = self._opener(self.tns[self.cur_t])
            self.tfds[self.cur_t] = fd
            self.fd = fd
            return 0
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1
        self.fd = open_sock_diag(0)
        return 0

    def close(self):
        self.closed = True
        if self.fd >= 0 and self.ntargets == 0:
            close(self.fd)
        self.fd = -1

    @property
    def rows(self):
        """The row array (capacity rows); the first ``dump()`` rows are valid."""
        return self._rows

    @property
    def capacity(self):
        return self.cap

    def set_filter(self, states=DUMP_STATES, bytecode=None):
        """What the kernel itself skips from the next dump on: ``states``, a mask of Linux
        state bits (``1 << TCP_ESTABLISHED``...; bits 1..12, the dump's default is every
        one), sent as ``idiag_states``; ``bytecode``, an inet_diag filter program sent as the
        INET_DIAG_REQ_BYTECODE attribute (``tcpsnap.filters`` compiles one; None or empty:
        none). The program is checked first as the kernel's audit would
        (``audit_bytecode``): ValueError naming what is wrong, and the filter in place
        stays. TypeError for states that is not an integer or bytecode not a buffer."""
        cdef Py_buffer b
        cdef Py_ssize_t where = 0
        cdef const char *why
        cdef uint32_t st = int_arg(states, "states", 0, 0xFFFFFFFF)
        if st == 0 or st & ~STATE_BITS:
            raise ValueError(f"states must be a non-empty mask of bits 1..12, got {st:#x}")
        if self.busy:
            raise RuntimeError("set_filter during a dump")
        bc = None
        if bytecode is not None:
            get_buffer(bytecode, &b, PyBUF_SIMPLE, "bytecode")
            try:
                bc = bytes((<const char *>b.buf)[:b.len]) or None
            finally:
                PyBuffer_Release(&b)
        if bc is not None:
            why = bc_audit(<const uint8_t *><const char *>bc, len(bc), &where)
            if why != NULL:            # the filter in place stays
                raise ValueError(f"inet_diag bytecode rejected at byte {where}: {why.decode()}")
            memcpy(self.bc, <const char *>bc, len(bc))
        self.bc_len = len(bc) if bc is not None else 0
        self._bytecode = bc
        self.states = st

    @property
    def states(self):
        """The ``idiag_states`` mask of the dumps (Linux state bits)."""
        return self.states

    @property
    def bytecode(self):
        """The filter program sent with every dump, or None."""
        return self._bytecode

    cdef int _request(self, int family) except -1:
        """Send a dump request: AF_UNSPEC asks for both families in one walk."""
        cdef char *req = self.req
        cdef nlmsghdr *h = <nlmsghdr *>req
        cdef inet_diag_req_v2 *r2 = <inet_diag_req_v2 *>(req + HDR)
        cdef inet_diag_req *r1 = <inet_diag_req *>(req + HDR)
        cdef nlattr attr
        cdef size_t size
        memset(req, 0, COMPAT_REQ_SIZE)
        self.seq += 1
        if family == AF_UNSPEC:
            size = COMPAT_REQ_SIZE
            h.nlmsg_type = TCPDIAG_GETSOCK
            r1.idiag_family = AF_INET          # ignored by the kernel, which dumps AF_UNSPEC
            r1.idiag_states = self.states
            r1.idiag_ext = self.ext
            r1.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE
            r1.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE
        else:
            size = REQ_SIZE
            h.nlmsg_type = SOCK_DIAG_BY_FAMILY
            r2.sdiag_family = family
            r2.sdiag_protocol = IPPROTO_TCP
            r2.idiag_states = self.states
            r2.idiag_ext = self.ext
            r2.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE
            r2.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE
        if self.bc_len:
            # both requests are 4-byte multiples (NLMSG_ALIGNed): the attribute follows
            attr.nla_len = <uint16_t>(4 + self.bc_len)
            attr.nla_type = INET_DIAG_REQ_BYTECODE
            memcpy(req + size, &attr, 4)
            memcpy(req + size + 4, self.bc, self.bc_len)
            size += 4 + self.bc_len
        h.nlmsg_len = size
        h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP
        h.nlmsg_seq = self.seq
        # sent by _pump, in the same stretch without the GIL as the replies: a capture
        # thread that takes the GIL back once per dump rather than twice waits half as
        # often for the writer's Python to let it go
        self.unsent = size
        self.inj_count = 0
        self.cur.buf = self.rbuf
        self.cur.len = 0
        self.cur.off = 0
        return 0

    cdef pump_status _pump(self, int *err) noexcept nogil:
        cdef ssize_t got
        cdef nl_status st
        if self.unsent:
            got = send(self.fd, self.req, self.unsent, 0)
            if got < 0:
                err[0] = errno
                return PUMP_SEND
            self.unsent = 0
        while True:
            if self.cur.off >= self.cur.len:
                if self.inj_left:          # inject_retries: one test per datagram, none per row
                    if self.inj_count >= self.inj_after:
                        self.inj_left -= 1
                        err[0] = ENOBUFS
                        return PUMP_ERRNO
                    self.inj_count += 1
                # MSG_TRUNC makes recv report a datagram's full length, so truncation shows
                got = recv(self.fd, self.rbuf, self.rbuf_size, MSG_TRUNC)
                if got < 0:
                    err[0] = errno
                    return PUMP_EINTR if errno == EINTR else PUMP_ERRNO
                if got == 0:
                    err[0] = EPROTO
                    return PUMP_ERRNO
                if got > self.rbuf_size:
                    return PUMP_TRUNC
                self.cur.buf = self.rbuf
                self.cur.len = got
                self.cur.off = 0
            st = nl_parse(&self.cur, self.seq, self.rowp, self.cap, &self.res)
            if st == NL_MORE:
                continue
            if st == NL_DONE:
                return PUMP_DONE
            if st == NL_FULL:
                return PUMP_FULL
            if st == NL_ERROR:
                return PUMP_NLERROR
            return PUMP_MALFORMED

    cdef _grow(self):
        cdef Py_ssize_t n = self.res.n
        cdef const tcpsnap_row *src = self.rowp
        if self._into:
            # dump_into's array is full: the dump goes on in our own (no internals: see there)
            self._into = False
            if self._rows.shape[0] <= n:
                self._rows = np.empty(2 * n, dtype=ROW_DTYPE)
                self.grows += 1
            self._set_rows(self._rows)
            memcpy(self.rowp, src, n * sizeof(tcpsnap_row))
            return
        new = np.empty(self.cap * 2, dtype=ROW_DTYPE)
        new[:n] = self._rows[:n]
        if self._info is not None:     # res.info moves with it (stays NULL while off)
            self._info = np.concatenate([self._info[:n], np.empty(self.cap * 2 - n, TCP_INFO_DTYPE)])
            self.res.info = <tcpsnap_tcp_info *><size_t>self._info.ctypes.data if self.ext else NULL
        self._set_rows(new)
        self.grows += 1

    cdef int _dump_family(self, int family) except -1:
        """Dump one family into rows[res.n:]. Returns 1 if the dump must be redone."""
        cdef int err = 0
        cdef pump_status st
        self._request(family)
        while True:
            with nogil:
                st = self._pump(&err)
            if st == PUMP_DONE:
                return 1 if self.res.dump_intr else 0
            if st == PUMP_FULL:
                self._grow()
            elif st == PUMP_EINTR:
                PyErr_CheckSignals()     # a handler that raises ends the dump (see dump())
            elif st == PUMP_SEND:
                if err != EINTR:
                    raise_syscall("send(NETLINK_SOCK_DIAG)", err)
                PyErr_CheckSignals()     # then sent again by the next _pump
            elif st == PUMP_ERRNO:
                if err == ENOBUFS:
                    self._open()     # the kernel dropped messages: this dump is lost
                    return 1
                raise_syscall(f"recv(NETLINK_SOCK_DIAG, {_family_name(family)})", err)
            elif st == PUMP_NLERROR:
                err = self.res.error
                if family == AF_UNSPEC:
                    self.use_compat = False  # this kernel wants one v2 dump per family
                    return 2
                if family == AF_INET6 and err in (ENOENT, EAFNOSUPPORT, EOPNOTSUPP):
                    self.want_v6 = False     # kernel without IPv6: no v6 table to dump
                    return 0
                raise_syscall(f"SOCK_DIAG_BY_FAMILY dump ({_family_name(family)})", err)
            elif st == PUMP_TRUNC:
                free(self.rbuf)
                self.rbuf = NULL
                self.rbuf_size *= 2
                self.rbuf = <char *>malloc(self.rbuf_size)
                if self.rbuf == NULL:
                    raise MemoryError()
                self._open()
                return 1
            else:
                raise OSError(EPROTO, f"recv(NETLINK_SOCK_DIAG, {_family_name(family)}): malformed netlink message")

    def dump(self):
        """Fill ``rows`` with the whole TCP table; return the row count."""
        if self.closed:
            raise ValueError("dump on a closed NetlinkDumper")
        if self.busy:
            # the GIL is released inside a dump: a second thread here would share the
            # cursor and could see the row array replaced under it
            raise RuntimeError("NetlinkDumper.dump() is already running (one Snapshotter per thread)")
        self.busy = True
        try:
            self.res.fast = 0
            if self.ntargets > 0:
                return self._dump_targets()
            if self.fd < 0:
                self._open()    # after a failed reset below
            return self._dedupe(self._dump(0))
        except BaseException:
            # a half-read dump would make the next request fail with EBUSY: start afresh
            try:
                self._open()
            except OSError:
                pass            # no socket now (e.g. EMFILE); the next dump opens one
            raise
        finally:
            self.busy = False

    def dump_into(self, out, Py_ssize_t start):
        """``dump()`` with the rows written straight into ``out[start:]`` (what a recorder's
        batch saves a copy of) while they fit: ``(n, True)``, the rows in ``out[start:start +
        n]``; otherwise (a table larger than the room, or internals asked for) ``(n, False)``,
        the rows in ``rows``. ``out`` as ``PidResolver.resolve`` takes rows (ValueError
        otherwise); ValueError for a start outside 0..len(out)."""
        cdef Py_ssize_t cap
        cdef tcpsnap_row *own = self.rowp
        cdef Py_ssize_t own_cap = self.cap
        if out is not self._out_ok:
            check_out_array(out)
            self._out_ok = out
        if start < 0 or start > out.shape[0]:
            raise ValueError(f"start={start} outside 0..{out.shape[0]}")
        if self.ext or start == out.shape[0] or self.busy:
            return self.dump(), False
        self.rowp = rows_pointer(out, &cap) + start
        self.cap = cap - start
        self._into = True
        try:
            self._ck_fit()
        except MemoryError:
            self.rowp, self.cap, self._into = own, own_cap, False
            raise
        try:
            n = self.dump()
        finally:
            placed = self._into
            if placed:
                self.rowp, self.cap, self._into = own, own_cap, False
        return n, placed

    cdef Py_ssize_t _dump_targets(self) except -1:
        # each namespace in turn, appended to the rows of the ones before
        cdef Py_ssize_t i, n = 0
        for i in range(self.ntargets):
            self.cur_t = i
            self.fd = self.tfds[i]
            self.res.netns = self.tns[i]
            n = self._dump(n)
        return self._dedupe(n)

    cdef Py_ssize_t _dump(self, Py_ssize_t start) except -1:
        """Dump the current socket's namespace into rows[start:]; return the row count."""
        cdef int attempt, r
        self._ck_fit()
        for attempt in range(MAX_ATTEMPTS):
            self.res.n = start
            if self.res.fast > start:
                self.res.fast = start      # rows from start on are parsed again
            self.res.error = 0
            self.res.dump_intr = 0
            self.res.skipped = 0
            if self.use_compat:
                r = self._dump_family(AF_UNSPEC)
                if r == 1:
                    self.retries += 1
                    continue
                if r == 2:
                    self.res.n = start
                    if self.res.fast > start:
                        self.res.fast = start
                    self.res.skipped = 0
            if not self.use_compat:
                if self._dump_family(AF_INET):
                    self.retries += 1
                    continue
                if self.want_v6 and self._dump_family(AF_INET6):
                    self.retries += 1
                    continue
            self.dumps += 1
            self.skipped += self.res.skipped
            return self.res.n
        raise DumpInterrupted(
            f"the TCP table changed during each of {MAX_ATTEMPTS} netlink dumps "
            "(NLM_F_DUMP_INTR or ENOBUFS); no consistent snapshot")

    cdef Py_ssize_t _dedupe(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t kept
        if n >= NOGIL_ROWS:
            with nogil:
                kept = cookie_dedupe(&self.ck, self.rowp, n, self.res.info, self.res.fast)
        else:
            # a pass over the rows (hashing only what changed): a capture thread that let
            # the GIL go for it would wait to get it back while the writer's Python runs
            kept = cookie_dedupe(&self.ck, self.rowp, n, self.res.info, self.res.fast)
        if kept < 0:
            raise MemoryError()
        self.duplicates += n - kept
        return kept

    def inject_retries(self, int after, int times):
        """For tests: abort each of the next ``times`` dump attempts after it has read
        ``after`` datagrams (0: before the first), as the kernel's ENOBUFS does (the socket
        is replaced and the namespace dumped again; ``retries`` counts each). Rows of an
        aborted attempt must leave no trace: tests/test_netlink_retry.py. ValueError for a
        negative count."""
        if after < 0 or times < 0:
            raise ValueError(f"after and times must be >= 0, got {after} and {times}")
        self.inj_after, self.inj_left = after, times

    @property
    def single_walk(self):
        """True while dumps use the one-walk TCPDIAG_GETSOCK request."""
        return bool(self.use_compat)


if (sizeof(nlmsghdr) != HDR or HDR + sizeof(inet_diag_req_v2) != REQ_SIZE
        or HDR + sizeof(inet_diag_req) != COMPAT_REQ_SIZE):
    raise ImportError("netlink struct sizes differ from the ones this module was written for")
