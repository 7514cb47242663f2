# Declarations for the Linux NETLINK_SOCK_DIAG backend, one extern block per header.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from tcpsnap._row cimport tcpsnap_row

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef long ssize_t
    struct sockaddr:
        pass
    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr *addr, socklen_t len)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    int AF_UNSPEC
    int AF_INET
    int AF_INET6
    int AF_NETLINK
    int SOCK_RAW
    int SOCK_CLOEXEC
    int MSG_TRUNC
    int SOL_SOCKET
    int SO_RCVBUF

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

cdef extern from "<netinet/in.h>" nogil:
    int IPPROTO_TCP
    uint16_t ntohs(uint16_t)

cdef extern from "<linux/netlink.h>" nogil:
    struct sockaddr_nl:
        unsigned short nl_family
        unsigned short nl_pad
        uint32_t nl_pid
        uint32_t nl_groups
    struct nlmsghdr:
        uint32_t nlmsg_len
        uint16_t nlmsg_type
        uint16_t nlmsg_flags
        uint32_t nlmsg_seq
        uint32_t nlmsg_pid
    int NETLINK_SOCK_DIAG
    int NLMSG_DONE
    int NLMSG_ERROR
    int NLM_F_REQUEST
    int NLM_F_DUMP
    int NLM_F_DUMP_INTR
    unsigned int NLMSG_ALIGN(unsigned int)

cdef extern from "<linux/sock_diag.h>" nogil:
    int SOCK_DIAG_BY_FAMILY

cdef extern from "<linux/inet_diag.h>" nogil:
    struct inet_diag_sockid:
        uint16_t idiag_sport      # network order
        uint16_t idiag_dport
        uint32_t idiag_src[4]     # network order
        uint32_t idiag_dst[4]
        uint32_t idiag_if
        uint32_t idiag_cookie[2]
    struct inet_diag_req_v2:
        uint8_t sdiag_family
        uint8_t sdiag_protocol
        uint8_t idiag_ext
        uint8_t pad
        uint32_t idiag_states
        inet_diag_sockid id
    struct inet_diag_req:
        uint8_t idiag_family
        uint8_t idiag_src_len
        uint8_t idiag_dst_len
        uint8_t idiag_ext
        inet_diag_sockid id
        uint32_t idiag_states
        uint32_t idiag_dbs
    int TCPDIAG_GETSOCK
    struct inet_diag_msg:
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


# A cursor over received netlink bytes, resumable: parsing stops when `out` is full
# and continues from the same message once the caller has grown it.
cdef struct nl_cursor:
    const char *buf
    Py_ssize_t len
    Py_ssize_t off

cdef enum nl_status:
    NL_MORE = 0        # chunk consumed; receive more
    NL_DONE = 1        # NLMSG_DONE for our sequence number
    NL_FULL = 2        # out is full; grow it and call again
    NL_ERROR = 3       # NLMSG_ERROR; errno in nl_result.error
    NL_MALFORMED = 4   # a header or message runs past the bytes received

cdef struct nl_result:
    Py_ssize_t n            # rows written so far
    int error               # errno from NLMSG_ERROR
    int dump_intr           # NLM_F_DUMP_INTR seen: the table changed mid-dump
    Py_ssize_t skipped      # messages of an unknown family or state

cdef nl_status nl_parse(nl_cursor *cur, uint32_t seq, tcpsnap_row *out, Py_ssize_t cap,
                        nl_result *res) noexcept nogil

# Drop repeated sockets (same cookie) from rows[:n] in place, keeping the first; returns
# the new count. `slots` is scratch of `nslots` (a power of two >= 2n) entries.
cdef Py_ssize_t dedupe_by_cookie(tcpsnap_row *rows, Py_ssize_t n, uint64_t *slots,
                                 Py_ssize_t nslots) noexcept nogil
