# cython: language_level=3
"""A NETLINK_SOCK_DIAG socket inside another network namespace (Linux).

A socket belongs to the namespace its creator was in when it was made, and stays there:
so one ``setns`` into the namespace, one ``socket``, one ``setns`` back. Only the calling
thread changes namespace (``setns`` is per thread); ``tcpsnap.netns`` calls this on its own
thread only, never on the capture thread. Going back matters: a thread left inside a
namespace would keep that namespace alive.

Needs CAP_SYS_ADMIN (``setns``) and, to open another process's ``/proc/PID/ns/net``,
CAP_SYS_PTRACE; the dump through the socket afterwards needs nothing.
"""

from libc.errno cimport errno

from tcpsnap._row cimport int_arg
from tcpsnap._system cimport close, raise_syscall, open_sock_diag

cdef extern from "sched.h" nogil:
    int setns(int fd, int nstype)
    int CLONE_NEWNET


def sock_diag_in(ns_fd, home_fd):
    """A connected NETLINK_SOCK_DIAG socket (its fd, close-on-exec) made inside the network
    namespace ``ns_fd`` refers to; the calling thread is back in ``home_fd``'s namespace
    afterwards. OSError naming the call that failed (EPERM: no CAP_SYS_ADMIN; EINVAL:
    ``ns_fd`` is not a network namespace); if going back fails the thread is left where it
    is and OSError says so."""
    cdef int nsfd = int_arg(ns_fd, "ns_fd", 0, 0x7FFFFFFF)
    cdef int home = int_arg(home_fd, "home_fd", 0, 0x7FFFFFFF)
    cdef int fd = -1, r
    with nogil:
        r = setns(nsfd, CLONE_NEWNET)
    if r < 0:
        raise_syscall("setns(CLONE_NEWNET)", errno)
    try:
        fd = open_sock_diag(0)
    finally:
        with nogil:
            r = setns(home, CLONE_NEWNET)
        if r < 0:
            if fd >= 0:
                close(fd)
            raise_syscall("setns(CLONE_NEWNET) back to the home namespace", errno)
    return fd
