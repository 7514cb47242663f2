"""The row layout and the state enum: the single source of truth.

``ROW_DTYPE`` must match ``struct tcpsnap_row`` in ``_row.h`` byte for byte; the
compiled modules check that at import (``_mib.row_layout()``) and the tests prove it.
"""

from __future__ import annotations

import enum
import sys

import numpy as np

__all__ = ["ROW_DTYPE", "TcpState", "STATE_NAMES", "ROW_FIELDS"]


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
