"""``Differ.settle``, the quiet table's one call for ``carried`` + ``end_rows`` + ``fixup``
(``ChangeTracker.step`` with deferred pids), held to the general path: two Differs in
lockstep over churned tables, one settling where it can, the other always taking
``carried`` / ``fixup``; the same calls of ``end_rows``, the same events, the same kept
table, and ``settle`` declining exactly where something must be looked up."""

from __future__ import annotations

import numpy as np
import pytest

from tcpsnap._diff import Differ
from test_quiet_paths import table as quiet_table


def table(n: int, rng: np.random.Generator) -> np.ndarray:
    """``test_quiet_paths.table``'s rows, owned by three processes at random."""
    t = quiet_table(n)
    t["pid"] = rng.choice([100, 200, 300], n)
    return t


def churn(t: np.ndarray, rng: np.random.Generator, k: int) -> tuple[np.ndarray, list, list]:
    """The next table, and the (dead pids, changed inodes) a resolver would report."""
    t = t.copy()
    dead: list = []
    chg: list = []
    what = k % 7
    if what == 1:
        t["rx_queue"][rng.integers(0, len(t), 3)] += 1          # queues only: nothing to look up
    elif what == 2:
        t["inode"][rng.integers(0, len(t))] += 100000            # a stale inode
    elif what == 3:
        dead = [200]                                            # an owner exited
        t["pid"][t["pid"] == 200] = 400
    elif what == 4:
        i = int(rng.integers(0, len(t)))
        chg = [int(t["inode"][i])]                              # a socket changed hands
        t["pid"][i] = 500
    elif what == 5:
        new = t[-1:].copy()                                      # a new row: looked up
        new["cookie"] += 10**6
        new["inode"] += 10**6
        t = np.concatenate([t, new])
    elif what == 6:
        t = t[rng.permutation(len(t))]                           # another order: hashed
    return t, dead, chg


