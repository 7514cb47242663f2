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
and sends nothing (the full socket that became a TIME_WAIT sends one, with the cookie the
TIME_WAIT keeps). Messages that do not fit the receive buffer are dropped by the kernel
and reported to us as ENOBUFS: counted in ``drops`` (the events themselves are lost; the
count of lost messages is not known).

The socket is non-blocking; ``drain()`` reads everything queued, stamps each receive
with the wall clock, and appends rows to an array that ``take()`` hands over.
"""

from libc.errno cimport errno, EINTR, EAGAIN, ENOBUFS
from libc.limits cimport INT_MAX
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np

from tcpsnap._row cimport tcpsnap_row, rows_pointer, int_arg, capacity_arg
from tcpsnap._netlink cimport nl_cursor, nl_result, nl_status, nl_parse, NL_FULL, NL_ERROR, NL_MALFORMED
from tcpsnap._system cimport (
    sockaddr, socklen_t, socket, bind, recv, setsockopt, getsockopt, close, AF_NETLINK, SOCK_RAW,
    SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_DONTWAIT, MSG_TRUNC, SOL_SOCKET, SOL_NETLINK, SO_RCVBUF,
    SO_RCVBUFFORCE, sockaddr_nl, NETLINK_SOCK_DIAG, NETLINK_ADD_MEMBERSHIP,
    SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY, timespec, clock_gettime, CLOCK_REALTIME,
    raise_syscall)
from tcpsnap._schema import ROW_DTYPE

cdef enum:
    RECV_SIZE = 8192           # one message per datagram: an inet_diag_msg and its attributes
    # The kernel charges each queued message its whole skb, several times the message: room
    # for a burst of deaths between two drains.
    DEFAULT_RCVBUF = 32 << 20


cdef enum drain_status:
    DRAIN_EMPTY = 0      # nothing more queued
    DRAIN_FULL = 1       # the row array is full: grow and call again
    DRAIN_ERRNO = 2      # recv failed; errno in *err


cdef drain_status drain_fd(int fd, char *buf, tcpsnap_row *out, int64_t *ts, Py_ssize_t cap,
                           Py_ssize_t *n, unsigned long long *drops,
                           unsigned long long *malformed, int *err) noexcept nogil:
    """Receive every queued datagram into out[n:cap], each row stamped (ts) with the
    wall clock of its receive."""
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
        n0 = n[0]
        # one datagram holds one message, so it always fits the one free row
        st = nl_parse(&cur, 0, out + n0, cap - n0, &res)
        if st == NL_MALFORMED or st == NL_ERROR or st == NL_FULL:
            malformed[0] += 1
        for i in range(res.n):
            ts[n0 + i] = t
        n[0] = n0 + res.n


cdef class DestroyFeed:
    """One subscribed NETLINK_SOCK_DIAG socket; ``drain()`` then ``take()``."""

    cdef int fd
    cdef char *buf
    cdef object _rows, _ts
    cdef tcpsnap_row *rowp
    cdef Py_ssize_t cap, n
    cdef readonly unsigned long long drops      # ENOBUFS: the kernel dropped messages
    cdef readonly unsigned long long malformed
    cdef readonly unsigned long long received
    cdef readonly int rcvbuf                     # the receive buffer the kernel granted

    def __cinit__(self):
        self.fd = -1
        self.buf = NULL

    def __init__(self, rcvbuf=DEFAULT_RCVBUF, capacity=4096):
        """Raises PermissionError without CAP_NET_ADMIN, OSError naming the call otherwise.
        Bad arguments, before any socket is made: TypeError for a non-integer, ValueError
        for an rcvbuf outside 0..INT_MAX bytes or a capacity below 1 row."""
        cdef sockaddr_nl sa
        cdef int fd, g, size = int_arg(rcvbuf, "rcvbuf", 0, INT_MAX)
        cdef Py_ssize_t cap = capacity_arg(capacity)
        cdef socklen_t optlen = sizeof(int)
        self.buf = <char *>malloc(RECV_SIZE)
        if self.buf == NULL:
            raise MemoryError()
        self._set_rows(np.zeros(cap, ROW_DTYPE), np.zeros(cap, np.int64))
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
        free(self.buf)

    cdef _set_rows(self, rows, ts):
        self.rowp = rows_pointer(rows, &self.cap)
        self._rows = rows      # keeps the data rowp points into alive
        self._ts = ts

    def fileno(self):
        """The socket, for select/poll: readable when deaths are queued."""
        return self.fd

    def drain(self):
        """Read every queued notification; return how many rows are held now."""
        cdef drain_status st
        cdef int err = 0
        cdef int64_t *tsp
        cdef Py_ssize_t before
        if self.fd < 0:
            raise ValueError("drain on a closed DestroyFeed")
        while True:
            tsp = <int64_t *><size_t>self._ts.ctypes.data
            before = self.n
            with nogil:
                st = drain_fd(self.fd, self.buf, self.rowp, tsp, self.cap, &self.n,
                              &self.drops, &self.malformed, &err)
            self.received += self.n - before
            if st == DRAIN_EMPTY:
                return self.n
            if st == DRAIN_FULL:
                rows = np.zeros(2 * self.cap, ROW_DTYPE)
                ts = np.zeros(2 * self.cap, np.int64)
                rows[:self.n] = self._rows[:self.n]
                ts[:self.n] = self._ts[:self.n]
                self._set_rows(rows, ts)
                continue
            raise_syscall("recv(NETLINK_SOCK_DIAG destroy groups)", err)

    def take(self):
        """``(rows, wall_ns)``: copies of the rows drained since the last take."""
        n = self.n
        self.n = 0
        return self._rows[:n].copy(), self._ts[:n].copy()

    def close(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1
