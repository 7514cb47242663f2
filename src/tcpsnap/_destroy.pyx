# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Linux: the kernel's socket-destroy notifications for TCP (IPv4 and IPv6).

A NETLINK_SOCK_DIAG socket that joins the SKNLGRP_INET_TCP_DESTROY and
SKNLGRP_INET6_TCP_DESTROY groups receives one inet_diag_msg each time a full TCP socket
is freed -- the same message a dump returns, so nl_parse turns it into a row (state is
the kernel's last, normally CLOSE; no inode, the file is gone). This is what lets
changes mode record connections that live and die between two snapshots.

Limits, from the kernel: the groups are only delivered inside the subscriber's network
namespace. Linux 6.18 delivers them without CAP_NET_ADMIN too, but without it the receive
buffer cannot be forced past net.core.rmem_max, so bursts are likelier to overflow it; a
kernel that refuses the subscription makes the constructor raise (the recorder then warns
and polls only). A request socket (SYN_RECV) or a TIME_WAIT socket is not a full socket
and sends nothing (the full socket that became a TIME_WAIT sends one, under the cookie the
TIME_WAIT keeps -- if the full socket had one before: the kernel gives cookies when first
asked, and giving one for this message comes too late for the TIME_WAIT). Messages are sent
from a work queue (``sock_diag_broadcast_destroy``), so under load they come tens of
milliseconds after the socket died. Messages that do not fit the receive buffer are dropped
by the kernel and reported to us as ENOBUFS: counted in ``drops`` (the events themselves are
lost; the count of lost messages is not known).

The socket is non-blocking; ``drain()`` reads everything queued, stamps each receive
with the wall clock, and appends rows to an array that ``take()`` hands over.

Each message also carries the socket's final ``struct tcp_info`` (attribute 2,
INET_DIAG_INFO: 280 bytes on Linux 6.18, measured; besides it only INET_DIAG_PROTOCOL --
no congestion name, uid or inode), filled by the kernel as the socket is freed: its
final byte counters, retransmits and rtt. ``drain`` keeps its payload's first
``INFO_RAW`` bytes and length per report (raw, in C, no parse on the receive path);
``take(info=True)`` hands them over too.

