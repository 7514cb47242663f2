"""Changes mode looks up owners only for rows it cannot carry over (issue 18, session 9).

``Differ.diff(carry=)`` copies each unchanged row's pid and process code from the previous
table;
the resolver (``PidResolver.begin_rows``) hands out the owners that exited or were renamed
and the sockets whose owner a re-check changed, whose rows must be looked up again;
``forget`` drops the entries of the sockets the diff found closed (the map follows the
table); a socket the refind path puts back is looked up at the next snapshot. The live
owner changes themselves, against ``ss``, are ``tests/test_changes_owners.py``.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

import numpy as np
import pytest

from tcpsnap._diff import Differ
from tcpsnap._events import EV_CHANGED
from tcpsnap._schema import ROW_DTYPE


def table(spec) -> np.ndarray:
    """Rows from (cookie, inode, pid) triples (port = cookie, ESTABLISHED)."""
    t = np.zeros(len(spec), ROW_DTYPE)
    for k, (ck, ino, pid) in enumerate(spec):
        t[k]["family"] = 2
        t[k]["state"] = 1
        t[k]["local_port"] = ck
        t[k]["cookie"] = ck
        t[k]["inode"] = ino
        t[k]["pid"] = pid
    return t


def carry_diff(d: Differ, truth: np.ndarray, codes: np.ndarray, kf: bool, dead=(), changed=()):
    """What changes mode does: the dump (pids unknown), ``diff(carry=)``, the rows it
    lists looked up (from ``truth``), ``fixup``. -> (ev_idx, ev_code, closed, need,
    pids carried, cur, cproc)."""
    cur = truth.copy()
    cur["pid"] = 7777                   # whatever the dump left there: carried or listed
    g = np.full(len(cur), -9, np.int32)
    _, _, closed, _, _ = d.diff(cur, g, kf, carry=(np.array(dead, np.uint32), np.array(changed, np.uint64)))
    need, pids, sino, sck = d.carried()
    need = need.copy()
    cur["pid"][need] = truth["pid"][need]
    g[need] = codes[need]
    ev, code = d.fixup()
    return ev.copy(), code.copy(), closed.copy(), need, pids.copy(), (sino.copy(), sck.copy()), cur, g


PREV = [(1, 11, 100), (2, 12, 100), (3, 13, 200), (4, 0, 0), (5, 15, 0), (6, 16, 300)]
CODES = [0, 0, 1, -1, -1, 2]


def primed():
    d = Differ()
    d.diff(table(PREV), np.array(CODES, np.int32), False)
    return d


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 3, 0, 4, 2, 1]])
def test_carry_copies_unchanged_owners_and_lists_the_rest(order):
    d = primed()
    truth = table([PREV[k] for k in order])
    codes = np.array([CODES[k] for k in order], np.int32)
    ev, code, closed, need, pids, stale, cur, g = carry_diff(d, truth, codes, False)
    assert need.tolist() == [order.index(4)]            # only the unresolved row (cookie 5)
    assert (cur["pid"] == truth["pid"]).all() and (g == codes).all()
    assert sorted(pids.tolist()) == [100, 200, 300]
    assert len(ev) == 0 and len(closed) == 0 and len(stale[0]) == 0
    assert d.in_place == (order == sorted(order))


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 3, 0, 4, 2, 1]])
def test_carry_lists_changed_owners_and_fixup_makes_their_events(order):
    d = primed()
    spec = list(PREV)
    spec[0] = (1, 11, 101)            # owner 100 exited: its rows go to 101 (cookie 1) ...
    spec[1] = (2, 12, 100)            # ... or stay (cookie 2: looked up, same owner)
    spec[2] = (3, 23, 200)            # another inode, same owner
    spec[5] = (6, 16, 301)            # socket 16 changed owner
    truth = table([spec[k] for k in order])
    codes = np.array([CODES[k] for k in order], np.int32)
    codes[order.index(0)] = 5
    ev, code, closed, need, pids, stale, cur, g = carry_diff(d, truth, codes, False, [100], [16])
    assert sorted(truth["cookie"][need].tolist()) == [1, 2, 3, 5, 6]
    assert pids.tolist() == []
    assert stale[0].tolist() == [13] and stale[1].tolist() == [3]
    got = dict(zip(truth["cookie"][ev].tolist(), code.tolist(), strict=True))
    assert got == {1: EV_CHANGED, 3: EV_CHANGED, 6: EV_CHANGED}
    assert list(ev) == sorted(ev)
    kept = d.rows
    assert (np.sort(kept["pid"]) == np.sort(truth["pid"])).all()
    assert (d.proc[np.argsort(kept["cookie"])] == codes[np.argsort(truth["cookie"])]).all()


def test_carry_needs_a_previous_table():
    d = Differ()
    with pytest.raises(RuntimeError):
        d.diff(table(PREV), np.zeros(6, np.int32), False, carry=((), ()))
    d = primed()
    with pytest.raises(ValueError):
        d.diff(table(PREV)[::-1], np.zeros(6, np.int32), False, carry=((), ()))
    with pytest.raises(RuntimeError):
        d.carried()
    with pytest.raises(RuntimeError):
        d.fixup()


def test_carry_diff_equals_the_diff_of_the_completed_table():
    """Random tables in sequence (mostly the last one again in order, with fields, owners
    and names changed, rows opened and closed, inodes changed, reordered, keyframes,
    rollbacks): the carry diff, with the owners that changed handed out as the resolver
    does, gives the events, closed rows and kept table of a plain diff of the table with
    every pid known."""
    rng = np.random.default_rng(18)
    a, b = Differ(), Differ()
    truth = table([(k + 1, 1000 + k, 100 + k % 7) for k in range(300)])
    truth["inode"][::17] = 0
    truth["pid"][truth["inode"] == 0] = 0
    truth["pid"][5::23] = 0                                        # unresolved
    names = {p: p % 5 for p in range(1000)}

    def codes_of(t):
        return np.array([names[p] if p else -1 for p in t["pid"].tolist()], np.int32)

    next_ck = 1000
    a.diff(truth.copy(), codes_of(truth), False)
    b.diff(truth.copy(), codes_of(truth), False)
    carried_seen = 0
    for step in range(300):
        t = truth.copy()
        dead, changed = [], []
        r = rng.random()
        if r < 0.3:                                  # an owner exits: its rows move
            p = int(rng.choice(t["pid"][t["pid"] != 0]))
            dead.append(p)
            t["pid"][t["pid"] == p] = p + 1 if rng.random() < 0.5 else p
        if rng.random() < 0.2:                       # a rename
            p = int(rng.choice(t["pid"][t["pid"] != 0]))
            names[p] += 1
            dead.append(p)
        if rng.random() < 0.3:                       # a re-checked link: another owner
            k = int(rng.integers(len(t)))
            if t["inode"][k]:
                changed.append(int(t["inode"][k]))
                t["pid"][k] = int(rng.integers(100, 110))
        if rng.random() < 0.3:                       # a queue moves
            t["rx_queue"][rng.integers(len(t))] += 1
        if rng.random() < 0.2:                       # a state
            t["state"][rng.integers(len(t))] = 4
        if rng.random() < 0.15:                      # another inode
            k = int(rng.integers(len(t)))
            t["inode"][k] += 50000
            t["pid"][k] = int(rng.integers(100, 110)) if rng.random() < 0.7 else 0
        if rng.random() < 0.1:                       # resolved by a walk
            z = np.flatnonzero((t["pid"] == 0) & (t["inode"] != 0))
            if len(z):
                t["pid"][z[0]] = 104
        if rng.random() < 0.15:                      # opened and closed
            new = table([(next_ck, 90000 + next_ck, int(rng.integers(0, 110)))])
            next_ck += 1
            t = np.concatenate([np.delete(t, int(rng.integers(len(t)))), new])
        if rng.random() < 0.1:
            t = t[rng.permutation(len(t))]
        t["pid"][t["inode"] == 0] = 0
        kf = rng.random() < 0.05
        codes = codes_of(t)
        ev, code, closed, need, pids, _, cur, g = carry_diff(a, t, codes, kf, dead, changed)
        ev2, code2, closed2, _, dup = b.diff(t.copy(), codes.copy(), kf)
        assert (cur["pid"] == t["pid"]).all() and (g == codes).all(), step
        assert ev.tolist() == ev2.tolist() and code.tolist() == code2.tolist(), step
        assert closed.tobytes() == closed2.tobytes(), step
        assert a.rows.tobytes() == b.rows.tobytes() and (a.proc == b.proc).all(), step
        carried = np.setdiff1d(np.arange(len(t)), need)
        assert set(pids.tolist()) <= set(t["pid"][carried].tolist()) | {0}
        assert set(t["pid"][carried].tolist()) - {0} <= set(pids.tolist())
        carried_seen += len(carried)
        if rng.random() < 0.1:                       # refind: undone, the table again
            a.rollback()
            b.rollback()
            assert a.rows.tobytes() == b.rows.tobytes() and (a.proc == b.proc).all(), step
            a.diff(t.copy(), codes.copy(), kf)
            b.diff(t.copy(), codes.copy(), kf)
        truth = t
    assert carried_seen > 200 * 250


def test_carry_many_owners():
    """More distinct owners than the pid set first holds (it grows)."""
    spec = [(k + 1, 1000 + k, 5000 + k) for k in range(3000)]
    d = Differ()
    d.diff(table(spec), np.arange(3000, dtype=np.int32), False)
    for _ in range(2):
        ev, code, closed, need, pids, _, cur, g = carry_diff(d, table(spec), np.arange(3000, dtype=np.int32), False)
        assert len(need) == 0 and len(ev) == 0
        assert sorted(pids.tolist()) == [5000 + k for k in range(3000)]
        assert (cur["pid"] == np.arange(5000, 8000)).all() and (g == np.arange(3000)).all()


# ---------------------------------------------------------------- live: the resolver's side

if not sys.platform.startswith("linux"):
    pytest.skip("Linux pid resolution", allow_module_level=True)

import tcpsnap  # noqa: E402
from _sockets import socket_inodes  # noqa: E402
from tcpsnap.record.changes import ChangeTracker  # noqa: E402
from test_changes_owners import Child  # noqa: E402


class Spy:
    """The tracker's resolver, recording what each ``begin_rows`` handed out."""

    def __init__(self, res):
        self.res = res
        self.plans: list = []

    def begin_rows(self):
        got = self.res.begin_rows()
        self.plans.append(None if got is None else (got[0].copy(), got[1].copy()))
        return got

    def __getattr__(self, name):
        return getattr(self.res, name)


