"""The row layout and the state enum: the single source of truth.

``ROW_DTYPE`` must match ``struct tcpsnap_row`` in ``_row.h`` byte for byte; the
compiled modules check that at import (``_mib.row_layout()``) and the tests prove it.
"""

from __future__ import annotations

import enum
import sys

import numpy as np

__all__ = ["ROW_DTYPE", "TcpState", "STATE_NAMES", "ROW_FIELDS", "TCP_INFO_FIELDS", "TCP_INFO_DTYPE",
           "TCP_INFO_KERNEL", "TCP_INFO_KNOWN_LEN", "TCP_INFO_TIMERS", "ESTATS_DATA", "ESTATS_PATH",
           "ESTATS_FIELDS"]


class TcpState(enum.IntEnum):
    """TCP connection state, numbered as Windows' ``MIB_TCP_STATE`` on every platform."""

    CLOSED = 1
    LISTEN = 2
    SYN_SENT = 3
    SYN_RCVD = 4
    ESTABLISHED = 5
    FIN_WAIT1 = 6
    FIN_WAIT2 = 7
    CLOSE_WAIT = 8
    CLOSING = 9
    LAST_ACK = 10
    TIME_WAIT = 11
    DELETE_TCB = 12


#: State names indexed by ``state - 1``; the category order of every ``state`` column.
STATE_NAMES: tuple[str, ...] = tuple(s.name for s in TcpState)

# (name, type, offset). Offsets are explicit so that a reordering here cannot
# silently drift from the C struct.
ROW_FIELDS: tuple[tuple[str, str | tuple, int], ...] = (
    ("family", "u1", 0),
    ("state", "u1", 1),
    ("offload_state", "u1", 2),
    ("_reserved", "u1", 3),
    ("local_port", "<u2", 4),
    ("remote_port", "<u2", 6),
    ("local_addr", ("u1", (16,)), 8),
    ("remote_addr", ("u1", (16,)), 24),
    ("local_scope_id", "<u4", 40),
    ("remote_scope_id", "<u4", 44),
    ("pid", "<u4", 48),
    ("uid", "<u4", 52),
    ("rx_queue", "<u4", 56),
    ("tx_queue", "<u4", 60),
    ("inode", "<u8", 64),
    ("cookie", "<u8", 72),
    ("cgroup_id", "<u8", 80),
    ("netns", "<u8", 88),
)

ROW_DTYPE = np.dtype(
    {
        "names": [f[0] for f in ROW_FIELDS],
        "formats": [f[1] for f in ROW_FIELDS],
        "offsets": [f[2] for f in ROW_FIELDS],
        "itemsize": 96,
    }
)

if sys.byteorder != "little":  # pragma: no cover
    # The C struct is written in native order and the dtype says little-endian.
    raise ImportError("tcpsnap supports little-endian machines only")


# --- TCP internals (issue 14): one tcp_info row per table row --------------------------------
#: The kernel's ``struct tcp_info`` (include/uapi/linux/tcp.h) fields tcpsnap keeps, as
#: ``name: (offset, size)`` in the kernel struct. The struct grew over the years and the
#: kernel sends only as many bytes as it knows (144 on 4.4, 232 on 5.4-6.1, 248 on 6.7+,
#: 280 on 6.18): a field whose ``offset + size`` is past the length it sent is absent
#: (null in a recording). ``_tcp_info.pyx`` parses by these offsets (checked at its import).
TCP_INFO_KERNEL: dict[str, tuple[int, int]] = {
    "ca_state": (1, 1), "retransmits": (2, 1), "backoff": (4, 1),
    "rto": (8, 4), "snd_mss": (16, 4), "rcv_mss": (20, 4),
    "unacked": (24, 4), "sacked": (28, 4), "lost": (32, 4), "retrans": (36, 4),
    "last_data_sent": (44, 4), "last_data_recv": (52, 4), "last_ack_recv": (56, 4),
    "pmtu": (60, 4), "rtt": (68, 4), "rttvar": (72, 4),
    "snd_ssthresh": (76, 4), "snd_cwnd": (80, 4),
    "rcv_rtt": (92, 4), "rcv_space": (96, 4), "total_retrans": (100, 4),
    "pacing_rate": (104, 8),
    "bytes_acked": (120, 8), "bytes_received": (128, 8), "segs_out": (136, 4), "segs_in": (140, 4),
    "notsent_bytes": (144, 4), "min_rtt": (148, 4), "data_segs_in": (152, 4), "data_segs_out": (156, 4),
    "delivery_rate": (160, 8), "busy_time": (168, 8), "rwnd_limited": (176, 8),
    "sndbuf_limited": (184, 8), "delivered": (192, 4),
    "bytes_sent": (200, 8), "bytes_retrans": (208, 8), "dsack_dups": (216, 4), "reord_seen": (220, 4),
    "snd_wnd": (228, 4), "rcv_wnd": (232, 4),
    "total_rto": (240, 2), "total_rto_time": (244, 4),
}
#: The longest ``struct tcp_info`` tcpsnap knows (Linux 6.18); a longer one is parsed up to
#: here and counted as "longer than known".
TCP_INFO_KNOWN_LEN = 280

