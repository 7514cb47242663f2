"""A full recording's snapshot list and per-snapshot state counts from one DuckDB query:
what ``state_counts``, ``plot --kind states`` and ``info``'s snapshot list read when the
rows themselves are not needed.

DuckDB reads only the projected columns (``seq``, ``host``, ``state``, ``kind``,
``family``, ``inode``, ``timestamp``, ``monotonic_ns``, ``capture_ns``, ``boot_id``) of the
files ``Recording`` kept (their footers checked, copies and foreign files sorted out) with
its own parallel reader, out of core (``memory_limit``, a private temp folder), and
returns one row per (host, snapshot, state): a few rows per snapshot, never per row.

Used only where it answers exactly what the piece-by-piece path answers (else
:func:`summary` returns None and the caller reads piece by piece): a full recording of
schema version 2 only (a version-1 file has no ``kind``, ``host`` nor ``boot_id``), no
``where`` (a pyarrow Expression, possibly with a Python UDF DuckDB cannot run), no
``skip_bad``, no hive partition but ``date=``.

Corruption: DuckDB does not verify Parquet page CRCs (a flipped bit in a value page reads as
another value). So :func:`bad_pages` first checks the CRC of every page of the projected
columns as stored (no decoding: a read and a CRC-32 of a few MB); a mismatch, or a DuckDB
error, makes :func:`summary` return None, and the piece-by-piece path, which verifies every
page's checksum, names the bad file (``BadRecording``), as every reader does.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from typing import Any

import numpy as np

from .dataset import Recording

__all__ = ["summary", "eligible", "bad_pages", "page_header", "COLUMNS", "DUCKDB_MEMORY", "DUCKDB_THREADS"]

#: DuckDB's limits: memory (it spills to its private temp folder beyond) and threads.
DUCKDB_MEMORY = "256MB"
DUCKDB_THREADS = max(1, min(4, os.cpu_count() or 1))

COLUMNS = ("seq", "host", "state", "kind", "family", "inode", "timestamp", "monotonic_ns", "capture_ns", "boot_id")


def bad_pages(path: str, columns: tuple[str, ...]) -> str | None:
    """What is wrong with the pages of ``columns`` in the Parquet file at ``path`` (None:
    every page's CRC-32 matches its header's, or the page has none, as pyarrow's
    ``page_checksum_verification`` treats it). The pages are checked as stored, compressed:
    nothing is decoded, so this costs a read and a CRC of the columns' bytes. DuckDB, which
    answers the query, does not check them (a flipped bit in a value page reads as another
    value), so this is what keeps a corrupt file from answering."""
    import pyarrow.parquet as pq

    try:
        md = pq.ParquetFile(path).metadata
        with open(path, "rb") as f:
            for r in range(md.num_row_groups):
                rg = md.row_group(r)
                for k in range(rg.num_columns):
                    c = rg.column(k)
                    if c.path_in_schema not in columns:
                        continue
                    lo = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else \
                        c.data_page_offset
                    f.seek(lo)
                    b = f.read(c.total_compressed_size)
                    i = 0
                    while i < len(b):
                        size, crc, i = page_header(b, i)
                        if size is None or size < 0 or i + size > len(b):
                            return f"column {c.path_in_schema}: a page header that cannot be read"
                        if crc is not None and zlib.crc32(b[i:i + size]) != crc:
                            return f"column {c.path_in_schema}: a page whose CRC does not match"
                        i += size
    except (OSError, IndexError, ValueError) as e:
        return str(e)
    return None


def eligible(rec: Recording, where: Any) -> bool:
    """Whether :func:`summary` answers for ``rec`` (see the module's docstring)."""
    from .changes import is_changes

    return (where is None and not rec.skip_bad and bool(rec.files) and not is_changes(rec)
            and all(f.version >= 2 and not f.keys and f.path not in rec.skipped for f in rec.files)
            and all(c in rec.schema.names for c in COLUMNS))


def summary(rec: Recording, start: Any, end: Any, where: Any = None):
    """``(snapshots, counts)`` of ``rec`` in ``[start, end)``: ``snapshots`` as
    ``tcpsnap.snapshots`` gives them (same columns, order and dtypes); ``counts`` a
    DataFrame of ``host``, ``seq``, ``state`` (str), ``n`` (int64): the connections of each
    snapshot in each state. None when not :func:`eligible` or DuckDB fails."""
    if not eligible(rec, where):
        return None
    import duckdb
    import pandas as pd

    from .dataset import to_utc

    if any(bad_pages(f.path, COLUMNS) for f in rec.files):
        return None            # the piece-by-piece path names the file, its checksums verified
    files = ", ".join("'" + f.path.replace("'", "''") + "'" for f in rec.files)
    cond = []
    if start is not None:
        cond.append(f"epoch_ns(timestamp) >= {int(to_utc(start).value)}")
    if end is not None:
        cond.append(f"epoch_ns(timestamp) < {int(to_utc(end).value)}")
    wh = ("WHERE " + " AND ".join(cond)) if cond else ""
    # one row per (host, snapshot, state, kind): the recorder writes a snapshot's timestamp,
    # clocks and boot on each of its rows (``_arrow``: repeated per snapshot), so any row's
    # are the snapshot's (any_value: cheaper than min, which costs a compare per row)
    sql = f"""
        SELECT host::VARCHAR AS host, seq, state::VARCHAR AS state, kind::VARCHAR AS kind,
               epoch_ns(any_value(timestamp)) AS ts, any_value(monotonic_ns) AS mono,
               any_value(capture_ns) AS cap, any_value(boot_id)::VARCHAR AS boot_id,
               sum(CASE WHEN family = 0 THEN inode ELSE 1 END)::BIGINT AS w,
               count(*)::BIGINT AS n
        FROM read_parquet([{files}], hive_partitioning = false) {wh}
        GROUP BY ALL"""
    with tempfile.TemporaryDirectory(prefix="tcpsnap-duckdb-") as private:
        con = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "threads": DUCKDB_THREADS,
                                     "temp_directory": os.path.join(private, "duckdb")})
        try:
            con.execute("SET enable_progress_bar = false")
            g = con.sql(sql).df()
        except duckdb.Error:
            return None        # the piece-by-piece path names the bad file
        finally:
            con.close()
    if len(g) == 0:
        return None            # nothing in the range: the other path says so its own way
    return _snapshots(g, pd), _counts(g)


