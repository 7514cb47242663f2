"""Recordings made by the release before schema version 2 (``tests/fixtures/v1``: no
``kind``, ``monotonic_ns``, ``host``, ``boot_id`` columns, no ``tcpsnap.schema_version``)
stay readable by every reader, exactly: ``read``, ``table_at``, ``info``, ``export``,
``plot``, ``analysis``, ``open_dataset``, and pandas/pyarrow/DuckDB/polars on their own;
the new columns come back null (``kind``: "connection" for a full recording's rows, which
are all connections). A folder upgraded midway (version 1 files, then version 2) reads as
one recording."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

import tcpsnap
from _recordings import T0, V1, V1_ROWS, copy_v1, record_at, rows_of, shifted, v1_tables
from tcpsnap import analysis
from tcpsnap.reading import open_dataset, open_recording

MODES = ("full", "changes")
NEW = ["monotonic_ns", "host", "boot_id"]
#: schema version 3's columns: null in a version-1 file too (the new ones' values are the
#: rows' own, 0 for the made-up tables here)
V3 = ["cgroup_id", "cgroup", "container", "pod_uid", "netns"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def at(ms):
    return pd.Timestamp(T0, tz="UTC") + pd.Timedelta(milliseconds=ms)


@pytest.fixture(params=MODES)
def old(request, tmp_path):
    return request.param, copy_v1(request.param, tmp_path / request.param)


def test_the_fixtures_are_version_1():
    import pyarrow.parquet as pq

    for mode in MODES:
        files = sorted((V1 / mode).glob("date=*/*.parquet"))
        assert len(files) == 2 and sum(f.stat().st_size for f in files) < 20_000
        for f in files:
            md = pq.read_metadata(f)
            kv = md.metadata
            assert b"tcpsnap.schema_version" not in kv and kv[b"tcpsnap.version"] == b"0.1.0"
            assert kv[b"tcpsnap.mode"] == mode.encode()
            assert not {"kind", *NEW} & set(md.schema.names)
        assert open_recording(V1 / mode).versions == [1]


def test_read_every_row_exactly(old):
    mode, rec = old
    df = tcpsnap.read(rec)
    assert rows_of(df) == V1_ROWS
    assert "kind" not in df and "date" not in df
    for c in NEW + V3:
        assert df[c].isna().all(), c
    assert str(df["state"].dtype) == "category" and df["timestamp"].dt.tz is not None
    # the rows today's recorder makes of the same tables, column for column but the new ones
    record_at(rec.parent / "today", v1_tables(), 0, mode=mode)
    today = tcpsnap.read(rec.parent / "today")
    assert list(today.columns) == list(df.columns)
    cols = [c for c in df.columns if c not in NEW + V3]
    a = df[cols].sort_values(["seq", "cookie"]).reset_index(drop=True)
    b = today[cols].sort_values(["seq", "cookie"]).reset_index(drop=True)
    for c in cols:
        assert a[c].astype(object).tolist() == b[c].astype(object).tolist(), c


def test_read_time_ranges_filters_and_columns(old):
    mode, rec = old
    assert rows_of(tcpsnap.read(rec, start=at(200), end=at(600))) == [r for r in V1_ROWS if 2 <= r[0] < 6]
    assert rows_of(tcpsnap.read(rec, start="2026-11-18 12:06:40.5+01:00")) == [r for r in V1_ROWS if r[0] >= 5]
    got = tcpsnap.read(rec, filters=[("state", "==", "ESTABLISHED")], columns=["seq", "cookie", "state"])
    assert list(got.columns) == ["seq", "cookie", "state"]
    assert sorted(zip(got.seq, got.cookie)) == [(r[0], r[10]) for r in V1_ROWS if r[2] == "ESTABLISHED"]
    got = tcpsnap.read(rec, filters=[("timestamp", ">=", "2026-11-18 11:06:40.6")], columns=["seq"])
    assert got.seq.tolist() == [6, 7, 7]


def test_changes_events_as_recorded():
    ev = tcpsnap.read(V1 / "changes", mode="changes")
    assert list(zip(ev.seq, ev.event, ev.family, ev.cookie)) == [
        (0, "keyframe", 0, 0), (0, "keyframe", 4, 1), (0, "keyframe", 4, 2), (0, "keyframe", 6, 3),
        (1, "snapshot", 0, 0), (1, "queues", 4, 2),
        (2, "snapshot", 0, 0), (2, "opened", 4, 4),
        (3, "snapshot", 0, 0), (3, "closed", 6, 3), (3, "state", 4, 4),
        (4, "keyframe", 0, 0), (4, "closed", 4, 1), (4, "closed", 4, 2), (4, "closed", 4, 4),
        (5, "snapshot", 0, 0), (5, "opened", 4, 1), (5, "opened", 4, 4),
        (6, "snapshot", 0, 0), (6, "closed", 4, 4),
        (7, "snapshot", 0, 0), (7, "opened", 4, 5)]
    assert ev["kind"].isna().all() and ev["host"].isna().all()
    with pytest.raises(ValueError, match="is a full recording"):
        tcpsnap.read(V1 / "full", mode="changes")


def test_table_at(old):
    mode, rec = old
    for when, seq in ((at(0), 0), (at(150), 1), ("2026-11-18 11:06:40.3", 3), (at(650), 6), (at(1_500), 7)):
        assert rows_of(tcpsnap.table_at(rec, when)) == [r for r in V1_ROWS if r[0] == seq], when
    # far past the end: said (the last snapshot only when asked for)
    with pytest.raises(LookupError, match="after the recording's last snapshot"):
        tcpsnap.table_at(rec, at(10_000))
    assert rows_of(tcpsnap.table_at(rec, at(10_000), past_end="last")) == [r for r in V1_ROWS if r[0] == 7]
    for seq in (0, 2, 5, 7):
        assert rows_of(tcpsnap.table_at(rec, seq=seq)) == [r for r in V1_ROWS if r[0] == seq]
    # snapshot 4 was empty: a changes recording knows it (its marker); a full recording of
    # version 1 left no row for it (version 2 leaves a snapshot row), so it is not there
    if mode == "changes":
        assert tcpsnap.table_at(rec, at(450)).empty and tcpsnap.table_at(rec, seq=4).empty
    else:
        assert rows_of(tcpsnap.table_at(rec, at(450))) == [r for r in V1_ROWS if r[0] == 3]
        with pytest.raises(LookupError, match="no snapshot seq 4"):
            tcpsnap.table_at(rec, seq=4)
    with pytest.raises(LookupError, match="no snapshot at or before"):
        tcpsnap.table_at(rec, at(-1))


def test_analysis(old):
    mode, rec = old
    df = tcpsnap.read(rec)
    life = analysis.lifetimes(df)
    assert [(int(r.cookie), r.states, int(r.snapshots), r.duration / pd.Timedelta(milliseconds=1), int(r.pid))
            for r in life.sort_values("cookie").itertuples()] == [
        (1, "LISTEN", 7, 700, 100), (2, "ESTABLISHED", 4, 300, 101), (3, "ESTABLISHED", 3, 200, 200),
        (4, "SYN_SENT>ESTABLISHED>TIME_WAIT", 3, 300, 300), (5, "CLOSE_WAIT", 1, 0, 101)]
    counts = analysis.state_counts(df, freq="100ms")
    assert counts.loc[at(200), ["LISTEN", "SYN_SENT", "ESTABLISHED"]].tolist() == [1, 1, 2]
    assert counts.loc[at(700), ["LISTEN", "CLOSE_WAIT"]].tolist() == [1, 1]
    top = analysis.top_remotes(df, n=2)
    assert set(top.index) == {"10.0.0.2", "93.184.216.34"}


def test_info(old):
    mode, rec = old
    p = cli("info", rec, "--json")
    assert p.returncode == 0 and p.stderr == ""
    s = json.loads(p.stdout)
    # a version-1 full recording cannot know its empty snapshot (seq 4); a changes
    # recording's markers name every snapshot taken
    assert (s["files"], s["rows"], s["snapshots"], s["seq_range"], s["missing_seq"], s["connections"]) == \
        ((2, 18, 7, [0, 7], 1, 5) if mode == "full" else (2, 18, 8, [0, 7], 0, 5))
    assert s["start"] == "2026-11-18 11:06:40+00:00" and s["end"] == "2026-11-18 11:06:40.700000+00:00"
    assert s["metadata"]["mode"] == mode and s["metadata"]["host"] == "fixture-host"
    assert s["recorder"] is None
    p = cli("info", rec)
    line = "snapshots    7 (seq 0..7, 1 missing)" if mode == "full" else "snapshots    8 (seq 0..7, 0 missing)"
    assert p.returncode == 0 and line in p.stdout, p.stdout
    assert "rows         18" in p.stdout and "connections  5 distinct" in p.stdout


def test_export(old):
    mode, rec = old
    raw = ["--events"] if mode == "changes" else []        # changes: the events as recorded
    p = cli("export", rec, "--to", "csv", "--start", "2026-11-18 11:06:40.6", *raw)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    head = lines[0].split(",")
    assert head[:3] == ['"timestamp"', '"seq"', '"kind"' if mode == "full" else '"event"']
    want_seq = [6, 7, 7] if mode == "full" else [6, 6, 7, 7]          # changes: the events, markers too
    assert [int(x.split(",")[1]) for x in lines[1:]] == want_seq
    if mode == "full":
        assert all(x.split(",")[2] == '"connection"' for x in lines[1:])
        assert all(x.endswith(",,,") for x in lines[1:])                 # monotonic_ns, host, boot_id
    p = cli("export", rec, "--to", "jsonl", "--end", "@1795000000.1", *raw)
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert p.returncode == 0 and all(r["seq"] == 0 and r["host"] is None for r in rows)
    assert len(rows) == (3 if mode == "full" else 4)


def test_plot(old, tmp_path):
    pytest.importorskip("matplotlib")
    mode, rec = old
    for kind in ("states", "churn", "remotes"):
        png = tmp_path / f"{kind}.png"
        p = cli("plot", rec, "-o", png, "--kind", kind, "--utc")
        assert p.returncode == 0 and p.stderr == "" and png.stat().st_size > 1000, p.stderr


def test_open_dataset_gives_the_new_columns(old):
    mode, rec = old
    t = open_dataset(rec).to_table()
    assert t.num_rows == (18 if mode == "full" else 22)
    kinds = t.column("kind").to_pylist()
    assert kinds == (["connection"] * 18 if mode == "full" else [None] * 22)
    assert t.column("host").null_count == t.num_rows
    assert open_dataset(rec).to_table(filter=ds.field("kind") == "connection").num_rows == \
        (18 if mode == "full" else 0)


def test_plain_readers_read_an_old_recording(old):
    mode, rec = old
    rows = 18 if mode == "full" else 22
    assert len(pd.read_parquet(rec)) == rows
    assert ds.dataset(rec, format="parquet", partitioning="hive").count_rows() == rows
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"select count(*), count(distinct seq) from read_parquet('{rec}/date=*/*.parquet', "
                      "hive_partitioning=true)").fetchall() == [(rows, 7 if mode == "full" else 8)]
    pl = pytest.importorskip("polars")
    assert pl.scan_parquet(f"{rec}/date=*/*.parquet", hive_partitioning=True).select(pl.len()).collect().item() == rows


# ------------------------------------------------------------------ upgraded midway


@pytest.mark.parametrize("mode", MODES)
def test_a_folder_upgraded_midway_reads_as_one_recording(tmp_path, mode):
    rec = copy_v1(mode, tmp_path / "rec")
    record_at(rec, v1_tables(), 10, mode=mode)
    want = V1_ROWS + shifted(V1_ROWS, 8, 1000)
    df = tcpsnap.read(rec)
    assert rows_of(df) == want
    old, new = df[df.seq < 8], df[df.seq >= 8]
    assert old[NEW + V3].isna().all().all() and new[NEW].notna().all().all()
    assert (new.cgroup_id == 0).all() and (new.netns == 0).all()
    assert (new.monotonic_ns.to_numpy() == 10**12 + 1_000_000 + (new.seq.to_numpy() + 2) * 100_000_000).all()
    assert open_recording(rec).versions == [1, 3]
    # the new version's empty snapshot is a snapshot row; the old one's is missing
    t = open_dataset(rec).to_table(columns=["seq", "kind"])
    kinds = dict(zip(*np.unique(t.filter(ds.field("seq") == 12).column("kind").to_pylist(), return_counts=True)))
    assert kinds == ({"snapshot": 1} if mode == "full" else {"snapshot": 1, "connection": 3})
    assert rows_of(tcpsnap.read(rec, start=at(600), end=at(1200))) == [r for r in want if 600 <= r[1] < 1200]
    for seq in range(16):
        if seq == 4 and mode == "full":
            continue                                 # version 1 left no trace of it
        assert rows_of(tcpsnap.table_at(rec, seq=seq)) == [r for r in want if r[0] == seq], seq
    assert tcpsnap.table_at(rec, seq=12).empty and tcpsnap.table_at(rec, at(1450)).empty
    s = json.loads(cli("info", rec, "--json").stdout)
    # the version-2 half records its empty snapshot (seq 12); only the version-1 full
    # half's empty snapshot (seq 4) stays unknown
    assert (s["rows"], s["snapshots"], s["seq_range"], s["missing_seq"]) == \
        ((36, 15, [0, 15], 1) if mode == "full" else (36, 16, [0, 15], 0))
