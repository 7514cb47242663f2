"""Namespaces at their own rate: when a pass over every namespace costs more than the
budget (half the snapshot interval), each snapshot dumps our own namespace and, in turn,
as many others as the budget pays for (``tcpsnap.netns.Rate``); the rows of the others
are carried from their last dump (``record.capture.Carry``), so a reader never sees a
connection end that was just not looked at.

Scripted costs first (no privilege), then real ``ip netns`` namespaces recorded with a
budget that pays for one other namespace per snapshot, full and changes mode, read back
with ``tcpsnap.read`` and ``analysis.lifetimes``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tcpsnap
from _sockets import more_snapshots
from tcpsnap._schema import ROW_DTYPE
from tcpsnap.netns import Rate
from tcpsnap.record.capture import Carry

OWN = 1000


def _targets(n: int) -> list[tuple[int, int]]:
    return [(OWN, 3)] + [(OWN + i, 3 + i) for i in range(1, n)]


def test_rate_dumps_every_namespace_until_a_pass_overruns_its_budget():
    r = Rate(OWN)
    t = _targets(11)
    assert r.pick(t) == t and not r.partial            # nothing measured: all
    r.observe(11 * 1_000_000)                          # 1 ms per namespace
    r.budget_ns = 20_000_000
    r.warm = True
    assert r.pick(t) == t and not r.partial            # 11 ms < 20 ms: all


def test_rate_walks_the_others_in_turn_within_the_budget():
    r = Rate(OWN)
    t = _targets(11)                                   # own + 10 others
    r.pick(t)
    r.observe(11 * 1_000_000)                          # 1 ms each
    r.budget_ns = 4_000_000                            # pays for 4: own + 3 others
    assert r.pick(t) == t                              # not warm: Carry keeps nothing yet
    r.warm = True
    seen: list[list[int]] = []
    for _ in range(10):
        sel = r.pick(t)
        assert r.partial and sel[0] == (OWN, 3) and len(sel) == 4
        seen.append([ino for ino, _ in sel[1:]])
    # in turn: 1-3, 4-6, 7-9, 10 1 2, ... each other namespace every ceil(10 / 3) = 4 picks
    assert seen[:4] == [[1001, 1002, 1003], [1004, 1005, 1006], [1007, 1008, 1009], [1001, 1002, 1010]]
    for ino in range(1001, 1011):
        at = [k for k, s in enumerate(seen) if ino in s]
        assert at[0] <= 3 and max(np.diff(at)) <= 4
    assert r.passes == 10


def _rows(netns: int, cookies: list[int]) -> np.ndarray:
    a = np.zeros(len(cookies), ROW_DTYPE)
    a["family"], a["state"], a["netns"], a["cookie"], a["cgroup_id"] = 4, 5, netns, cookies, 77
    return a


def test_carry_completes_a_partial_pass_with_the_last_rows_of_the_others():
    r = Rate(OWN)
    r.budget_ns = 2_000_000
    c = Carry(r)
    t = _targets(4)                     # own, 1001, 1002, 1003
    full = np.concatenate([_rows(OWN, [1]), _rows(1001, [11, 12]), _rows(1002, [21]), _rows(1003, [31])])
    r.pick(t)
    out = c.complete(full, 4_000_000)   # 1 ms each: a pass (4 ms) is over the budget (2 ms)
    assert np.array_equal(out, full) and r.warm and c.carried == frozenset()
    sel = r.pick(t)
    assert r.partial and [ino for ino, _ in sel] == [OWN, 1001]
    # 1001's 12 closed meanwhile and 11 went to TIME_WAIT (no cgroup of its own: it takes its
    # connection's from 1001's last dump, as the dumper does from the dump before); 1002 and
    # 1003 not looked at: carried as last dumped
    tw = _rows(1001, [11])
    tw["state"], tw["cgroup_id"] = 11, 0
    out = c.complete(np.concatenate([_rows(OWN, [1]), tw]), 2_000_000)
    assert sorted(out["cookie"].tolist()) == [1, 11, 21, 31]
    assert out[out["cookie"] == 11]["cgroup_id"].tolist() == [77]
    assert c.carried == {1002, 1003} and c.rows_carried == 2
    sel = r.pick(t)
    assert [ino for ino, _ in sel] == [OWN, 1002]
    # 1002 dumped and empty now: its connection ended there; 1001 carried without 12
    out = c.complete(_rows(OWN, [1]), 2_000_000)
    assert sorted(out["cookie"].tolist()) == [1, 11, 31]
    # a namespace gone (no longer a target): its rows go with it
    r.pick(_targets(3))
    out = c.complete(_rows(OWN, [1]), 2_000_000)
    assert 1003 not in c.last and 31 not in out["cookie"].tolist()


def test_carry_keeps_each_rows_tcp_info_with_its_row_and_carried_rows_null():
    """Internals (``Snapshotter.tcp_info``, row i's) follow the dump's rows through the
    carry's reordering; a carried row was not looked at, so its internals are null
    (``tcp_info_len`` 0), never its last dump's sample; full mode's marker rows too."""
    from tcpsnap._schema import TCP_INFO_DTYPE

    def info_for(rows):
        i = np.zeros(len(rows), TCP_INFO_DTYPE)
        i["tcp_info_len"], i["bytes_acked"] = 280, rows["cookie"] * 10
        return i

    r = Rate(OWN)
    r.budget_ns = 2_000_000
    c = Carry(r)
    t = _targets(3)
    r.pick(t)
    full = np.concatenate([_rows(OWN, [1]), _rows(1001, [11, 12]), _rows(1002, [21])])
    out = c.complete(full, 3_000_000)
    assert np.array_equal(c.align(info_for(full))["bytes_acked"], out["cookie"] * 10)
    r.pick(t)
    # a dump whose namespaces are interleaved (sorted by the carry), 1002 left out
    dump = np.concatenate([_rows(1001, [11]), _rows(OWN, [1]), _rows(1001, [12])])
    out = c.complete(dump, 2_000_000)
    info = c.align(info_for(dump))
    assert c.carried == {1002} and len(info) == len(out) == 4
    dumped = out["netns"] != 1002
    assert np.array_equal(info["bytes_acked"][dumped], out["cookie"][dumped] * 10)
    assert info["tcp_info_len"][~dumped].tolist() == [0]
    assert info["tcp_info_len"][dumped].tolist() == [280, 280, 280]


# ---------------------------------------------------------------- live namespaces

from test_netns_all import CAN, Ns  # noqa: E402


@pytest.fixture
def three():
    if not CAN:
        pytest.skip("needs root, ip netns, ss and nsenter (iproute2, util-linux)")
    made: list[Ns] = []
    try:
        made += [Ns("ip"), Ns("ip"), Ns("ip")]
        yield made
    finally:
        for n in made:
            n.close()


class Logged:
    """A Snapshotter whose every take() notes which namespaces it dumped (the test's
    evidence of what was looked at, kept outside the recording)."""

    def __init__(self, snap) -> None:
        self.snap = snap
        self.pids = False
        self.namespaces = snap.namespaces
        self.dumped: list[set[int]] = []
        self.left_out: list[set[int]] = []

    def take(self):
        rows = self.snap.take()
        rate = self.namespaces.rate
        self.dumped.append(set(rate.dumped))
        self.left_out.append(set(rate.present) - set(rate.dumped))
        return rows

    def process_names(self, pids):
        return self.snap.process_names(pids)


@pytest.mark.parametrize("mode", ["full", "changes"])
def test_a_namespace_not_dumped_in_a_snapshot_keeps_its_connections_there(three, tmp_path, mode):
    """Budget for one other namespace per snapshot (three others: each dumped every third
    snapshot). Then one child closes a connection (client first: its client end goes to
    TIME_WAIT, its server end goes): the recording changes that namespace's rows only at
    a snapshot that dumped it, and in between shows them as last dumped."""
    rec = tmp_path / "rec"
    with tcpsnap.Snapshotter(netns=[n.path for n in three] + ["/proc/self/ns/net"]) as snap:
        src = Logged(snap)
        rate = snap.namespaces.rate
        r = tcpsnap.Recorder(rec, snapshotter=src, mode=mode, interval="100ms", destroy=mode == "changes")
        r.open()
        rate.budget_ns = 1          # set after open(): a budget that pays for the minimum
        rate.cost_ns = 1.0
        t = threading.Thread(target=r.run)
        t.start()
        try:
            more_snapshots(r, 15)      # counted, not slept: a loaded machine takes fewer
            a = three[0]
            a.child.stdin.write("close\n")
            a.child.stdin.flush()
            assert a.child.stdout.readline().strip() == "closed"
            more_snapshots(r, 15)
        finally:
            r.stop()
            t.join()
            r.close()
    df = tcpsnap.read(rec)
    seqs = sorted(df.seq.unique())
    first = int(seqs[0])
    assert rate.passes > 10
    assert r.stats["netns_partial"] == rate.passes and r.stats["netns_rows_carried"] > 0
    dumped = src.dumped[1:]            # the first take() was open()'s warm-up, not recorded
    assert len(dumped) >= len(seqs)
    own = rate.own
    for n in three:
        mine = df[df.netns == n.ino]
        by_seq = {int(s): frozenset(g.cookie.tolist()) for s, g in mine.groupby("seq")}
        at = sorted(by_seq)
        # from its first dump on, in every snapshot: never a gap that reads as closed
        assert at == [s for s in seqs if s >= at[0]], n.name
        looked = [s for s in at if n.ino in dumped[s - first]]
        assert 0 < len(looked) < len(at)          # left out of some snapshots
        for s0, s1 in zip(at, at[1:], strict=False):
            if n.ino not in dumped[s1 - first]:
                assert by_seq[s1] == by_seq[s0], (n.name, s1)   # carried, unchanged
        assert all(own in d for d in dumped)
    # the connection a closed: its server end gone, at a snapshot that dumped a
    a = three[0]
    mine = df[df.netns == a.ino]
    last = mine[mine.seq == mine.seq.max()]
    assert "TIME_WAIT" in set(last.state)
    gone = set(mine[mine.seq == mine.seq.min()].cookie) - set(last.cookie)
    assert len(gone) == 1
    (ck,) = gone
    end = int(mine[mine.cookie == ck].seq.max()) + 1        # the first snapshot without it
    assert a.ino in dumped[end - first]
    life = tcpsnap.analysis.lifetimes(df[df.netns.isin([n.ino for n in three])])
    assert life.cookie.is_unique and len(life) == len(set(df[df.netns.isin([n.ino for n in three])].cookie))
    # every connection of the three namespaces but the one that ended is open at the end
    assert set(life[~life.open_at_end].cookie) == {ck}
    # which namespaces each snapshot left out, as the recording says it: full mode, one row
    # of kind "snapshot" per namespace (family 0, its netns, inode 0); changes mode, none
    import pyarrow.dataset as ds

    raw = ds.dataset(rec, format="parquet", partitioning="hive").to_table(
        columns=["seq", "kind", "family", "netns", "inode"]).to_pandas()
    marks = raw[(raw.family == 0) & (raw.netns != 0)]
    assert set(marks.kind) <= {"snapshot"} and not marks.inode.any()
    said = {int(q): set(g.netns.tolist()) for q, g in marks.groupby("seq")}
    if mode == "full":
        want = {q: src.left_out[1 + q - first] for q in seqs if src.left_out[1 + q - first]}
        assert said == want and len(want) > 10
        snaps = tcpsnap.snapshots(rec)          # the markers count no connection
        assert snaps.connections.tolist() == [len(df[df.seq == q]) for q in snaps.seq]
    else:
        assert said == {}
    if mode == "changes":
        ev = tcpsnap.read(rec, mode="changes")
        closed = ev[(ev.event == "closed") & ev.seen_in_snapshot & (ev.netns != 0)]
        for s, ino in zip(closed.seq, closed.netns, strict=True):
            assert int(ino) in dumped[int(s) - first] or int(ino) == own
