# The C library, POSIX and Linux kernel interfaces of the Linux modules (_netlink, _destroy,
# _procfs, _quiet), declared once here, one extern block per header, and the one place where a
# failed system call becomes a Python exception.
#
# Linux only: Cython #includes every header named in a cimported .pxd, so the modules built
# on every platform (_mib, _diff, _windows) must not cimport this file. What Cython ships
# declarations for (libc.errno, libc.string, libc.stdlib, libc.stdio, posix.stat, cpython.*)
# is cimported from Cython's own .pxd files instead of being repeated here.
#
# Kernel structs: Cython only needs the fields the code touches; the C compiler takes the
# layout from the header itself. The sizes in the comments are the uapi ABI, which the
# kernel keeps stable; _netlink.pyx checks at import the ones it builds requests with.
from libc.errno cimport ENOMEM, errno
from libc.string cimport memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t


# ---------------------------------------------------------------- C library and POSIX

cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t
    ctypedef long off_t

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    int connect(int fd, const sockaddr *addr, socklen_t len)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int AF_UNSPEC
    int AF_INET
    int AF_INET6
    int AF_NETLINK
    int SOCK_RAW
    int SOCK_CLOEXEC
    int SOCK_NONBLOCK
    int MSG_TRUNC
    int MSG_DONTWAIT
    int SOL_SOCKET
    int SOL_NETLINK
    int SO_RCVBUF
    int SO_RCVBUFFORCE

cdef extern from "<netinet/in.h>" nogil:
    int IPPROTO_TCP
    uint16_t ntohs(uint16_t)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t n)
    off_t lseek(int fd, off_t off, int whence)
    ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
    int fsync(int fd)
    int ftruncate(int fd, off_t length)
    int close(int fd)
    int SEEK_SET

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *path, int flags, ...)
    int O_RDONLY
    int O_DIRECTORY
    int O_CLOEXEC
    int AT_FDCWD

cdef extern from "<dirent.h>" nogil:
    # glibc's struct dirent64 has the layout of the kernel's linux_dirent64, which is what
    # getdents64 fills the buffer with
    struct dirent64:
        unsigned short d_reclen
        char d_name[256]
    ssize_t getdents64(int fd, void *buf, size_t n)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    short POLLIN

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_create(pthread_t *t, const void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t t, void **ret)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_REALTIME
    int CLOCK_MONOTONIC

cdef extern from *:
    # In Cython, `errno = e` would make a local variable; a function that reports failure
    # through errno after cleaning up (close() may clobber it) sets it back through C.
    """
    #include <errno.h>
    static inline void tcpsnap_set_errno(int e) { errno = e; }
    """
    void set_errno "tcpsnap_set_errno"(int e) nogil

cdef extern from *:
    # pidfd_open(2) has no glibc wrapper before 2.36: call it by number.
    """
    #include <sys/syscall.h>
    #include <unistd.h>
    #ifndef SYS_pidfd_open
    #define SYS_pidfd_open 434   /* the same number on every architecture */
    #endif
    static inline int tcpsnap_pidfd_open(unsigned int pid) {
        return (int)syscall(SYS_pidfd_open, pid, 0);
    }
    """
    int tcpsnap_pidfd_open(unsigned int pid) nogil

cdef extern from *:
    # setpriority(2) on the calling thread alone (Linux: a tid is a PRIO_PROCESS target)
    """
    #include <sys/resource.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    static inline int tcpsnap_nice_thread(int nice) {
        return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
    }
    """
    int tcpsnap_nice_thread(int nice) nogil


# ---------------------------------------------------------------- Linux netlink, sock_diag

cdef extern from "<linux/netlink.h>" nogil:
    # include/uapi/linux/netlink.h
    struct sockaddr_nl:           # 12 bytes
        unsigned short nl_family
        unsigned short nl_pad
        uint32_t nl_pid
        uint32_t nl_groups
    struct nlmsghdr:              # 16 bytes; every message starts with one
        uint32_t nlmsg_len
        uint16_t nlmsg_type
        uint16_t nlmsg_flags
        uint32_t nlmsg_seq
        uint32_t nlmsg_pid
    int NETLINK_SOCK_DIAG
    int NETLINK_ADD_MEMBERSHIP
    int NLMSG_DONE
    int NLMSG_ERROR
    int NLM_F_REQUEST
    int NLM_F_DUMP
    int NLM_F_DUMP_INTR
    unsigned int NLMSG_ALIGN(unsigned int)
    struct nlattr:                # 4 bytes, then the attribute's payload
        uint16_t nla_len
        uint16_t nla_type