class Live:
    """A background-resolving snapshotter and a tracker that carries owners (as the
    recorder sets them up), stepped by hand."""

    def __init__(self, feed=None, **knobs):
        self.snap = tcpsnap.Snapshotter(pids=True)
        self.snap.take()                     # the first walk, in place (the recorder's warm-up)
        self.res = self.snap.resolver
        self.res.background = True
        for k, v in knobs.items():
            setattr(self.res, k, v)
        self.tr = ChangeTracker(3600 * 10**9, feed=feed)
        self.tr.names_into = self.res.names_into
        assert self.tr.defer_pids(self.snap)
        self.spy = Spy(self.res)
        self.tr._res = self.spy
        self.rows = None

    def step(self, drop=None):
        rows = self.snap.take()
        if drop is not None:
            rows = rows[rows["cookie"] != drop]
        out = self.tr.step(rows, self.snap.process_names, time.time_ns(), time.monotonic_ns(), 0)
        self.rows = self.tr._differ.rows.copy()
        return out

    def until(self, cond, limit=20.0):
        end = time.monotonic() + limit
        while True:
            self.step()
            if cond():
                return
            assert time.monotonic() < end, "never happened"
            time.sleep(0.01)

    def pid_of(self, inode):
        r = self.rows[self.rows["inode"] == inode]
        return int(r["pid"][0]) if len(r) else None

    def close(self):
        self.snap.close()


