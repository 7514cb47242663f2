"""The compiled diff (``tcpsnap._diff.Differ``) against a plain-Python model of what it
promises: random sequences of tables -- mostly the previous one again in the same order,
with fields, process codes and tcp_info bytes changed in place (the diff made in place),
else reordered, grown, shrunk or with an identity repeated (the hash diff) -- keyframes,
rollbacks and resets; every result, the kept table and every lookup equal the model's."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcpsnap._diff import Differ
from tcpsnap._events import EV_CHANGED, EV_COUNTERS, EV_KEYFRAME, EV_OPENED, EV_QUEUES, EV_STATE
from tcpsnap._schema import ROW_DTYPE

INFO_MASK = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.uint8)     # the last 4 bytes: "timers"
Q = slice(56, 64)                                             # rx_queue, tx_queue


def _ident(r: bytes):
    cookie = int.from_bytes(r[72:80], "little")
    return ("c", cookie) if cookie else ("t", r[0], r[4:48])


class Model:
    """What Differ promises, in Python (``tcpsnap._diff``'s docstring and ``diff``'s)."""

    def __init__(self):
        self.prev, self.proc, self.info = [], [], None
        self.primed = False
        self.undo = None
        self.valid = False

    def diff(self, cur: list[bytes], cproc: list[int], keyframe: bool, info: list[bytes] | None):
        kf = keyframe or not self.primed
        index: dict = {}
        dup = False
        for j, r in enumerate(cur):
            if _ident(r) in index:
                dup = True
            else:
                index[_ident(r)] = j
        with_info = info is not None and self.info is not None and cur and self.prev
        matched = [0] * len(cur)
        closed = []
        for i, p in enumerate(self.prev):
            j = index.get(_ident(p))
            if j is None:
                closed.append(i)
                continue
            if matched[j]:
                dup = True
                continue
            c = cur[j]
            if c[1] != p[1]:
                m = EV_STATE
            elif c != p or cproc[j] != self.proc[i]:
                queues_only = (cproc[j] == self.proc[i] and _ident(c)[0] == "c"
                               and c[:Q.start] == p[:Q.start] and c[Q.stop:] == p[Q.stop:])
                m = (EV_COUNTERS if with_info else EV_QUEUES) if queues_only else EV_CHANGED
            elif with_info and any(a != b for a, b, k in zip(info[j], self.info[i], INFO_MASK, strict=True) if k):
                m = EV_COUNTERS
            else:
                m = 1
            matched[j] = m
        kf = kf or dup
        ev = []
        for j, m in enumerate(matched):
            if m == 0:
                ev.append((j, EV_OPENED))
            elif m == 1:
                if kf:
                    ev.append((j, EV_KEYFRAME))
            elif m in (EV_QUEUES, EV_COUNTERS) and kf:
                ev.append((j, EV_CHANGED))
            else:
                ev.append((j, m))
        if not self.primed:
            ev = [(j, EV_KEYFRAME) for j, _ in ev]
        out = (ev, [self.prev[i] for i in closed], [self.proc[i] for i in closed],
               None if self.info is None else [self.info[i] for i in closed], dup)
        self.undo = (self.prev, self.proc, self.info, self.primed)
        self.prev, self.proc, self.info, self.primed = list(cur), list(cproc), info, True
        self.valid = True
        return out

    def rollback(self):
        if self.undo is None:
            raise RuntimeError
        self.prev, self.proc, self.info, self.primed = self.undo
        self.undo = None
        self.valid = False

    def reset(self):
        self.prev, self.proc, self.primed, self.undo, self.valid = [], [], False, None, False
        self.info = None if self.info is None else []

    def lookup(self, cookie: int) -> int:
        if not self.valid and self.prev:
            raise RuntimeError
        for j, r in enumerate(self.prev):
            if cookie and _ident(r) == ("c", cookie):
                return j
        return -1


def _conn(c: int, cookieless: bool, family: int) -> np.ndarray:
    r = np.zeros(1, ROW_DTYPE)
    r["family"], r["state"] = family, 5
    r["local_port"], r["remote_port"] = 1000 + c, 443
    r["local_addr"][0][:4] = [10, 0, 0, 1]
    r["remote_addr"][0][:4] = [10, 0, 0, 2]
    r["cookie"] = 0 if cookieless else 7000 + c
    r["inode"] = 100 + c
    return r


FIELDS = ("state", "rx_queue", "tx_queue", "pid", "uid", "inode", "netns", "local_addr", "proc", "info")


@st.composite
def sequences(draw):
    m = draw(st.integers(1, 6))
    conns = [_conn(c, draw(st.booleans()), draw(st.sampled_from([4, 6]))) for c in range(m)]
    ops = []
    rows = proc = info = None
    for _ in range(draw(st.integers(1, 14))):
        what = draw(st.sampled_from(["same", "same", "same", "change", "change", "change", "other",
                                     "dup", "rollback", "reset"]))
        if rows is None or what == "other":
            ids = draw(st.lists(st.integers(0, m - 1), unique=True, max_size=m))
            rows = np.concatenate([conns[i] for i in ids]) if ids else np.zeros(0, ROW_DTYPE)
            proc = np.array(draw(st.lists(st.integers(-1, 3), min_size=len(ids), max_size=len(ids))), np.int32)
            info = np.array(draw(st.lists(st.integers(0, 2**64 - 1), min_size=len(ids), max_size=len(ids))),
                            np.uint64)
        elif what in ("rollback", "reset"):
            ops.append((what,))
            continue
        else:
            rows, proc, info = rows.copy(), proc.copy(), info.copy()
        if what == "change" and len(rows):
            for _ in range(draw(st.integers(1, 3))):
                i = draw(st.integers(0, len(rows) - 1))
                f = draw(st.sampled_from(FIELDS))
                if f == "proc":
                    proc[i] = draw(st.integers(-1, 3))
                elif f == "info":
                    b = info[i:i + 1].view(np.uint8)
                    b[draw(st.integers(0, 7))] ^= 1       # a counter or a timer byte
                elif f == "local_addr":
                    rows["local_addr"][i][0] ^= 1         # the identity of a cookie-less row
                else:
                    rows[f][i] += draw(st.integers(1, 3))
        if what == "dup" and len(rows):
            i = draw(st.integers(0, len(rows) - 1))
            rows = np.concatenate([rows, rows[i:i + 1]])
            proc = np.append(proc, proc[i])
            info = np.append(info, info[i])
        ops.append(("diff", rows, proc, info if draw(st.integers(0, 3)) else None, draw(st.integers(0, 5)) == 0))
    return ops


@settings(max_examples=400, deadline=None)
@given(ops=sequences())
def test_differ_equals_the_model(ops):
    check(ops)


def check(ops):
    """Each op on a Differ and on the Model: the same results, table and lookups."""
    d, m = Differ(INFO_MASK), Model()
    cookies = [0, 1] + [7000 + c for c in range(6)]
    for op in ops:
        if op[0] == "rollback":
            try:
                m.rollback()
            except RuntimeError:
                with pytest.raises(RuntimeError):
                    d.rollback()
            else:
                d.rollback()
        elif op[0] == "reset":
            m.reset()
            d.reset()
        else:
            _, rows, proc, info, kf = op
            want = m.diff([r.tobytes() for r in rows], proc.tolist(), kf,
                          None if info is None else [x.tobytes() for x in info])
            ev_idx, ev_code, closed, closed_proc, dup = d.diff(rows, proc, kf, info)
            got = (list(zip(ev_idx.tolist(), ev_code.tolist(), strict=True)), [r.tobytes() for r in closed],
                   closed_proc.tolist(),
                   None if d.closed_info is None else [x.tobytes() for x in d.closed_info], dup)
            assert got == want
        assert [r.tobytes() for r in d.rows] == m.prev
        assert d.proc.tolist() == m.proc
        assert (None if d.info is None else [x.tobytes() for x in d.info]) == m.info
        assert d.primed == m.primed
        for c in cookies:
            try:
                want_at = m.lookup(c)
            except RuntimeError:
                with pytest.raises(RuntimeError):
                    d.lookup([c])
            else:
                assert d.lookup([c]).tolist() == [want_at]


def test_an_unchanged_table_is_diffed_in_place_and_another_order_is_not():
    rows = np.concatenate([_conn(c, c == 2, 4) for c in range(4)])
    proc = np.array([0, 1, -1, 2], np.int32)
    d = Differ()
    d.diff(rows, proc, False)
    assert not d.in_place                      # the first table: hashed
    ev_idx, _, closed, _, _ = d.diff(rows.copy(), proc.copy(), False)
    assert d.in_place and len(ev_idx) == 0 and len(closed) == 0
    busy = rows.copy()
    busy["rx_queue"][1] = 9
    busy["pid"][2] = 77
    ev_idx, ev_code, _, _, _ = d.diff(busy, proc, False)
    assert d.in_place and ev_idx.tolist() == [1, 2] and ev_code.tolist() == [EV_QUEUES, EV_CHANGED]
    d.rollback()                               # the two rows as they were
    assert d.rows["rx_queue"][1] == 0 and d.rows["pid"][2] == 0
    ev_idx, _, _, _, _ = d.diff(busy[::-1].copy(), proc[::-1].copy(), False)
    assert not d.in_place and sorted(ev_idx.tolist()) == [1, 2]


@st.composite
def large_sequences(draw):
    """Tables of 30-140 rows (the in-place diff compares them 32 rows at a time), each the
    previous one with a few rows changed, a row gone or a row added."""
    n = draw(st.integers(30, 140))
    rows = np.concatenate([_conn(c, c % 7 == 3, 4 if c % 2 else 6) for c in range(n)])
    proc = np.zeros(n, np.int32)
    ops = []
    for _ in range(draw(st.integers(2, 6))):
        rows, proc = rows.copy(), proc.copy()
        for _ in range(draw(st.integers(0, 3))):
            i = draw(st.integers(0, len(rows) - 1))
            f = draw(st.sampled_from(["state", "rx_queue", "pid", "proc", "gone", "new"]))
            if f == "proc":
                proc[i] += 1
            elif f == "gone" and len(rows) > 1:
                rows, proc = np.delete(rows, i), np.delete(proc, i)
            elif f == "new":
                rows = np.insert(rows, i, _conn(500 + i, False, 4))
                proc = np.insert(proc, i, 0)
            elif f in ("state", "rx_queue", "pid"):
                rows[f][i] += 1
        ops.append(("diff", rows, proc, None, draw(st.integers(0, 4)) == 0))
    return ops


@settings(max_examples=150, deadline=None)
@given(ops=large_sequences())
def test_differ_equals_the_model_on_larger_tables(ops):
    check(ops)
