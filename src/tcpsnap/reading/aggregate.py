"""A full recording's snapshot list and per-snapshot state counts (:func:`summary`: what
``state_counts``, ``plot --kind states`` and ``info``'s snapshot list read when the rows
themselves are not needed; counted in numpy by ``reading.tally`` for one host and boot, else
from one DuckDB query), and its connections from another
(:func:`connections`: what ``lifetimes``, ``info``, ``top_remotes`` and ``by_process``
merge, a few rows per connection).

DuckDB reads only the projected columns (:data:`COLUMNS`, :data:`CONN_COLUMNS`) of the
files ``Recording`` kept (their footers checked, copies and foreign files sorted out) with
its own parallel reader, out of core (``memory_limit``, a private temp folder), and
returns a few rows per snapshot (per host, snapshot, state) or per connection, never per
row. Where every row group's statistics show one host and one boot, neither column is read
per row (hashing strings per row is most of such a query's cost).

Used only where it answers exactly what the piece-by-piece path answers (else None and the
caller reads piece by piece): a full recording of schema version 2 or later (a version-1
file has no ``kind``, ``host`` nor ``boot_id``), no ``where`` (a pyarrow Expression,
possibly with a Python UDF DuckDB cannot run), no ``skip_bad``, no hive partition but
``date=``; for :func:`connections` also what its docstring lists.

Corruption: DuckDB does not verify Parquet page CRCs (a flipped bit in a value page reads as
another value). So :func:`bad_pages` first checks the CRC of every page of the projected
columns as stored (no decoding: a read and a CRC-32 of a few MB; each file's column once per
process); a mismatch, or a DuckDB error, makes the function return None, and the
piece-by-piece path, which verifies every page's checksum, names the bad file
(``BadRecording``), as every reader does.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from typing import Any

import numpy as np

from .dataset import Recording

__all__ = ["summary", "state_tally", "connections", "eligible", "bad_pages", "page_header", "COLUMNS", "CONN_COLUMNS",
           "DUCKDB_MEMORY", "DUCKDB_THREADS"]

#: DuckDB's limits: memory (it spills to its private temp folder beyond) and threads.
DUCKDB_MEMORY = "256MB"
DUCKDB_THREADS = max(1, min(4, os.cpu_count() or 1))

COLUMNS = ("seq", "host", "state", "kind", "family", "inode", "timestamp", "monotonic_ns", "capture_ns", "boot_id")
#: The columns :func:`connections` reads (``timestamp`` for the time range only).
CONN_COLUMNS = ("seq", "host", "boot_id", "cookie", "state", "kind", "family", "local_addr", "local_port",
                "remote_addr", "remote_port", "pid", "process", "timestamp")

# (path, size, mtime_ns, column) whose pages were found sound in this process: a question
# that reads a column checked already does not read its pages again
_SOUND: set[tuple[str, int, int, str]] = set()


def _pages_ok(rec: Recording, columns: tuple[str, ...]) -> bool:
    """Whether every page of ``columns`` in ``rec``'s files has the CRC its header gives
    (:func:`bad_pages`), each (file, column) read once per process."""
    for f in rec.files:
        try:
            st = os.stat(f.path)
        except OSError:
            return False
        todo = tuple(c for c in columns if (f.path, st.st_size, st.st_mtime_ns, c) not in _SOUND)
        if not todo:
            continue
        if bad_pages(f.path, todo) is not None:
            return False
        _SOUND.update((f.path, st.st_size, st.st_mtime_ns, c) for c in todo)
    return True


def _query(rec: Recording, select: str, start: Any, end: Any, extra: str = ""):
    """``select`` (with ``{src}``, the files, and ``{where}``, the time range and
    ``extra``) on DuckDB, as a pyarrow Table; None if DuckDB fails (the caller then reads
    piece by piece, which names a bad file)."""
    import duckdb

    from .dataset import to_utc

    files = ", ".join("'" + f.path.replace("'", "''") + "'" for f in rec.files)
    cond = [extra] if extra else []
    if start is not None:
        cond.append(f"epoch_ns(timestamp) >= {int(to_utc(start).value)}")
    if end is not None:
        cond.append(f"epoch_ns(timestamp) < {int(to_utc(end).value)}")
    sql = select.format(src=f"read_parquet([{files}], hive_partitioning = false)",
                        where=("WHERE " + " AND ".join(cond)) if cond else "")
    with tempfile.TemporaryDirectory(prefix="tcpsnap-duckdb-") as private:
        con = duckdb.connect(config={"memory_limit": DUCKDB_MEMORY, "threads": DUCKDB_THREADS,
                                     "temp_directory": os.path.join(private, "duckdb")})
        try:
            con.execute("SET enable_progress_bar = false")
            got = con.sql(sql).arrow()
            # a reader in newer DuckDB, a Table in older
            return got.read_all() if hasattr(got, "read_all") else got
        except duckdb.Error:
            return None
        finally:
            con.close()


def bad_pages(path: str, columns: tuple[str, ...], row_groups: Any = None) -> str | None:
    """What is wrong with the pages of ``columns`` in the Parquet file at ``path`` (None:
    every page's CRC-32 matches its header's, or the page has none, as pyarrow's
    ``page_checksum_verification`` treats it). The pages are checked as stored, compressed:
    nothing is decoded, so this costs a read and a CRC of the columns' bytes. DuckDB, which
    answers the query, does not check them (a flipped bit in a value page reads as another
    value), so this is what keeps a corrupt file from answering. ``row_groups``: the
    indices of the row groups to check (default: every one)."""
    import pyarrow.parquet as pq

    try:
        md = pq.ParquetFile(path).metadata
        with open(path, "rb") as f:
            for r in range(md.num_row_groups) if row_groups is None else row_groups:
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
    one = _one_origin(rec)
    if one is not None:
        # one host and boot: counted in numpy from pyarrow's decoding (CRCs verified as
        # read), about half DuckDB's CPU for this question (``tally``'s docstring)
        got = _tallied(rec, start, end, one)
        if got is not None:
            return got
    if not _pages_ok(rec, COLUMNS):
        return None            # the piece-by-piece path names a bad file, its checksums verified
    # one row per (host, snapshot, state, kind): the recorder writes a snapshot's timestamp,
    # clocks and boot on each of its rows (``_arrow``: repeated per snapshot), so any row's
    # are the snapshot's (any_value: cheaper than min, which costs a compare per row).
    # Grouped by the columns as stored, cast after: a cast per row costs more than the group
    if one is None:
        t = _query(rec, """
            SELECT host::VARCHAR AS host, seq, state::VARCHAR AS state, kind::VARCHAR AS kind, ts, mono, cap,
                   boot_id::VARCHAR AS boot_id, w, n
            FROM (SELECT host, seq, state, kind, epoch_ns(any_value(timestamp)) AS ts,
                         any_value(monotonic_ns) AS mono, any_value(capture_ns) AS cap, any_value(boot_id) AS boot_id,
                         sum(CASE WHEN family = 0 THEN inode ELSE 1 END)::BIGINT AS w, count(*)::BIGINT AS n
                  FROM {src} {where} GROUP BY ALL)
            ORDER BY host NULLS FIRST, seq""", start, end)
        fam0 = None
    else:
        # one host and boot (the row groups' statistics say so): neither is read per row,
        # and an empty snapshot's count (the inode of its family-0 row) comes from a
        # second query that decodes only those few rows: together about what DuckDB
        # takes to count connections per snapshot and state alone
        t = _query(rec, """
            SELECT seq, state::VARCHAR AS state, kind::VARCHAR AS kind, ts, mono, cap, n, n AS w
            FROM (SELECT seq, state, kind, epoch_ns(any_value(timestamp)) AS ts, any_value(monotonic_ns) AS mono,
                         any_value(capture_ns) AS cap, count(*)::BIGINT AS n FROM {src} {where} GROUP BY ALL)
            ORDER BY seq""", start, end)
        fam0 = _query(rec, """SELECT seq, count(*)::BIGINT AS z, sum(inode)::BIGINT AS s FROM {src} {where}
                              GROUP BY seq ORDER BY seq""", start, end, extra="family = 0")
    if t is None or (one is not None and fam0 is None):
        return None
    import pandas as pd

    g = t.to_pandas()
    if len(g) == 0:
        return None            # nothing in the range: the other path says so its own way
    if one is not None:
        g["host"], g["boot_id"] = one
    snaps = _snapshots(g, pd)
    if fam0 is not None and fam0.num_rows:
        # a family-0 row (an empty snapshot's) counts its inode, not 1
        at = np.searchsorted(snaps["seq"].to_numpy(), fam0.column("seq").to_numpy())
        fix = fam0.column("s").to_numpy().astype(np.int64) - fam0.column("z").to_numpy().astype(np.int64)
        snaps["connections"] = snaps["connections"].to_numpy() + np.bincount(at, fix, len(snaps)).astype(np.int64)
    return snaps, _counts(g)


def _tallied(rec: Recording, start: Any, end: Any, one: tuple[str, str]):
    """``summary``'s answer from ``tally`` (None where it does not answer)."""
    from .dataset import to_utc
    from .snapshots import SNAPSHOT_COLUMNS
    from .tally import tally

    got = tally(rec, None if start is None else int(to_utc(start).value),
                None if end is None else int(to_utc(end).value))
    if got is None:
        return None
    import pandas as pd

    df = pd.DataFrame({"seq": got.seq})
    df["timestamp"] = pd.to_datetime(got.ts, unit="ns", utc=True)
    df["monotonic_ns"] = got.mono
    df["capture_ns"] = got.cap
    df["connections"] = got.rows
    for c, v in zip(("host", "boot_id"), one, strict=True):
        df[c] = np.full(len(df), v, object)
        df[c] = df[c].astype("category")
    counts = pd.DataFrame({"host": np.full(len(got.c_seq), one[0], object), "seq": got.c_seq,
                           "state": got.c_state, "n": got.c_n})
    return df[list(SNAPSHOT_COLUMNS)], counts


