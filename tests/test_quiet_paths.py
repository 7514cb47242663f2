"""The quiet snapshot's compiled calls take shortcuts that make no numpy call (issue 18: at a
snapshot a second each numpy call costs microseconds with cold caches): ``Differ`` keeps its
own buffers' data pointers and hands out the same empty results and the same carried-pids
array while nothing changes; ``PidResolver.end_rows`` / ``forget`` read arrays of the
expected dtype through the buffer and convert anything else. Each shortcut is held here to
the general path: the same results whatever form the arguments take, and whatever changed
between two calls."""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

import numpy as np
import pytest

from tcpsnap._diff import Differ
from tcpsnap._events import EV_QUEUES
from tcpsnap._schema import ROW_DTYPE


def table(n: int, pid0: int = 100) -> np.ndarray:
    t = np.zeros(n, ROW_DTYPE)
    t["family"] = 2
    t["state"] = 1
    t["local_port"] = np.arange(n) % 60000
    t["cookie"] = np.arange(1, n + 1)
    t["inode"] = np.arange(1000, 1000 + n)
    t["pid"] = pid0 + np.arange(n) % 2 * 100            # two owners, alternating
    return t


def carry(d: Differ, truth: np.ndarray, codes: np.ndarray, dead=()):
    """A carry diff of ``truth`` (pids unknown), the listed rows looked up, its fixup:
    (events, codes, carried pids as a sorted list)."""
    cur = truth.copy()
    cur["pid"] = 0
    g = np.empty(len(cur), np.int32)
    d.diff(cur, g, False, carry=(np.array(dead, np.uint32), np.zeros(0, np.uint64)))
    need, pids, _, _ = d.carried()
    cur["pid"][need] = truth["pid"][need]
    g[need] = codes[need]
    ev, code = d.fixup()
    assert (cur["pid"] == truth["pid"]).all() and (g == codes).all()
    return ev.tolist(), code.tolist(), sorted(pids.tolist())


