"""``tcpsnap export``'s writing: a recording (or a time range of it) as CSV, JSON lines or one
compacted Parquet file, streamed batch by batch (memory stays flat however long the
recording is).

What is written (field names and value forms, stable):

- the columns of the recording (``date`` left out), in its order. A full recording: its
  rows as recorded (``kind`` "snapshot" rows stand for empty snapshots). A changes
  recording: the table rebuilt for every snapshot of the range (the columns of a full
  recording, one row per connection per snapshot); ``events=True`` writes its events as
  recorded instead (markers included);
- CSV (pyarrow's writer) and JSON lines (polars' NDJSON writer): one object
  per row with every column; numbers as numbers (``cookie`` as an exact integer), missing
  values as empty / ``null``, strings decoded from their dictionaries, timestamps as ISO
  8601 strings in UTC with nanoseconds (``2026-11-18T11:06:40.000000000Z``); UTF-8;
- Parquet: the same Arrow schema (types, dictionaries) and the recording's key-value
  metadata (``tcpsnap.mode`` "full" for a rebuilt changes recording), zstd, row groups of
  about a million rows; written to a temporary file in the output's folder and renamed
  over the name only when complete (an existing file only with ``force``).

JSON lines of a full recording (schema 2 or later, one schema in every file, no ``where``)
go through polars' lazy NDJSON sink: it reads only the row groups the time range needs
(their statistics) with its own parallel reader, while the CRCs of those row groups' pages
are checked (polars does not check them: ``aggregate.bad_pages``): the output is published
only when they match, else thrown away and the export goes the batch-by-batch way, which
verifies every page and names the file.
Elsewhere, and for CSV, a batch at a time through pyarrow's verified scan.

Nothing is written to the recording's folder: temporaries go to a private temporary folder
or next to the output.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .._errors import TcpsnapError
from .query import time_filter
from .scan import Selection, row_groups

__all__ = ["export", "FORMATS"]

FORMATS = ("csv", "jsonl", "parquet")


def _batches(sel: Selection, events: bool) -> Iterator:
    """The record batches to write (see the module docstring)."""
    if sel.changes and not events:
        for t in sel.tables():
            yield from t.to_batches()
        return
    rec = sel.rec
    expr = time_filter(rec, sel.start, sel.end)
    if sel.where is not None:
        expr = sel.where if expr is None else expr & sel.where
    columns = [c for c in rec.schema.names if c != "date"]
    for b in row_groups(rec, columns, expr):
        if b.num_rows:
            yield b


def plain(batch):
    """Dictionary columns decoded, timestamps as ISO 8601 strings: what CSV and JSON
    readers expect."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols, names = [], []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if pa.types.is_timestamp(col.type):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ" if col.type.tz else "%Y-%m-%dT%H:%M:%S")
        cols.append(col)
        names.append(name)
    return pa.RecordBatch.from_arrays(cols, names=names)


def _metadata(sel: Selection, rebuilt: bool) -> dict:
    import pyarrow.parquet as pq

    files = sel.rec.files_for()
    md = dict(pq.read_schema(files[0].path).metadata or {}) if files else {}
    md.pop(b"ARROW:schema", None)
    if rebuilt:
        md[b"tcpsnap.mode"] = b"full"
    return md


def export(sel: Selection, to: str, output: str | os.PathLike | None, *, force: bool = False,
           events: bool = False) -> int:
    """Write ``sel`` as ``to`` (``FORMATS``) to ``output`` (None: standard output; not for
    Parquet). Returns the rows written. Raises ``TcpsnapError`` when ``output`` exists
    (Parquet without ``force``), its folder does not, or ``events`` is asked of a full
    recording."""
    if to not in FORMATS:
        raise ValueError(f"export: format must be one of {', '.join(FORMATS)}, not {to!r}")
    if events and not sel.changes:
        raise TcpsnapError(f"{sel.path}: --events needs a changes recording (this one is full)")
    if to == "parquet" and output is None:
        raise TcpsnapError("export --to parquet needs -o FILE (Parquet is not written to standard output)")
    out = None if output is None else Path(output)
    if out is not None:
        if not out.parent.is_dir():
            raise TcpsnapError(f"cannot write {out}: No such file or directory (no folder {out.parent})")
        if to == "parquet" and out.exists() and not force:
            raise TcpsnapError(f"{out} exists: pass --force to replace it")
    with tempfile.TemporaryDirectory(prefix="tcpsnap-export-") as private:
        if out is None:
            tmp = Path(private) / f"out.{to}"
        else:
            fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
            os.close(fd)
            tmp = Path(name)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)         # as open() would make it, not mkstemp's 0600
        try:
            n = _write(sel, to, tmp, events)
            if out is None:
                with open(tmp, "rb") as f:
                    shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
                sys.stdout.buffer.flush()
            else:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, out)
        finally:
            if out is not None and tmp.exists():
                tmp.unlink()
    return n


