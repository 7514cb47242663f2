"""A recording read piece by piece, in bounded memory: what ``tcpsnap.analysis``'s path form,
``info``, ``plot`` and ``export`` work through.

A :class:`Selection` is a recording (a path or an open ``Recording``), a time range
``[start, end)`` and a filter ``where`` (a ``pyarrow.compute.Expression`` on the rows' columns,
applied at the scan). ``tables()`` gives its rows as a full recording holds them (one row
per connection per snapshot), as Arrow tables of about ``chunk_rows`` rows each, in snapshot
order within each recording of the folder:

- a full recording: the scan's record batches, gathered (row groups are read one after
  another: memory is a few chunks, not the recording);
- a changes recording: per keyframe segment, the segment's events are read and rebuilt
  (``changes.rebuild``) for a run of its snapshots at a time, so the rebuilt rows of a
  whole segment never exist at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._events import EV_CLOSED, EV_KEYFRAME
from .changes import event_codes, info_names, is_changes, rebuild
from .dataset import Recording, open_recording
from .query import in_seq_order, time_filter
from .rowgroups import row_groups
from .snapshots import groups, snapshots_of
from .timeforms import utc_range

__all__ = ["Selection", "CHUNK_ROWS"]

#: Rows per piece: lifetimes of 2M rows peaks near 250 MB; the pieces' results are per
#: connection or per snapshot, so what is kept grows with those, not with the rows.
CHUNK_ROWS = 2_000_000


class Selection:
    """The rows of a recording in ``[start, end)`` matching ``where``, read in pieces.

    ``source``: a recording folder or file, or an open ``Recording``; ``start`` / ``end``:
    any form ``tcpsnap.read`` takes; ``where``: a ``pyarrow.compute.Expression`` over the
    rows' columns (None: every row); ``skip_bad``: as ``tcpsnap.read``. Raises what
    ``open_recording`` raises (``FileNotFoundError``, ``BadRecording``)."""

    def __init__(self, source: str | os.PathLike | Recording, start: Any = None, end: Any = None,
                 where: Any = None, skip_bad: bool = False, chunk_rows: int = CHUNK_ROWS) -> None:
        self.start, self.end = utc_range(start, end)
        self.rec = source if isinstance(source, Recording) else open_recording(
            source, skip_bad=skip_bad, start=self.start, end=self.end)
        self.where = where
        self.chunk_rows = max(1, int(chunk_rows))
        self._snaps = None
        self._summary: Any = None

    @property
    def path(self):
        return self.rec.path

    @property
    def changes(self) -> bool:
        return is_changes(self.rec)

    def snapshots(self):
        """``tcpsnap.snapshots`` of the range (every snapshot, empty ones too; ``where``
        does not apply: a snapshot nothing matched counts 0), computed once."""
        if self._snaps is None:
            got = self.summary(any_where=True)
            self._snaps = got[0] if got is not None else snapshots_of(self.rec, self.start, self.end)
        return self._snaps

    def summary(self, any_where: bool = False):
        """``(snapshots, counts)`` from one DuckDB query over the projected columns
        (``tcpsnap.reading.aggregate.summary``), computed once; None where that path does
        not answer exactly (then read piece by piece). ``any_where``: the snapshots only
        (``where`` does not apply to them), so a ``where`` does not rule it out."""
        from .aggregate import summary

        if self._summary is None:
            self._summary = summary(self.rec, self.start, self.end) or False
        if self._summary is False or (self.where is not None and not any_where):
            return None
        return self._summary

    def columns(self, wanted: list[str] | None = None) -> list[str]:
        """The full-mode columns of ``wanted`` (default: all) this recording has."""
        from .._arrow import rows_schema

        names = [c for c in rows_schema().names] if self.changes else \
            [c for c in self.rec.schema.names if c not in ("date", "kind")]
        if self.changes:       # the tcp_info columns of a --tcp-info recording, rebuilt too
            names += [c for c in self.rec.schema.names if c in info_names() and c not in names]
        keys = {k for f in self.rec.files for k, _ in f.keys}
        names += [k for k in sorted(keys) if k not in names and k != "date"]
        return names if wanted is None else [c for c in wanted if c in names]

    def tables(self, columns: list[str] | None = None) -> Iterator:
        """The rows (full-mode form: ``kind`` "snapshot" rows and changes markers left out,
        a changes recording rebuilt) as ``pyarrow.Table`` pieces of about ``chunk_rows``
        rows, ``columns`` (default: all) that exist."""
        cols = self.columns(columns)
        if self.changes:
            yield from self._changes_tables(cols)
        else:
            yield from self._full_tables(cols)

    def frames(self, columns: list[str] | None = None) -> Iterator:
        """``tables`` as pandas DataFrames (categoricals for dictionary columns, in seq
        order within each piece)."""
        for t in self.tables(columns):
            yield in_seq_order(t.to_pandas())

    # ------------------------------------------------------------------ full recordings
    def _full_tables(self, cols: list[str]) -> Iterator:
        import pyarrow as pa
        import pyarrow.dataset as ds

        expr = time_filter(self.rec, self.start, self.end)
        if "kind" in self.rec.schema.names:
            conn = (ds.field("kind") == "connection") | ds.field("kind").is_null()
            expr = conn if expr is None else expr & conn
        if self.where is not None:
            expr = self.where if expr is None else expr & self.where
        buf: list = []
        n = 0
        for b in row_groups(self.rec, cols, expr):
            if b.num_rows == 0:
                continue
            buf.append(b)
            n += b.num_rows
            if n >= self.chunk_rows:
                yield pa.Table.from_batches(buf)
                buf, n = [], 0
        if buf:
            yield pa.Table.from_batches(buf)

    # --------------------------------------------------------------- changes recordings
    def _changes_tables(self, cols: list[str]) -> Iterator:
        import pyarrow as pa

        for keys, sub in groups(self.rec):
            for t in self._segments(sub, [c for c in cols if c not in keys]):
                for k, v in keys.items():
                    if k in cols:
                        t = t.append_column(k, pa.array([v] * t.num_rows, pa.string()).dictionary_encode())
                yield t.select(cols)

    def _segments(self, sub: Recording, cols: list[str]) -> Iterator:
        """One recording's rebuilt rows, keyframe segment by keyframe segment."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        seq, kf, count = _markers(sub, None, self.end)
        if len(seq) == 0:
            return
        t0 = _markers(sub, self.start, self.end)[0] if self.start is not None else seq
        wanted = np.isin(seq, t0)
        if not wanted.any():
            return
        # segment k: from the k-th keyframe to the next one (before the first keyframe:
        # from the first marker, as read_changes does)
        seg = np.cumsum(kf)
        for s in np.unique(seg[wanted]):
            in_seg = seg == s
            lo, hi = int(seq[in_seg][0]), int(seq[in_seg & wanted][-1])
            expr = (ds.field("seq") >= lo) & (ds.field("seq") <= hi)
            names = [c for c in sub.schema.names if c != "date"]
            events = sub.to_table(columns=names, filter=expr, seq=(lo, hi))
            eseq = events.column("seq").to_numpy()
            o = np.argsort(eseq, kind="stable")
            if kf[in_seg][0]:
                # closes at the keyframe itself are of connections the segment never
                # had (the keyframe restates every open one): rebuild would call them
                # events without a whole row
                drop = (eseq == lo) & (event_codes(events.column("event")) == EV_CLOSED)
                o = o[~drop[o]]
            events = events.take(pa.array(o))
            mine = seq[in_seg & wanted]
            rows = count[in_seg & wanted]
            # runs of snapshots of about chunk_rows rebuilt rows each
            cut = np.flatnonzero(np.diff(np.cumsum(rows) // self.chunk_rows)) + 1
            for part in np.split(mine, cut):
                full = rebuild(events, snapshots=part)
                if self.where is not None:
                    full = full.filter(self.where)
                if full.num_rows:
                    yield full.select(cols)
            del events


def _markers(rec: Recording, start, end) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seq, is keyframe, connections) of a changes recording's markers in [start, end),
    in seq order."""
    import pyarrow.dataset as ds

    expr = ds.field("family") == 0
    tf = time_filter(rec, start, end)
    if tf is not None:
        expr = expr & tf
    t = rec.to_table(columns=["seq", "event", "inode"], filter=expr)
    seq = t.column("seq").to_numpy()
    o = np.argsort(seq, kind="stable")
    seq = seq[o]
    kf = (event_codes(t.column("event")) == EV_KEYFRAME)[o]
    count = t.column("inode").to_numpy().astype(np.int64)[o]
    first = np.ones(len(seq), bool)
    first[1:] = seq[1:] != seq[:-1]
    return seq[first], kf[first], count[first]
