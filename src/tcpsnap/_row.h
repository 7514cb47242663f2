/* The one C layout of a tcpsnap row. tcpsnap/_schema.py builds ROW_DTYPE with the
 * same fields at the same offsets, and tests/test_schema.py proves the two agree.
 * Fields are ordered so that every member is naturally aligned with no padding:
 * the struct is 96 bytes on every ABI we build for. */
#ifndef TCPSNAP_ROW_H
#define TCPSNAP_ROW_H
#include <stdint.h>

typedef struct tcpsnap_row {
    uint8_t  family;          /* 4 or 6 */
    uint8_t  state;           /* MIB_TCP_STATE, 1..12 */
    uint8_t  offload_state;   /* TCP_CONNECTION_OFFLOAD_STATE (Windows), 0 elsewhere */
    uint8_t  _reserved;
    uint16_t local_port;      /* host order */
    uint16_t remote_port;     /* host order */
    uint8_t  local_addr[16];  /* network order; IPv4 in the first 4 bytes, rest zero */
    uint8_t  remote_addr[16];
    uint32_t local_scope_id;
    uint32_t remote_scope_id;
    uint32_t pid;             /* owning pid, 0 = unknown */
    uint32_t uid;             /* Linux: socket owner's uid */
    uint32_t rx_queue;        /* Linux: recv-Q (listeners: accept backlog) */
    uint32_t tx_queue;        /* Linux: send-Q (listeners: backlog limit) */
    uint64_t inode;           /* Linux: socket inode, 0 for TIME_WAIT / request socks */
    uint64_t cookie;          /* Linux: socket cookie, unique for the life of the boot */
    uint64_t cgroup_id;       /* Linux: inode of the socket's cgroup-v2 directory, 0 = none */
    uint64_t netns;           /* Linux: inode of the socket's network namespace, 0 = unknown */
} tcpsnap_row;

#endif