def _write(sel: Selection, to: str, path: Path, events: bool) -> int:
    import pyarrow as pa

    batches = _batches(sel, events)
    first = next(batches, None)
    rebuilt = sel.changes and not events
    if first is None:
        from .._arrow import rows_schema

        schema = rows_schema() if rebuilt else sel.rec.schema
        schema = pa.schema([f for f in schema if f.name != "date"])
        first = schema.empty_table().to_batches()[0] if schema.empty_table().num_rows else \
            pa.RecordBatch.from_pylist([], schema=schema)

    def all_batches() -> Iterator:
        yield first
        yield from batches

    n = 0
    if to == "parquet":
        import pyarrow.parquet as pq

        schema = first.schema
        if rebuilt:     # rebuilt rows of schema-1 files hold nulls the full schema declares not
            schema = pa.schema([f.with_nullable(True) for f in schema])
        else:           # a column older files lack (schema 3's cgroup_id in schema-2 files): null there
            every = set.intersection(*(set(pq.read_schema(f.path).names) for f in sel.rec.files)) \
                if sel.rec.files else set(schema.names)
            schema = pa.schema([f if f.name in every else f.with_nullable(True) for f in schema])
        schema = schema.with_metadata(_metadata(sel, rebuilt))
        with pq.ParquetWriter(path, schema, compression="zstd") as w:
            buf: list = []
            rows = 0
            for b in all_batches():
                buf.append(b)
                rows += b.num_rows
                if rows >= 1_000_000:
                    w.write_table(pa.Table.from_batches(buf).cast(schema), row_group_size=rows)
                    n += rows
                    buf, rows = [], 0
            if buf:
                w.write_table(pa.Table.from_batches(buf).cast(schema), row_group_size=max(rows, 1))
                n += rows
        return n
    if to == "csv":
        import pyarrow.csv as pacsv

        with open(path, "wb") as f, pacsv.CSVWriter(f, plain(first).schema) as w:
            for b in all_batches():
                w.write_batch(plain(b))
                n += b.num_rows
        return n
    # polars' NDJSON writer: the same bytes as DuckDB's COPY (FORMAT JSON) on these plain
    # batches; its lazy sink where it can (_sink_jsonl), else a batch at a time
    if not events:
        got = _sink_jsonl(sel, path)
        if got is not None:
            return got
    import polars as pl

    with open(path, "wb") as f:
        for b in all_batches():
            df = pl.from_arrow(plain(b))
            assert isinstance(df, pl.DataFrame)      # a RecordBatch gives a DataFrame
            df.write_ndjson(f)
            n += b.num_rows
    return n


def _sink_jsonl(sel: Selection, path: Path) -> int | None:
    """JSON lines of ``sel`` through polars' lazy scan and NDJSON sink, the time range
    pushed down to its reader (row groups outside it are not read); the bytes
    :func:`plain` batches give. Returns the rows written, or None where it does not
    apply (see the module docstring) or a page's CRC does not match. ``path``: a
    temporary file, published by the caller only when a count is returned (it may hold
    unverified rows otherwise)."""
    from .aggregate import bad_pages, eligible
    from .timeforms import to_utc

    rec = sel.rec
    if sel.changes or not eligible(rec, sel.where):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    lo = None if sel.start is None else int(to_utc(sel.start).value)
    hi = None if sel.end is None else int(to_utc(sel.end).value)
    files = [f.path for f in rec.files]
    schema = None
    todo = []
    for f in files:
        pf = pq.ParquetFile(f)
        s = pf.schema_arrow.remove_metadata()
        if schema is None:
            schema = s
        elif not s.equals(schema):
            return None                  # files of two schemas: the dataset unifies them
        md = pf.metadata
        at = schema.get_field_index("timestamp")        # ns since the epoch, as stored
        rgs = []
        for r in range(md.num_row_groups):
            st = md.row_group(r).column(at).statistics
            if st is not None and st.has_min_max and st.physical_type == "INT64" and (
                    (hi is not None and st.min_raw >= hi) or (lo is not None and st.max_raw < lo)):
                continue                 # outside the range: polars skips it by the same statistics
            rgs.append(r)
        todo.append((f, rgs))
    assert schema is not None
    names = tuple(schema.names)

    def sound() -> bool:
        return all(bad_pages(f, names, rgs) is None for f, rgs in todo)

    import polars as pl

    lf = pl.scan_parquet(files, hive_partitioning=False)
    ts = pl.col("timestamp")
    if lo is not None:
        lf = lf.filter(ts >= pl.lit(lo).cast(pl.Datetime("ns", "UTC")))
    if hi is not None:
        lf = lf.filter(ts < pl.lit(hi).cast(pl.Datetime("ns", "UTC")))
    # the recording's columns (the newest schema's), null where these files have none:
    # what the batch-by-batch path writes
    lf = lf.select([pl.col(c) if c in schema.names else pl.lit(None).alias(c)
                    for c in rec.schema.names if c != "date"])
    # timestamps as plain() writes them: ISO 8601, nanoseconds, Z for UTC
    times = [pl.col(f.name).dt.to_string("%Y-%m-%dT%H:%M:%S%.9f" + ("Z" if f.type.tz else ""))
             for f in schema if pa.types.is_timestamp(f.type)]
    # the pages' CRCs are checked on a thread while polars writes (it lets go of the GIL):
    # what it wrote is only a temporary file, published (renamed, or copied out) by
    # export() after this returns, so a mismatch throws it away before anyone reads it
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(sound)
        try:
            n = int(lf.select(pl.len()).collect().item())
            lf.with_columns(times).sink_ndjson(path)
        except pl.exceptions.PolarsError:
            n = None             # a page polars cannot decode: the batch path names its file
        if not checked.result():
            return None
    return n
