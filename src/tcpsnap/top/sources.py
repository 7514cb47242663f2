"""Where ``tcpsnap top``'s frames come from: the live table (a worker thread, so the view
never waits on a dump or a /proc walk), the live table while it is recorded (the
Recorder's own snapshots, handed to the view), or a recording (replay)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .._schema import ROW_DTYPE, STATE_NAMES
from .model import Frame

__all__ = ["LiveSource", "ReplaySource", "frame_of_table"]

_STATE_CODE = {n: k + 1 for k, n in enumerate(STATE_NAMES)}


class LiveSource:
    """Snapshots every ``interval`` seconds in a thread; each one is passed to
    ``deliver(frame)`` (from that thread). ``snapshotter``: anything with ``take()`` and
    ``process_names()`` (``tcpsnap.Snapshotter`` by default, with ``pids`` and ``filter``).
    With ``record`` (a folder) a :class:`tcpsnap.Recorder` takes the snapshots on its
    schedule and the view is shown each one it records: the recording is the view's.
    ``error`` holds what stopped the thread (shown, then raised by the command).

    Containers: each row's ``cgroup_id`` is resolved to a container id in this thread
    (``cgroups``: a ``tcpsnap._cgroup.CgroupResolver``, the process-wide one by default;
    its cache re-walks the cgroup mount at most once a second), so the UI never waits on
    it; a frame carries a ``container`` column once a row maps to one. ``netns``: as
    ``Snapshotter(netns=...)`` takes it (None: this process's namespace)."""

    def __init__(self, interval: float, *, filter: Any = None, snapshotter: Any = None, pids: bool = True,
                 record: str | os.PathLike | None = None, record_options: dict | None = None,
                 cgroups: Any = None, netns: str | int | list | None = None) -> None:
        self.interval = interval
        self._cgroups = cgroups
        self._netns = netns
        self._filter = filter
        self._snap = snapshotter
        self._pids = pids
        self._record = record
        self._record_options = record_options or {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recorder: Any = None
        self.error: BaseException | None = None
        self.recording: str | None = None

    def start(self, deliver: Callable[[Frame], None]) -> None:
        self._deliver = deliver
        if self._snap is None:
            from .._snapshot import Snapshotter

            self._snap = Snapshotter(pids=self._pids, filter=self._filter, netns=self._netns)
            self._own = True
        else:
            self._own = False
        if self._record is not None:
            from ..record import Recorder

            opts = dict(self._record_options)
            if self._filter is not None:      # the recording names its filter (rows missing by design)
                opts.setdefault("filter", self._filter)
            self._recorder = Recorder(self._record, snapshotter=_Tee(self._snap, self._publish),
                                      interval=self.interval, **opts)
            self._recorder.open()          # errors (a locked or foreign folder) here, at once
            self.recording = str(self._recorder.path)
        self._thread = threading.Thread(target=self._run, name="tcpsnap-top-capture", daemon=True)
        self._thread.start()

    def _publish(self, rows: np.ndarray, capture_ns: int) -> None:
        codes, names = self._snap.process_names(rows["pid"])
        fr = Frame(rows.copy(), np.asarray(codes, np.int32), list(names),
                   wall_ns=time.time_ns(), capture_ns=capture_ns)
        ids = fr.rows["cgroup_id"]
        if len(ids) and ids.any():             # Windows rows and old kernels have none
            if self._cgroups is None:
                from .._cgroup import default_resolver

                self._cgroups = default_resolver()
            inv, columns = self._cgroups.resolve_distinct(ids)
            lut, containers = columns[1]
            if containers:                     # no column of dashes on a host without any
                fr.container, fr.containers = lut[inv], containers
        self._deliver(fr)

    def _run(self) -> None:
        try:
            if self._recorder is not None:
                self._recorder.run()
                return
            next_t = time.monotonic()
            while not self._stop.is_set():
                t0 = time.monotonic_ns()
                rows = self._snap.take()
                self._publish(rows, time.monotonic_ns() - t0)
                next_t += self.interval
                delay = next_t - time.monotonic()
                if delay < 0:                      # late: the next slot, not a burst
                    next_t = time.monotonic()
                    delay = 0
                self._stop.wait(delay)
        except BaseException as e:  # noqa: BLE001 -- handed to the UI thread, which reports it
            self.error = e
            self._deliver(None)    # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop the thread, close the recording (and the Snapshotter made here)."""
        self._stop.set()
        if self._recorder is not None:
            self._recorder.stop()
        if self._thread is not None:
            self._thread.join()
        if self._recorder is not None:
            self._recorder.close()
        if self._own and self._snap is not None:
            self._snap.close()


class _Tee:
    """The snapshot source of ``top --record``'s Recorder: the Snapshotter's tables, each
    also shown."""

    def __init__(self, snap: Any, publish: Callable[[np.ndarray, int], None]) -> None:
        self._snap, self._publish = snap, publish
        self.pids = getattr(snap, "pids", False)

    def take(self) -> np.ndarray:
        t0 = time.monotonic_ns()
        rows = self._snap.take()
        self._publish(rows, time.monotonic_ns() - t0)
        return rows

    def process_names(self, pids: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return self._snap.process_names(pids)


def _packed(family: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Addresses as inet_ntop wrote them -> 16 bytes each (IPv4 in the first 4)."""
    out = np.zeros((len(text), 16), np.uint8)
    uniq, inv = np.unique(np.stack([family.astype(str), text.astype(str)], 1), axis=0,
                          return_inverse=True)
    for k, (fam, t) in enumerate(uniq):
        b = socket.inet_pton(socket.AF_INET6 if fam == "6" else socket.AF_INET, t)
        out[inv.ravel() == k, :len(b)] = np.frombuffer(b, np.uint8)
    return out


def frame_of_table(df, seq: int | None = None, wall_ns: int = 0, capture_ns: int = 0) -> Frame:
    """A table as ``tcpsnap.table_at`` returns it (one snapshot's connections) -> a Frame.
    A ``container`` column, where the recording has one, becomes the frame's."""
    n = len(df)
    rows = np.zeros(n, ROW_DTYPE)
    if n:
        for c in ("family", "local_port", "remote_port", "pid", "uid", "rx_queue", "tx_queue", "inode",
                  "cookie", "local_scope_id", "remote_scope_id", "offload_state"):
            if c in df.columns:
                rows[c] = df[c].to_numpy()
        rows["state"] = [_STATE_CODE[str(s)] for s in df["state"]]
        fam = rows["family"]
        rows["local_addr"] = _packed(fam, df["local_addr"].to_numpy(dtype=object))
        rows["remote_addr"] = _packed(fam, df["remote_addr"].to_numpy(dtype=object))
    proc, names = _codes(df["process"] if "process" in df.columns else None, n)
    fr = Frame(rows, proc, names, wall_ns=wall_ns, capture_ns=capture_ns, seq=seq)
    if "container" in df.columns:
        fr.container, fr.containers = _codes(df["container"], n)
    return fr


def _codes(col, n: int) -> tuple[np.ndarray, list[str]]:
    if col is None:
        return np.full(n, -1, np.int32), []
    vals = col.astype(object).to_numpy()
    names = sorted({str(v) for v in vals if v is not None and v == v})
    index = {s: k for k, s in enumerate(names)}
    return np.array([index[str(v)] if v is not None and v == v else -1 for v in vals], np.int32), names


class ReplaySource:
    """A recording's snapshots (full or changes mode), one at a time: ``len``, ``frame(k)``
    (the table of the k-th snapshot, from ``tcpsnap.table_at``), ``index_at(time)`` (the
    last snapshot at or before a time, any form ``tcpsnap.read`` takes). ``filter`` (a
    ``tcpsnap.Filter`` or None) applies to each table. ``BadRecording``/``OSError`` as the
    readers raise them; ``LookupError`` for a recording without snapshots."""

    def __init__(self, path: str | os.PathLike, filter: Any = None) -> None:
        from ..reading import snapshots

        self.path = path
        self.filter = filter
        self.snaps = snapshots(path)
        if len(self.snaps) == 0:
            raise LookupError(f"{path}: the recording holds no snapshot")
        self.seqs = self.snaps["seq"].to_numpy()
        self.times = self.snaps["timestamp"].astype("int64").to_numpy()
        self._cache: dict[int, Frame] = {}

    def __len__(self) -> int:
        return len(self.seqs)

    def index_at(self, when: Any) -> int:
        from ..reading import to_utc

        t = to_utc(when).value
        k = int(np.searchsorted(self.times, t, side="right")) - 1
        if k < 0:
            raise LookupError(f"no snapshot at or before {to_utc(when)} in {self.path} "
                              f"(the first is at {to_utc(int(self.times[0]))})")
        return k

    def frame(self, k: int) -> Frame:
        if k not in self._cache:
            from ..reading import table_at

            seq = int(self.seqs[k])
            df = table_at(self.path, seq=seq)
            cap = self.snaps["capture_ns"].iloc[k]
            fr = frame_of_table(df, seq, int(self.times[k]), 0 if cap is None or cap != cap else int(cap))
            if self.filter is not None:
                m = self.filter.mask(fr.rows, process=(fr.proc, fr.names))
                fr.rows, fr.proc = fr.rows[m], fr.proc[m]
                if fr.container is not None:
                    fr.container = fr.container[m]
            if len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[k] = fr
        return self._cache[k]