def _snapshots(g, pd):
    from .snapshots import SNAPSHOT_COLUMNS

    s = g.groupby(["host", "seq"], sort=False, dropna=False).agg(
        timestamp=("ts", "min"), monotonic_ns=("mono", "min"), capture_ns=("cap", "min"),
        boot_id=("boot_id", "min"), connections=("w", "sum")).reset_index()
    s = s.sort_values(["host", "seq"], kind="stable", na_position="first").reset_index(drop=True)
    df = pd.DataFrame({"seq": s["seq"].to_numpy(np.int64)})
    df["timestamp"] = pd.to_datetime(s["timestamp"].to_numpy(np.int64), unit="ns", utc=True)
    df["monotonic_ns"] = s["monotonic_ns"].to_numpy(np.int64)
    df["capture_ns"] = s["capture_ns"].to_numpy(np.int64)
    df["connections"] = s["connections"].to_numpy(np.int64)
    for c in ("host", "boot_id"):
        df[c] = s[c].to_numpy(dtype=object)
        df[c] = df[c].astype("category")
    return df[list(SNAPSHOT_COLUMNS)]


def _counts(g):
    c = g[g["kind"] == "connection"]
    return c[["host", "seq", "state", "n"]].reset_index(drop=True)


# Thrift's compact protocol, as much as a PageHeader needs (parquet-format's parquet.thrift)
def _varint(b, i: int) -> tuple[int, int]:
    shift = out = 0
    while True:
        x = b[i]
        i += 1
        out |= (x & 0x7F) << shift
        if x < 0x80:
            return out, i
        shift += 7


def _skip(b, i, t):
    """Skip a compact-protocol value of type t at i."""
    if t in (1, 2):
        return i
    if t == 3:
        return i + 1
    if t in (4, 5, 6):
        return _varint(b, i)[1]
    if t == 7:
        return i + 8
    if t == 8:
        n, i = _varint(b, i)
        return i + n
    if t in (9, 10):
        h = b[i]
        i += 1
        n, et = h >> 4, h & 0x0F
        if n == 15:
            n, i = _varint(b, i)
        for _ in range(n):
            i = i + 1 if et in (1, 2) else _skip(b, i, et)
        return i
    if t == 11:
        n, i = _varint(b, i)
        if n:
            kv = b[i]
            i += 1
            for _ in range(n):
                i = _skip(b, i, kv >> 4)
                i = _skip(b, i, kv & 0x0F)
        return i
    if t == 12:
        while True:
            h = b[i]
            i += 1
            if h == 0:
                return i
            d, ft = h >> 4, h & 0x0F
            if d == 0:
                _, i = _varint(b, i)
            i = _skip(b, i, ft)
    raise ValueError(f"thrift type {t}")


def page_header(b, i):
    """(compressed size, crc or None, end of header) of the PageHeader at i."""
    fid = 0
    size = crc = None
    while True:
        h = b[i]
        i += 1
        if h == 0:
            return size, crc, i
        d, ft = h >> 4, h & 0x0F
        if d == 0:
            z, i = _varint(b, i)
            fid = (z >> 1) ^ -(z & 1)
        else:
            fid += d
        if fid in (3, 4) and ft == 5:
            z, i = _varint(b, i)
            v = (z >> 1) ^ -(z & 1)
            if fid == 3:
                size = v
            else:
                crc = v & 0xFFFFFFFF
        else:
            i = _skip(b, i, ft)
