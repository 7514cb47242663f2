"""The writer's compiled lone-marker case (``tcpsnap._quiet.QuietMarkers``): a changes-mode
snapshot of its marker row alone, like the journal's last frame, stored and journaled in
one call. Held to the general path (``Writer._write`` then ``_make_durable``) by driving two
writers with the same batches, one of them without the compiled case: the journal's bytes
at every durable point (what a kill -9 there keeps), the callbacks, the finished files'
bytes and the writer's state are the same, and the compiled case took every snapshot the
general path journaled as a repeat frame."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

pytest.importorskip("tcpsnap._quiet")

from _changes_util import ManualClock
from tcpsnap._events import EV_KEYFRAME, EV_OPENED, EV_SNAPSHOT
from tcpsnap._schema import ROW_DTYPE
from tcpsnap.record import journal as jn
from tcpsnap.record import markers as mk
from tcpsnap.record.batch import STOP, BatchPool
from tcpsnap.record.changes import ChangesEncoder, build_schema
from tcpsnap.record.safedir import SafeDir
from tcpsnap.record.writer import FileOptions, Rules, Writer

T0 = 1_764_460_800_000_000_000
SEC = 10**9




def marker(inode: int) -> np.ndarray:
    m = np.zeros(1, ROW_DTYPE)
    m["state"] = 7  # CLOSED, as ChangeTracker's marker
    m["inode"] = inode
    return m


def conn(cookie: int) -> np.ndarray:
    r = np.zeros(1, ROW_DTYPE)
    r["family"], r["state"], r["cookie"], r["local_port"], r["pid"] = 4, 1, cookie, 4000 + cookie, 77
    r["local_addr"][0, :4] = [127, 0, 0, 1]
    return r


def script(tcp_info: bool) -> list[dict]:
    """Snapshots, one a batch but where ``s`` says more: lone markers that repeat (the
    compiled case) between everything that must not take it."""
    out: list[dict] = []

    def add(k: int = 1, **kw) -> None:
        for _ in range(k):
            out.append(dict(kw))

    add(kind="keyframe", inode=2)          # a keyframe: marker and its rows
    add(6, inode=2)                        # lone markers: the first encoded, then repeats
    add(kind="event", inode=2)             # an event: the next marker is an Arrow frame again
    add(5, inode=2, overruns=1)
    add(4, inode=3)                        # another table size: another key
    add(4, inode=3, has_proc=False)        # no pids
    add(4, inode=3, names=["sshd"])        # names with a marker (not capture's, but a key)
    add(3, inode=3, names=["bash"])        # other names of the same length
    add(3, inode=3, info_byte=5)           # its internals differ (tcp_info only)
    add(3, inode=3, sampled=False)
    add(4, inode=3, extra1=False)          # seen_in_snapshot differs
    add(2, inode=3, s=2)                   # two markers in a batch
    add(4, inode=3)
    add(5, inode=3, file=1)                # a new file (the next day)
    add(30, inode=3, file=1)               # a row group fills (row_group_rows below)
    add(kind="event", inode=3, file=1)
    add(3, inode=3, file=1)
    return out


def fill(b, snap: dict, seq: int, mono: int, tcp_info: bool) -> None:
    """One snapshot into batch ``b`` as capture's ``add`` puts it."""
    kind = snap.get("kind")
    rows = [marker(snap["inode"])]
    ev = [EV_KEYFRAME if kind == "keyframe" else EV_SNAPSHOT]
    if kind == "keyframe":
        rows += [conn(1), conn(2)]
        ev += [EV_OPENED, EV_OPENED]
    elif kind == "event":
        rows += [conn(10 + seq)]
        ev += [EV_OPENED]
    rows = np.concatenate(rows)
    n, i, s = len(rows), b.n, b.s
    b.rows[i:i + n] = rows
    b.extra[0][i:i + n] = ev
    b.extra[1][i:i + n] = snap.get("extra1", True)
    b.extra[2][i:i + n] = T0 + mono + 17
    has_proc = snap.get("has_proc", True)
    names = snap.get("names", [])
    b.proc[i:i + n] = 0 if names else -1
    if names:
        b.names[:] = names
    b.has_proc = has_proc
    if tcp_info:
        raw = b.info[i:i + n].view(np.uint8).reshape(n, -1)
        raw[:] = 0
        raw[:, 3] = snap.get("info_byte", 0)
        b.sampled[s] = snap.get("sampled", True)
    b.ts[s], b.seq[s], b.cap[s], b.mono[s], b.counts[s] = T0 + mono, seq, 700_000 + 13 * seq, mono, n
    b.empty[s] = False
    if s == 0:
        b.t_first = mono
        b.file_key = (0, snap.get("file", 0))
    b.overruns += snap.get("overruns", 0)
    b.n += n
    b.s += 1