# (name, type, offset) of ``struct tcpsnap_tcp_info`` (_tcp_info.h), as ROW_FIELDS: u8s,
# then u4s, the name, u2s and u1s: naturally aligned, no padding, 216 bytes. Row i of a
# tcp_info array belongs to row i of the table array. Units are the kernel's: rtt, rttvar,
# min_rtt, rcv_rtt, rto, busy_time, rwnd_limited, sndbuf_limited in µs; last_data_sent,
# last_data_recv, last_ack_recv, total_rto_time in ms; rates in bytes/s; snd_cwnd,
# snd_ssthresh, unacked, sacked, lost, retrans in segments (packets); the rest bytes or counts.
# Besides the kernel's: ``tcp_info_len``, the bytes of struct tcp_info the kernel sent for
# the row (capped at 65535; 0: none, as for TIME_WAIT and request sockets); ``congestion``,
# the INET_DIAG_CONG name (empty: none); ``estats`` (Windows), which
# GetPerTcpConnectionEStats structs filled the row (ESTATS_DATA | ESTATS_PATH; 0 on Linux).
TCP_INFO_FIELDS: tuple[tuple[str, str | tuple, int], ...] = (
    ("bytes_acked", "<u8", 0),
    ("bytes_received", "<u8", 8),
    ("bytes_sent", "<u8", 16),
    ("bytes_retrans", "<u8", 24),
    ("delivery_rate", "<u8", 32),
    ("pacing_rate", "<u8", 40),
    ("busy_time", "<u8", 48),
    ("rwnd_limited", "<u8", 56),
    ("sndbuf_limited", "<u8", 64),
    ("rtt", "<u4", 72),
    ("rttvar", "<u4", 76),
    ("min_rtt", "<u4", 80),
    ("rcv_rtt", "<u4", 84),
    ("rto", "<u4", 88),
    ("snd_cwnd", "<u4", 92),
    ("snd_ssthresh", "<u4", 96),
    ("snd_mss", "<u4", 100),
    ("rcv_mss", "<u4", 104),
    ("pmtu", "<u4", 108),
    ("total_retrans", "<u4", 112),
    ("retrans", "<u4", 116),
    ("lost", "<u4", 120),
    ("sacked", "<u4", 124),
    ("unacked", "<u4", 128),
    ("rcv_space", "<u4", 132),
    ("notsent_bytes", "<u4", 136),
    ("segs_in", "<u4", 140),
    ("segs_out", "<u4", 144),
    ("data_segs_in", "<u4", 148),
    ("data_segs_out", "<u4", 152),
    ("delivered", "<u4", 156),
    ("dsack_dups", "<u4", 160),
    ("reord_seen", "<u4", 164),
    ("snd_wnd", "<u4", 168),
    ("rcv_wnd", "<u4", 172),
    ("last_data_sent", "<u4", 176),
    ("last_data_recv", "<u4", 180),
    ("last_ack_recv", "<u4", 184),
    ("total_rto_time", "<u4", 188),
    ("congestion", "S16", 192),
    ("tcp_info_len", "<u2", 208),
    ("total_rto", "<u2", 210),
    ("ca_state", "u1", 212),
    ("backoff", "u1", 213),
    ("retransmits", "u1", 214),
    ("estats", "u1", 215),
)

#: ``estats`` bits (Windows): what filled the row instead of struct tcp_info.
ESTATS_DATA, ESTATS_PATH = 1, 2
#: Windows: the fields GetPerTcpConnectionEStats fills, and which struct (``estats`` bit)
#: fills each (TCP_ESTATS_DATA_ROD_v0, TCP_ESTATS_PATH_ROD_v0; ``_tcp_info.h``,
#: ``tcp_info_from_estats``). The others are null on a Windows row.
ESTATS_FIELDS: dict[str, int] = {
    "bytes_sent": ESTATS_DATA, "bytes_received": ESTATS_DATA, "bytes_acked": ESTATS_DATA,
    "segs_out": ESTATS_DATA, "segs_in": ESTATS_DATA, "data_segs_out": ESTATS_DATA,
    "data_segs_in": ESTATS_DATA,
    "total_retrans": ESTATS_PATH, "bytes_retrans": ESTATS_PATH, "total_rto": ESTATS_PATH,
    "dsack_dups": ESTATS_PATH, "rtt": ESTATS_PATH, "rttvar": ESTATS_PATH, "min_rtt": ESTATS_PATH,
    "rto": ESTATS_PATH, "snd_mss": ESTATS_PATH, "retransmits": ESTATS_PATH,
}

TCP_INFO_DTYPE = np.dtype(
    {
        "names": [f[0] for f in TCP_INFO_FIELDS],
        "formats": [f[1] for f in TCP_INFO_FIELDS],
        "offsets": [f[2] for f in TCP_INFO_FIELDS],
        "itemsize": 216,
    }
)

#: Fields that are not counters: they move on every sample of a live connection (timers
#: since the last event), so a change rule must not count them as a change.
TCP_INFO_TIMERS: tuple[str, ...] = ("last_data_sent", "last_data_recv", "last_ack_recv")
