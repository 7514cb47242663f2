"""Changes mode, the capture side: each snapshot diffed against the previous one (in
compiled code, ``tcpsnap._diff``) becomes the event rows to record, and those rows become
Arrow record batches.

The events and their columns are described in ``tcpsnap._events``. Every file starts with
a keyframe, and one is written every ``keyframe`` interval (default 1 min) and whenever an
identity repeats within a table, so any file (also one that recovery cut short) rebuilds on
its own (``tcpsnap.reading.changes``).
"""

from __future__ import annotations

import logging

import numpy as np

from .._events import EV_CLOSED, EV_KEYFRAME, EV_QUEUES, EV_SNAPSHOT, EVENTS, QUEUES_FIELDS
from .._schema import ROW_DTYPE, TcpState
from ..frame import merge_names

__all__ = ["build_schema", "ChangesEncoder", "ChangeTracker", "open_destroy_feed"]

# the logger of changes mode, capture and rebuild alike
log = logging.getLogger("tcpsnap.changes")

_TIME_WAIT = int(TcpState.TIME_WAIT)


# ---------------------------------------------------------------- schema and encoding

def build_schema(metadata: dict[str, str] | None = None):
    """The full-mode schema plus ``event`` (after ``seq``) and ``seen_in_snapshot`` (last)."""
    import pyarrow as pa

    from .._arrow import build_schema as full_schema

    fields = list(full_schema())
    fields.insert(2, pa.field("event", pa.dictionary(pa.int8(), pa.string()), nullable=False))
    fields.append(pa.field("seen_in_snapshot", pa.bool_(), nullable=False))
    return pa.schema(fields, metadata=metadata)


class ChangesEncoder:
    """``BatchEncoder`` for changes recordings: the full-mode columns (with per-row
    timestamps: a destroy report carries its own), ``event`` and ``seen_in_snapshot``."""

    def __init__(self, schema, host: str = "", boot_id: str = "") -> None:
        import pyarrow as pa

        from .._arrow import TIMESTAMP, BatchEncoder
        from .._arrow import build_schema as full_schema

        self.schema = schema
        self._base = BatchEncoder(full_schema(), host, boot_id)
        self._ts_type = TIMESTAMP
        self._events = pa.array(EVENTS, pa.string())

    def reset(self) -> None:
        self._base.reset()

    def encode(self, rows, counts, timestamps, seqs, capture_ns, proc_codes=None, proc_names=None,
               events=None, seen=None, row_ts=None, monotonic=None):
        import pyarrow as pa

        from .._arrow import KIND_PARTIAL, KIND_SNAPSHOT

        ev = np.asarray(events)
        kinds = np.zeros(len(rows), np.int8)
        kinds[(rows["family"] == 0) & ((ev == EV_SNAPSHOT) | (ev == EV_KEYFRAME))] = KIND_SNAPSHOT
        kinds[ev == EV_QUEUES] = KIND_PARTIAL
        rb = self._base.encode(rows, counts, timestamps, seqs, capture_ns, proc_codes, proc_names,
                               monotonic=monotonic, kinds=kinds)
        cols = rb.columns
        cols[0] = pa.array(np.ascontiguousarray(row_ts), self._ts_type)
        ev = pa.DictionaryArray.from_arrays(pa.array(np.ascontiguousarray(events).view(np.int8), pa.int8()),
                                            self._events)
        cols = cols[:2] + [ev] + cols[2:] + [pa.array(np.ascontiguousarray(seen), pa.bool_())]
        return pa.RecordBatch.from_arrays(cols, schema=self.schema)


# ---------------------------------------------------------------- capture side

