"""Recording: the capture thread, the writer thread and the folder they share.

- ``recorder``: :class:`Recorder`, the public coordinator.
- ``capture``: the schedule loop, taking snapshots into batches (capture thread).
- ``batch``: :class:`~tcpsnap.record.batch.Batch`, handed from capture to writer, and its pool.
- ``writer``: encoding, journal, row groups, rotation, finishing (writer thread); its
  ``Rules`` hold the flush and rotation rules.
- ``folder``: the lock, leftovers of a crash, recovery. ``layout``: file names and the
  crash model. ``parquet``, ``journal``, ``thrift``: the file formats.
- ``protocols``: the clock and the snapshot source a recorder is given.
"""

from .protocols import Clock, SnapshotSource, SystemClock
from .recorder import Recorder
from .recovery import RecoveryResult, recover

__all__ = ["Recorder", "recover", "RecoveryResult", "Clock", "SnapshotSource", "SystemClock"]
