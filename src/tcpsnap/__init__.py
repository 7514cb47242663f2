"""tcpsnap: record a machine's TCP connection table over time.

The public API is what ``__all__`` lists; everything else is private.
"""

from ._errors import (
    BackendUnavailable,
    BadRecording,
    DumpInterrupted,
    FilterError,
    NamespaceError,
    RecorderError,
    RecorderLocked,
    ShipError,
    TcpsnapError,
    UnsafePath,
)
from ._mib import (
    parse_tcp6table2,
    parse_tcp6table_owner_pid,
    parse_tcptable2,
    parse_tcptable_owner_pid,
)
from ._schema import ROW_DTYPE, TCP_INFO_DTYPE, TcpState
from ._snapshot import Snapshotter, snapshot
from ._version import __version__
from .filters import Filter, parse_filter
from .frame import to_pandas
from .reading import read, snapshots, table_at
from .record import Recorder, recover

__all__ = [
    "ROW_DTYPE",
    "TCP_INFO_DTYPE",
    "TcpState",
    "Snapshotter",
    "snapshot",
    "to_pandas",
    "Filter",
    "parse_filter",
    "FilterError",
    "Recorder",
    "recover",
    "read",
    "table_at",
    "snapshots",
    "analysis",
    "parse_tcptable2",
    "parse_tcp6table2",
    "parse_tcptable_owner_pid",
    "parse_tcp6table_owner_pid",
    "TcpsnapError",
    "BackendUnavailable",
    "DumpInterrupted",
    "RecorderError",
    "RecorderLocked",
    "UnsafePath",
    "BadRecording",
    "ShipError",
    "NamespaceError",
    "__version__",
]


def __getattr__(name: str):
    # tcpsnap.analysis and tcpsnap.plot import pandas / matplotlib: load them on first use
    if name in ("analysis", "plot"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tcpsnap' has no attribute {name!r}")
