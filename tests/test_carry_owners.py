"""Changes mode looks up owners only for rows it cannot carry over (issue 18, session 9).

``Differ.carry`` copies each unchanged row's pid and process code from the previous table;
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


def primed(spec, codes):
    d = Differ()
    d.diff(table(spec), np.array(codes, np.int32), False)
    return d


PREV = [(1, 11, 100), (2, 12, 100), (3, 13, 200), (4, 0, 0), (5, 15, 0), (6, 16, 300)]
CODES = [0, 0, 1, -1, -1, 2]


def fresh(spec):
    """``spec`` as a new dump gives it: no pids yet."""
    t = table(spec)
    t["pid"] = 7777          # whatever the dump left there: carry must overwrite or list it
    return t


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 3, 0, 4, 2, 1]])
def test_carry_copies_unchanged_owners_and_lists_the_rest(order):
    d = primed(PREV, CODES)
    cur = fresh([PREV[k] for k in order])
    g = np.full(len(cur), -9, np.int32)
    need, pids, sino, sck = d.carry(cur, g)
    want_need = [j for j, k in enumerate(order) if PREV[k][2] == 0 and PREV[k][1] != 0]
    assert need.tolist() == want_need                      # only the unresolved row (cookie 5)
    for j, k in enumerate(order):
        if j in want_need:
            continue
        assert cur[j]["pid"] == PREV[k][2] and g[j] == CODES[k], (j, k)
    assert sorted(pids.tolist()) == [100, 200, 300]
    assert len(sino) == len(sck) == 0
    # the diff then sees nothing changed: carrying made no event
    cur["pid"][need] = 0
    g[need] = -1
    ev, code, closed, _, _ = d.diff(cur, g, False)
    assert len(ev) == 0 and len(closed) == 0


def test_carry_lists_dead_owners_changed_sockets_and_new_rows():
    d = primed(PREV, CODES)
    spec = [p for p in PREV] + [(7, 17, 0)]                # cookie 7: new
    spec[2] = (3, 23, 200)                                 # cookie 3: another inode now
    cur = fresh(spec)
    g = np.zeros(len(cur), np.int32)
    need, pids, sino, sck = d.carry(cur, g, np.array([100], np.uint32), np.array([16], np.uint64))
    # rows of the dead owner 100 (cookies 1, 2), the changed socket 16 (cookie 6), the one
    # whose inode changed (3), the unresolved (5) and the new (7)
    assert need.tolist() == [0, 1, 2, 4, 5, 6]
    assert cur[3]["pid"] == 0 and g[3] == -1                # inode 0: no owner, no name
    assert pids.tolist() == []
    assert sino.tolist() == [13] and sck.tolist() == [3]    # the old inode's entry: no row's


def test_carry_needs_a_diffed_table():
    d = Differ()
    cur = fresh(PREV)
    assert d.carry(cur, np.zeros(len(cur), np.int32)) is None           # nothing diffed yet
    d = primed(PREV, CODES)
    d.diff(table(PREV), np.array(CODES, np.int32), False)
    d.rollback()                                                         # slots not valid
    assert d.carry(cur, np.zeros(len(cur), np.int32)) is None
    d.diff(table(PREV), np.array(CODES, np.int32), False)
    assert d.carry(cur, np.zeros(len(cur), np.int32)) is not None
    with pytest.raises(ValueError):
        d.carry(cur, np.zeros(len(cur) + 1, np.int32))
    with pytest.raises(ValueError):
        d.carry(cur[::2], np.zeros(3, np.int32))
    with pytest.raises(TypeError):
        d.carry(list(cur), np.zeros(len(cur), np.int32))


def test_carry_many_owners():
    """More distinct owners than the pid set first holds (it grows)."""
    spec = [(k + 1, 1000 + k, 5000 + k) for k in range(3000)]
    d = primed(spec, list(range(3000)))
    cur = fresh(spec)
    g = np.zeros(len(cur), np.int32)
    need, pids, _, _ = d.carry(cur, g)
    assert len(need) == 0
    assert sorted(pids.tolist()) == [5000 + k for k in range(3000)]
    assert (cur["pid"] == np.arange(5000, 8000)).all() and (g == np.arange(3000)).all()


# ---------------------------------------------------------------- live: the resolver's side

if not sys.platform.startswith("linux"):
    pytest.skip("Linux pid resolution", allow_module_level=True)

import tcpsnap  # noqa: E402
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


def inodes_on(rows, ports) -> set[int]:
    m = np.isin(rows["local_port"], list(ports)) | np.isin(rows["remote_port"], list(ports))
    return {int(i) for i in rows["inode"][m] if i}


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
        assert live.res.rows_carried > 0
    finally:
        for s in held + [lst]:
            s.close()
        live.close()


def test_an_exited_owner_is_handed_out_and_its_rows_looked_up_again():
    a = Child("tcpsnap-carrya")
    live = Live()
    try:
        ports = set(a.pair())
        live.step()
        mine = inodes_on(live.rows, ports)
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
        ports = set(a.pair())
        live.step()
        mine = inodes_on(live.rows, ports)
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
        ports = set(a.pair())
        live.step()
        mine = inodes_on(live.rows, ports)
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