def state_tally(rec: Recording, start: Any, end: Any, where: Any = None, wait: Any = None):
    """``(host, tally)`` of ``rec`` in ``[start, end)``: ``reading.tally.tally`` without the
    clocks (its ``seq``, ``ts`` and per-(seq, state) connection counts, what
    ``state_counts`` and the states plot read), for a one-host, one-boot recording that
    :func:`summary` counts in numpy; None where it does not answer (another recording, no
    row in the range: the caller then asks ``summary`` or reads piece by piece). Imports
    no pandas when ``start`` and ``end`` are None. ``wait``: as ``tally``'s."""
    if not eligible(rec, where):
        return None
    one = _one_origin(rec)
    if one is None:
        return None
    from .tally import tally

    def ns(x: Any) -> int | None:
        if x is None:
            return None
        from .dataset import to_utc

        return int(to_utc(x).value)

    got = tally(rec, ns(start), ns(end), clocks=False, wait=wait)
    return None if got is None else (one[0], got)


def connections(rec: Recording, start: Any, end: Any, where: Any = None):
    """The connections of ``rec`` in ``[start, end)``, one row each, from one DuckDB query
    grouped by (host, boot, cookie, state, 4-tuple, owner): a few groups per connection,
    merged here. A DataFrame: ``host``, ``boot_id`` (object, None where missing),
    ``cookie`` (uint64), ``family``, ``local_addr``, ``local_port``, ``remote_addr``,
    ``remote_port`` (its first row's), ``fseq`` / ``lseq`` (int64: the seq of its first /
    last row), ``snapshots`` (int64: its rows), ``states`` (its states in time order,
    ``>``-joined), ``first_state``, ``last_state``, ``pid`` (int64, 0: never known) and
    ``process`` (the last row with a pid's; None). Its time comes from the snapshot list
    (the rows carry their snapshot's). No row in the range: an empty DataFrame.

    None where that is not exactly what the rows give, row by row (then read piece by
    piece): not :func:`eligible`, a page whose CRC does not match, a DuckDB error, a row
    without a cookie (its identity is its 4-tuple split at gaps), two rows of one
    connection in one snapshot at its first, last or last-owned row (which comes first is
    the rows' order), or a connection that went back to an earlier state (its path needs
    its rows in order)."""
    if not eligible(rec, where) or not _pages_ok(rec, CONN_COLUMNS):
        return None
    import pandas as pd

    one = _one_origin(rec)
    # (host, boot) as keys only when the row groups' statistics do not show them constant:
    # hashing two more strings per row costs about a quarter of the query
    origin = "host, boot_id, " if one is None else ""
    cast = "host::VARCHAR AS host, boot_id::VARCHAR AS boot_id, " if one is None else ""
    t = _query(rec, """
        SELECT """ + cast + """cookie, state::VARCHAR AS state, family,
               local_addr::VARCHAR AS local_addr, local_port, remote_addr::VARCHAR AS remote_addr, remote_port,
               pid, process::VARCHAR AS process, n, fs, ls
        FROM (SELECT """ + origin + """cookie, state, family, local_addr, local_port, remote_addr, remote_port,
                     pid, process, count(*)::BIGINT AS n, min(seq) AS fs, max(seq) AS ls
              FROM {src} {where} GROUP BY ALL)""", start, end, extra="kind = 'connection'")
    if t is None:
        return None
    if t.num_rows == 0:
        return pd.DataFrame()          # no connection in the range
    if one is not None:
        import pyarrow as pa

        t = t.append_column("host", pa.array([one[0]] * t.num_rows, pa.string()))
        t = t.append_column("boot_id", pa.array([one[1]] * t.num_rows, pa.string()))
    cookie = t.column("cookie").to_numpy().astype(np.uint64)
    if (cookie == 0).any():
        return None
    host = _objects(t.column("host"))
    boot = _objects(t.column("boot_id"))
    # a dense code per connection: (host, boot, cookie)
    conn = _conn_codes(host, boot, cookie, pd)
    k = int(conn.max()) + 1
    fs = t.column("fs").to_numpy().astype(np.int64)
    ls = t.column("ls").to_numpy().astype(np.int64)
    n = t.column("n").to_numpy().astype(np.int64)
    pid = t.column("pid").to_numpy().astype(np.int64)
    big = np.iinfo(np.int64).max
    cfs = np.full(k, big, np.int64)
    np.minimum.at(cfs, conn, fs)
    cls = np.full(k, -big, np.int64)
    np.maximum.at(cls, conn, ls)
    own = np.full(k, -big, np.int64)
    np.maximum.at(own, conn, np.where(pid > 0, ls, -big))

    def only(mask: np.ndarray) -> np.ndarray | None:
        """Each connection's one group where mask holds (None: two, a tie in seq)."""
        at = np.flatnonzero(mask)
        if np.bincount(conn[at], minlength=k).max(initial=0) > 1:
            return None
        out = np.full(k, -1, np.int64)
        out[conn[at]] = at
        return out

    first, last, owner = only(fs == cfs[conn]), only(ls == cls[conn]), only((pid > 0) & (ls == own[conn]))
    if first is None or last is None or owner is None:
        return None
    # states: each state's stretch [first seq, last seq] per connection; in time order
    # they must not overlap (else it went back to a state, or two rows share a seq)
    st = _objects(t.column("state"))
    sc, sv = pd.factorize(pd.Index(st, dtype=object))
    pair = conn * (len(sv) + 1) + sc
    pk, pu = pd.factorize(pair)
    pfs = np.full(len(pu), big, np.int64)
    np.minimum.at(pfs, pk, fs)
    pls = np.full(len(pu), -big, np.int64)
    np.maximum.at(pls, pk, ls)
    pconn, pstate = np.asarray(pu) // (len(sv) + 1), np.asarray(pu) % (len(sv) + 1)
    o = np.lexsort((pfs, pconn))
    pconn, pstate, pfs, pls = pconn[o], pstate[o], pfs[o], pls[o]
    same = pconn[1:] == pconn[:-1]
    if (same & (pls[:-1] >= pfs[1:])).any():
        return None
    names = np.asarray(sv, dtype=object)[pstate]
    per = np.bincount(pconn, minlength=k)
    paths = names[np.cumsum(per) - 1].copy()             # one state: the common case
    starts = np.cumsum(per) - per
    for i in np.flatnonzero(per > 1):
        paths[i] = ">".join(names[starts[i]:starts[i] + per[i]])
    out = pd.DataFrame({"host": host[first], "boot_id": boot[first], "cookie": cookie[first]})
    for name in ("family", "local_port", "remote_port"):
        out[name] = t.column(name).to_numpy()[first]
    for name in ("local_addr", "remote_addr"):
        out[name] = _objects(t.column(name))[first]
    out["fseq"], out["lseq"] = cfs, cls
    out["snapshots"] = np.bincount(conn, weights=n, minlength=k).astype(np.int64)
    out["states"] = paths
    out["first_state"], out["last_state"] = st[first], st[last]
    known = owner >= 0
    out["pid"] = np.where(known, pid[np.maximum(owner, 0)], 0)
    out["process"] = np.where(known, _objects(t.column("process"))[np.maximum(owner, 0)], None)
    return out


