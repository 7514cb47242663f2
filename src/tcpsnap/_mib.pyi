import sys
from typing import Any

import numpy as np

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    # collections.abc.Buffer (PEP 688) is new in 3.12: the same protocol, spelled out. numpy's
    # stubs give ndarray __buffer__ on 3.12+ only, so it is named here.
    from typing import Protocol, TypeAlias

    class _SupportsBuffer(Protocol):
        def __buffer__(self, flags: int, /) -> memoryview: ...

    Buffer: TypeAlias = _SupportsBuffer | np.ndarray

def parse_tcptable2(buf: Buffer, out: np.ndarray, *, header_size: int = 4, row_stride: int = 28) -> int:
    """Parse a raw MIB_TCPTABLE2 (GetTcpTable2) into ``out`` (ROW_DTYPE); return the row count.

    Every parse_* raises exactly ValueError or TypeError, naming the argument: TypeError for
    a ``buf`` that is not a buffer or a size that is not an integer; ValueError for a ``buf``
    that is not C-contiguous, any wrong kind of ``out`` (see check_out_array), a size out of
    range (below the SDK's, past 2**63-1) and every bad buffer content."""

def parse_tcp6table2(buf: Buffer, out: np.ndarray, *, header_size: int = 4, row_stride: int = 60) -> int:
    """Parse a raw MIB_TCP6TABLE2 (GetTcp6Table2) into ``out``; return the row count."""

def parse_tcptable_owner_pid(buf: Buffer, out: np.ndarray, *, header_size: int = 4, row_stride: int = 24) -> int:
    """Parse a raw MIB_TCPTABLE_OWNER_PID (GetExtendedTcpTable, AF_INET) into ``out``."""

def parse_tcp6table_owner_pid(buf: Buffer, out: np.ndarray, *, header_size: int = 4, row_stride: int = 56) -> int:
    """Parse a raw MIB_TCP6TABLE_OWNER_PID (GetExtendedTcpTable, AF_INET6) into ``out``."""

def check_out_array(out: Any) -> np.ndarray:
    """Raise ValueError unless ``out`` is a writeable, 1-D, C-contiguous ROW_DTYPE numpy
    array (ValueError for every wrong kind, a non-array too)."""

def row_layout() -> dict[str, int]:
    """Offsets of the compiled C row struct, plus ``"itemsize"``."""