class ChangeTracker:
    """The capture thread's half of changes mode: each snapshot's table (after the
    recorder's filters) -> the event rows to record, with the destroy feed's reports
    folded in. Keeps the previous table (in the compiled ``Differ``) and a global
    process-name dictionary, so a process renaming counts as a change."""

    def __init__(self, keyframe_ns: int, feed=None, ports=None, family=None) -> None:
        from .._diff import Differ

        self.keyframe_ns = int(keyframe_ns)
        self.feed = feed
        self._ports = ports
        self._family = family
        self._differ = Differ()
        self._gnames: list[str] = []
        self._gcodes: dict[str, int] = {}
        self._last_kf: int | None = None
        self._key = None
        self._pend_rows = np.zeros(0, ROW_DTYPE)      # destroy reports not yet placed
        self._pend_ts = np.zeros(0, np.int64)
        self._pend_age = np.zeros(0, np.int8)
        self._recent_closed: list[np.ndarray] = []    # cookies closed the last rounds
        # counters
        self.keyframes = 0
        self.events = 0
        self.destroyed = 0          # reports received
        self.unseen = 0             # closed events of sockets no snapshot held
        self.late = 0               # reports of sockets a snapshot had already found gone

    def sleep(self, waker, ns: int) -> None:
        """The recorder's wait between snapshots, reading the destroy feed as reports
        arrive (their time is the time they are read). After a read the feed rests 1 ms,
        so a burst of deaths costs a wake-up per millisecond, not one per socket."""
        import select
        import time

        fd = self.feed.fileno()
        wfd = waker.fileno()
        p = select.poll()  # not select(): it fails for fds above 1023
        p.register(fd, select.POLLIN)
        p.register(wfd, select.POLLIN)
        end = time.monotonic_ns() + ns
        while True:
            left = end - time.monotonic_ns()
            if left <= 0:
                return
            if left < 1_000_000:  # poll counts whole milliseconds
                time.sleep(left / 1e9)
                return
            r = {f for f, _ in p.poll(left // 1_000_000)}
            if wfd in r:
                waker.sleep(0.0001)         # consumes the wake-up byte(s)
                return
            if fd in r:
                self.feed.drain()
                left = end - time.monotonic_ns()
                if left > 0:
                    waker.sleep(min(left, 1_000_000) / 1e9)

    @property
    def stats(self) -> dict:
        f = self.feed
        return {"keyframes": self.keyframes, "events": self.events,
                "destroy_feed": f is not None,
                "destroyed": self.destroyed, "destroyed_unseen": self.unseen,
                "destroyed_late": self.late,
                "destroy_drops": f.drops if f is not None else 0}

    def _global_codes(self, rows: np.ndarray, names) -> np.ndarray:
        n = len(rows)
        if names is None or n == 0:
            return np.full(n, -1, np.int32)
        codes, pnames = names(rows["pid"])
        return np.take(merge_names(pnames, self._gcodes, self._gnames), codes, mode="wrap")

    def _destroyed(self, cur: np.ndarray, closed: np.ndarray, closed_ts: np.ndarray,
                   closed_seen_ts: np.ndarray):
        """Place the destroy reports: the socket is in this snapshot (TIME_WAIT: it lives
        on as one, drop; else it died after the dump: wait a round), or a snapshot found
        it gone now (stamp its closed event with the report's time), or earlier (late
        report: drop), or no snapshot ever held it (an unseen closed event)."""
        if self.feed is not None:
            r, t = self.feed.take()
            if len(r):
                self.destroyed += len(r)
                self._pend_rows = np.concatenate([self._pend_rows, r])
                self._pend_ts = np.concatenate([self._pend_ts, t])
                self._pend_age = np.concatenate([self._pend_age, np.zeros(len(r), np.int8)])
        pr = self._pend_rows
        empty = (np.zeros(0, ROW_DTYPE), np.zeros(0, np.int64))
        if not len(pr):
            return empty
        pts, age = self._pend_ts, self._pend_age
        ck = pr["cookie"]
        idx = self._differ.lookup(ck)
        in_cur = idx >= 0
        tw = np.zeros(len(pr), bool)
        if in_cur.any():
            tw[in_cur] = cur["state"][idx[in_cur]] == _TIME_WAIT
        wait = in_cur & ~tw & (age < 2)
        gone = ~in_cur
        unseen = np.zeros(len(pr), bool)
        if gone.any():
            if len(closed):
                pos = {int(c): j for j, c in enumerate(closed["cookie"]) if c}
                for i in np.flatnonzero(gone):
                    j = pos.get(int(ck[i]))
                    if j is not None:
                        closed_ts[j] = pts[i]
                        closed_seen_ts[j] = True
                        gone[i] = False
            if gone.any():
                late = np.zeros(len(pr), bool)
                for old in self._recent_closed:
                    late |= gone & np.isin(ck, old)
                self.late += int(late.sum())
                unseen = gone & ~late
        ur, ut = pr[unseen], pts[unseen]
        if len(ur) and (self._ports or self._family):
            from .._filters import row_mask

            m = row_mask(ur, None, self._ports, self._family)
            if m is not None:
                ur, ut = ur[m], ut[m]
        keep = wait
        self._pend_rows, self._pend_ts, self._pend_age = pr[keep], pts[keep], age[keep] + 1
        self.unseen += len(ur)
        return ur, ut

    def step(self, rows: np.ndarray, names, wall_ns: int, mono_ns: int, file_key):
        """One snapshot -> ``(event_rows, names, (events, seen, row_ts))``, ``names`` a
        callable as the recorder's (returning codes for event_rows) or None."""
        if self.feed is not None:
            self.feed.drain()
        kf = (self._last_kf is None or file_key != self._key
              or mono_ns - self._last_kf >= self.keyframe_ns)
        gproc = self._global_codes(rows, names)
        ev_idx, ev_code, closed, closed_proc, dup = self._differ.diff(rows, gproc, kf)
        kf = kf or dup
        if len(ev_idx) > 1:
            # in cookie order, not the kernel's: neighbouring cookies (and inodes) differ by
            # little, which the Parquet encodings and zstd turn into far fewer bytes
            o = np.argsort(rows["cookie"][ev_idx], kind="stable")
            ev_idx, ev_code = ev_idx[o], ev_code[o]
        if kf:
            self._last_kf = mono_ns
            self._key = file_key
            self.keyframes += 1
        closed_ts = np.full(len(closed), wall_ns, np.int64)
        closed_dts = np.zeros(len(closed), bool)
        ur, ut = self._destroyed(self._differ.rows, closed, closed_ts, closed_dts)
        if len(closed):
            self._recent_closed = [closed["cookie"]] + self._recent_closed[:1]
        ne, nc, nu = len(ev_idx), len(closed), len(ur)
        n = 1 + nc + nu + ne
        out = np.zeros(n, ROW_DTYPE)
        out[0]["inode"] = len(rows)              # the marker: family 0, the table's size,
        out[0]["state"] = TcpState.CLOSED        # a state (the column has no nulls)
        if nc:
            out[1:1 + nc] = closed
        if nu:
            out[1 + nc:1 + nc + nu] = ur
        if ne:
            out[1 + nc + nu:].view(np.uint8)[:] = rows[ev_idx].view(np.uint8)
            q = 1 + nc + nu + np.flatnonzero(ev_code == EV_QUEUES)
            if len(q):
                keep = out[q][list(QUEUES_FIELDS)].copy()
                out[q] = np.zeros(len(q), ROW_DTYPE)
                for f in QUEUES_FIELDS:
                    out[f][q] = keep[f]
        events = np.empty(n, np.uint8)
        events[0] = EV_KEYFRAME if kf else EV_SNAPSHOT
        events[1:1 + nc + nu] = EV_CLOSED
        events[1 + nc + nu:] = ev_code
        seen = np.ones(n, bool)
        seen[1 + nc:1 + nc + nu] = False
        row_ts = np.full(n, wall_ns, np.int64)
        row_ts[1:1 + nc] = closed_ts
        row_ts[1 + nc:1 + nc + nu] = ut
        self.events += n - 1
        if names is None:
            return out, None, (events, seen, row_ts)
        g = np.full(n, -1, np.int32)
        g[1:1 + nc] = closed_proc
        g[1 + nc + nu:] = np.where(ev_code == EV_QUEUES, -1, gproc[ev_idx])
        used = np.unique(g[g >= 0])
        local = [self._gnames[i] for i in used]
        codes = np.full(n, -1, np.int32)
        if len(used):
            m = g >= 0
            codes[m] = np.searchsorted(used, g[m]).astype(np.int32)
        return out, (lambda _pids: (codes, local)), (events, seen, row_ts)

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()


def open_destroy_feed(required: bool = False):
    """The socket-destroy feed, or None (with a one-line warning) where it cannot be had:
    not Linux, or the kernel refuses the subscription (EPERM without CAP_NET_ADMIN)."""
    try:
        from .._destroy import DestroyFeed
    except ImportError as e:
        if required:
            raise
        log.warning("no socket-destroy feed on this platform (%s): polling only", e)
        return None
    try:
        return DestroyFeed()
    except OSError as e:
        if required:
            raise
        log.warning("no socket-destroy feed (%s; needs CAP_NET_ADMIN on some kernels): polling "
                    "only, connections that live between two snapshots are not recorded", e)
        return None
