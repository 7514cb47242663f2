# Declarations for the socket-destroy feed (what `ss -E` listens to), one extern block per
# header; what _netlink.pxd already declares is cimported from there.
from tcpsnap._netlink cimport sockaddr, socklen_t

cdef extern from "<sys/socket.h>" nogil:
    int bind(int fd, const sockaddr *addr, socklen_t len)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int SOCK_NONBLOCK
    int MSG_DONTWAIT
    int SO_RCVBUFFORCE
    int SOL_NETLINK

cdef extern from "<linux/netlink.h>" nogil:
    int NETLINK_ADD_MEMBERSHIP

cdef extern from "<linux/sock_diag.h>" nogil:
    int SKNLGRP_INET_TCP_DESTROY
    int SKNLGRP_INET6_TCP_DESTROY

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_REALTIME
