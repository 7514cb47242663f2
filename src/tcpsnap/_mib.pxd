# The Windows IP Helper table layouts, and the one parser every caller of
# GetTcpTable2 / GetTcp6Table2 / GetExtendedTcpTable goes through (the Windows
# backend cimports mib_parse; tests feed it recorded buffers).
from libc.stdint cimport uint32_t
from tcpsnap._row cimport tcpsnap_row

cdef struct mib_layout:
    Py_ssize_t header_size   # bytes before the first row (dwNumEntries + padding)
    Py_ssize_t stride        # bytes from one row to the next (row + padding)
    Py_ssize_t row_size      # bytes a row occupies (sizeof the SDK struct)
    int family               # 4 or 6
    # byte offsets of each DWORD / address inside a row; -1 = not in this layout
    Py_ssize_t off_state
    Py_ssize_t off_laddr
    Py_ssize_t off_lscope
    Py_ssize_t off_lport
    Py_ssize_t off_raddr
    Py_ssize_t off_rscope
    Py_ssize_t off_rport
    Py_ssize_t off_pid
    Py_ssize_t off_offload

cdef enum mib_status:
    MIB_OK = 0
    MIB_SHORT_HEADER = 1     # buffer shorter than header_size
    MIB_SHORT_ROWS = 2       # dwNumEntries rows do not fit in the buffer
    MIB_OUT_TOO_SMALL = 3    # out has fewer than dwNumEntries rows
    MIB_BAD_STATE = 4        # dwState outside MIB_TCP_STATE 1..12
    MIB_BAD_OFFLOAD = 5      # dwOffloadState outside TCP_CONNECTION_OFFLOAD_STATE

cdef struct mib_result:
    mib_status status
    Py_ssize_t count         # dwNumEntries (also when out is too small)
    Py_ssize_t bad_row       # index of the offending row, for BAD_*
    uint32_t bad_value

cdef mib_status mib_parse(const char *buf, Py_ssize_t buflen, const mib_layout *lay,
                          tcpsnap_row *out, Py_ssize_t cap, mib_result *res) noexcept nogil
