# The netlink parser of the Linux backend, shared with the destroy feed (_destroy), which
# receives the same inet_diag messages. System and kernel declarations are in _system.pxd.
from libc.stdint cimport uint32_t, uint64_t
from tcpsnap._row cimport tcpsnap_row
from tcpsnap._tcp_info cimport tcpsnap_tcp_info, info_seen

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
    uint64_t netns          # written into every row's netns (the dumped namespace's inode)
    tcpsnap_tcp_info *info  # NULL: no internals; else row i's INET_DIAG_INFO/CONG go to info[i]
    info_seen seen          # the INET_DIAG_INFO lengths seen (when info is set)

cdef nl_status nl_parse(nl_cursor *cur, uint32_t seq, tcpsnap_row *out, Py_ssize_t cap,
                        nl_result *res) noexcept nogil
