"""analysis functions on a known connection history (built here, row by row)."""

import pandas as pd
import pytest

from tcpsnap import analysis

T0 = pd.Timestamp("2026-11-26 10:00:00", tz="UTC")
STEP = pd.Timedelta("100ms")


def history():
    rows = []

    def add(seqs, states, *, cookie, la="127.0.0.1", lp, ra="127.0.0.1", rp, pid=0, proc=None, fam=4):
        for s, st in zip(seqs, states):
            rows.append(dict(timestamp=T0 + s * STEP, seq=s, family=fam, state=st, local_addr=la, local_port=lp,
                             remote_addr=ra, remote_port=rp, pid=pid, process=proc, cookie=cookie))

    add(range(10), ["LISTEN"] * 10, cookie=3, lp=80, ra="0.0.0.0", rp=0, pid=100, proc="srv")
    add(range(10), ["ESTABLISHED"] * 10, cookie=1, lp=5000, ra="10.0.0.9", rp=443, pid=200, proc="curl")
    add(range(2, 7), ["SYN_SENT", "ESTABLISHED", "ESTABLISHED", "FIN_WAIT1", "TIME_WAIT"], cookie=2, lp=5001,
        ra="10.0.0.9", rp=443, pid=200, proc="curl")
    # no cookie (a Windows-like backend): one 4-tuple used twice, with a gap in between
    add(range(1, 4), ["ESTABLISHED"] * 3, cookie=0, lp=6000, ra="192.0.2.1", rp=22)
    add(range(6, 9), ["ESTABLISHED"] * 3, cookie=0, lp=6000, ra="192.0.2.1", rp=22, pid=300, proc="ssh")
    df = pd.DataFrame(rows).sample(frac=1, random_state=1).reset_index(drop=True)   # order must not matter
    for c in ("state", "local_addr", "remote_addr", "process"):
        df[c] = df[c].astype("category")
    return df


def test_lifetimes_exact():
    life = analysis.lifetimes(history()).sort_values(["local_port", "first_seen"]).reset_index(drop=True)
    assert life["local_port"].tolist() == [80, 5000, 5001, 6000, 6000]
    assert life["snapshots"].tolist() == [10, 10, 5, 3, 3]
    assert life["states"].tolist() == ["LISTEN", "ESTABLISHED", "SYN_SENT>ESTABLISHED>FIN_WAIT1>TIME_WAIT",
                                       "ESTABLISHED", "ESTABLISHED"]
    assert life["first_seen"].tolist() == [T0, T0, T0 + 2 * STEP, T0 + STEP, T0 + 6 * STEP]
    assert life["duration"].tolist() == [9 * STEP, 9 * STEP, 4 * STEP, 2 * STEP, 2 * STEP]
    assert life["pid"].tolist() == [100, 200, 200, 0, 300]
    assert life["process"].astype(object).tolist()[:3] == ["srv", "curl", "curl"]
    assert life["open_at_start"].tolist() == [True, True, False, False, False]
    assert life["open_at_end"].tolist() == [True, True, False, False, False]
    assert str(life.loc[2, "first_state"]) == "SYN_SENT" and str(life.loc[2, "last_state"]) == "TIME_WAIT"


def test_state_counts_per_snapshot():
    sc = analysis.state_counts(history(), freq="100ms")
    assert len(sc) == 10
    assert sc["LISTEN"].tolist() == [1.0] * 10
    assert sc["ESTABLISHED"].tolist() == [1, 2, 2, 3, 2, 1, 2, 2, 2, 1]
    assert sc["TIME_WAIT"].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert "CLOSE_WAIT" not in sc
    assert analysis.state_counts(history(), freq="1s", agg="max")["ESTABLISHED"].tolist() == [3]


def test_churn():
    ch = analysis.churn(history(), freq="100ms")
    assert ch["opened"].tolist() == [0, 1, 1, 0, 0, 0, 1, 0, 0, 0]
    assert ch["closed"].tolist() == [0, 0, 0, 1, 0, 0, 1, 0, 1, 0]


def test_top_remotes_and_by_process():
    top = analysis.top_remotes(history(), n=2)
    assert top.index.tolist() == ["10.0.0.9", "192.0.2.1"]
    assert top.loc["10.0.0.9", "connections"] == 2 and top.loc["192.0.2.1", "connections"] == 2
    assert top.loc["10.0.0.9", "processes"] == "curl"
    assert top.loc["10.0.0.9", "connection_seconds"] == pytest.approx(1.3)
    bp = analysis.by_process(history())
    assert bp.loc[200, "connections"] == 2 and bp.loc[200, "process"] == "curl"
    assert bp.loc[100, "listening"] == "80" and bp.loc[100, "connections"] == 0
    assert bp.loc[0, "connections"] == 1


def test_empty():
    empty = history().iloc[:0]
    assert len(analysis.lifetimes(empty)) == 0
    assert len(analysis.churn(empty)) == 0
