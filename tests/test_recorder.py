"""The recorder: storage format, crash recovery at every byte, and live recordings.

Live tests open their own loopback sockets and record the real table; they assert
what the data says (which snapshots hold which connection), never how fast things
ran, except the generous bounds the recorder promises (loss after kill -9).
"""

from __future__ import annotations

import io
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

import tcpsnap  # noqa: E402
from _sockets import inode, more_snapshots, wait_for  # noqa: E402
from tcpsnap import Recorder, RecorderError, RecorderLocked, recover  # noqa: E402
from tcpsnap._arrow import SCHEMA, BatchEncoder  # noqa: E402
from tcpsnap._schema import ROW_DTYPE, STATE_NAMES  # noqa: E402
from tcpsnap._units import parse_duration  # noqa: E402
from tcpsnap.record import journal, layout, parquet  # noqa: E402
from tcpsnap.record import recovery as folder  # noqa: E402
from tcpsnap.record import thrift as _thrift  # noqa: E402

LINUX = sys.platform.startswith("linux")
live = pytest.mark.skipif(not LINUX, reason="live capture tests need the Linux netlink backend")


# ---------------------------------------------------------------- helpers

def fake_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=ROW_DTYPE)
    rows["family"] = rng.choice([4, 6], n)
    rows["state"] = rng.integers(1, 13, n)
    rows["local_port"] = rng.integers(0, 65536, n)
    rows["remote_port"] = rng.integers(0, 65536, n)
    v4 = rows["family"] == 4
    rows["local_addr"][v4, :4] = [127, 0, 0, 1]
    rows["remote_addr"][v4, :4] = rng.integers(0, 256, (int(v4.sum()), 4))
    rows["local_addr"][~v4, 15] = 1
    rows["remote_addr"][~v4] = rng.integers(0, 256, (int((~v4).sum()), 16))
    rows["pid"] = rng.integers(0, 5, n)
    rows["inode"] = rng.integers(0, 1 << 40, n)
    rows["cookie"] = np.arange(n) + 1000
    rows["uid"] = rng.integers(0, 3, n)
    return rows


