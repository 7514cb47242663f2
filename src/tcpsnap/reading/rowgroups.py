"""A recording's rows, one row group after another, read only as they are asked for: the
scan under ``tcpsnap.snapshots`` and the bounded-memory readers (``scan``, ``export``)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from .._errors import BadRecording
from .dataset import SKIP_HINT, Recording

__all__ = ["row_groups"]


#: Row groups read at once (threads; pyarrow decodes without the GIL): memory is this many
#: row groups, not the read-ahead of pyarrow's scanner.
AHEAD = max(1, min(4, os.cpu_count() or 1))


def row_groups(rec: Recording, columns: list[str], expr: Any) -> Iterator:
    """The record batches of ``rec`` (``columns``, rows matching ``expr``), one row group
    after another, in order, read only as they are asked for (``AHEAD`` at a time):
    pyarrow's scanner reads ahead as fast as it can while a slow consumer works, gigabytes
    on an hour at 2,000 connections. Row groups whose statistics rule ``expr`` out are not
    read. With ``skip_bad`` the files are read whole, one at a time
    (``Recording.to_batches``). A file that fails: ``BadRecording`` naming it."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if rec.skip_bad:
        yield from rec.to_batches(columns=columns, filter=expr)
        return
    d = rec.dataset()
    errors = (OSError, pa.ArrowInvalid)

    def read(rg):
        try:
            return rg.to_table(schema=d.schema, columns=columns, filter=expr)
        except errors as e:
            return e

    def pieces() -> Iterator:
        for frag in d.get_fragments(filter=expr if expr is not None else ds.scalar(True)):
            try:
                rgs = frag.split_by_row_group(expr, schema=d.schema)
            except errors as e:
                _fail(rec, frag.path, e, columns, expr)
            for rg in rgs:
                yield frag.path, rg

    with ThreadPoolExecutor(AHEAD) as pool:
        pending: deque = deque()
        for path, rg in pieces():
            pending.append((path, pool.submit(read, rg)))
            while len(pending) >= AHEAD or (pending and pending[0][1].done()):
                where, fut = pending.popleft()
                yield from _result(rec, where, fut, columns, expr)
        while pending:
            where, fut = pending.popleft()
            yield from _result(rec, where, fut, columns, expr)


def _result(rec: Recording, path: str, fut, columns, expr) -> Iterator:
    t = fut.result()
    if isinstance(t, BaseException):
        _fail(rec, path, t, columns, expr)
    yield from t.to_batches()


def _fail(rec: Recording, path: str, e: BaseException, columns, expr) -> NoReturn:
    """BadRecording for the file at ``path``: the Recording's own scan of it says what is
    wrong, as every reader does."""
    f = next((f for f in rec.files if f.path == path), None)
    if f is not None and f.seq is not None:
        rec.to_table(columns=columns, filter=expr, seq=f.seq)
    raise BadRecording(f"{path}: cannot be read ({' '.join(str(e).split())}); {SKIP_HINT}") from None