def cookie_of(s: socket.socket) -> int:
    return struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, 57, 8))[0]


def inodes_of(rows, child) -> set[int]:
    """The child's TCP sockets in ``rows``, by inode (a live socket's inode is unique on
    the host; its port numbers are not: another socket may hold one of them)."""
    return socket_inodes(child.pid) & {int(i) for i in rows["inode"] if i}


def test_the_map_follows_the_table_over_churn():
    """Entries of closed sockets are dropped by the diff's closed rows (no row is looked
    at to keep the others): after every snapshot the map holds exactly the table's
    sockets, however many came and went."""
    live = Live()
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    held: list[socket.socket] = []
    try:
        live.step()
        ev0 = live.res.stats["evicted"]
        for _ in range(12):
            for s in held:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()                    # RST: gone at once, no TIME_WAIT row
            held = []
            for _ in range(30):
                c = socket.create_connection(lst.getsockname())
                held += [c, lst.accept()[0]]
            live.step()
            rows = live.rows
            assert live.res.stats["entries"] == len(set(rows["inode"][rows["inode"] != 0].tolist()))
        assert live.res.stats["evicted"] - ev0 >= 11 * 60
        # a take while a background walk is still out looks every row up (begin_rows gives
        # None): on a loaded machine every take above may have; once one is back, rows
        # are carried, and the map still follows the table
        live.until(lambda: live.res.rows_carried > 0)
        rows = live.rows
        assert live.res.stats["entries"] == len(set(rows["inode"][rows["inode"] != 0].tolist()))
    finally:
        for s in held + [lst]:
            s.close()
        live.close()


