"""What a recording means, exactly: empty snapshots vs gaps, identity across hosts and
boots, durations on the monotonic clock when the wall clock is stepped, one peer per
canonical address. Every recording here goes through the real Recorder on simulated
clocks (one snapshot per 100 ms of simulated time) from scripted tables, in both modes,
and every expected value is exact."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import tcpsnap
import tcpsnap._host
from _changes_util import WALL0, Scripted, row
from tcpsnap import ROW_DTYPE, Recorder, TcpState, analysis
from tcpsnap.cli import main

S = TcpState
IV = 100_000_000          # the simulated interval, ns
MS = 1_000_000
SEC = 1_000_000_000
T0 = pd.Timestamp(WALL0, unit="ns", tz="UTC")
MODES = ["full", "changes"]


def at(ns: int) -> pd.Timestamp:
    """The wall time WALL0 + ns."""
    return T0 + pd.Timedelta(ns, unit="ns")


class Clock:
    """Like ``_changes_util.SimClock`` (every ``time_ns()`` starts the next snapshot; the
    monotonic clock reads its start + 1 ms), with events before snapshot k: ``pauses``
    (k -> ns: both clocks jump, the recorder was stopped), ``steps`` (k -> ns: the wall
    clock alone is stepped)."""

    def __init__(self, wall0=WALL0, mono0=10**12, pauses=None, steps=None):
        self.k = -1
        self.wall0, self.mono0 = wall0, mono0
        self.pauses, self.steps = pauses or {}, steps or {}

    def _sum(self, d):
        return sum(v for j, v in d.items() if self.k >= j)

    def time_ns(self):
        self.k += 1
        return self.wall0 + self.k * IV + self._sum(self.pauses) + self._sum(self.steps)

    def monotonic_ns(self):
        return self.mono0 + self.k * IV + MS + self._sum(self.pauses)


def record(path, tables, mode, clock=None, **kw):
    """Record ``tables`` (one per snapshot) into ``path`` on ``clock``."""
    snap = Scripted(tables, pids=False)
    extra = {"mode": mode, "destroy": False} if mode != "full" else {}
    with Recorder(path, interval=0, snapshotter=snap, clock=clock or Clock(), nice=None, **extra,
                  **kw) as rec:
        snap.rec = rec
        rec.run()
        return dict(rec.stats)


def tables(n, live):
    """n tables; ``live``: (row, range of snapshots it is in) pairs."""
    return [np.array([r for r, ks in live if k in ks], ROW_DTYPE) for k in range(n)]


EST = row(S.ESTABLISHED, "10.0.0.1", 5000, "10.0.0.2", 443, cookie=7)
LISTEN = row(S.LISTEN, "0.0.0.0", 80, "0.0.0.0", 0, cookie=9)


def info_json(path, capsys):
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def info_text(path, capsys):
    assert main(["info", str(path)]) == 0
    return capsys.readouterr().out


# ------------------------------------------------------------------ 1. empty vs missing


@pytest.mark.parametrize("mode", MODES)
def test_empty_snapshots_count_zero_not_gap(tmp_path, mode, capsys):
    """A 3 s --state established recording at 100 ms; the table had one established
    connection only from 1.0 s to 2.0 s (and a listener all along, filtered out)."""
    path = tmp_path / "rec"
    record(path, tables(30, [(EST, range(10, 20)), (LISTEN, range(30))]), mode, states="established")
    snaps = tcpsnap.snapshots(path)
    assert snaps.columns.tolist() == ["seq", "timestamp", "monotonic_ns", "capture_ns", "connections",
                                      "host", "boot_id"]
    assert snaps["seq"].tolist() == list(range(30))
    assert snaps["connections"].tolist() == [0] * 10 + [1] * 10 + [0] * 10
    assert snaps["timestamp"].tolist() == [at(k * IV) for k in range(30)]
    assert snaps["monotonic_ns"].tolist() == [10**12 + k * IV + MS for k in range(30)]
    assert (snaps["host"] == tcpsnap._host.host_name()).all()
    assert (snaps["boot_id"] == tcpsnap._host.boot_id()).all()
    df = tcpsnap.read(path)
    assert df["seq"].tolist() == list(range(10, 20))

    sc = analysis.state_counts(df, freq="1s", snapshots=snaps)
    assert sc.index.tolist() == [at(0), at(SEC), at(2 * SEC)]
    assert sc.columns.tolist() == ["ESTABLISHED"]
    assert sc["ESTABLISHED"].tolist() == [0, 1, 0]          # not [NaN, 1, NaN]
    ch = analysis.churn(df, freq="1s", snapshots=snaps)
    assert ch["opened"].tolist() == [0, 1, 0] and ch["closed"].tolist() == [0, 1, 0]
    life = analysis.lifetimes(df, snapshots=snaps)
    assert len(life) == 1
    c = life.iloc[0]
    assert (c.first_seen, c.last_seen, c.duration) == (at(SEC), at(19 * IV), pd.Timedelta(9 * IV))
    assert (c.snapshots, bool(c.open_at_start), bool(c.open_at_end)) == (10, False, False)
    assert analysis.gaps(snaps).empty and analysis.clock_steps(snaps).empty

    s = info_json(path, capsys)
    assert (s["snapshots"], s["seq_range"], s["missing_seq"], s["rows"]) == (30, [0, 29], 0, 10)
    assert (s["start"], s["end"]) == (str(at(0)), str(at(29 * IV)))
    assert (s["elapsed_s"], s["interval_ms"], s["gaps"], s["clock_steps"]) == (2.9, 100.0, 0, [])
    assert s["connections"] == 1
    text = info_text(path, capsys)
    assert "snapshots    30 (seq 0..29, 0 missing)" in text
    assert f"time         {at(0)} .. {at(29 * IV)}" in text and "2.9 s elapsed" in text
    assert "interval     100 ms; 0 gaps over 1.5x; 0 overruns" in text


@pytest.mark.parametrize("mode", MODES)
def test_all_empty_recording(tmp_path, mode, capsys):
    """No connection in any snapshot: still a recording of 30 snapshots, every one 0."""
    path = tmp_path / "rec"
    record(path, tables(30, [(LISTEN, range(30))]), mode, states="established")
    snaps = tcpsnap.snapshots(path)
    assert snaps["seq"].tolist() == list(range(30)) and snaps["connections"].tolist() == [0] * 30
    df = tcpsnap.read(path)
    assert len(df) == 0
    sc = analysis.state_counts(df, freq="1s", snapshots=snaps)
    assert sc.index.tolist() == [at(0), at(SEC), at(2 * SEC)] and sc.columns.tolist() == []
    ch = analysis.churn(df, freq="1s", snapshots=snaps)
    assert ch["opened"].tolist() == [0, 0, 0] and ch["closed"].tolist() == [0, 0, 0]
    s = info_json(path, capsys)
    assert (s["snapshots"], s["start"], s["end"], s["connections"], s["rows"]) == (
        30, str(at(0)), str(at(29 * IV)), 0, 0)
    assert "snapshots    30 (seq 0..29, 0 missing)" in info_text(path, capsys)


@pytest.mark.parametrize("mode", MODES)
def test_a_real_gap_is_nan(tmp_path, mode, capsys):
    """The recorder stopped for 2 s after snapshot 14 (SIGSTOP: both clocks went on):
    the bin with no snapshot is NaN, the bins with empty snapshots 0."""
    path = tmp_path / "rec"
    record(path, tables(30, [(EST, range(5, 11))]), mode, Clock(pauses={15: 2 * SEC}))
    snaps = tcpsnap.snapshots(path)
    assert snaps["timestamp"].tolist() == [at(k * IV + (2 * SEC if k >= 15 else 0)) for k in range(30)]
    df = tcpsnap.read(path)
    sc = analysis.state_counts(df, freq="1s", snapshots=snaps)
    assert sc.index.tolist() == [at(j * SEC) for j in range(5)]
    np.testing.assert_array_equal(sc["ESTABLISHED"].to_numpy(), [0.5, 0.2, np.nan, 0, 0])
    ch = analysis.churn(df, freq="1s", snapshots=snaps)
    np.testing.assert_array_equal(ch["opened"].to_numpy(), [1, 0, np.nan, 0, 0])
    np.testing.assert_array_equal(ch["closed"].to_numpy(), [0, 1, np.nan, 0, 0])
    g = analysis.gaps(snaps)
    assert g[["seq", "before_seq", "why"]].values.tolist() == [[15, 14, "late"]]
    assert g["length"].tolist() == [pd.Timedelta(2 * SEC + IV)]
    assert analysis.clock_steps(snaps).empty
    s = info_json(path, capsys)
    assert (s["snapshots"], s["gaps"], s["largest_gap_s"], s["elapsed_s"]) == (30, 1, 2.1, 4.9)
    assert s["gap_list"] == [{"host": tcpsnap._host.host_name(), "seq": 15, "after_seq": 14, "length_s": 2.1,
                              "why": "late"}]
    text = info_text(path, capsys)
    assert "1 gap over 1.5x, largest 2.100 s" in text
    assert "gap          2.1 s before seq 15 (no snapshot taken)" in text


# ------------------------------------------------------------------ 3. honest time


@pytest.mark.parametrize("mode", MODES)
def test_wall_clock_stepped_back(tmp_path, mode, capsys):
    """The wall clock is set back 5 s before snapshot 20 (the monotonic clock goes on); a
    connection lives from snapshot 15 to 25, across the step."""
    path = tmp_path / "rec"
    record(path, tables(30, [(EST, range(15, 26))]), mode, Clock(steps={20: -5 * SEC}))
    snaps = tcpsnap.snapshots(path)
    wall = [k * IV - (5 * SEC if k >= 20 else 0) for k in range(30)]
    assert snaps["timestamp"].tolist() == [at(w) for w in wall]       # shown as recorded
    df = tcpsnap.read(path)
    for life in (analysis.lifetimes(df, snapshots=snaps), analysis.lifetimes(df)):
        c = life.iloc[0]
        assert (c.first_seen, c.last_seen) == (at(15 * IV), at(25 * IV - 5 * SEC))
        assert c.duration == pd.Timedelta(10 * IV)                      # not -4 s
    steps = analysis.clock_steps(snaps)
    assert steps["seq"].tolist() == [20] and steps["step"].tolist() == [pd.Timedelta(-5 * SEC)]
    assert analysis.gaps(snaps).empty                                  # no snapshot was missed
    # 1 s bins: -3 s holds snapshots 20..29 (6 of 10 with the connection), 0 s and 1 s the
    # rest; -2 s and -1 s never happened on the wall clock while recording: no fake gap
    sc = analysis.state_counts(df, freq="1s", snapshots=snaps)
    assert sc.index.tolist() == [at(-3 * SEC), at(0), at(SEC)]
    assert sc["ESTABLISHED"].tolist() == [0.6, 0, 0.5]
    s = info_json(path, capsys)
    assert s["clock_steps"] == [{"host": tcpsnap._host.host_name(), "seq": 20, "step_s": -5.0}]
    assert (s["snapshots"], s["gaps"], s["elapsed_s"]) == (30, 0, 2.9)
    assert (s["start"], s["end"]) == (str(at(0)), str(at(29 * IV - 5 * SEC)))
    assert s["top_remotes"] == [{"remote_addr": "10.0.0.2", "connections": 1, "connection_seconds": 1.0}]
    text = info_text(path, capsys)
    assert "clock        stepped back 5.0 s at seq 20\n" in text
    assert "2.9 s elapsed" in text


def test_clock_steps_and_gaps_on_their_own():
    """``gaps`` / ``clock_steps`` on a hand-made snapshot table: a seq jump, a reboot, a
    late snapshot, a step forward; v1-like snapshots (no monotonic time) use the wall
    clock."""
    seq = [0, 1, 2, 5, 6, 7, 8]
    wall = [0, 100, 200, 500, 600, 3000 + 700, 60_000]
    mono = [1000, 1100, 1200, 1500, 1600, 1700, 50]
    boot = ["a"] * 6 + ["b"]
    snaps = pd.DataFrame({"seq": seq, "timestamp": [at(w * MS) for w in wall],
                          "monotonic_ns": [m * MS for m in mono], "host": "h", "boot_id": boot})
    g = analysis.gaps(snaps)
    assert g[["seq", "before_seq", "why"]].values.tolist() == [[5, 2, "seq"], [8, 7, "reboot"]]
    assert g["length"].tolist() == [pd.Timedelta(300 * MS), pd.Timedelta((60_000 - 3700) * MS)]
    st = analysis.clock_steps(snaps)
    assert st["seq"].tolist() == [7] and st["step"].tolist() == [pd.Timedelta(3 * SEC)]
    assert analysis.interval_of(snaps) == 100 * MS
    late = snaps.assign(monotonic_ns=[m * MS for m in [1000, 1100, 1200, 1500, 1600, 1900, 50]])
    assert analysis.gaps(late)[["seq", "why"]].values.tolist() == [[5, "seq"], [7, "late"], [8, "reboot"]]
    v1 = snaps.drop(columns=["monotonic_ns", "boot_id"])
    assert analysis.gaps(v1)[["seq", "why"]].values.tolist() == [[5, "seq"], [7, "late"], [8, "late"]]
    assert analysis.clock_steps(v1).empty                        # nothing to tell a step by


# ------------------------------------------------------------------ 2. identity


def _fleet(root, mode, monkeypatch):
    """Two hosts side by side under host= folders; web-2 reboots after 10 snapshots (a
    new boot_id, its monotonic clock from 0 again, back 60 s later). Cookies collide on
    purpose: 1 and 2 on every host and boot; a cookie-less (Windows-like) 4-tuple on
    both hosts."""
    win = row(S.ESTABLISHED, "10.9.9.9", 7000, "10.0.0.3", 22, cookie=0)
    c1 = row(S.ESTABLISHED, "10.0.0.1", 5001, "10.0.0.2", 443, cookie=1)
    c2 = row(S.ESTABLISHED, "10.0.0.1", 5002, "10.0.0.2", 443, cookie=2)

    def run(host, boot, path, tabs, clock):
        monkeypatch.setattr(tcpsnap._host, "host_name", lambda: host)
        monkeypatch.setattr(tcpsnap._host, "boot_id", lambda: boot)
        record(path, tabs, mode, clock)

    run("web-1", "boot-a", root / "host=web-1", tables(20, [(c1, range(20)), (c2, range(5, 10)),
                                                            (win, range(3))]), Clock())
    run("web-2", "boot-b1", root / "host=web-2", tables(10, [(c1, range(10)), (c2, range(2, 5)),
                                                             (win, range(3))]), Clock())
    run("web-2", "boot-b2", root / "host=web-2", tables(10, [(c1, range(5)), (c2, range(3, 10))]),
        Clock(wall0=WALL0 + 61 * SEC, mono0=5 * SEC))


@pytest.mark.parametrize("mode", MODES)
def test_two_hosts_one_rebooted(tmp_path, mode, monkeypatch, capsys):
    root = tmp_path / "fleet"
    _fleet(root, mode, monkeypatch)
    df = tcpsnap.read(root)
    assert len(df) == 20 + 5 + 3 + 10 + 3 + 3 + 5 + 7
    assert df.groupby(["host", "boot_id"], observed=True).size().to_dict() == {
        ("web-1", "boot-a"): 28, ("web-2", "boot-b1"): 16, ("web-2", "boot-b2"): 12}
    snaps = tcpsnap.snapshots(root)
    assert snaps[["host", "boot_id"]].astype(str).value_counts().to_dict() == {
        ("web-1", "boot-a"): 20, ("web-2", "boot-b1"): 10, ("web-2", "boot-b2"): 10}
    assert snaps["seq"].tolist() == list(range(20)) * 2      # web-2's seq goes on after the reboot

    life = analysis.lifetimes(df, snapshots=snaps)
    got = sorted((r.host, r.boot_id, int(r.cookie), int(r.local_port), r.snapshots, r.duration / pd.Timedelta(IV),
                  bool(r.open_at_start), bool(r.open_at_end)) for r in life.itertuples())
    assert got == [
        ("web-1", "boot-a", 0, 7000, 3, 2, True, False),
        ("web-1", "boot-a", 1, 5001, 20, 19, True, True),
        ("web-1", "boot-a", 2, 5002, 5, 4, False, False),
        ("web-2", "boot-b1", 0, 7000, 3, 2, True, False),
        ("web-2", "boot-b1", 1, 5001, 10, 9, True, True),    # still open when it rebooted
        ("web-2", "boot-b1", 2, 5002, 3, 2, False, False),
        ("web-2", "boot-b2", 1, 5001, 5, 4, True, False),
        ("web-2", "boot-b2", 2, 5002, 7, 6, False, True),
    ]
    sc = analysis.state_counts(df, freq="1s", snapshots=snaps)
    assert sc.loc[at(0), "ESTABLISHED"] == (10 + 5 + 3) / 10 + (10 + 3 + 3) / 10  # both hosts, summed
    assert sc.loc[at(61 * SEC), "ESTABLISHED"] == (5 + 7) / 10
    assert sc["ESTABLISHED"].isna().sum() == 60               # web-2 down from 1 s to 60 s
    g = analysis.gaps(snaps)
    assert g[["host", "seq", "before_seq", "why"]].values.tolist() == [["web-2", 10, 9, "reboot"]]

    s = info_json(root, capsys)
    assert (s["snapshots"], s["hosts"], s["boots"], s["connections"], s["missing_seq"]) == (
        40, ["web-1", "web-2"], 3, 8, 0)
    assert (s["gaps"], s["clock_steps"]) == (1, [])
    assert s["top_remotes"][0]["remote_addr"] == "10.0.0.2" and s["top_remotes"][0]["connections"] == 6
    text = info_text(root, capsys)
    assert "hosts        2 (web-1, web-2), 3 boots" in text and "connections  8 distinct" in text
    assert "gap          60.1 s before seq 10 on web-2 (reboot)" in text


@pytest.mark.parametrize("mode", MODES)
def test_one_recording_copied_under_two_hosts(tmp_path, mode, capsys):
    """The same files under host=web-1/ and host=web-2/: two recordings (not copies of
    one another), the host= folder naming the host; twice the connections."""
    one = tmp_path / "one"
    c1 = row(S.ESTABLISHED, "10.0.0.1", 5001, "10.0.0.2", 443, cookie=1)
    c2 = row(S.ESTABLISHED, "::ffff:10.0.0.1", 5002, "::ffff:10.0.0.2", 443, cookie=2, family=6)
    record(one, tables(20, [(c1, range(20)), (c2, range(5, 10))]), mode)
    root = tmp_path / "both"
    shutil.copytree(one, root / "host=web-1")
    shutil.copytree(one, root / "host=web-2")
    df1, df = tcpsnap.read(one), tcpsnap.read(root)
    assert len(df) == 2 * len(df1) == 50
    assert "host" in df.columns and sorted(df["host"].astype(str).unique()) == ["web-1", "web-2"]
    assert df.columns.tolist() == df1.columns.tolist()
    assert len(analysis.lifetimes(df)) == 2 * len(analysis.lifetimes(df1)) == 4
    assert len(tcpsnap.snapshots(root)) == 40
    s = info_json(root, capsys)
    assert (s["snapshots"], s["connections"], s["hosts"]) == (40, 4, ["web-1", "web-2"])
    # the IPv4-mapped peer is the same peer
    assert s["top_remotes"] == [{"remote_addr": "10.0.0.2", "connections": 4, "connection_seconds": 4.6}]


def test_identity_without_host_or_boot_columns_falls_back():
    """Rows of schema version 1 (no host, boot_id, monotonic_ns): the cookie alone, or
    with a host= folder's host column; durations from the wall clock; cookie 0: the
    4-tuple split where it was absent."""
    rows = []

    def add(seqs, cookie, lp, host=None):
        for s in seqs:
            r = dict(timestamp=at(s * IV), seq=s, family=4, state="ESTABLISHED", local_addr="10.0.0.1",
                     local_port=lp, remote_addr="10.0.0.2", remote_port=443, pid=0, process=None, cookie=cookie)
            if host:
                r["host"] = host
            rows.append(r)

    add(range(0, 4), 5, 5000)
    add(range(2, 6), 5, 5000)          # the same cookie, the same host: one connection
    add(range(0, 2), 0, 6000)
    add(range(4, 6), 0, 6000)          # a cookie-less 4-tuple, absent at seqs 2, 3: two
    df = pd.DataFrame(rows).drop_duplicates(["seq", "cookie", "local_port"])
    life = analysis.lifetimes(df)
    assert sorted((int(r.cookie), r.snapshots, r.duration) for r in life.itertuples()) == [
        (0, 2, pd.Timedelta(IV)), (0, 2, pd.Timedelta(IV)), (5, 6, pd.Timedelta(5 * IV))]
    two = pd.concat([df.assign(host="web-1"), df.assign(host="web-2")], ignore_index=True)
    assert len(analysis.lifetimes(two)) == 6
    assert analysis.state_counts(two, freq="1s")["ESTABLISHED"].tolist() == [2 * 10 / 6]


def test_canonical_addresses():
    """``::ffff:a.b.c.d`` is the IPv4 peer a.b.c.d: top_remotes and by_process group on it;
    the rows keep what the kernel reported."""
    assert analysis.canonical_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert analysis.canonical_address("::FFFF:192.0.2.1") == "192.0.2.1"
    assert analysis.canonical_address("2001:db8::1") == "2001:db8::1"
    assert analysis.canonical_address("::ffff:0.0.0.0") == "0.0.0.0"
    rows = []
    for cookie, fam, ra in ((1, 4, "192.0.2.1"), (2, 6, "::ffff:192.0.2.1"), (3, 6, "2001:db8::1"),
                            (4, 6, "::ffff:0.0.0.0")):
        for s in range(3):
            rows.append(dict(timestamp=at(s * IV), seq=s, family=fam, state="ESTABLISHED" if cookie < 4 else "LISTEN",
                             local_addr="::", local_port=9000 + cookie, remote_addr=ra, remote_port=443, pid=42,
                             process="app", cookie=cookie))
    df = pd.DataFrame(rows)
    for c in ("state", "local_addr", "remote_addr", "process"):
        df[c] = df[c].astype("category")
    top = analysis.top_remotes(df)
    assert top.index.tolist() == ["192.0.2.1", "2001:db8::1"]
    assert top["connections"].tolist() == [2, 1]
    assert top.loc["192.0.2.1", "connection_seconds"] == pytest.approx(0.4)
    assert analysis.by_process(df).loc[42, "remotes"] == 2
    life = analysis.lifetimes(df)
    assert sorted(life["remote_addr"].astype(str)) == ["192.0.2.1", "2001:db8::1", "::ffff:0.0.0.0",
                                                       "::ffff:192.0.2.1"]
