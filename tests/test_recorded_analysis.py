"""read / analysis / info / plot / export on recordings made here, through the real
Recorder, from a scripted connection history (a fake backend feeding known tables)."""

import ipaddress
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import tcpsnap
from _changes_util import Scripted  # the Recorder's snapshotter protocol, replaying tables
from tcpsnap import ROW_DTYPE, Recorder, TcpState, analysis

S = TcpState
N = 10   # snapshots


def _row(state, la, lp, ra, rp, cookie, pid=0):
    r = np.zeros(1, ROW_DTYPE)[0]
    r["family"] = 4
    r["state"] = state
    r["local_addr"][:4] = list(ipaddress.IPv4Address(la).packed)
    r["remote_addr"][:4] = list(ipaddress.IPv4Address(ra).packed)
    r["local_port"], r["remote_port"], r["cookie"], r["pid"] = lp, rp, cookie, pid
    return r


def history():
    """Snapshot i -> rows. Connections (see test_lifetimes_exact for what they must become)."""
    tables = [[] for _ in range(N)]

    def live(snaps, states, *args, **kw):
        for i, st in zip(snaps, states):
            tables[i].append(_row(st, *args, **kw))

    live(range(N), [S.LISTEN] * N, "127.0.0.1", 80, "0.0.0.0", 0, cookie=1, pid=100)
    # client: SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT (no owner) -> gone
    live(range(1, 9), [S.SYN_SENT, S.ESTABLISHED, S.ESTABLISHED, S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2,
                       S.TIME_WAIT, S.TIME_WAIT], "127.0.0.1", 5000, "127.0.0.1", 80, cookie=2, pid=200)
    for i in (7, 8):
        tables[i][-1]["pid"] = 0
    # its server side: ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> gone
    live(range(2, 8), [S.ESTABLISHED] * 3 + [S.CLOSE_WAIT] * 2 + [S.LAST_ACK], "127.0.0.1", 80,
         "127.0.0.1", 5000, cookie=3, pid=100)
    # one 4-tuple used by two sockets (two cookies)
    live(range(0, 3), [S.ESTABLISHED] * 3, "127.0.0.1", 6000, "10.0.0.1", 443, cookie=4, pid=200)
    live(range(5, 10), [S.ESTABLISHED] * 5, "127.0.0.1", 6000, "10.0.0.1", 443, cookie=5, pid=200)
    # no cookie (as from Windows): the 4-tuple, gone in between, is two connections
    live(range(1, 4), [S.ESTABLISHED] * 3, "127.0.0.1", 7000, "10.0.0.2", 22, cookie=0)
    live(range(6, 9), [S.ESTABLISHED] * 3, "127.0.0.1", 7000, "10.0.0.2", 22, cookie=0)
    return [np.array(t, dtype=ROW_DTYPE) for t in tables]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "recording"
    snap = Scripted(history(), names={100: "srv", 200: "cli"})
    with Recorder(path, interval="20ms", rotate="70ms", snapshotter=snap) as rec:
        snap.rec = rec
        rec.run(duration="10s")
    return path


@pytest.fixture(scope="module")
def df(recording):
    return tcpsnap.read(recording)


def test_recording_has_every_snapshot_in_several_files(recording, df):
    assert sorted(df["seq"].unique().tolist()) == list(range(N))
    assert len(list(recording.glob("date=*/*.parquet"))) >= 2
    assert len(df) == sum(len(t) for t in history())
    assert str(df["state"].dtype) == "category" and str(df["local_addr"].dtype) == "category"


def test_lifetimes_exact(df):
    life = analysis.lifetimes(df).sort_values(["local_port", "first_seen"]).reset_index(drop=True)
    got = [(int(r.local_port), int(r.remote_port), r.snapshots, r.states, r.pid, None if pd.isna(r.process) else r.process)
           for r in life.itertuples()]
    assert got == [
        (80, 0, 10, "LISTEN", 100, "srv"),
        (80, 5000, 6, "ESTABLISHED>CLOSE_WAIT>LAST_ACK", 100, "srv"),
        (5000, 80, 8, "SYN_SENT>ESTABLISHED>FIN_WAIT1>FIN_WAIT2>TIME_WAIT", 200, "cli"),
        (6000, 443, 3, "ESTABLISHED", 200, "cli"),
        (6000, 443, 5, "ESTABLISHED", 200, "cli"),
        (7000, 22, 3, "ESTABLISHED", 0, None),
        (7000, 22, 3, "ESTABLISHED", 0, None),
    ]
    ts = df.groupby("seq")["timestamp"].first()
    c5000 = life[life.local_port == 5000].iloc[0]
    assert c5000.first_seen == ts[1] and c5000.last_seen == ts[8]
    mono = df.groupby("seq")["monotonic_ns"].first()
    # a duration is measured on the monotonic clock (the wall clock can be stepped)
    assert c5000.duration == pd.Timedelta(int(mono[8] - mono[1]), unit="ns")
    assert life["open_at_start"].tolist() == [True, False, False, True, False, False, False]
    assert life["open_at_end"].tolist() == [True, False, False, False, True, False, False]