def run(tmp_path, compiled: bool, tcp_info: bool, fsync: bool = False, fail_at: int | None = None) -> dict:
    """The script through a Writer thread: what a crash at each durable point keeps (the
    journal's bytes), the callbacks, the files' bytes, the writer's state."""
    schema = build_schema({"tcpsnap.mode": "changes"}, tcp_info=tcp_info)
    clock = ManualClock(T0)
    rules = Rules(SEC, 3600 * SEC, SEC, 0, 24)  # alone: made durable as each batch comes
    pool = BatchPool(4, 64, 4096, True, lambda: None, tcp_info=tcp_info)
    root = SafeDir.open(tmp_path, create=True)
    failed: list = []

    def on_error() -> None:  # the state a failed write leaves (before the file is finished)
        j, st = w._journal, w._store
        failed.append((j._broken, j._pos, j.nbytes, j.rows, w._pending_seq, w._oldest, w._journaled,
                       w.durable_seq, st.rows, st.snapshots, dict(w._file_meta)))

    w = Writer(root, schema, ChangesEncoder(schema, "h1", "boot-1"), rules,
               FileOptions("zstd", None, 24, False, fsync), pool, clock, on_error=on_error)
    quiet = w._quiet
    assert quiet is not None
    if not compiled:
        w._quiet = None
    repeats = [0]
    plain = mk.LoneMarkers.repeat

    def counted(self, journal, pending_rows):  # the general path's repeat frames
        done = plain(self, journal, pending_rows)
        repeats[0] += done
        return done

    seen: list = []

    def on_durable(seq: int, done: bool) -> None:
        j = w._journal
        data = b"" if j is None else j.path.read_bytes()
        seen.append((seq, done, None if j is None else j.path.name, data, w.durable_seq))
        if fail_at is not None and seq == fail_at and not done:
            os.close(j._fd)   # the frame's write fails: EBADF
            j._fd = os.open(os.devnull, os.O_RDONLY)

    w.on_durable = on_durable
    mk.LoneMarkers.repeat = counted
    try:
        w.start()
        mono = 0
        seq = 0
        for snap in script(tcp_info):
            b = pool.get()
            for _ in range(snap.get("s", 1)):
                mono += SEC
                fill(b, snap, seq, mono, tcp_info)
                seq += 1
            clock.mono = mono
            w.put(b)
        w.put(STOP)
        w.join()
    finally:
        mk.LoneMarkers.repeat = plain
        root.close()
    files = sorted((p.relative_to(tmp_path).as_posix(), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    return {"seen": seen, "files": files, "durable": w.durable_seq, "error": repr(w.error),
            "taken": quiet.taken, "repeats": repeats[0], "names": [p.name for p in w.files], "failed": failed}


@pytest.mark.parametrize("tcp_info", [False, True])
def test_the_compiled_case_writes_what_the_general_path_writes(tmp_path, tcp_info):
    fast = run(tmp_path / "fast", True, tcp_info)
    slow = run(tmp_path / "slow", False, tcp_info)
    assert slow["taken"] == 0 and slow["repeats"] > 30
    # every snapshot the general path journals as a repeat frame, the compiled case took
    assert fast["taken"] == slow["repeats"] and fast["repeats"] == 0
    assert fast["error"] == slow["error"] == "None"
    assert fast["durable"] == slow["durable"] == sum(s.get("s", 1) for s in script(tcp_info)) - 1
    assert len(fast["seen"]) == len(slow["seen"])
    for a, b in zip(fast["seen"], slow["seen"], strict=True):
        assert a == b
    assert [n for n, _ in fast["files"]] == [n for n, _ in slow["files"]]
    assert len(fast["names"]) == 2
    for (name, a), (_, b) in zip(fast["files"], slow["files"], strict=True):
        assert a == b, name


def test_with_fsync(tmp_path):
    fast = run(tmp_path / "fast", True, False, fsync=True)
    slow = run(tmp_path / "slow", False, False, fsync=True)
    assert fast["taken"] == slow["repeats"] > 30
    assert fast["seen"] == slow["seen"] and fast["files"] == slow["files"]


def test_a_failed_frame_leaves_what_the_general_path_leaves(tmp_path):
    """The journal's write fails (EBADF) at a repeated marker: the same error, the journal
    as it was before the frame, the same files finished after it."""
    fail = 9  # a repeat of the second run of lone markers
    fast = run(tmp_path / "fast", True, False, fail_at=fail)
    slow = run(tmp_path / "slow", False, False, fail_at=fail)
    assert fast["taken"] > 0
    assert fast["error"] == slow["error"] == repr(OSError(errno.EBADF, os.strerror(errno.EBADF)))
    assert fast["durable"] == slow["durable"] == fail - 1
    assert fast["failed"] == slow["failed"] and len(fast["failed"]) == 1 and fast["failed"][0][0]
    assert fast["seen"] == slow["seen"] and fast["files"] == slow["files"]


def test_the_repeat_frame_template_is_append_repeats(tmp_path):
    """``journal.repeat_template``: the bytes of a one-row repeat frame that do not change."""
    import pyarrow as pa

    sch = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("c", pa.int64()), ("d", pa.int64())])
    j = jn.Journal(tmp_path / "j", sch)
    j.append(pa.record_batch([pa.array([1], pa.int64())] * 4, schema=sch))
    at = j.nbytes
    j.append_repeat([3, 0, 2, 1], np.array([[5, 6, 7, 8]]))
    j.close()
    frame = (tmp_path / "j").read_bytes()[at:]
    head, prefix = jn.repeat_template([3, 0, 2, 1])
    assert len(frame) == 62 and frame[:16] == head and frame[20:30] == prefix
