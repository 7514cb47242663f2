"""The writer's row group in preallocated columns (``tcpsnap.record.rowgroup``).

What it must give back is exactly what the encoders' own record batches hold, batch after
batch and row group after row group (no row of an earlier row group shows through);
columns that stay 0 or null are never written (their pages are not resident: checked with
``mincore``); journal frames hold whole snapshots.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from tcpsnap._arrow import SCHEMA, BatchEncoder, wrap_parts  # noqa: E402
from tcpsnap._events import EV_CLOSED, EV_OPENED, EV_SNAPSHOT  # noqa: E402
from tcpsnap._schema import ROW_DTYPE  # noqa: E402
from tcpsnap.record.changes import ChangesEncoder, build_schema  # noqa: E402
from tcpsnap.record.rowgroup import RowGroupStore  # noqa: E402


def rows_of(n: int, seed: int, pid: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=ROW_DTYPE)
    rows["family"] = rng.choice([4, 6], n)
    rows["state"] = rng.integers(1, 13, n)
    rows["local_port"] = rng.integers(1, 65536, n)
    rows["remote_port"] = rng.integers(1, 65536, n)
    v4 = rows["family"] == 4
    rows["local_addr"][v4, :4] = [127, 0, 0, 1]
    rows["remote_addr"][v4, :4] = rng.integers(0, 256, (int(v4.sum()), 4))
    rows["remote_addr"][~v4] = rng.integers(0, 256, (int((~v4).sum()), 16))
    rows["pid"] = rng.integers(1, 5, n) if pid is None else pid
    rows["inode"] = rng.integers(1, 1 << 40, n)
    rows["cookie"] = np.arange(n) + 1000 + seed
    rows["uid"] = rng.integers(0, 3, n)
    return rows


def args(rows: np.ndarray, snaps: int, seq0: int, procs: bool = True) -> tuple:
    counts = np.full(snaps, len(rows) // snaps, dtype=np.int64)
    counts[-1] += len(rows) - counts.sum()
    seqs = np.arange(seq0, seq0 + snaps, dtype=np.int64)
    ts = 1_700_000_000_000_000_000 + seqs * 10_000_000
    # process codes: every third row unknown (-1: null)
    codes = np.where(np.arange(len(rows)) % 3 == 0, -1, np.arange(len(rows)) % 2).astype(np.int32)
    return (rows, counts, ts, seqs, seqs * 7, codes if procs else None, ["a", "b"] if procs else None)


def test_store_gives_back_what_the_encoder_encodes_batch_after_batch():
    enc, ref = BatchEncoder(SCHEMA), BatchEncoder(SCHEMA)
    st = RowGroupStore(SCHEMA, 1000)  # smaller than the batches: it grows
    want = []
    for i, (n, snaps, procs) in enumerate([(700, 7, True), (10, 1, False), (900, 3, True)]):
        a = args(rows_of(n, i), snaps, 10 * i, procs)
        st.append(enc.parts(*a), n, a[1], a[3])
        want.append(ref.encode(*a))
    assert st.rows == 1610 and st.capacity >= 1610
    got = pa.Table.from_batches([st.batch()])
    assert got.schema == SCHEMA
    expect = pa.Table.from_batches(want).combine_chunks()
    assert got.to_pylist() == expect.to_pylist()
    assert got.column("process").null_count == expect.column("process").null_count > 0
    # a slice (a journal frame) is the same rows
    assert st.batch(700, 710).to_pylist() == want[1].to_pylist()


def test_no_row_of_an_earlier_row_group_shows_through():
    enc = BatchEncoder(SCHEMA)
    st = RowGroupStore(SCHEMA, 4096)
    a = args(rows_of(3000, 1, pid=42), 3, 0)
    st.append(enc.parts(*a), 3000, a[1], a[3])
    assert set(st.batch().column("pid").to_pylist()) == {42}
    st.reset()
    enc.reset()
    # the next row group: pid 0 everywhere, and no process known (all null)
    b = args(rows_of(2000, 2, pid=0), 2, 3, procs=False)
    st.append(enc.parts(*b), 2000, b[1], b[3])
    got = st.batch()
    assert got.num_rows == 2000
    assert got.column("pid").to_pylist() == [0] * 2000
    assert got.column("process").null_count == 2000
    assert got.to_pylist() == BatchEncoder(SCHEMA).encode(*b).to_pylist()
    # and back: values again, nulls only where the codes say
    st.reset()
    enc.reset()
    c = args(rows_of(600, 3), 2, 5)
    st.append(enc.parts(*c), 600, c[1], c[3])
    assert st.batch().to_pylist() == BatchEncoder(SCHEMA).encode(*c).to_pylist()
    assert st.batch().column("process").null_count == 200


def test_changes_columns_round_trip():
    schema = build_schema()
    enc, ref = ChangesEncoder(schema, "h", "b"), ChangesEncoder(schema, "h", "b")
    st = RowGroupStore(schema, 64)
    rows = rows_of(5, 7)
    rows["family"][4] = 0  # the marker row
    ev = np.array([EV_OPENED, EV_CLOSED, EV_OPENED, EV_OPENED, EV_SNAPSHOT], np.uint8)
    seen = np.array([True, False, True, False, False])
    row_ts = np.arange(5, dtype=np.int64) + 1_700_000_000_000_000_000
    a = (rows, np.array([5]), np.array([row_ts[0]]), np.array([9]), np.array([3]), None, [])
    st.append(enc.parts(*a, ev, seen, row_ts), 5, a[1], a[3])
    got = st.batch()
    assert got.to_pylist() == ref.encode(*a, ev, seen, row_ts).to_pylist()
    assert got.column("seen_in_snapshot").to_pylist() == seen.tolist()
    assert got.column("kind").to_pylist()[4] == "snapshot"


def test_spans_are_whole_snapshots():
    enc = BatchEncoder(SCHEMA)
    st = RowGroupStore(SCHEMA, 100)
    for i, counts in enumerate([[30, 30, 40], [250], [5, 5]]):
        rows = rows_of(sum(counts), i)
        seqs = np.arange(10 * i, 10 * i + len(counts))
        a = (rows, np.array(counts), seqs * 100, seqs, seqs, None, None)
        st.append(enc.parts(*a), len(rows), a[1], a[3])
    # at most 64 rows a frame, but a snapshot is never cut: the 250-row one stands alone
    assert st.spans(0, 64) == [(0, 60, 1), (60, 100, 2), (100, 350, 10), (350, 360, 21)]
    assert st.spans(100, 1000) == [(100, 360, 21)]
    assert st.spans(360, 64) == []


def _resident_pages(a: np.ndarray) -> int:
    """Pages of ``a``'s memory the kernel has resident (mincore(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    addr = a.ctypes.data
    start = addr - addr % page
    length = addr + a.nbytes - start
    npages = (length + page - 1) // page
    vec = (ctypes.c_ubyte * npages)()
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vec) != 0:
        pytest.skip(f"mincore: {ctypes.get_errno()}")
    return sum(v & 1 for v in vec)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore on anonymous memory: Linux")
