"""``tcpsnap export``: CSV, JSON lines (DuckDB's writer) and one compacted Parquet file read back
by pandas, pyarrow and DuckDB with the values ``tcpsnap.read`` has; a changes recording
exported as its rebuilt table (``--events``: as recorded); Parquet never over a file
without ``--force``; ``table_at`` past a recording's end says so."""

import json
import os
import subprocess
import sys

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

import tcpsnap
from test_bounded import _recordings
from test_truthful import EST, LISTEN, Clock, record, tables

MODES = ["full", "changes"]
KEY = ["seq", "cookie", "local_port", "remote_port"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *map(str, args)], capture_output=True, text=True)


def _want(path) -> pd.DataFrame:
    """tcpsnap.read's rows as plain values, in a fixed order."""
    df = tcpsnap.read(path)
    out = pd.DataFrame({
        "timestamp": df["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str[:-1].to_numpy(),
        "seq": df["seq"].astype("int64"), "state": df["state"].astype(str), "local_addr": df["local_addr"].astype(str),
        "local_port": df["local_port"].astype("int64"), "remote_addr": df["remote_addr"].astype(str),
        "remote_port": df["remote_port"].astype("int64"), "pid": df["pid"].astype("int64"),
        "cookie": df["cookie"].astype("int64"), "host": df["host"].astype(str)})
    return out.sort_values(KEY + ["host"]).reset_index(drop=True)


def _got(df: pd.DataFrame) -> pd.DataFrame:
    if "kind" in df:
        df = df[df["kind"].astype(str) == "connection"]
    ts = df["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        ts = (ts.dt.tz_convert("UTC") if ts.dt.tz is not None else ts).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    else:
        assert ts.astype(str).str.endswith("Z").all()
        ts = ts.astype(str).str[:26]
    out = pd.DataFrame({"timestamp": ts.to_numpy(), **{c: df[c].to_numpy() for c in
                        ("seq", "state", "local_addr", "local_port", "remote_addr", "remote_port", "pid", "cookie",
                         "host")}})
    for c in ("seq", "local_port", "remote_port", "pid", "cookie"):
        out[c] = out[c].astype("int64")
    for c in ("state", "local_addr", "remote_addr", "host"):
        out[c] = out[c].astype(str)
    return out.sort_values(KEY + ["host"]).reset_index(drop=True)


@pytest.mark.parametrize("mode", MODES)
def test_export_round_trips(tmp_path, mode):
    """Every format, read back by pandas, pyarrow and DuckDB: the rows tcpsnap.read has
    (changes recordings rebuilt), timestamps ISO 8601 UTC with nanoseconds."""
    mp = pytest.MonkeyPatch()
    try:
        recs = _recordings(tmp_path, mode, mp)
    finally:
        mp.undo()
    for name in ("history", "fleet", "gap"):
        path = recs[name]
        want = _want(path)
        for to in ("csv", "jsonl", "parquet"):
            out = tmp_path / f"{name}.{to}"
            p = cli("export", path, "--format", to, "-o", out)
            assert p.returncode == 0 and p.stderr == "", p.stderr
            if to == "parquet":
                readers = {"pandas": pd.read_parquet(out), "pyarrow": pq.read_table(out).to_pandas(),
                           "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{out}')").df()}
                assert pq.read_schema(out).metadata[b"tcpsnap.mode"] == b"full"
            elif to == "csv":
                readers = {"pandas": pd.read_csv(out, keep_default_na=False, dtype={"host": str}),
                           "duckdb": duckdb.sql(f"SELECT * FROM read_csv('{out}', all_varchar=true)").df()}
            else:
                lines = out.read_text().splitlines()
                assert json.loads(lines[0])["timestamp"].endswith("Z")
                assert len(json.loads(lines[0])["timestamp"]) == len("2026-11-18T11:06:40.000000000Z")
                readers = {"json": pd.DataFrame([json.loads(x) for x in lines]),
                           "pandas": pd.read_json(out, lines=True, dtype=False),
                           "duckdb": duckdb.sql(f"SELECT * FROM read_json('{out}', format='newline_delimited', "
                                                "columns={timestamp: 'VARCHAR', seq: 'BIGINT', state: 'VARCHAR', "
                                                "local_addr: 'VARCHAR', local_port: 'BIGINT', remote_addr: 'VARCHAR', "
                                                "remote_port: 'BIGINT', pid: 'BIGINT', cookie: 'UBIGINT', "
                                                "host: 'VARCHAR'})").df()}
            for reader, df in readers.items():
                pd.testing.assert_frame_equal(_got(df), want, obj=f"{mode} {name} {to} via {reader}")


def test_export_parquet_refuses_to_overwrite(tmp_path):
    path = tmp_path / "rec"
    record(path, tables(5, [(EST, range(5))]), "full", Clock())
    out = tmp_path / "x.parquet"
    out.write_bytes(b"precious")
    p = cli("export", path, "--format", "parquet", "-o", out)
    assert p.returncode == 1 and p.stderr == f"tcpsnap: error: {out} exists: pass --force to replace it\n"
    assert out.read_bytes() == b"precious"
    assert list(tmp_path.glob(".x.parquet*")) == []
    p = cli("export", path, "--format", "parquet", "-o", out, "--force")
    assert p.returncode == 0, p.stderr
    assert len(pd.read_parquet(out)) == 5
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask          # as any file it writes, not 0600
    p = cli("export", path, "--format", "parquet")
    assert p.returncode == 1 and "needs -o FILE" in p.stderr


def test_export_changes_events_and_range(tmp_path):
    """A changes recording: the rebuilt table of the range by default, the events with --events."""
    path = tmp_path / "rec"
    record(path, tables(20, [(EST, range(5, 15)), (LISTEN, range(20))]), "changes", Clock())
    snaps = tcpsnap.snapshots(path)
    start, end = snaps["timestamp"].iloc[8], snaps["timestamp"].iloc[12]
    p = cli("export", path, "--format", "jsonl", "--start", start.isoformat(), "--end", end.isoformat())
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert p.returncode == 0 and sorted((r["seq"], r["state"]) for r in rows) == [
        (s, st) for s in range(8, 12) for st in ("ESTABLISHED", "LISTEN")]
    assert "event" not in rows[0]
    p = cli("export", path, "--format", "jsonl", "--events")
    ev = [json.loads(x) for x in p.stdout.splitlines()]
    assert p.returncode == 0 and {r["event"] for r in ev} >= {"keyframe", "opened", "closed"}
    assert len(ev) == len(tcpsnap.read(path, mode="changes"))
    p = cli("export", tmp_path / "rec", "--format", "csv", "--events", "-o", tmp_path / "x.csv")
    assert p.returncode == 0
    full = tmp_path / "full"
    record(full, tables(3, [(EST, range(3))]), "full", Clock())
    p = cli("export", full, "--format", "csv", "--events")
    assert p.returncode == 1 and "--events needs a changes recording" in p.stderr


@pytest.mark.parametrize("mode", MODES)
def test_table_at_past_the_end(tmp_path, mode):
    """Far past the last snapshot: an error saying so (past_end="last": that snapshot,
    its time in attrs); within two intervals: the last snapshot, as before."""
    path = tmp_path / "rec"
    record(path, tables(10, [(EST, range(10))]), mode, Clock())
    snaps = tcpsnap.snapshots(path)
    last = snaps["timestamp"].iloc[-1]
    assert len(tcpsnap.table_at(path, last + pd.Timedelta("150ms"))) == 1
    with pytest.raises(LookupError, match=r"after the recording's last snapshot \(seq 9"):
        tcpsnap.table_at(path, last + pd.Timedelta("1h"))
    df = tcpsnap.table_at(path, last + pd.Timedelta("1h"), past_end="last")
    assert len(df) == 1 and df.attrs["seq"] == 9 and df.attrs["timestamp"] == last
    assert tcpsnap.table_at(path, seq=3).attrs["seq"] == 3