def encode(rows: np.ndarray, snaps: int, seq0: int = 0, enc: BatchEncoder | None = None,
           schema=SCHEMA) -> pa.RecordBatch:
    """``rows`` split into ``snaps`` snapshots."""
    enc = enc or BatchEncoder(schema)
    counts = np.full(snaps, len(rows) // snaps, dtype=np.int64)
    counts[-1] += len(rows) - counts.sum()
    seqs = np.arange(seq0, seq0 + snaps, dtype=np.int64)
    ts = 1_700_000_000_000_000_000 + seqs * 10_000_000
    return enc.encode(rows, counts, ts, seqs, seqs * 7)


def snapshots_of(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby("seq", sort=True).agg(timestamp=("timestamp", "first"),
                                           capture_ns=("capture_ns", "first"))


# ---------------------------------------------------------------- small parts

@pytest.mark.parametrize("text,secs", [
    ("10ms", 0.01), ("2s", 2.0), ("15m", 900.0), ("1h", 3600.0), ("0", 0.0), ("1.5", 1.5),
    ("500us", 0.0005), ("1h30m", 5400.0), (" 2 s ", 2.0), (3, 3.0), (0.25, 0.25),
])
def test_parse_duration(text, secs):
    assert parse_duration(text) == pytest.approx(secs)


@pytest.mark.parametrize("bad", ["", "ms", "-1s", "1x", "1 2", "1s2", "abc", -1])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_schema():
    names = SCHEMA.names
    assert names[:2] == ["timestamp", "seq"]
    assert SCHEMA.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert names.index("process") == names.index("pid") + 1
    for f in ("family", "state", "local_addr", "remote_addr", "local_port", "remote_port", "pid",
              "process", "uid", "inode", "cookie", "capture_ns"):
        assert f in names
    assert pa.types.is_dictionary(SCHEMA.field("state").type)
    assert "_reserved" not in names


def test_encoder_round_trip():
    rows = fake_rows(500)
    enc = BatchEncoder()
    b = encode(rows, 5, enc=enc)
    df = b.to_pandas()
    assert list(df["state"].cat.categories) == list(STATE_NAMES)
    assert (df["state"].cat.codes.to_numpy() == rows["state"] - 1).all()
    want = [tcpsnap.frame.format_address(int(f), a) for f, a in zip(rows["family"], rows["remote_addr"])]
    assert df["remote_addr"].astype(str).tolist() == want
    for f in ("local_port", "remote_port", "pid", "inode", "cookie", "uid"):
        assert (df[f].to_numpy() == rows[f]).all()
    assert df["process"].isna().all()
    assert df["seq"].tolist() == sorted(df["seq"].tolist())
    # the dictionaries only grow within a row group: a second batch's is an extension
    b2 = encode(fake_rows(300, seed=1), 3, seq0=5, enc=enc)
    d1, d2 = b.column("remote_addr").dictionary, b2.column("remote_addr").dictionary
    assert d2.slice(0, len(d1)).equals(d1)


@pytest.mark.parametrize("family", [4, 6])
def test_encoder_single_family_addresses(family):
    rows = fake_rows(400, seed=3)
    rows = rows[rows["family"] == family]
    df = encode(rows, 4).to_pandas()
    for col in ("local_addr", "remote_addr"):
        want = [tcpsnap.frame.format_address(family, a) for a in rows[col]]
        assert df[col].astype(str).tolist() == want


def test_encoder_process_names():
    rows = fake_rows(6)
    enc = BatchEncoder()
    b = enc.encode(rows, np.array([6]), np.array([1]), np.array([0]), np.array([5]),
                   np.array([0, 1, -1, 1, 0, -1], dtype=np.int32), ["sshd", "nginx"])
    assert b.column("process").to_pylist() == ["sshd", "nginx", None, "nginx", "sshd", None]


def test_thrift_round_trip_of_parquet_footers():
    for seed in range(5):
        t = pa.Table.from_batches([encode(fake_rows(200, seed), 4)])
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        data, footer = parquet.split_parquet(pa.py_buffer(buf.getvalue()))
        assert _thrift.encode_struct(_thrift.decode_struct(footer)) == footer


def test_thrift_rejects_garbage():
    with pytest.raises(_thrift.ThriftError):
        _thrift.decode_struct(b"\x15")
    with pytest.raises(_thrift.ThriftError):
        _thrift.decode_struct(b"\x00\x00")  # trailing bytes


def test_appender_many_row_groups(tmp_path):
    final = tmp_path / "x.parquet"
    app = parquet.ParquetAppender(final, SCHEMA, row_group_rows=1000)
    parts = []
    enc = BatchEncoder()
    for k in range(6):
        rows = fake_rows(100 + 37 * k, seed=k)
        t = pa.Table.from_batches([encode(rows, 3, seq0=3 * k, enc=enc)])
        enc.reset()
        app.write_row_group(t)
        parts.append(t)
    assert app.seq_range() == (0, 17)
    path = app.finish({"tcpsnap.test": "yes"})
    assert path == final and not layout.tmp_path(final).exists() and not layout.rglog_path(final).exists()
    md = pq.read_metadata(path)
    assert md.num_row_groups == 6
    assert md.metadata[b"tcpsnap.test"] == b"yes"
    assert md.metadata[b"tcpsnap.last_seq"] == b"17"
    got = pq.read_table(path)
    want = pa.concat_tables(parts)
    for name in ("seq", "cookie", "inode", "local_port"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist()
    assert got.column("remote_addr").to_pylist() == want.column("remote_addr").to_pylist()
    # every row group's offsets point at its own bytes: read them one by one
    f = pq.ParquetFile(path)
    for i, part in enumerate(parts):
        assert f.read_row_group(i).column("cookie").to_pylist() == part.column("cookie").to_pylist()


def test_appender_empty_leaves_nothing(tmp_path):
    app = parquet.ParquetAppender(tmp_path / "e.parquet", SCHEMA)
    assert app.finish() is None
    assert os.listdir(tmp_path) == []


def test_pandas_reads_folder_with_files_in_progress(tmp_path):
    part = tmp_path / "date=2026-01-01"
    part.mkdir()
    done = parquet.ParquetAppender(part / "a.parquet", SCHEMA)
    done.write_row_group(pa.Table.from_batches([encode(fake_rows(50), 2)]))
    done.finish()
    busy = parquet.ParquetAppender(part / "b.parquet", SCHEMA)
    busy.write_row_group(pa.Table.from_batches([encode(fake_rows(50), 2, seq0=2)]))
    j = journal.Journal(layout.journal_path(part / "b.parquet", 1), SCHEMA)
    j.append(encode(fake_rows(10), 1, seq0=4))
    (tmp_path / ".tcpsnap.lock").write_text("1\n")
    df = pd.read_parquet(tmp_path)
    assert len(df) == 50 and set(df["seq"]) == {0, 1}
    import pyarrow.dataset as ds

    assert ds.dataset(tmp_path, format="parquet", partitioning="hive").count_rows() == 50
    j.close()
    busy.close_files()


# ---------------------------------------------------------------- crash at any byte

def _build_crash_case(folder: Path):
    """Write a file as the recorder does (journals, row groups, a journal tail) and
    keep every file's bytes after every step: [(rows durable, {name: bytes})]."""
    final = folder / "c.parquet"
    enc = BatchEncoder()
    batches = []
    steps = []

    def state(durable):
        steps.append((durable, {p.name: p.read_bytes() for p in folder.iterdir()}))

    app = parquet.ParquetAppender(final, SCHEMA)
    durable = 0
    state(durable)
    seq = 0
    for rg in range(2):
        j = journal.Journal(layout.journal_path(final, rg), SCHEMA)
        state(durable)
        for k in range(3):
            b = encode(fake_rows(40 + 7 * k, seed=10 * rg + k), 2, seq0=seq, enc=enc)
            seq += 2
            j.append(b)
            batches.append(b)
            durable += b.num_rows
            state(durable)
        j.close()
        _, jb, complete = journal.read_journal(j.path)
        assert complete
        app.write_row_group(journal.unify_table(SCHEMA, jb))
        state(durable)
        os.unlink(j.path)
        state(durable)
        enc.reset()
    j = journal.Journal(layout.journal_path(final, 2), SCHEMA)
    b = encode(fake_rows(33, seed=99), 3, seq0=seq, enc=enc)
    j.append(b)
    batches.append(b)
    durable += b.num_rows
    state(durable)
    j.abandon()
    app.close_files()
    return final.name, steps, pa.Table.from_batches(batches)


def test_recovery_from_a_crash_at_any_byte(tmp_path):
    """kill -9 at any point of the write sequence: between any two steps, or in the
    middle of any write (the file being written torn at any byte). Recovery must give
    a valid Parquet file holding a prefix of the rows, at least every row that was
    durable before that write began, and leave nothing else behind."""
    src = tmp_path / "src"
    src.mkdir()
    name, steps, full = _build_crash_case(src)
    all_cookies = full.column("cookie").to_pylist()
    rng = random.Random(1)
    cases = []
    for i in range(1, len(steps)):
        before, after = steps[i - 1][1], steps[i][1]
        for f, blob in after.items():
            lo = len(before.get(f, b""))
            if len(blob) > lo:
                for off in sorted({lo, len(blob), *(rng.randrange(lo, len(blob)) for _ in range(5))}):
                    cases.append((i, f, off))
    assert len(cases) > 40
    for n, (i, torn, off) in enumerate(cases):
        part = tmp_path / "crash" / str(n)
        part.mkdir(parents=True)
        files = dict(steps[i - 1][1])
        files[torn] = steps[i][1][torn][:off]
        for f, blob in files.items():
            (part / f).write_bytes(blob)
        res = folder.recover_file(part / name)
        durable = steps[i - 1][0]
        where = (n, i, torn, off)
        if res.path is None:
            assert durable == 0, where
            assert list(part.iterdir()) == [], where
            continue
        t = pq.read_table(res.path)
        cookies = t.column("cookie").to_pylist()
        assert cookies == all_cookies[:len(cookies)], where
        assert len(cookies) >= durable, where
        assert [x.name for x in part.iterdir()] == [name], where
        assert pq.read_metadata(res.path).metadata[b"tcpsnap.closed"] == b"recovered"


def test_read_journal_torn_at_every_byte(tmp_path):
    p = tmp_path / "j"
    j = journal.Journal(p, SCHEMA)
    enc = BatchEncoder()
    ends = []
    for k in range(3):
        j.append(encode(fake_rows(20, seed=k), 2, seq0=2 * k, enc=enc))
        ends.append(p.stat().st_size)
    j.close()
    blob = p.read_bytes()
    for off in range(0, len(blob) + 1, 7):
        p.write_bytes(blob[:off])
        schema, batches, complete = journal.read_journal(p)
        whole = sum(1 for e in ends if e <= off)
        assert len(batches) == whole, off
        for b in batches:
            b.validate(full=True)


# ---------------------------------------------------------------- live recordings

def _listener(host):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((host, 0))
    s.listen(16)
    return s


def _rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@live
def test_record_connections_appear_and_disappear(tmp_path):
    """2 s at 20 ms while connections open and close: each shows up in exactly the
    snapshots taken while it existed; seq and timestamp strictly increasing."""
    out = tmp_path / "rec"
    rec = Recorder(out, interval="20ms", rotate="1h", pids=False)
    rec.open()
    th = threading.Thread(target=rec.run, kwargs={"duration": "2s"})
    events = []  # (host, client port, t before connect, after, before close, after)
    lsts = {h: _listener(h) for h in ("127.0.0.1", "::1")}
    th.start()
    try:
        time.sleep(0.2)
        for i in range(6):
            host = ("127.0.0.1", "::1")[i % 2]
            t0 = time.time_ns()
            c = socket.create_connection(lsts[host].getsockname()[:2])
            a, _ = lsts[host].accept()
            t1 = time.time_ns()
            port = c.getsockname()[1]
            ino = inode(c)
            # two more snapshots, counted: the second began after t1 and ends before t2,
            # so one falls inside the connection's life however loaded the machine is
            more_snapshots(rec, 2)
            t2 = time.time_ns()
            _rst_close(c)
            a.close()
            t3 = time.time_ns()
            events.append((host, port, ino, t0, t1, t2, t3))
            time.sleep(0.08)
    finally:
        th.join()
        rec.close()
        for s_ in lsts.values():
            s_.close()
    df = pd.read_parquet(out)
    snaps = snapshots_of(df)
    seqs = snaps.index.to_numpy()
    assert (np.diff(seqs) == 1).all()  # strictly increasing, no gap
    assert (np.diff(snaps["timestamp"].astype("int64").to_numpy()) > 0).all()
    assert len(snaps) == rec.snapshots
    assert rec.snapshots + rec.overruns == 100  # 2 s / 20 ms: each slot taken or counted
    ts = snaps["timestamp"].astype("int64").to_numpy()
    end = ts + snaps["capture_ns"].to_numpy()
    for host, port, ino, t0, t1, t2, t3 in events:
        # the client end by its inode: the host's other sockets may have its port numbers
        mine = df[df["inode"] == ino]
        have = set(mine["seq"])
        must = set(seqs[(ts >= t1) & (end <= t2)])   # dumped while it surely existed
        never = set(seqs[(end < t0) | (ts > t3)])    # dumped before it / after it was gone
        assert must, "no snapshot fell inside the connection's life"
        assert must <= have, (host, port, sorted(must - have))
        assert not (have & never), (host, port, sorted(have & never))
        assert set(mine["state"].astype(str)) <= {"ESTABLISHED", "SYN_SENT"}


@live
def test_rotation_keeps_seq_gapless_and_pandas_reads_during_recording(tmp_path):
    out = tmp_path / "rec"
    seen_during = []
    with Recorder(out, interval="10ms", rotate="0.4s", pids=False) as rec:
        th = threading.Thread(target=rec.run, kwargs={"duration": "1.5s"})
        th.start()
        while th.is_alive():
            time.sleep(0.2)
            if list(out.glob("date=*/*.parquet")):
                seen_during.append(len(pd.read_parquet(out)))  # files in progress are ignored
        th.join()
    assert seen_during and all(n > 0 for n in seen_during)
    files = sorted(out.glob("date=*/*.parquet"))
    assert len(files) >= 3
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != ".tcpsnap.lock"
                and not p.name.endswith(".parquet")]
    prev_last = -1
    for f in files:
        md = pq.read_metadata(f).metadata
        first, last = int(md[b"tcpsnap.first_seq"]), int(md[b"tcpsnap.last_seq"])
        assert first == prev_last + 1  # rotation leaves no gap in seq
        prev_last = last
        seqs = pq.read_table(f, columns=["seq"]).column("seq").to_numpy()
        assert seqs.min() == first and seqs.max() == last
        for key in (b"tcpsnap.host", b"tcpsnap.os", b"tcpsnap.kernel", b"tcpsnap.version",
                    b"tcpsnap.interval", b"tcpsnap.backend"):
            assert md[key]
        assert md[b"tcpsnap.interval"] == b"10ms"
        assert md[b"tcpsnap.closed"] == b"clean"
    df = pd.read_parquet(out)
    snaps = snapshots_of(df)
    assert (np.diff(snaps.index.to_numpy()) == 1).all()
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(df["state"].cat.categories) == list(STATE_NAMES)
    assert "date" in df.columns  # the hive partition


@live
def test_seq_continues_in_a_second_run(tmp_path):
    out = tmp_path / "rec"
    with Recorder(out, interval="10ms", pids=False) as rec:
        rec.run(duration="0.2s")
    n1 = rec.snapshots
    with Recorder(out, interval="10ms", pids=False) as rec2:
        rec2.run(duration="0.2s")
    seqs = np.unique(pd.read_parquet(out, columns=["seq"])["seq"].to_numpy())
    assert seqs.tolist() == list(range(n1 + rec2.snapshots))


@live
def test_interval_zero_and_filters(tmp_path):
    lst = _listener("127.0.0.1")
    port = lst.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = lst.accept()
    try:
        out = tmp_path / "rec"
        with Recorder(out, interval=0, pids=False, states="established", ports=str(port)) as rec:
            rec.run(duration="0.3s")
        df = pd.read_parquet(out)
        assert rec.snapshots > 10
        assert set(df["state"].astype(str)) == {"ESTABLISHED"}
        assert ((df["local_port"] == port) | (df["remote_port"] == port)).all()
        # both ends, every snapshot (by inode: another socket on the host, e.g. on ::1,
        # may have the port number too)
        mine = df[df["inode"].isin([inode(c), inode(a)])]
        assert mine.groupby("seq").size().eq(2).all() and mine["seq"].nunique() == rec.snapshots
        md = pq.read_metadata(next(out.glob("date=*/*.parquet"))).metadata
        assert b"ESTABLISHED" not in md[b"tcpsnap.filters"]  # numbers: states are MIB codes
        assert str(port).encode() in md[b"tcpsnap.filters"]
    finally:
        for s_ in (c, a, lst):
            s_.close()


@live
def test_pids_and_process_names(tmp_path):
    lst = _listener("127.0.0.1")
    port = lst.getsockname()[1]
    ino = inode(lst)           # another socket on the host (on ::1, say) may have the port
    out = tmp_path / "rec"
    try:
        with Recorder(out, interval="50ms", ports=str(port)) as rec:  # pids on by default
            rec.run(duration="0.8s")
    finally:
        lst.close()
    if not rec.pids_enabled:
        pytest.skip("pids not available here")
    df = pd.read_parquet(out)
    mine = df[df["inode"] == ino]
    assert len(mine)
    late = mine[mine["seq"] == mine["seq"].max()]
    assert (late["pid"] == os.getpid()).all()
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert set(late["process"].astype(str)) == {comm}


@live
def test_lock_one_recorder_per_folder(tmp_path):
    out = tmp_path / "rec"
    with Recorder(out, interval="50ms", pids=False):
        with pytest.raises(RecorderLocked, match=r"already being recorded \(pid \d+\)"):
            Recorder(out, pids=False).open()
        with pytest.raises(RecorderLocked):
            recover(out)
    with Recorder(out, interval="50ms", pids=False) as rec:  # released on close
        rec.run(duration="0.05s")


@live
def test_writer_failure_stops_with_error_and_keeps_earlier_files(tmp_path, monkeypatch):
    out = tmp_path / "rec"
    real = journal.Journal.append
    calls = {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] >= 4:
            raise OSError(28, "No space left on device", str(self.path))
        return real(self, batch)

    monkeypatch.setattr(journal.Journal, "append", failing)
    rec = Recorder(out, interval="10ms", rotate="0.1s", flush="0.05s", pids=False)
    with pytest.raises(RecorderError, match="No space left on device") as ei:
        with rec:
            rec.run(duration="3s")
    assert "\n" not in str(ei.value)
    assert rec.elapsed < 3  # stopped early
    for f in out.glob("date=*/*.parquet"):
        pq.read_table(f)  # what was finished before the failure reads back
    monkeypatch.setattr(journal.Journal, "append", real)
    res = recover(out)  # and the file in progress is recoverable
    for r in res:
        if r.path is not None:
            pq.read_table(r.path)


_KILL_CHILD = textwrap.dedent("""
    import mmap, os, struct, sys, time
    import tcpsnap
    from tcpsnap import Recorder

    out, counter, flush, interval = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    fd = os.open(counter, os.O_RDWR)
    mm = mmap.mmap(fd, 32)

    class Counting:
        # Wraps a Snapshotter; after every take() publishes (takes done, wall ns of the
        # last take's start) so the parent knows exactly what was captured at the kill.
        pids = False
        def __init__(self):
            self.s = tcpsnap.Snapshotter()
            self.n = 0
        def take(self):
            t = time.time_ns()
            rows = self.s.take()
            self.n += 1
            mm[:16] = struct.pack("<qq", self.n, t)
            return rows
        def process_names(self, pids):
            return self.s.process_names(pids)
        def close(self):
            self.s.close()

    def durable(seq, done):
        # the writer's hook (its thread): the last seq it began to make durable (bytes
        # 16..23, before the write) and the last it made durable (24..31, after it); one
        # aligned 8-byte store each, so a kill between them leaves both true
        if done:
            mm[24:32] = struct.pack("<q", seq)
        else:
            mm[16:24] = struct.pack("<q", seq)

    with Recorder(out, interval=interval, flush=flush, rotate="1h", snapshotter=Counting()) as rec:
        rec._writer.on_durable = durable
        sys.stdout.write("started\\n"); sys.stdout.flush()
        rec.run()
""")


@live
@pytest.mark.parametrize("flush,interval", [("1s", "10ms"), ("0.3s", "0")])
def test_kill_9_loses_at_most_the_flush_interval(tmp_path, flush, interval):
    """kill -9 at random moments; recovery keeps exactly what the writer had made
    durable at the kill, plus at most the write it was in (the child publishes what it
    captured and, from the writer's hook, what it was making durable). That the writer
    makes snapshots durable a flush after their capture is a matter of CPU (a starved
    writer adds its backlog, as the README says): the lag is printed, not asserted."""
    rng = random.Random(7)
    for attempt in range(2):
        out = tmp_path / f"rec{attempt}"
        counter = tmp_path / f"counter{attempt}"
        counter.write_bytes(struct.pack("<qqqq", 0, 0, -1, -1))
        p = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(out), str(counter), flush, interval],
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "started"
            # the writer has made something durable (by the flush: long before a row group
            # fills at 10 ms), then a random moment
            assert wait_for(lambda c=counter: struct.unpack("<qqqq", c.read_bytes())[3] >= 0, timeout=60)
            time.sleep(rng.uniform(0.2, 1.5))
        finally:
            p.kill()
            p.wait()
        taken, last_start, writing, durable = struct.unpack("<qqqq", counter.read_bytes())
        assert taken > 0 and 0 <= durable <= writing < taken
        res = recover(out)
        assert [r for r in res if r.path is not None], "nothing recovered"
        df = pd.read_parquet(out, columns=["seq", "timestamp"])
        snaps = df.groupby("seq")["timestamp"].first()
        seqs = snaps.index.to_numpy()
        assert seqs.tolist() == list(range(len(seqs)))  # a prefix, no hole
        lost = taken - len(seqs)
        lost_ns = last_start - snaps.iloc[-1].value
        print(f"flush={flush} interval={interval}: captured {taken}, durable {durable + 1} "
              f"(writing up to {writing + 1}), recovered {len(seqs)}, lost {lost} snapshots = the last "
              f"{lost_ns / 1e6:.0f} ms")
        # every snapshot durable at the kill is kept; beyond them, at most the write in flight
        assert durable <= seqs[-1] <= writing


@live
def test_duckdb_and_polars_read_the_folder(tmp_path):
    out = tmp_path / "rec"
    with Recorder(out, interval="10ms", rotate="0.2s", pids=False) as rec:
        rec.run(duration="0.5s")
    assert sorted(p.name for p in out.iterdir()) == sorted({p.parent.name for p in out.glob("date=*/*")})
    assert all(p.suffix == ".parquet" for p in out.rglob("*") if p.is_file())
    n = len(pd.read_parquet(out))
    import pyarrow.dataset as ds

    assert ds.dataset(out, format="parquet", partitioning="hive").count_rows() == n
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        got = duckdb.sql(f"select count(*), count(distinct seq) from read_parquet('{out}/**/*.parquet', "
                         f"hive_partitioning=true)").fetchall()
        assert got == [(n, rec.snapshots)]
    try:
        import polars as pl
    except ImportError:
        pl = None
    if pl is not None:
        assert pl.scan_parquet(str(out), hive_partitioning=True).select(pl.len()).collect().item() == n
        df = pl.read_parquet(f"{out}/**/*.parquet", hive_partitioning=True)
        assert df.height == n and str(df.schema["timestamp"]).startswith("Datetime")
    if duckdb is None and pl is None:
        pytest.skip("neither duckdb nor polars installed (pandas/pyarrow checked)")


@live
def test_capture_thread_priority_is_raised_during_run_and_restored(tmp_path):
    seen = []

    class Probe:
        pids = False

        def __init__(self):
            self.s = tcpsnap.Snapshotter()

        def take(self):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return self.s.take()

        def process_names(self, pids):
            return self.s.process_names(pids)

        def close(self):
            self.s.close()

    me = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, me)
    probe = Probe()
    with Recorder(tmp_path / "rec", interval="10ms", snapshotter=probe) as rec:
        rec.run(duration="0.1s")
    probe.close()
    assert os.getpriority(os.PRIO_PROCESS, me) == before
    boosted = seen[1:]  # seen[0]: the warm-up take() in open()
    assert boosted
    try:
        os.setpriority(os.PRIO_PROCESS, me, before - 1)
        os.setpriority(os.PRIO_PROCESS, me, before)
        allowed = True
    except OSError:
        allowed = False
    if allowed and before > -10:
        assert set(boosted) == {-10}
    else:
        assert set(boosted) == {before}
