"""The writer's encodings (session 8, issue 18): what it writes reads back as pyarrow's own
``pq.write_table`` of the same rows writes it, value by value, with the same statistics.

The writer thread is driven as a recording at ``--interval 0`` drives it (batches of
whole snapshots, a clock that moves with them): per-snapshot columns handed over one value
a snapshot, ``kind``/``host``/``boot_id`` statistics from the values their codes use.
"""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from _changes_util import ManualClock  # noqa: E402
from tcpsnap._arrow import BatchEncoder, build_schema  # noqa: E402
from tcpsnap._schema import ROW_DTYPE  # noqa: E402
from tcpsnap.record.batch import STOP, BatchPool  # noqa: E402
from tcpsnap.record.parquet import STATS_COLUMNS  # noqa: E402
from tcpsnap.record.safedir import SafeDir  # noqa: E402
from tcpsnap.record.writer import FileOptions, Rules, Writer  # noqa: E402

T0 = 1_764_460_800_000_000_000
SCHEMA = build_schema({"tcpsnap.mode": "full"})




def table_rows(n: int, seed: int) -> np.ndarray:
    """A table of ``n`` sockets: IPv4 and IPv6 (link-local ones with scope ids), a few
    owners and users, distinct ports, inodes and cookies."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, ROW_DTYPE)
    rows["family"] = rng.choice([4, 10], n, p=[0.7, 0.3])
    rows["state"] = rng.choice([2, 5, 11], n, p=[0.1, 0.8, 0.1])
    rows["local_port"] = rng.integers(1, 65536, n)
    rows["remote_port"] = rng.integers(1, 65536, n)
    v4 = rows["family"] == 4
    rows["local_addr"][v4, :4] = [127, 0, 0, 1]
    rows["remote_addr"][v4, :4] = rng.integers(0, 256, (int(v4.sum()), 4))
    rows["remote_addr"][~v4] = rng.integers(0, 256, (int((~v4).sum()), 16))
    link = ~v4 & (rng.random(n) < 0.3)
    rows["local_scope_id"][link] = 2
    rows["remote_scope_id"][link] = 2
    rows["pid"] = rng.integers(1000, 1004, n)
    rows["uid"] = rng.choice([0, 33, 1000], n)
    rows["inode"] = rng.integers(1, 1 << 40, n)
    rows["cookie"] = np.arange(n) + (seed << 20)
    rows["netns"] = 4026531840
    return rows


def snapshots(count: int, n: int, seed: int = 1):
    """``count`` snapshots of a table of about ``n`` sockets that moves: queues change,
    sockets come and go, now and then a snapshot is empty (its one row, family 0)."""
    rng = np.random.default_rng(seed)
    table = table_rows(n, seed)
    for k in range(count):
        if k % 17 == 16:
            empty = np.zeros(1, ROW_DTYPE)  # empty: the capture's one row (family 0, CLOSED)
            empty["state"] = 1
            yield empty
            continue
        keep = rng.random(len(table)) > 0.01
        table = np.concatenate([table[keep], table_rows(int(n - keep.sum()), seed * 1000 + k)])
        snap = table.copy()
        moved = np.flatnonzero(rng.random(len(snap)) < 0.05)
        snap["rx_queue"][moved] = rng.integers(0, 5000, len(moved))
        snap["tx_queue"][moved] = rng.integers(0, 5000, len(moved))
        yield snap


def record(tmp_path, snaps: list[np.ndarray], row_group_rows: int, batch_rows: int,
           step_ns: int = 1_000_000) -> tuple[list, list[tuple]]:
    """Write ``snaps`` through a Writer thread; returns (finished files, each batch's
    encode() arguments for the reference)."""
    clock = ManualClock(T0)
    rules = Rules(0, 3600 * 10**9, 10**9, 0, row_group_rows)
    pool = BatchPool(4, batch_rows, 4096, False, lambda: None)
    root = SafeDir.open(tmp_path / "rec", create=True)
    w = Writer(root, SCHEMA, BatchEncoder(SCHEMA, "h1", "boot-1"), rules,
               FileOptions("zstd", None, row_group_rows, False, False), pool, clock, on_error=lambda: None)
    w.start()
    names = ["p0", "p1", "p2"]
    ref = []
    b = None
    mono = 0
    for seq, snap in enumerate(snaps):
        n = len(snap)
        if b is not None and not b.fits(n):
            w.put(b)
            b = None
        if b is None:
            b = pool.get()
            if not b.fits(n):
                b.grow(n)
        mono += step_ns + seq % 7 * 1000
        i, s = b.n, b.s
        b.rows[i:i + n] = snap
        b.proc[i:i + n] = np.where(snap["pid"] % 4 == 3, -1, snap["pid"] % 3)
        b.ts[s], b.seq[s], b.cap[s], b.mono[s], b.counts[s] = T0 + mono, seq, 800_000 + seq % 5, mono, n
        b.empty[s] = n == 1 and snap["family"][0] == 0
        if s == 0:
            b.t_first, b.file_key = mono, (0, 0)
        b.n += n
        b.s += 1
        b.names[:] = names
        b.has_proc = True
        clock.mono = mono
        ref.append((snap, n, T0 + mono, seq, 800_000 + seq % 5, mono))
    if b is not None:
        w.put(b)
    w.put(STOP)
    w.join()
    root.close()
    if w.error is not None:
        raise w.error
    return w.files, ref


def reference(ref: list[tuple], row_groups: list[int], path) -> pa.Table:
    """The same rows encoded by a fresh BatchEncoder and written by ``pq.write_table``'s
    writer with pyarrow's defaults, in the same row groups."""
    enc = BatchEncoder(SCHEMA, "h1", "boot-1")
    rows = np.concatenate([r[0] for r in ref])
    counts = np.array([r[1] for r in ref], np.int64)
    proc = np.where(rows["pid"] % 4 == 3, -1, rows["pid"] % 3).astype(np.int32)
    kinds = (rows["family"] == 0).astype(np.int8)
    t = pa.Table.from_batches([enc.encode(rows, counts, np.array([r[2] for r in ref]), np.array([r[3] for r in ref]),
                                          np.array([r[4] for r in ref]), proc, ["p0", "p1", "p2"],
                                          monotonic=np.array([r[5] for r in ref]), kinds=kinds)])
    with pq.ParquetWriter(path, SCHEMA) as w:
        at = 0
        for k in row_groups:
            w.write_table(t.slice(at, k), row_group_size=k)
            at += k
    return t