def _one_origin(rec: Recording) -> tuple[str, str] | None:
    """(host, boot_id) when every row group's statistics show both columns one value, the
    same in every file, never null (then every row has them); else None."""
    import pyarrow.parquet as pq

    seen = set()
    try:
        for f in rec.files:
            md = pq.ParquetFile(f.path).metadata
            names = [md.schema.column(k).path for k in range(md.num_columns)]
            at = [names.index(c) for c in ("host", "boot_id")]
            for r in range(md.num_row_groups):
                vals = []
                for k in at:
                    st = md.row_group(r).column(k).statistics
                    if st is None or not st.has_min_max or st.null_count != 0 or st.min != st.max:
                        return None
                    vals.append(st.min)
                seen.add(tuple(vals))
    except (OSError, ValueError):
        return None
    if len(seen) != 1:
        return None
    h, b = next(iter(seen))
    return (h.decode() if isinstance(h, bytes) else str(h)), (b.decode() if isinstance(b, bytes) else str(b))


def _objects(col) -> np.ndarray:
    """An Arrow string column as an object array (None where missing)."""
    return np.asarray(col.to_pylist(), dtype=object)


def _conn_codes(host: np.ndarray, boot: np.ndarray, cookie: np.ndarray, pd) -> np.ndarray:
    """A dense code per (host, boot, cookie), missing host or boot a value of its own."""
    h = pd.factorize(pd.Index(host, dtype=object), use_na_sentinel=False)[0].astype(np.int64)
    b = pd.factorize(pd.Index(boot, dtype=object), use_na_sentinel=False)[0].astype(np.int64)
    c = pd.factorize(cookie)[0].astype(np.int64)
    return pd.factorize((h * (int(b.max()) + 1) + b) * (int(c.max()) + 1) + c)[0].astype(np.int64)