def test_counts_and_churn_exact(df):
    mx = analysis.state_counts(df, freq="1h", agg="max").iloc[0]
    assert mx["ESTABLISHED"] == 4 and mx["CLOSE_WAIT"] == 1 and mx["TIME_WAIT"] == 1 and mx["LISTEN"] == 1
    mean = analysis.state_counts(df, freq="1h").iloc[0]
    assert mean["TIME_WAIT"] == pytest.approx(2 / N) and mean["SYN_SENT"] == pytest.approx(1 / N)
    ch = analysis.churn(df, freq="1h")
    assert ch["opened"].sum() == 5 and ch["closed"].sum() == 5


def test_top_remotes_and_by_process(df):
    top = analysis.top_remotes(df, n=3)
    # two connections each; ties go to the most connection-seconds (12, 6 and 4 intervals)
    assert top.index.tolist() == ["127.0.0.1", "10.0.0.1", "10.0.0.2"]
    assert top.loc["10.0.0.1", "connections"] == 2 and top.loc["127.0.0.1", "connections"] == 2
    bp = analysis.by_process(df)
    assert bp.loc[200, "connections"] == 3 and bp.loc[100, "listening"] == "80"


def test_read_time_range_returns_exactly_those_snapshots(recording, df):
    ts = df.groupby("seq")["timestamp"].first()
    part = tcpsnap.read(recording, start=ts[3], end=ts[7])
    assert sorted(part["seq"].unique().tolist()) == [3, 4, 5, 6]
    as_text = tcpsnap.read(recording, start=ts[3].isoformat(), end=ts[7].tz_localize(None).isoformat())
    assert sorted(as_text["seq"].unique().tolist()) == [3, 4, 5, 6]
    assert len(tcpsnap.read(recording, start=ts[9] + pd.Timedelta("1ns"))) == 0


def test_read_filters_and_columns(recording):
    cw = tcpsnap.read(recording, filters=[("state", "==", "CLOSE_WAIT")], columns=["seq", "state", "local_port"])
    assert list(cw.columns) == ["seq", "state", "local_port"]
    assert cw["seq"].tolist() == [5, 6] and set(cw["local_port"]) == {80}


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        tcpsnap.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        tcpsnap.read(tmp_path / "empty")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_info(recording):
    p = cli("info", recording, "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert (s["snapshots"], s["connections"], s["missing_seq"]) == (N, 7, 0)
    assert s["rows"] == sum(len(t) for t in history())
    assert s["top_processes"][0]["process"] in ("cli", "srv")
    text = cli("info", recording).stdout
    assert "snapshots    10" in text and "connections  7 distinct" in text


@pytest.mark.parametrize("kind", ["states", "churn", "remotes"])
def test_plot_writes_a_png(recording, tmp_path, kind):
    pytest.importorskip("matplotlib")
    out = tmp_path / f"{kind}.png"
    p = cli("plot", recording, "-o", out, "--kind", kind, "--utc")
    assert p.returncode == 0, p.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_freq_uses_the_duration_grammar(recording, tmp_path):
    from tcpsnap.cli import build_parser

    args = build_parser().parse_args(["plot", str(recording), "-o", "x.png", "--freq", "15m"])
    assert pd.Timedelta(pd.tseries.frequencies.to_offset(args.freq)) == pd.Timedelta(minutes=15)
    assert pd.Timedelta(args.freq) == pd.Timedelta(minutes=15)
    bins = analysis.state_counts(tcpsnap.read(recording), freq=args.freq).index
    assert 1 <= len(bins) <= 2 and (bins == bins.floor("15min")).all()
    p = cli("plot", recording, "-o", tmp_path / "x.png", "--freq", "15x")
    assert p.returncode == 2 and "bad duration" in p.stderr
    pytest.importorskip("matplotlib")
    p = cli("plot", recording, "-o", tmp_path / "x.png", "--freq", "15m", "--utc")
    assert p.returncode == 0, p.stderr


def test_export_csv_and_jsonl_with_range(recording, df, tmp_path):
    ts = df.groupby("seq")["timestamp"].first()
    want = len(df[(df.seq >= 2) & (df.seq < 5)])
    p = cli("export", recording, "--to", "csv", "--start", ts[2].isoformat(), "--end", ts[5].isoformat())
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith('"timestamp","seq"') and len(lines) == want + 1
    out = tmp_path / "x.jsonl"
    assert cli("export", recording, "--to", "jsonl", "-o", out).returncode == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == len(df) and {r["state"] for r in recs} >= {"LISTEN", "TIME_WAIT"}
    assert recs[0]["timestamp"].endswith("Z")


@pytest.mark.parametrize("cmd", [["info"], ["export", "--to", "csv"], ["plot", "-o", "{tmp}/x.png"]])
def test_empty_or_corrupt_recordings_fail_clearly(tmp_path, cmd):
    cmd = [c.replace("{tmp}", str(tmp_path)) for c in cmd]     # no fixed path in /tmp
    empty = tmp_path / "empty"
    empty.mkdir()
    p = cli(cmd[0], empty, *cmd[1:])
    assert p.returncode == 1 and "no Parquet files" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad" / "date=2026-01-01"
    bad.mkdir(parents=True)
    (bad / "x.parquet").write_bytes(b"this is not parquet" * 10)
    p = cli(cmd[0], bad.parent, *cmd[1:])
    assert p.returncode == 1 and "not a readable recording" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