@pytest.mark.parametrize(("per_snapshot", "count", "rg_rows"), [(300, 400, 20_000), (3, 3000, 2000)])
def test_the_writers_file_reads_back_as_pq_write_table_writes_the_same_rows(tmp_path, per_snapshot, count, rg_rows):
    snaps = list(snapshots(count, per_snapshot))
    files, ref = record(tmp_path, snaps, row_group_rows=rg_rows, batch_rows=2048)
    (path,) = files
    ours = pq.ParquetFile(path)
    md = ours.metadata
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    assert md.num_row_groups >= 3 and sum(sizes) == sum(r[1] for r in ref)
    want = reference(ref, sizes, tmp_path / "ref.parquet")
    theirs = pq.ParquetFile(tmp_path / "ref.parquet")
    got = ours.read()
    # the recording's schema, plain types where they are plain (no dictionary leaks out)
    assert got.schema.remove_metadata() == SCHEMA.remove_metadata() == theirs.schema_arrow.remove_metadata()
    for name in SCHEMA.names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert theirs.read().to_pylist() == want.to_pylist()  # the reference is what it says
    kinds = got.column("kind").to_pylist()
    assert kinds.count("snapshot") == sum(1 for r in ref if r[0]["family"][0] == 0 and r[1] == 1)
    # statistics: the same as pyarrow's, where the writer keeps them (STATS_COLUMNS), and
    # none elsewhere
    md2 = theirs.metadata
    for g in range(md.num_row_groups):
        for c, name in enumerate(SCHEMA.names):
            st, st2 = md.row_group(g).column(c).statistics, md2.row_group(g).column(c).statistics
            if name not in STATS_COLUMNS:
                assert st is None or not st.has_min_max, name
                continue
            assert st.has_min_max and st.null_count == st2.null_count == 0, name
            assert (st.min, st.max) == (st2.min, st2.max), (g, name)
    duckdb = pytest.importorskip("duckdb")
    q = ("SELECT count(*), sum(seq), min(timestamp), max(monotonic_ns), sum(rx_queue), sum(local_scope_id), "
         "count(DISTINCT local_addr), sum(CASE WHEN kind = 'snapshot' THEN 1 ELSE 0 END) FROM read_parquet('{}')")
    assert duckdb.sql(q.format(path)).fetchall() == duckdb.sql(q.format(tmp_path / "ref.parquet")).fetchall()



def test_kind_host_boot_statistics_are_taken_from_the_codes_not_asked_of_the_writer(monkeypatch):
    """``encode_row_group`` asks the Parquet writer for no statistics of ``kind``, ``host``
    and ``boot_id`` (it would hash every row's code) and puts in the chunk the statistics
    of the values their codes use: those pyarrow writes (min, max, null count)."""
    from tcpsnap.record import rowgroup
    from tcpsnap.record.parquet import writer_kwargs

    rowgroup._STATS_CACHE.clear()
    enc = BatchEncoder(SCHEMA, "host-b", "boot-9")
    snaps = list(snapshots(30, 50, seed=4))
    rows = np.concatenate(snaps)
    counts = np.array([len(x) for x in snaps])
    kinds = (rows["family"] == 0).astype(np.int8)
    t = pa.Table.from_batches([enc.encode(rows, counts, T0 + np.arange(30), np.arange(30), np.arange(30) + 5,
                                          kinds=kinds)])
    asked = []
    real = rowgroup._encode_one

    def spy(table, kw):
        asked.append((table.num_rows, list(kw.get("write_statistics", []))))
        return real(table, kw)

    monkeypatch.setattr(rowgroup, "_encode_one", spy)
    kw = writer_kwargs("zstd", None, 1 << 17, SCHEMA)
    data, rg = rowgroup.encode_row_group(kw, SCHEMA.names, [t])
    big = [w for n, w in asked if n == t.num_rows]
    assert big == [[c for c in kw["write_statistics"] if c not in ("kind", "host", "boot_id")]]
    assert sorted(n for n, _ in asked if n != t.num_rows) == [1, 1, 2]  # host, boot; kind's two values
    import io

    sink = io.BytesIO()
    pq.write_table(t, sink, write_statistics=["kind", "host", "boot_id"])
    ref = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.row_group(0)
    for name in ("kind", "host", "boot_id"):
        c = SCHEMA.names.index(name)
        stats = rg[1][1][1][c][3][1][12][1]  # RowGroup.columns[c].meta_data.statistics
        want = ref.column(c).statistics
        assert stats[6][1] == str(want.min).encode() and stats[5][1] == str(want.max).encode(), name
        assert stats[3][1] == 0 == want.null_count, name
    assert len(data) > 0
    # a second row group with the same values: no more tiny writers (cached)
    asked.clear()
    rowgroup.encode_row_group(kw, SCHEMA.names, [t])
    assert [n for n, _ in asked] == [t.num_rows]