def run(n: int, seed: int, use_settle: bool, steps: int = 40) -> list:
    rng = np.random.default_rng(seed)
    d = Differ()
    t = table(n, rng)
    d.diff(t.copy(), (t["pid"] // 100).astype(np.int32), True)
    log: list = []
    for k in range(steps):
        t, dead, chg = churn(t, rng, k)
        codes = (t["pid"] // 100).astype(np.int32)
        cur = t.copy()
        cur["pid"] = 0
        g = np.zeros(len(cur), np.int32)
        d.diff(cur, g, k % 11 == 0, carry=(np.array(dead, np.uint32), np.array(chg, np.uint64)))
        calls: list = []

        def end_rows(rows, need, pids, _calls=calls, _cur=cur):
            assert rows is _cur
            _calls.append((np.asarray(need).tolist(), sorted(np.asarray(pids).tolist())))

        ev = d.settle(end_rows) if use_settle else None
        if ev is None:
            assert not calls
            need, pids, sti, stc = d.carried()
            end_rows(cur, need, pids)
            cur["pid"][need] = t["pid"][need]
            g[need] = codes[need]
            ev = d.fixup()
            log.append(("general", sti.tolist(), stc.tolist()))
        else:
            log.append(("settled",))
        ev_idx, ev_code = ev
        assert (cur["pid"] == t["pid"]).all() and (g == codes).all(), k
        log.append((calls, ev_idx.tolist(), ev_code.tolist(), d.rows.tobytes(), d.proc.tobytes()))
    return log


@pytest.mark.parametrize("n,seed", [(64, 1), (300, 2), (2000, 3)])
def test_settle_is_what_carried_end_rows_and_fixup_give(n, seed):
    got, want = run(n, seed, True), run(n, seed, False)
    assert len(got) == len(want)
    settled = 0
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        if a == ("settled",):
            settled += 1
            assert b[0] == "general" and b[1] == [] and b[2] == [], k   # no stale inode
            continue
        assert a == b, k
    assert settled >= 10          # the quiet steps (and queue-only ones) took the shortcut


def test_settle_declines_what_must_be_looked_up():
    rng = np.random.default_rng(9)
    d = Differ()
    t = table(100, rng)
    codes = (t["pid"] // 100).astype(np.int32)
    d.diff(t.copy(), codes.copy(), False)
    none = (np.zeros(0, np.uint32), np.zeros(0, np.uint64))
    for dead, chg in (([200], []), ([], [int(t["inode"][5])])):
        cur = t.copy()
        cur["pid"] = 0
        d.diff(cur, np.zeros(100, np.int32), False, carry=(np.array(dead, np.uint32), np.array(chg, np.uint64)))
        assert d.settle(lambda *a: pytest.fail("end_rows called")) is None
        need, _, _, _ = d.carried()
        assert len(need)
        cur["pid"][need] = t["pid"][need]
        d.fixup()
    cur = t.copy()
    cur["pid"] = 0
    d.diff(cur, np.zeros(100, np.int32), False, carry=none)

    def boom(*a):
        raise OSError("resolver failed")

    with pytest.raises(OSError):
        d.settle(boom)
    ev, code = d.fixup()              # still waiting after end_rows failed, as after carried()
    assert ev.tolist() == [] and code.tolist() == []
    with pytest.raises(RuntimeError):
        d.settle(boom)


def model_need(prev: np.ndarray, cur: np.ndarray, dead: set, chg: set) -> list[int]:
    """The rows a carry diff in place must list for a lookup (``_diffrow.carry_one``'s rule,
    written out): another inode, no owner yet, an owner dead or a socket changed hands."""
    need = []
    for k in range(len(cur)):
        p, c = prev[k], cur[k]
        if c["inode"] == 0 and p["inode"] == 0:
            continue
        if (p["inode"] != c["inode"] or p["pid"] == 0 or int(p["pid"]) in dead
                or int(c["inode"]) in chg):
            need.append(k)
    return need


@pytest.mark.parametrize("seed", range(6))
def test_carry_in_place_lists_what_the_rule_says(seed):
    """Every row kind beside every other, in runs and alone (the common row's shortcut,
    ``carry_same``, takes a row only where the rule lists nothing): rows with no owner
    yet (pid 0, also where the pid set's last pids are 0), TIME_WAIT rows (no inode),
    changed inodes, owners alternating, dead owners and changed sockets, and cookie-less
    rows; the carried pids and codes, and the pid set, as the rule gives them."""
    rng = np.random.default_rng(seed)
    n = 700
    prev = table(n, rng)
    owners = [100, 200, 300][:1 + seed // 2]        # one owner (the recorder's benchmark), two, three
    prev["pid"] = rng.choice(owners, n)
    prev["pid"][rng.random(n) < 0.1] = 0                       # unresolved owners
    tw = rng.random(n) < 0.05
    prev["inode"][tw] = 0                                     # TIME_WAIT: no inode, no owner
    prev["pid"][tw] = 0
    if seed % 2:
        prev["cookie"][rng.random(n) < 0.05] = 0              # cookie-less rows
    codes = np.where(prev["pid"] == 0, -1, prev["pid"] // 100).astype(np.int32)
    d = Differ()
    d.diff(prev.copy(), codes.copy(), False)
    cur = prev.copy()
    cur["pid"] = 0
    moved = rng.random(n) < 0.03
    cur["inode"][moved & (cur["inode"] != 0)] += 10**6          # another socket, same cookie
    dead = {owners[-1]} if seed % 3 == 1 else set()
    chg = {int(cur["inode"][5])} if seed % 3 == 2 and cur["inode"][5] else set()
    g = np.zeros(n, np.int32)
    d.diff(cur, g, False, carry=(np.array(sorted(dead), np.uint32), np.array(sorted(chg), np.uint64)))
    assert d.in_place
    need, pids, _, _ = d.carried()
    assert need.tolist() == model_need(prev, cur, dead, chg)
    both0 = (prev["inode"] == 0) & (cur["inode"] == 0)
    want_pid = np.where(both0, 0, prev["pid"])
    want_code = np.where(both0, -1, codes)
    assert (cur["pid"] == want_pid).all() and (g == want_code).all()
    listed = np.zeros(n, bool)
    listed[need] = True
    carried = {int(p) for p in prev["pid"][~listed & ~both0]}
    assert sorted(pids.tolist()) == sorted(carried)
    d.fixup()