cdef extern from "<linux/sock_diag.h>" nogil:
    # include/uapi/linux/sock_diag.h
    int SOCK_DIAG_BY_FAMILY
    int SKNLGRP_INET_TCP_DESTROY
    int SKNLGRP_INET6_TCP_DESTROY

cdef extern from "<linux/inet_diag.h>" nogil:
    # include/uapi/linux/inet_diag.h
    struct inet_diag_sockid:      # 48 bytes
        uint16_t idiag_sport      # network order
        uint16_t idiag_dport
        uint32_t idiag_src[4]     # network order
        uint32_t idiag_dst[4]
        uint32_t idiag_if
        uint32_t idiag_cookie[2]
    struct inet_diag_req_v2:      # 56 bytes: the SOCK_DIAG_BY_FAMILY request
        uint8_t sdiag_family
        uint8_t sdiag_protocol
        uint8_t idiag_ext
        uint8_t pad
        uint32_t idiag_states
        inet_diag_sockid id
    struct inet_diag_req:         # 60 bytes: the older TCPDIAG_GETSOCK request
        uint8_t idiag_family
        uint8_t idiag_src_len
        uint8_t idiag_dst_len
        uint8_t idiag_ext
        inet_diag_sockid id
        uint32_t idiag_states
        uint32_t idiag_dbs
    int TCPDIAG_GETSOCK
    struct inet_diag_msg:         # 72 bytes: one socket, in dumps and destroy notifications
        uint8_t idiag_family
        uint8_t idiag_state
        uint8_t idiag_timer
        uint8_t idiag_retrans
        inet_diag_sockid id
        uint32_t idiag_expires
        uint32_t idiag_rqueue
        uint32_t idiag_wqueue
        uint32_t idiag_uid
        uint32_t idiag_inode
    uint32_t INET_DIAG_NOCOOKIE
    # the dump filter (an INET_DIAG_REQ_BYTECODE attribute after the request), run by
    # net/ipv4/inet_diag.c inet_diag_bc_run after inet_diag_bc_audit accepted it
    int INET_DIAG_REQ_BYTECODE
    struct inet_diag_bc_op:       # 4 bytes: one instruction; `yes`/`no` are byte offsets
        uint8_t code
        uint8_t yes
        uint16_t no
    struct inet_diag_hostcond:    # 8 bytes, then 0, 4 or 16 address bytes
        uint8_t family
        uint8_t prefix_len
        int port                  # -1: any port
    enum:
        INET_DIAG_BC_NOP
        INET_DIAG_BC_JMP
        INET_DIAG_BC_S_GE
        INET_DIAG_BC_S_LE
        INET_DIAG_BC_D_GE
        INET_DIAG_BC_D_LE
        INET_DIAG_BC_AUTO
        INET_DIAG_BC_S_COND
        INET_DIAG_BC_D_COND
        INET_DIAG_BC_DEV_COND
        INET_DIAG_BC_MARK_COND
        INET_DIAG_BC_S_EQ
        INET_DIAG_BC_D_EQ


# ---------------------------------------------------------------- failed calls

cdef inline int raise_syscall(str call, int err, bint enomem_as_memoryerror=False) except -1:
    """Raise the exception for system call ``call`` failing with errno ``err``: OSError (the
    subclass Python picks for the errno) naming the call. With ``enomem_as_memoryerror``,
    ENOMEM raises MemoryError(call) instead, for callers whose ENOMEM also stands for
    allocations of their own."""
    from os import strerror      # a .pxd cannot import at module level; this runs on failure only
    if enomem_as_memoryerror and err == ENOMEM:
        raise MemoryError(call)
    raise OSError(err, f"{call}: {strerror(err)}")


cdef inline int raise_errno(int err) except -1:
    """Raise what the ``os`` module's call raises for errno ``err`` (``OSError(err,
    strerror)``, its subclass for the errno, no call named): for a compiled call that
    stands in for one of them (``_quiet``: ``os.pwrite``), whose errors must read the same."""
    from os import strerror
    raise OSError(err, strerror(err))


cdef inline int open_sock_diag(int flags) except -1:
    """A NETLINK_SOCK_DIAG socket (``SOCK_RAW | SOCK_CLOEXEC | flags``) connected to the
    kernel: its fd, or OSError naming the call that failed."""
    cdef sockaddr_nl sa
    cdef int fd, err
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | flags, NETLINK_SOCK_DIAG)
    if fd < 0:
        raise_syscall("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", errno)
    memset(&sa, 0, sizeof(sa))
    sa.nl_family = AF_NETLINK
    if connect(fd, <sockaddr *>&sa, sizeof(sa)) < 0:
        err = errno
        close(fd)
        raise_syscall("connect(NETLINK_SOCK_DIAG)", err)
    return fd
