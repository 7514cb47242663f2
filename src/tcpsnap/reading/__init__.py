"""Reading recordings back: the one home of every reader.

- ``dataset``: a recording's files, their footers checked (``Recording``), as a ``pyarrow``
  dataset; times, time-range filters;
- ``full``: ``tcpsnap.read``, one row per connection per snapshot;
- ``changes``: a changes recording's events rebuilt into those rows;
- ``lookup``: ``tcpsnap.table_at``, the table at one snapshot;
- ``snapshots``: ``tcpsnap.snapshots``, one row per snapshot taken (empty ones too).

(The package is not called ``read``: it would shadow the function ``tcpsnap.read``.)
"""

from .changes import is_changes, to_full
from .dataset import Recording, open_dataset, open_recording, to_utc
from .full import read
from .lookup import table_at
from .snapshots import snapshots

__all__ = ["read", "table_at", "snapshots", "open_dataset", "open_recording", "Recording", "to_utc", "is_changes",
           "to_full"]