def test_columns_that_stay_zero_or_null_are_never_written():
    enc = BatchEncoder(SCHEMA)
    n = 1 << 17
    st = RowGroupStore(SCHEMA, n)
    for i in range(4):
        a = args(rows_of(n // 4, i), 4, 4 * i)
        st.append(enc.parts(*a), n // 4, a[1], a[3])
    cols = dict(zip(SCHEMA.names, st._values, strict=True))
    pages = (n * 4) // mmap.PAGESIZE
    # scope ids (0 for every row here), host and boot codes (always 0), the container
    # column (null: no container) -- none written: the zero page, not resident
    for name in ("local_scope_id", "remote_scope_id", "host", "boot_id", "container"):
        assert _resident_pages(cols[name]) <= 1, name
    # a column that was written is resident
    assert _resident_pages(cols["local_port"]) >= (n * 2) // mmap.PAGESIZE - 1
    assert _resident_pages(cols["pid"]) >= pages - 1
    got = st.batch()
    assert got.column("local_scope_id").to_pylist() == [0] * n
    assert got.column("container").null_count == n
    assert got.column("host").to_pylist()[:3] == [""] * 3


def test_encode_is_wrap_of_parts():
    enc = BatchEncoder(SCHEMA)
    a = args(rows_of(50, 9), 2, 0)
    assert enc.encode(*a).to_pylist() == wrap_parts(SCHEMA, BatchEncoder(SCHEMA).parts(*a)).to_pylist()


PER_SNAPSHOT = ("timestamp", "seq", "capture_ns", "monotonic_ns")


def test_per_snapshot_columns_are_kept_per_snapshot_and_made_rows_exactly():
    enc, ref = BatchEncoder(SCHEMA), BatchEncoder(SCHEMA)
    st = RowGroupStore(SCHEMA, 256, PER_SNAPSHOT)
    want = []
    for i, counts in enumerate([[3, 0, 4], [5], [1, 1, 1, 2]]):
        rows = rows_of(sum(counts), i)
        seqs = np.arange(10 * i, 10 * i + len(counts), dtype=np.int64)
        a = (rows, np.array(counts), 1_700_000_000_000_000_000 + seqs * 10**7, seqs, seqs * 7 + 1,
             None, None, seqs * 3 + 2)
        st.append(enc.parts(*a), len(rows), a[1], a[3])
        want.append(ref.encode(*a))
    assert st.snapshots == 8 and st.rows == 17
    expect = pa.Table.from_batches(want).combine_chunks()
    assert st.batch().to_pylist() == expect.to_pylist()
    # any slice, also one that cuts snapshots
    for a, b in [(0, 3), (2, 9), (7, 8), (12, 17), (3, 3)]:
        assert st.batch(a, b).to_pylist() == expect.slice(a, b - a).to_pylist(), (a, b)
    # the row group from its tables: the per-row columns, then each per-snapshot one
    tables = list(st.tables())
    assert [t.schema.names for t in tables[1:]] == [[n] for n in PER_SNAPSHOT]
    assert tables[0].num_columns == len(SCHEMA) - 4


def test_a_row_group_encoded_a_table_at_a_time_reads_back_as_one(tmp_path):
    from tcpsnap.record.parquet import ParquetAppender
    from tcpsnap.record.rowgroup import encode_row_group

    pq = pytest.importorskip("pyarrow.parquet")
    enc, ref = BatchEncoder(SCHEMA), BatchEncoder(SCHEMA)
    app = ParquetAppender(tmp_path / "f.parquet", SCHEMA, row_group_rows=4096)
    expect = []
    for g in range(3):  # three row groups, each of two batches
        st = RowGroupStore(SCHEMA, 4096, PER_SNAPSHOT)
        for j in range(2):
            a = args(rows_of(1500, 10 * g + j), 5, 100 * g + 10 * j)
            st.append(enc.parts(*a), 1500, a[1], a[3])
            expect.append(ref.encode(*a))
        data, rg = encode_row_group(app.kw, SCHEMA.names, st.tables())
        app.append_encoded(data, [rg])
        enc.reset()
        ref.reset()
    path = app.finish()
    md = pq.read_metadata(path)
    assert md.num_row_groups == 3 and md.num_rows == 9000
    got = pq.read_table(path)
    assert got.to_pylist() == pa.Table.from_batches(expect).to_pylist()
    # statistics where the writer keeps them: seq's range per row group (recovery, retention)
    assert [(md.row_group(i).column(1).statistics.min, md.row_group(i).column(1).statistics.max)
            for i in range(3)] == [(0, 14), (100, 114), (200, 214)]
    assert [md.row_group(0).column(i).path_in_schema for i in range(md.num_columns)] == SCHEMA.names
    # the column chunks' encodings are the file's: DELTA_BINARY_PACKED for seq
    assert "DELTA_BINARY_PACKED" in md.row_group(0).column(1).encodings