``probe(rows)`` asks the kernel, on a second (unsubscribed) NETLINK_SOCK_DIAG socket,
about given sockets one by one: a SOCK_DIAG_BY_FAMILY request without NLM_F_DUMP, for one
family, addresses, ports, bound interface and cookie, which the kernel answers by a hash
lookup (``inet_diag_find_one_icsk``; what ``ss`` does for one socket) with that socket's
message, or ENOENT when no socket with that cookie is in its tables any more. Full,
TIME_WAIT and request sockets alike; a listener in an SO_REUSEPORT group may be answered
ENOENT (the lookup picks one of the group). A dump walks the tables a bucket at a time and
resumes by position, so it can skip a live socket; this lookup cannot.
"""

from libc.errno cimport errno, EINTR, EAGAIN, ENOBUFS
from libc.limits cimport INT_MAX
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import os

import numpy as np

from tcpsnap._row cimport tcpsnap_row, rows_pointer, int_arg, capacity_arg
from tcpsnap._netlink cimport nl_cursor, nl_result, nl_status, nl_parse, NL_FULL, NL_ERROR, NL_MALFORMED
from tcpsnap._system cimport (
    sockaddr, socklen_t, socket, bind, connect, send, recv, setsockopt, getsockopt, close, ntohs,
    AF_INET, AF_INET6, AF_NETLINK, SOCK_RAW, SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_DONTWAIT, MSG_TRUNC,
    SOL_SOCKET, SOL_NETLINK, SO_RCVBUF, SO_RCVBUFFORCE, IPPROTO_TCP, sockaddr_nl, nlmsghdr,
    NETLINK_SOCK_DIAG, NETLINK_ADD_MEMBERSHIP, NLMSG_ERROR, NLM_F_REQUEST, NLMSG_ALIGN,
    SOCK_DIAG_BY_FAMILY, inet_diag_req_v2, INET_DIAG_NOCOOKIE, SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY,
    timespec, clock_gettime, CLOCK_REALTIME, raise_syscall, open_sock_diag, inet_diag_msg)
from tcpsnap._schema import ROW_DTYPE, TCP_INFO_DTYPE
from tcpsnap._tcp_info cimport tcpsnap_tcp_info, tcp_info_from_attr

# the namespace of the feed's socket (this process's): every report's netns
cdef uint64_t OWN_NETNS = 0
try:
    OWN_NETNS = os.stat("/proc/self/ns/net").st_ino
except OSError:
    pass

cdef enum:
    # bytes of INET_DIAG_INFO kept per report: more than any kernel's struct tcp_info so far
    # (280 on 6.18); the length the kernel sent is kept too, so a longer one is known
    INFO_RAW = 320
    INET_DIAG_INFO_ATTR = 2
    RECV_SIZE = 8192           # one message per datagram: an inet_diag_msg and its attributes
    # The kernel charges each queued message its whole skb, several times the message: room
    # for a burst of deaths between two drains.
    DEFAULT_RCVBUF = 32 << 20

#: ``INFO_RAW``: the width of ``take(info=True)``'s ``raw`` rows (bytes per report).
INFO_RAW_BYTES = INFO_RAW


cdef enum:
    HDR = 16                   # sizeof(struct nlmsghdr)
    PROBE_REQ = 16 + 56        # nlmsghdr + inet_diag_req_v2
    PROBE_BATCH = 64           # requests per send: their answers fit any receive buffer


cdef enum drain_status:
    DRAIN_EMPTY = 0      # nothing more queued
    DRAIN_FULL = 1       # the row array is full: grow and call again
    DRAIN_ERRNO = 2      # recv failed; errno in *err


cdef void keep_info(const char *msg, Py_ssize_t length, uint8_t *info, uint16_t *ilen) noexcept nogil:
    """The INET_DIAG_INFO payload of one inet_diag message (``length`` bytes from its
    inet_diag_msg on): its first INFO_RAW bytes into ``info``, its length (capped at
    65535; 0: none) into ``ilen``."""
    cdef Py_ssize_t off = sizeof(inet_diag_msg), alen, plen
    cdef uint16_t a[2]
    ilen[0] = 0
    while off + 4 <= length:
        memcpy(a, msg + off, 4)
        alen = a[0]
        if alen < 4 or off + alen > length:
            return                     # a malformed attribute: keep none
        if (a[1] & 0x3FFF) == INET_DIAG_INFO_ATTR:
            plen = alen - 4
            memcpy(info, msg + off + 4, plen if plen < INFO_RAW else INFO_RAW)
            ilen[0] = <uint16_t>(plen if plen < 65535 else 65535)
            return
        off += (alen + 3) & ~3


cdef drain_status drain_fd(int fd, char *buf, tcpsnap_row *out, int64_t *ts, Py_ssize_t cap,
                           Py_ssize_t *n, unsigned long long *drops,
                           unsigned long long *malformed, int *err, uint64_t netns,
                           uint8_t *info, uint16_t *ilen) noexcept nogil:
    """Receive every queued datagram into out[n:cap], each row stamped (ts) with the
    wall clock of its receive and tagged with ``netns``, the namespace of ``fd``; its
    final tcp_info (raw) into info[n * INFO_RAW:], its length into ilen[n]."""
    cdef nlmsghdr h
    cdef long got
    cdef nl_cursor cur
    cdef nl_result res
    cdef nl_status st
    cdef timespec now
    cdef int64_t t
    cdef Py_ssize_t i, n0
    while True:
        if n[0] >= cap:
            return DRAIN_FULL
        got = recv(fd, buf, RECV_SIZE, MSG_DONTWAIT | MSG_TRUNC)
        if got < 0:
            if errno == EAGAIN:        # = EWOULDBLOCK on Linux
                return DRAIN_EMPTY
            if errno == EINTR:
                continue
            if errno == ENOBUFS:
                drops[0] += 1      # the kernel dropped messages; the socket goes on
                continue
            err[0] = errno
            return DRAIN_ERRNO
        if got > RECV_SIZE:
            malformed[0] += 1      # truncated: cannot happen with one small message each
            continue
        clock_gettime(CLOCK_REALTIME, &now)
        t = <int64_t>now.tv_sec * 1000000000 + now.tv_nsec
        cur.buf = buf
        cur.len = got
        cur.off = 0
        memset(&res, 0, sizeof(res))
        res.netns = netns              # the groups deliver only the socket's own namespace
        n0 = n[0]
        # one datagram holds one message, so it always fits the one free row
        st = nl_parse(&cur, 0, out + n0, cap - n0, &res)
        if st == NL_MALFORMED or st == NL_ERROR or st == NL_FULL:
            malformed[0] += 1
        for i in range(res.n):
            ts[n0 + i] = t
        if res.n == 1:
            memcpy(&h, buf, HDR)
            if h.nlmsg_len <= got and h.nlmsg_len >= HDR + sizeof(inet_diag_msg):
                keep_info(buf + HDR, h.nlmsg_len - HDR, info + n0 * INFO_RAW, ilen + n0)
            else:
                ilen[n0] = 0
        n[0] = n0 + res.n


cdef Py_ssize_t probe_batch(int fd, const tcpsnap_row *rows, Py_ssize_t n, bint by_cookie,
                            uint32_t seq0, char *req, char *buf, tcpsnap_row *out,
                            uint8_t *found, int *err) noexcept nogil:
    """Send one lookup request per row (sequence numbers seq0 + i) in one datagram, then
    read every answer queued (the kernel answers within the send). Fills out[i] and sets
    found[i] for the sockets it holds -- with the row's cookie, or with `by_cookie` false
    any socket its addresses and ports lead to; returns the number of answers, or -1
    (errno in *err) when the send fails. A request without an answer (a dropped one) is
    not found."""
    cdef Py_ssize_t i, answered = 0, k
    cdef long got
    cdef nlmsghdr h
    cdef inet_diag_req_v2 *r
    cdef const tcpsnap_row *row
    cdef nl_cursor cur
    cdef nl_result res
    cdef Py_ssize_t off, step
    memset(req, 0, n * PROBE_REQ)
    for i in range(n):
        row = rows + i
        memset(&h, 0, HDR)
        h.nlmsg_len = PROBE_REQ
        h.nlmsg_type = SOCK_DIAG_BY_FAMILY
        h.nlmsg_flags = NLM_F_REQUEST
        h.nlmsg_seq = seq0 + <uint32_t>i
        memcpy(req + i * PROBE_REQ, &h, HDR)
        r = <inet_diag_req_v2 *>(req + i * PROBE_REQ + HDR)
        r.sdiag_family = AF_INET if row.family == 4 else AF_INET6
        r.sdiag_protocol = IPPROTO_TCP
        r.idiag_states = ~(<uint32_t>0)
        r.id.idiag_sport = ntohs(row.local_port)     # ntohs = htons: one byte swap
        r.id.idiag_dport = ntohs(row.remote_port)
        memcpy(&r.id.idiag_src[0], row.local_addr, 16 if row.family == 6 else 4)
        memcpy(&r.id.idiag_dst[0], row.remote_addr, 16 if row.family == 6 else 4)
        r.id.idiag_if = row.local_scope_id
        if by_cookie:
            r.id.idiag_cookie[0] = <uint32_t>row.cookie          # the low half
            r.id.idiag_cookie[1] = <uint32_t>(row.cookie >> 32)
        else:
            r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE
            r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE
    while True:
        got = send(fd, req, n * PROBE_REQ, 0)
        if got >= 0:
            break
        if errno != EINTR:
            err[0] = errno
            return -1
    while True:
        got = recv(fd, buf, RECV_SIZE, MSG_DONTWAIT | MSG_TRUNC)
        if got < 0:
            if errno == EINTR or errno == ENOBUFS:
                continue               # ENOBUFS: answers were dropped; they stay unanswered
            return answered            # EAGAIN: all read (or errno: keep what came)
        if got > RECV_SIZE:
            continue                   # truncated: cannot happen, one small answer each
        off = 0
        while off + HDR <= got:
            memcpy(&h, buf + off, HDR)
            if h.nlmsg_len < HDR or h.nlmsg_len > got - off:
                break
            step = NLMSG_ALIGN(h.nlmsg_len)
            k = <Py_ssize_t>(h.nlmsg_seq - seq0)
            if 0 <= k < n:
                answered += 1
                if h.nlmsg_type == SOCK_DIAG_BY_FAMILY:
                    cur.buf = buf + off
                    cur.len = h.nlmsg_len
                    cur.off = 0
                    memset(&res, 0, sizeof(res))
                    nl_parse(&cur, h.nlmsg_seq, out + k, 1, &res)
                    if res.n == 1 and (out[k].cookie == rows[k].cookie or not by_cookie):
                        found[k] = 1
                        # the same socket: its namespace, and the cgroup a TIME_WAIT
                        # socket (no cgroup attribute) inherited in the dump
                        out[k].netns = rows[k].netns
                        if out[k].cgroup_id == 0 and out[k].cookie == rows[k].cookie:
                            out[k].cgroup_id = rows[k].cgroup_id
                # else NLMSG_ERROR: ENOENT (gone), or any other error: not found
            off += step


def tcp_info_rows(raw, lengths):
    """``take(info=True)``'s raw INET_DIAG_INFO payloads and lengths -> ``TCP_INFO_DTYPE``
    rows, parsed by offset and length as a dump's are (``tcp_info_from_attr``: a field the
    payload does not cover whole is 0, ``tcp_info_len`` says how much came; 0: none).
    ValueError for arrays of another shape."""
    cdef Py_ssize_t i, n, ncap
    cdef const uint8_t *rp
    cdef const uint16_t *lp
    cdef tcpsnap_tcp_info *op
    cdef size_t length
    raw = np.ascontiguousarray(raw, np.uint8)
    lengths = np.ascontiguousarray(lengths, np.uint16)
    if raw.ndim != 2 or raw.shape[1] != INFO_RAW or lengths.ndim != 1 or len(lengths) != len(raw):
        raise ValueError(f"raw must be (n, {INFO_RAW}) bytes and lengths n values")
    n = len(raw)
    out = np.zeros(n, TCP_INFO_DTYPE)
    if n == 0:
        return out
    rp = <const uint8_t *><size_t>raw.ctypes.data
    lp = <const uint16_t *><size_t>lengths.ctypes.data
    op = <tcpsnap_tcp_info *><size_t>out.ctypes.data
    with nogil:
        for i in range(n):
            length = lp[i]
            if length == 0:
                continue
            # past INFO_RAW the payload was not kept: parse what was, say what came
            tcp_info_from_attr(rp + i * INFO_RAW, length if length < INFO_RAW else INFO_RAW, op + i)
            op[i].tcp_info_len = lp[i]
    return out


cdef class DestroyFeed:
    """One subscribed NETLINK_SOCK_DIAG socket; ``drain()`` then ``take()``."""

    cdef int fd
    cdef int qfd                # probe(): a second, unsubscribed socket, opened on first use
    cdef uint32_t qseq
    cdef char *buf
    cdef object _rows, _ts, _info, _ilen
    cdef tcpsnap_row *rowp
    cdef int64_t *tsp            # the data of _ts, _info, _ilen (kept alive by them)
    cdef uint8_t *infop
    cdef uint16_t *ilenp
    cdef Py_ssize_t cap, n
    cdef readonly unsigned long long drops      # ENOBUFS: the kernel dropped messages
    cdef readonly unsigned long long malformed
    cdef readonly unsigned long long received
    cdef readonly int rcvbuf                     # the receive buffer the kernel granted
    cdef readonly unsigned long long netns       # inode of the namespace the socket is in

    def __cinit__(self):
        self.fd = -1
        self.qfd = -1
        self.buf = NULL

    def __init__(self, rcvbuf=DEFAULT_RCVBUF, capacity=4096, sock=-1, query=-1, netns=None):
        """Raises PermissionError without CAP_NET_ADMIN, OSError naming the call otherwise.
        Bad arguments, before any socket is made: TypeError for a non-integer, ValueError
        for an rcvbuf outside 0..INT_MAX bytes or a capacity below 1 row.

        Another namespace's feed: ``sock`` and ``query`` are NETLINK_SOCK_DIAG sockets (fds)
        made inside it (``tcpsnap._netns.sock_diag_in``), for the subscription and for
        ``probe``; ``netns`` its inode, the ``netns`` of every report. The kernel delivers
        the destroy groups, and answers lookups, in the namespace a socket was made in, so
        the sockets say where, not the thread. The feed owns (closes) both from the call on,
        also when it raises."""
        cdef sockaddr_nl sa
        cdef int fd, q, g, size
        cdef Py_ssize_t cap
        cdef socklen_t optlen = sizeof(int)
        fd = int_arg(sock, "sock", -1, INT_MAX)
        self.fd = fd                    # owned from here: closed by __dealloc__ on any error
        q = int_arg(query, "query", -1, INT_MAX)
        self.qfd = q
        size = int_arg(rcvbuf, "rcvbuf", 0, INT_MAX)
        cap = capacity_arg(capacity)
        self.netns = OWN_NETNS if netns is None else int_arg(netns, "netns", 1, 0xFFFFFFFFFFFFFFFF)
        self.buf = <char *>malloc(RECV_SIZE)
        if self.buf == NULL:
            raise MemoryError()
        self._set_rows(np.zeros(cap, ROW_DTYPE), np.zeros(cap, np.int64),
                       np.zeros((cap, INFO_RAW), np.uint8), np.zeros(cap, np.uint16))
        if fd < 0:
            fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_SOCK_DIAG)
            if fd < 0:
                raise_syscall("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", errno)
            self.fd = fd
            memset(&sa, 0, sizeof(sa))
            sa.nl_family = AF_NETLINK
            if bind(fd, <sockaddr *>&sa, sizeof(sa)) < 0:
                raise_syscall("bind(NETLINK_SOCK_DIAG)", errno)
        # a burst of deaths between two drains must fit: force past rmem_max as root
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(int)) < 0:
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(int))
        getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &self.rcvbuf, &optlen)
        for g in (SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY):
            if setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(int)) < 0:
                raise_syscall(f"setsockopt(NETLINK_ADD_MEMBERSHIP, {g})", errno)

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
        if self.qfd >= 0:
            close(self.qfd)
        free(self.buf)

    cdef _set_rows(self, rows, ts, info, ilen):
        self.rowp = rows_pointer(rows, &self.cap)
        self._rows = rows      # keeps the data rowp points into alive
        self._ts = ts
        self._info = info
        self._ilen = ilen
        # once here, not per drain: numpy's .ctypes makes an object at every access
        self.tsp = <int64_t *><size_t>ts.ctypes.data
        self.infop = <uint8_t *><size_t>info.ctypes.data
        self.ilenp = <uint16_t *><size_t>ilen.ctypes.data

    def fileno(self):
        """The socket, for select/poll: readable when deaths are queued."""
        return self.fd

    def drain(self):
        """Read every queued notification; return how many rows are held now."""
        cdef drain_status st
        cdef int err = 0
        cdef Py_ssize_t before
        if self.fd < 0:
            raise ValueError("drain on a closed DestroyFeed")
        while True:
            before = self.n
            with nogil:
                st = drain_fd(self.fd, self.buf, self.rowp, self.tsp, self.cap, &self.n,
                              &self.drops, &self.malformed, &err, self.netns, self.infop, self.ilenp)
            self.received += self.n - before
            if st == DRAIN_EMPTY:
                return self.n
            if st == DRAIN_FULL:
                rows = np.zeros(2 * self.cap, ROW_DTYPE)
                ts = np.zeros(2 * self.cap, np.int64)
                info = np.zeros((2 * self.cap, INFO_RAW), np.uint8)
                ilen = np.zeros(2 * self.cap, np.uint16)
                rows[:self.n] = self._rows[:self.n]
                ts[:self.n] = self._ts[:self.n]
                info[:self.n] = self._info[:self.n]
                ilen[:self.n] = self._ilen[:self.n]
                self._set_rows(rows, ts, info, ilen)
                continue
            raise_syscall("recv(NETLINK_SOCK_DIAG destroy groups)", err)

    def take(self, bint info=False):
        """``(rows, wall_ns)``: copies of the rows drained since the last take. With
        ``info``: ``(rows, wall_ns, raw, length)``, ``raw`` a (n, INFO_RAW) uint8 array of
        each report's INET_DIAG_INFO payload (its first INFO_RAW bytes, zeros past
        ``length``), ``length`` (uint16) the bytes the kernel sent (0: none)."""
        n = self.n
        self.n = 0
        if info:
            return (self._rows[:n].copy(), self._ts[:n].copy(), self._info[:n].copy(),
                    self._ilen[:n].copy())
        return self._rows[:n].copy(), self._ts[:n].copy()

    def probe(self, rows, bint by_cookie=True):
        """Ask the kernel about each socket of ``rows`` (ROW_DTYPE) by its family,
        addresses, ports, bound interface and cookie. Returns ``(found, now)``: a bool
        array, whether the kernel still holds that socket, and a ROW_DTYPE array of the
        rows it reports for them now (``pid`` 0, as the kernel gives none; zeros where not
        found). Rows without a cookie or of another family are not found. With
        ``by_cookie`` false the cookie is not asked for: found is whatever socket the
        kernel's lookup of those addresses and ports returns -- the one holding them, or
        failing that a listener on the local address and port (check what comes back).
        OSError naming the call if the probe socket cannot be had or the request cannot
        be sent."""
        cdef int err = 0
        cdef Py_ssize_t n, i, m, cap
        cdef Py_ssize_t ncap
        cdef const tcpsnap_row *rp
        cdef tcpsnap_row *op
        cdef uint8_t *fp
        cdef char *req
        cdef Py_ssize_t got
        if self.fd < 0:
            raise ValueError("probe on a closed DestroyFeed")
        if not isinstance(rows, np.ndarray) or rows.dtype != ROW_DTYPE or rows.ndim != 1:
            raise TypeError("rows must be a 1-dimensional numpy array of ROW_DTYPE")
        rows = np.ascontiguousarray(rows)
        n = len(rows)
        now = np.zeros(n, ROW_DTYPE)
        found = np.zeros(n, np.uint8)
        fam = (rows["family"] == 4) | (rows["family"] == 6)
        ask = np.flatnonzero((rows["cookie"] != 0) & fam if by_cookie else fam)
        if len(ask) == 0:
            return found.astype(bool), now
        if self.qfd < 0:
            self.qfd = open_sock_diag(0)
        sub = np.ascontiguousarray(rows[ask])
        out = np.zeros(len(ask), ROW_DTYPE)
        hit = np.zeros(len(ask), np.uint8)
        rp = <const tcpsnap_row *>rows_pointer(sub, &ncap)
        op = rows_pointer(out, &ncap)
        fp = <uint8_t *><size_t>hit.ctypes.data
        req = <char *>malloc(PROBE_BATCH * PROBE_REQ)
        if req == NULL:
            raise MemoryError()
        try:
            i = 0
            m = len(ask)
            while i < m:
                cap = min(PROBE_BATCH, m - i)
                with nogil:
                    got = probe_batch(self.qfd, rp + i, cap, by_cookie, self.qseq, req, self.buf,
                                      op + i, fp + i, &err)
                self.qseq += <uint32_t>cap
                if got < 0:
                    raise_syscall("send(NETLINK_SOCK_DIAG lookup)", err)
                i += cap
        finally:
            free(req)
        now[ask] = out
        found[ask] = hit
        return found.astype(bool), now

    def close(self):
        if self.qfd >= 0:
            close(self.qfd)
            self.qfd = -1
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1