def _snapshots(g, pd):
    """One row per (host, seq) of ``g`` (ordered by host, nulls first, then seq): a
    snapshot's time, clocks and boot are any of its groups' (the same on each of its
    rows), its connections their sum."""
    from .snapshots import SNAPSHOT_COLUMNS

    host = g["host"].to_numpy(dtype=object)
    seq = g["seq"].to_numpy(np.int64)
    new = np.ones(len(g), bool)
    new[1:] = (seq[1:] != seq[:-1]) | (pd.isna(host[1:]) != pd.isna(host[:-1])) | \
        (pd.Series(host[1:]).fillna("").to_numpy() != pd.Series(host[:-1]).fillna("").to_numpy())
    at = np.flatnonzero(new)
    df = pd.DataFrame({"seq": seq[at]})
    df["timestamp"] = pd.to_datetime(g["ts"].to_numpy(np.int64)[at], unit="ns", utc=True)
    df["monotonic_ns"] = g["mono"].to_numpy(np.int64)[at]
    df["capture_ns"] = g["cap"].to_numpy(np.int64)[at]
    df["connections"] = np.add.reduceat(g["w"].to_numpy(np.int64), at) if len(at) else np.zeros(0, np.int64)
    for c in ("host", "boot_id"):
        df[c] = g[c].to_numpy(dtype=object)[at]
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