def test_an_exited_owner_is_handed_out_and_its_rows_looked_up_again():
    a = Child("tcpsnap-carrya")
    live = Live()
    try:
        a.pair()
        live.step()
        mine = inodes_of(live.rows, a)
        assert len(mine) == 3
        live.until(lambda: all(live.pid_of(i) == a.pid for i in mine))
        kid = a.fork("forkexit")
        a.p.wait(10)
        n = len(live.spy.plans)
        live.until(lambda: any(p is not None and a.pid in p[0].tolist() for p in live.spy.plans[n:]))
        # the rows are looked up, not carried: the exited owner is gone from them at once
        assert all(live.pid_of(i) in (0, kid) for i in mine)
        live.until(lambda: all(live.pid_of(i) == kid for i in mine))
    finally:
        live.close()
        a.close()


def test_a_rename_is_handed_out_and_named_anew():
    a = Child("tcpsnap-nm1")
    live = Live(name_ttl=0.05)
    try:
        a.pair()
        live.step()
        mine = inodes_of(live.rows, a)
        assert len(mine) == 3
        live.until(lambda: all(live.pid_of(i) == a.pid for i in mine))
        assert a.ask("name tcpsnap-nm2") == "ok"
        n = len(live.spy.plans)
        live.until(lambda: any(p is not None and a.pid in p[0].tolist() for p in live.spy.plans[n:]))
        code = live.tr._gcodes["tcpsnap-nm2"]
        at = np.isin(live.rows["inode"], list(mine))
        assert (live.tr._differ.proc[at] == code).all()
    finally:
        live.close()
        a.close()


def test_a_moved_link_is_handed_out_as_its_socket():
    """Fork then close: the re-check finds the first owner's link gone, the socket's
    inode is handed out, and its row gets the child."""
    a = Child("tcpsnap-mva")
    live = Live(verify_interval=0.1)
    try:
        a.pair()
        live.step()
        mine = inodes_of(live.rows, a)
        assert len(mine) == 3
        live.until(lambda: all(live.pid_of(i) == a.pid for i in mine))
        kid = a.fork("forkclose")
        n = len(live.spy.plans)
        live.until(lambda: any(p is not None and set(p[1].tolist()) & mine for p in live.spy.plans[n:]),
                   limit=40.0)
        live.until(lambda: all(live.pid_of(i) == kid for i in mine), limit=40.0)
    finally:
        live.close()
        a.close()


class AliveFeed:
    """A destroy feed with no reports whose kernel still holds ``cookie`` when asked."""

    drops = 0

    def __init__(self):
        self.cookie = 0
        self.row = None
        self.asked: list[int] = []

    def drain(self):
        return 0

    def probe(self, rows, by_cookie=True):
        # (other sockets of the machine that close are asked about too: gone)
        self.asked += rows["cookie"].tolist()
        found = (rows["cookie"] == self.cookie) & (self.row is not None)
        now = np.zeros(len(rows), ROW_DTYPE)
        if found.any():
            now[found] = self.row
        now["pid"] = 0                  # the kernel's lookup has no owner
        return found, now


def test_refind_rollback_keeps_the_owner_and_looks_it_up_next():
    """A dump that missed a live socket: the tracker rolls its diff back and diffs the
    table completed with the kernel's row (refind), whose owner is carried from the last
    table (no event, no close); that socket is looked up again at the next snapshot."""
    feed = AliveFeed()
    live = Live(feed=feed)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    try:
        ino = os.fstat(c.fileno()).st_ino
        feed.cookie = cookie_of(c)
        live.until(lambda: live.pid_of(ino) == os.getpid())
        feed.row = live.rows[live.rows["inode"] == ino][0]
        out, _, (events, _, _) = live.step(drop=feed.cookie)
        assert feed.cookie in feed.asked
        assert feed.cookie not in out["cookie"][1:].tolist()     # not closed, no event
        assert live.pid_of(ino) == os.getpid()
        assert live.res.owner(ino) is not None                     # its entry kept
        looked = live.res.rows_looked
        live.step()
        assert ino in live.spy.plans[-1][1].tolist()               # handed out again
        assert live.res.rows_looked > looked
        assert live.pid_of(ino) == os.getpid()
    finally:
        for x in (c, s, lst):
            x.close()
        live.close()
