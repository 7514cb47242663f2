"""A recording's rows, one row group after another, read only as they are asked for: the
scan under ``tcpsnap.snapshots`` and the bounded-memory readers (``scan``, ``export``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._errors import BadRecording
from .dataset import SKIP_HINT, Recording

__all__ = ["row_groups"]


def row_groups(rec: Recording, columns: list[str], expr: Any) -> Iterator:
    """The record batches of ``rec`` (``columns``, rows matching ``expr``), one row group
    after another, read as they are asked for: nothing is read ahead (pyarrow's scanner
    reads ahead as fast as it can while a slow consumer works: gigabytes on an hour at 2,000
    connections). Row groups whose statistics rule ``expr`` out are not read. With
    ``skip_bad`` the files are read whole, one at a time (``Recording.to_batches``)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if rec.skip_bad:
        yield from rec.to_batches(columns=columns, filter=expr)
        return
    d = rec.dataset()
    for frag in d.get_fragments(filter=expr if expr is not None else ds.scalar(True)):
        try:
            for rg in frag.split_by_row_group(expr, schema=d.schema):
                t = rg.to_table(schema=d.schema, columns=columns, filter=expr)
                yield from t.to_batches()
        except (OSError, pa.ArrowInvalid) as e:
            # the Recording's own scan of that file says what is wrong, as every reader does
            f = next((f for f in rec.files if f.path == frag.path), None)
            if f is not None and f.seq is not None:
                rec.to_table(columns=columns, filter=expr, seq=f.seq)
            raise BadRecording(f"{frag.path}: cannot be read ({' '.join(str(e).split())}); {SKIP_HINT}") from None
