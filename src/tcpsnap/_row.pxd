# Declarations shared by every compiled module: the row every backend writes.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "_row.h":
    ctypedef struct tcpsnap_row:
        uint8_t  family
        uint8_t  state
        uint8_t  offload_state
        uint8_t  _reserved
        uint16_t local_port
        uint16_t remote_port
        uint8_t  local_addr[16]
        uint8_t  remote_addr[16]
        uint32_t local_scope_id
        uint32_t remote_scope_id
        uint32_t pid
        uint32_t uid
        uint32_t rx_queue
        uint32_t tx_queue
        uint64_t inode
        uint64_t cookie
