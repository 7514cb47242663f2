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

Corruption: DuckDB does not verify Parquet page CRCs. A DuckDB error (a page it cannot
decode) makes :func:`summary` return None, and the piece-by-piece path, which verifies
every page's checksum, names the bad file (``BadRecording``), as every reader does.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from .dataset import Recording

__all__ = ["summary", "DUCKDB_MEMORY", "DUCKDB_THREADS"]

#: DuckDB's limits: memory (it spills to its private temp folder beyond) and threads.
DUCKDB_MEMORY = "512MB"
DUCKDB_THREADS = max(1, min(4, os.cpu_count() or 1))

_COLS = ("seq", "host", "state", "kind", "family", "inode", "timestamp", "monotonic_ns", "capture_ns", "boot_id")


def eligible(rec: Recording, where: Any) -> bool:
    """Whether :func:`summary` answers for ``rec`` (see the module's docstring)."""
    from .changes import is_changes

    return (where is None and not rec.skip_bad and bool(rec.files) and not is_changes(rec)
            and all(f.version >= 2 and not f.keys and f.path not in rec.skipped for f in rec.files)
            and all(c in rec.schema.names for c in _COLS))


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