def test_carried_pids_follow_the_owners_when_their_number_stays():
    """carried() hands out its last pids array again only while the set is the same: an
    owner replaced by another (as many owners as before) gives the new set."""
    d = Differ()
    t = table(64)
    codes = (t["pid"] // 100).astype(np.int32)
    d.diff(t.copy(), codes, False)
    assert carry(d, t, codes) == ([], [], [100, 200])
    assert carry(d, t, codes) == ([], [], [100, 200])           # the same set again
    t2 = t.copy()
    t2["pid"][t2["pid"] == 200] = 300                             # 200 exited, 300 has them
    codes2 = (t2["pid"] // 100).astype(np.int32)
    ev, code, pids = carry(d, t2, codes2, dead=[200])
    assert pids == [100] and len(ev) == 32                       # its rows: looked up, changed
    assert carry(d, t2, codes2) == ([], [], [100, 300])           # as many owners, others
    assert carry(d, t2, codes2) == ([], [], [100, 300])


def test_a_plain_diff_takes_any_strides_and_read_only_arrays():
    """cur and cproc as strided or read-only views give what contiguous copies give, in
    place and through the hash (the shortcut reads only C-contiguous data)."""
    base = table(400)
    a, b = Differ(), Differ()
    rng = np.random.default_rng(5)
    for step in range(12):
        t = base.copy()
        t["rx_queue"][rng.integers(0, 400, 5)] += step + 1
        if step in (4, 9):
            t = t[rng.permutation(400)]                             # another order: hashed
        codes = (t["pid"] // 100).astype(np.int32)
        wide = np.zeros(2 * len(t), ROW_DTYPE)
        wide[::2] = t
        wcodes = np.zeros(2 * len(t), np.int32)
        wcodes[::2] = codes
        ro = codes.copy()
        ro.flags.writeable = False
        got = a.diff(wide[::2], wcodes[::2] if step % 2 else ro, step == 7)
        want = b.diff(t.copy(), codes.copy(), step == 7)
        assert [x.tolist() for x in got[:2]] == [x.tolist() for x in want[:2]], step
        assert got[2].tobytes() == want[2].tobytes() and got[4] == want[4], step
        assert a.rows.tobytes() == b.rows.tobytes() and a.in_place == b.in_place, step


def test_diffs_in_place_after_the_buffers_grew():
    """The data pointers a Differ keeps follow its buffers when a larger table (or the
    hash diff) replaces them: the diffs in place after each are exact."""
    d = Differ()
    for n in (10, 10, 300, 300, 5000, 5000, 20, 20):
        t = table(n)
        codes = np.zeros(n, np.int32)
        d.diff(t.copy(), codes, False)
        t["rx_queue"][n // 2] = 7
        ev, code, closed, _, dup = d.diff(t.copy(), codes, False)
        assert d.in_place and ev.tolist() == [n // 2] and code.tolist() == [EV_QUEUES], n
        assert len(closed) == 0 and not dup
        assert d.rows.tobytes() == t.tobytes(), n
        ev, code, _, _, _ = d.diff(t.copy(), codes, False)
        assert ev.tolist() == [] and code.tolist() == [], n
        ev, code = carry(d, t, codes)[:2]
        assert ev == [] and code == [], n


def test_the_empty_results_are_empty_and_of_their_dtypes():
    d = Differ()
    t = table(50)
    d.diff(t.copy(), np.zeros(50, np.int32), False)
    for _ in range(3):
        ev, code, closed, cproc, dup = d.diff(t.copy(), np.zeros(50, np.int32), False)
        assert (ev.dtype, code.dtype, len(ev), len(code)) == (np.int64, np.uint8, 0, 0)
        assert (closed.dtype, cproc.dtype, len(closed), len(cproc), dup) == (ROW_DTYPE, np.int32, 0, 0, False)


# ---------------------------------------------------------------- the resolver (Linux)

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux resolver")


def _cookie(s: socket.socket) -> int:
    return struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, 57, 8))[0]


@pytest.fixture
def deferred():
    """A background resolver whose snapshotter leaves the pids (as changes mode sets it),
    and a loopback connection of this process's."""
    import tcpsnap

    snap = tcpsnap.Snapshotter(pids=True)
    snap.take()                                    # the first walk, in place
    res = snap.resolver
    res.background = True
    assert snap.defer_pids() is res
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    c = socket.create_connection(lst.getsockname())
    s = lst.accept()[0]
    try:
        yield snap, res, [lst, c, s]
    finally:
        for x in (lst, c, s):
            x.close()
        snap.close()


def _mine(rows: np.ndarray, socks) -> np.ndarray:
    return np.flatnonzero(np.isin(rows["cookie"], [_cookie(x) for x in socks]))


@linux
@pytest.mark.parametrize("form", ["array", "list", "int32", "strided"])
def test_end_rows_takes_need_and_carried_in_any_form(deferred, form):
    """end_rows fills the listed rows' pids alike whatever form need and carried take."""
    snap, res, socks = deferred

    def as_form(a, dtype):
        a = np.asarray(a, dtype)
        if form == "list":
            return a.tolist()
        if form == "int32":
            return a.astype(np.int32)
        if form == "strided":
            w = np.zeros(2 * len(a), dtype)
            w[::2] = a
            return w[::2]
        return a

    end = time.monotonic() + 20
    while True:                                    # until a background walk has found them
        rows = snap.take()
        res.begin_rows()
        k = _mine(rows, socks)
        res.end_rows(rows, as_form(k, np.int64), as_form([os.getpid()], np.uint32))
        res.forget(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        if len(k) == 3 and (rows["pid"][k] == os.getpid()).all():
            break
        assert time.monotonic() < end, "never resolved"
        time.sleep(0.05)


@linux
@pytest.mark.parametrize("form", ["array", "list", "bigendian", "strided"])
def test_forget_takes_inodes_and_cookies_in_any_form(deferred, form):
    """forget drops the entries named, whatever form its arrays take; checks its arguments
    as before."""
    snap, res, socks = deferred
    rows = snap.take()
    end = time.monotonic() + 20
    while True:                                    # until a background walk has found them
        res.begin_rows()
        res.end_rows(rows)                        # every row looked up: the map holds them
        res.forget(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
        k = _mine(rows, socks)[:1]
        if len(k) and res.owner(int(rows["inode"][k][0])) is not None:
            break
        assert time.monotonic() < end, "never resolved"
        time.sleep(0.05)
        rows = snap.take()
    ino, ck = rows["inode"][k], rows["cookie"][k]
    if form == "list":
        ino, ck = ino.tolist(), ck.tolist()
    elif form == "bigendian":
        ino, ck = ino.astype(">u8"), ck.astype(">u8")
    elif form == "strided":
        ino = np.repeat(ino, 2)[::2]
        ck = np.repeat(ck, 2)[::2]
    before = res.stats["entries"]
    res.forget(ino, ck)
    assert res.owner(int(rows["inode"][k][0])) is None and res.stats["entries"] == before - 1
    with pytest.raises(ValueError, match="differ in length"):
        res.forget(np.zeros(2, np.uint64), np.zeros(1, np.uint64))
    with pytest.raises(ValueError):
        res.forget(np.zeros((2, 2), np.uint64), np.zeros((2, 2), np.uint64))
