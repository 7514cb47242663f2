"""Changes mode's lone snapshot markers, cheap on the writer thread.

At a slow interval (1 s and more) a changes recording's snapshot is mostly its marker row
alone, one batch and one journal frame a second. Encoding that one row's ~30 columns,
copying them into the row group and writing them as an Arrow IPC frame cost ~1.5 ms of
Python a snapshot, cold (benchmarks/RESULTS.md, "CPU at a 1 s interval (session 7)").
Here the first such marker of a row group is encoded as any batch and the next ones like
it (the same row but for their seq and clocks) copy its row (``RowGroupStore.repeat_row``);
once the journal's last frame is one, the next ones go as a repeat frame of it
(``Journal.append_repeat``): the same rows, read back and recovered as any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._events import EV_SNAPSHOT
from .batch import Batch

__all__ = ["LoneMarkers", "PER_SNAPSHOT"]

#: the columns in which two markers of the same content differ: a repeat frame carries
#: only these (changes mode: the marker's own timestamp, then its snapshot's seq and clocks)
PER_SNAPSHOT = ("timestamp", "seq", "capture_ns", "monotonic_ns")


def marker_key(b: Batch) -> bytes | None:
    """A changes-mode batch of one snapshot holding only its marker row: what its row
    holds besides its clocks and seq (everything the encoder reads), so that two with the
    same key encode alike but for those (``PER_SNAPSHOT``). None for any other batch."""
    if b.extra is None or b.n != 1 or b.s != 1 or b.extra[0][0] != EV_SNAPSHOT or b.rows["family"][0] != 0:
        return None
    parts = [b.rows[:1].tobytes(), b.extra[0][:1].tobytes(), b.extra[1][:1].tobytes()]
    if b.has_proc:
        parts += [b.proc[:1].tobytes(), "\0".join(b.names).encode()]
    if b.info is not None and b.sampled is not None:
        parts += [b.info[:1].tobytes(), b.sampled[:1].tobytes()]
    return b"|%d|" % b.has_proc + b"".join(parts)


class LoneMarkers:
    """The writer's state about lone markers, for one row group and its journal.

    ``row``: the last marker encoded into the row group, ``(key, its row)``, which the
    next ones like it copy; ``pending``: the rows not yet durable that are such markers,
    ``(row, key, per-snapshot values)``; ``jkey``: the key of the journal's last frame
    when it is one such marker. ``forget()`` at a new row group or journal.
    """

    def __init__(self, schema: Any) -> None:
        self.row: tuple[bytes, int] | None = None
        self.pending: list[tuple[int, bytes, tuple[int, int, int, int]]] = []
        self.jkey: bytes | None = None
        self.cols = ([schema.get_field_index(c) for c in PER_SNAPSHOT]
                     if "event" in schema.names else None)

    key = staticmethod(marker_key)

    def forget(self) -> None:
        self.row = None
        self.pending.clear()
        self.jkey = None

    def write(self, store: Any, enc: Any, b: Batch, key: bytes) -> None:
        """The marker of ``b`` (``key`` its ``marker_key``) into ``store``: encoded by
        ``enc`` the first time in the row group, then its row copied with its own clocks
        and seq."""
        assert b.extra is not None
        vals = (int(b.extra[2][0]), int(b.seq[0]), int(b.cap[0]), int(b.mono[0]))
        row = store.rows
        if self.row is not None and self.row[0] == key:
            store.repeat_row(self.row[1], dict(zip(PER_SNAPSHOT, vals, strict=True)), vals[1])
        else:
            info = (None if b.info is None or b.sampled is None
                    else (b.info[:1], np.repeat(b.sampled[:1], b.counts[:1])))
            parts = enc.parts(b.rows[:1], b.counts[:1], b.ts[:1], b.seq[:1], b.cap[:1],
                              b.proc[:1] if b.has_proc else None, b.names,
                              *[a[:1] for a in b.extra], monotonic=b.mono[:1], tcp_info=info)
            store.append(parts, 1, b.counts[:1], b.seq[:1])
            self.row = key, row  # until the row group's end (forget)
        self.pending.append((row, key, vals))

    def repeat(self, journal: Any, pending_rows: int) -> bool:
        """The ``pending_rows`` rows not yet durable, as one repeat frame appended to
        ``journal`` where they are all markers like its last frame: True, else False (the
        caller appends them as Arrow frames, then tells ``framed``)."""
        marks = self.pending
        if not (pending_rows and self.jkey is not None and self.cols is not None
                and len(marks) == pending_rows and all(k == self.jkey for _, k, _ in marks)):
            return False
        journal.append_repeat(self.cols, np.array([v for *_, v in marks], np.int64))
        marks.clear()
        return True

    def framed(self, last: tuple[int, int]) -> None:
        """The pending rows went as Arrow frames, the last one of rows ``last``: if that is
        one lone marker, the next ones like it can repeat it."""
        marks = self.pending
        self.jkey = (marks[-1][1] if marks and last[1] - last[0] == 1 and marks[-1][0] == last[0]
                     else None)
        marks.clear()
