"""Changes mode's lean add (``record.capture.add_changes``, the case without filters,
namespaces at their own rate or internals) fills every batch as the general ``add`` does:
the same rows, codes, events, clocks and counters, byte for byte, through quiet
snapshots (the lone marker, copied item by item), events, keyframes and pids on or off."""

import numpy as np
import pytest

import tcpsnap
from _changes_util import record, row
from tcpsnap import ROW_DTYPE, TcpState
from tcpsnap.record import batch as batch_mod
from tcpsnap.record import capture as capture_mod
from tcpsnap.record import writer as writer_mod

S = TcpState


def _tables():
    """Quiet runs, an open, a pid change (a process renamed), queues, a close, a table
    that empties and fills again: every kind of snapshot step gives the capture."""
    lst = row(S.LISTEN, "127.0.0.1", 80, "0.0.0.0", 0, cookie=1, pid=100)
    a = row(S.ESTABLISHED, "127.0.0.1", 5000, "127.0.0.1", 80, cookie=2, pid=200)
    b = row(S.ESTABLISHED, "127.0.0.1", 5001, "127.0.0.1", 80, cookie=3, pid=300)
    t0 = np.array([lst, a], ROW_DTYPE)
    t1 = np.array([lst, a, b], ROW_DTYPE)
    t2 = t1.copy()
    t2["pid"][2] = 200
    t3 = t2.copy()
    t3["rx_queue"][1] = 7
    t4 = np.array([lst], ROW_DTYPE)
    t5 = np.zeros(0, ROW_DTYPE)
    return [t0] * 4 + [t1] * 3 + [t2] * 2 + [t3] * 3 + [t4] * 4 + [t5] * 3 + [t1] * 14


def _freeze(b) -> dict:
    n, s = b.n, b.s
    return {"rows": b.rows[:n].tobytes(), "proc": b.proc[:n].tobytes(),
            "extra": None if b.extra is None else [a[:n].tobytes() for a in b.extra],
            "ts": b.ts[:s].tobytes(), "seq": b.seq[:s].tobytes(), "cap": b.cap[:s].tobytes(),
            "mono": b.mono[:s].tobytes(), "empty": b.empty[:s].tobytes(),
            "counts": b.counts[:s].tobytes(), "names": list(b.names), "has_proc": b.has_proc,
            "t_first": b.t_first, "file_key": b.file_key, "overruns": b.overruns, "n": n, "s": s}


def _record(tmp_path, monkeypatch, name: str, lean: bool, pids: bool, keyframe: str):
    got: list[dict] = []
    put = writer_mod.Writer.put

    def spy(self, b):
        if isinstance(b, batch_mod.Batch):
            got.append(_freeze(b))
        put(self, b)

    used = []
    lean_add = capture_mod.add_changes

    def via_lean(c, *a):
        used.append("lean")
        return lean_add(c, *a)

    def via_general(c, *a):
        used.append("general")
        return capture_mod.Capture.add(c, *a)

    with monkeypatch.context() as m:
        m.setattr(writer_mod.Writer, "put", spy)
        m.setattr(capture_mod, "add_changes", via_lean if lean else via_general)
        names = {100: "srv", 200: "cli", 300: "cli2"} if pids else None
        record(tmp_path / name, _tables(), "changes", names=names, keyframe=keyframe)
    assert used and set(used) == {"lean" if lean else "general"}
    return got


@pytest.mark.parametrize("pids", [True, False], ids=["pids", "no-pids"])
@pytest.mark.parametrize("keyframe", ["1m", "500ms"])
def test_lean_add_fills_batches_as_add_does(tmp_path, monkeypatch, pids, keyframe):
    lean = _record(tmp_path, monkeypatch, "lean", True, pids, keyframe)
    general = _record(tmp_path, monkeypatch, "general", False, pids, keyframe)
    assert len(lean) == len(general) >= 4       # batches of several snapshots (0.5 s each)
    for i, (a, b) in enumerate(zip(lean, general, strict=True)):
        assert a == b, f"batch {i} differs"
    # quiet snapshots (one marker row each) were there: the path copied item by item
    counts = np.concatenate([np.frombuffer(b["counts"], np.int64) for b in lean])
    assert len(counts) == len(_tables()) and (counts == 1).sum() >= 10
    ra = tcpsnap.read(tmp_path / "lean", mode="changes")
    rb = tcpsnap.read(tmp_path / "general", mode="changes")
    assert ra.equals(rb)


def test_pool_get_unlocked_is_lifo_and_shrink_tolerates_an_emptied_list():
    pool = batch_mod.BatchPool(4, 8, 4, True, lambda: None)
    a, b = pool.get(), pool.get()
    pool.put(a)
    pool.put(b)
    assert pool.get() is b and pool.get() is a     # the last returned first, as before
    pool.put(a)
    pool._free.clear()                             # as if get() took it meanwhile
    pool.made = 5
    pool.shrink(2)                                 # nothing to drop: no IndexError
    assert pool.count == 2


@pytest.mark.parametrize("tcp_info", [False, True], ids=["plain", "tcp_info"])
def test_marker_is_what_the_general_case_gives(tcp_info):
    """``_marker``'s arrays and extra tuples (made once, rewritten) against the general
    case of ``step`` written out for no event: kf and not, names or none, in turn."""
    from tcpsnap._events import EV_KEYFRAME, EV_SNAPSHOT
    from tcpsnap._schema import TCP_INFO_DTYPE
    from tcpsnap.record.changes import ChangeTracker, _marker

    tr = ChangeTracker(60 * 10**9, tcp_info=tcp_info)
    calls = [(7, True, 111, object()), (20_001, False, 222, None), (0, False, 333, object()),
             (5, True, 444, None), (5, False, 555, object())]
    for n, kf, wall, names in calls:
        out, codes_of, extra = _marker(tr, n, kf, wall, names)
        want = np.zeros(1, ROW_DTYPE)
        want["inode"] = n
        want["state"] = int(TcpState.CLOSED)
        assert out.tobytes() == want.tobytes()
        assert len(extra) == (4 if tcp_info else 3)
        assert extra[0].tolist() == [EV_KEYFRAME if kf else EV_SNAPSHOT]
        assert extra[1].tolist() == [True] and extra[2].tolist() == [wall]
        if tcp_info:
            assert extra[3].dtype == TCP_INFO_DTYPE and extra[3].tobytes() == bytes(TCP_INFO_DTYPE.itemsize)
        if names is None:
            assert codes_of is None
        else:
            codes, local = codes_of(np.zeros(1, np.uint32))
            assert codes.tolist() == [-1] and local == []
