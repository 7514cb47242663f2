"""Changes mode's lone snapshot markers (a slow interval: one marker a flush): encoded once
and reused by the writer, journaled as repeat frames (``Journal.append_repeat``), read back
and recovered after kill -9 as every other row."""

import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import tcpsnap
from _changes_util import Scripted, row
from tcpsnap import ROW_DTYPE, Recorder, TcpState
from tcpsnap.record import journal

S = TcpState


def _frames(path: Path) -> list[tuple[bool, int]]:
    """(repeat?, rows if a repeat frame) of each whole frame of a journal file."""
    data = path.read_bytes()
    assert data.startswith(journal.MAGIC)
    i, out = len(journal.MAGIC), []
    while i + 20 <= len(data):
        n, raw, _, _ = struct.unpack_from("<IQII", data, i)
        if i + 20 + n > len(data):
            break
        out.append((bool(raw >> 63), raw & ((1 << 63) - 1) if raw >> 63 else 0))
        i += 20 + n
    return out


SCH = pa.schema([("ts", pa.timestamp("ns", "UTC")), ("seq", pa.int64()),
                 ("d", pa.dictionary(pa.int8(), pa.string())), ("x", pa.int32())])


def _batch(ts, seq, codes, words, x):
    return pa.record_batch([pa.array(ts, SCH[0].type), pa.array(seq, pa.int64()),
                            pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(words)),
                            pa.array(x, pa.int32())], schema=SCH)


def _write_case(p: Path) -> list[int]:
    j = journal.Journal(p, SCH)
    ends = [p.stat().st_size]
    with pytest.raises(ValueError):
        j.append_repeat([0, 1], np.array([[1, 1]]))  # nothing to repeat yet
    j.append(_batch([1, 2], [1, 2], [0, 0], ["a"], [5, 6]))
    ends.append(p.stat().st_size)
    with pytest.raises(ValueError):
        j.append_repeat([0, 1], np.array([[3, 3]]))  # the last batch is not of one row
    j.append(_batch([3], [3], [1], ["a", "b"], [7]))
    ends.append(p.stat().st_size)
    j.append_repeat([0, 1], np.array([[4, 4], [5, 5]]))
    ends.append(p.stat().st_size)
    j.append_repeat([1, 0], np.array([[6, 60]]))
    ends.append(p.stat().st_size)
    j.append(_batch([7, 8], [7, 8], [0, 2], ["a", "b", "c"], [8, 9]))
    ends.append(p.stat().st_size)
    j.close()
    return ends


def test_repeat_frames_read_back_in_place(tmp_path):
    p = tmp_path / "j"
    _write_case(p)
    assert [r for r, _ in _frames(p)] == [False, False, True, True, False]
    schema, batches, complete = journal.read_journal(p)
    assert complete and schema == SCH
    t = journal.unify_table(SCH, batches).to_pydict()
    assert t["seq"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [v.value for v in pa.array(t["ts"], SCH[0].type)] == [1, 2, 3, 4, 5, 60, 7, 8]
    assert t["d"] == ["a", "a", "b", "b", "b", "b", "a", "c"]
    assert t["x"] == [5, 6, 7, 7, 7, 7, 8, 9]


def test_repeat_frames_torn_at_every_byte(tmp_path):
    p = tmp_path / "j"
    ends = _write_case(p)
    rows_at = [0, 2, 3, 5, 6, 8]  # rows readable once the journal reaches each end
    blob = p.read_bytes()
    for off in range(len(blob) + 1):
        p.write_bytes(blob[:off])
        _, batches, complete = journal.read_journal(p)
        whole = max((k for k, e in enumerate(ends) if e <= off), default=0)
        assert sum(b.num_rows for b in batches) == rows_at[whole], off
        if off > ends[0]:
            assert complete == (off in ends), off
        for b in batches:
            b.validate(full=True)


def test_a_repeat_frame_with_nothing_to_repeat_is_corrupt(tmp_path):
    p = tmp_path / "j"
    j = journal.Journal(p, SCH)
    j.append(_batch([1], [1], [0], ["a"], [5]))
    j._full = False  # forged: as if the batch before had two rows
    j.append(_batch([2, 3], [2, 3], [0, 0], ["a"], [5, 5]))
    j._full = True
    j.append_repeat([0, 1], np.array([[4, 4]]))
    j.append(_batch([5], [5], [0], ["a"], [5]))
    j.close()
    _, batches, complete, status = journal.read_journal(p, detail=True)
    assert status == "corrupt" and not complete
    assert [b.num_rows for b in batches] == [1, 2]


def _steady_tables(k: int) -> list[np.ndarray]:
    # three connections; one changes state at snapshot 10 and one closes at 20: lone
    # markers with event batches between them
    a = row(S.ESTABLISHED, "10.0.0.1", 5000, "10.0.0.9", 443, cookie=1)
    b = row(S.ESTABLISHED, "10.0.0.1", 5001, "10.0.0.9", 443, cookie=2)
    c = row(S.ESTABLISHED, "10.0.0.1", 5002, "10.0.0.9", 443, cookie=3)
    out = []
    for i in range(k):
        rows = [a, b if i < 10 else _with(b, state=S.CLOSE_WAIT)] + ([c] if i < 20 else [])
        out.append(np.array(rows, ROW_DTYPE).reshape(-1))
    return out


def _with(r, **kw):
    r = r.copy()
    for k, v in kw.items():
        r[k] = v
    return r


def test_lone_markers_keep_their_own_clocks(tmp_path, monkeypatch):
    """Each snapshot its own batch (a snapshot every 20 ms, flush 30 ms): the writer
    encodes a lone marker's columns once and reuses them, and yet each marker row holds
    its own snapshot's seq and clocks (as capture handed them over), in the row group and
    in the journal, and the rebuilt table is the scripted one at every snapshot."""
    from tcpsnap.record.changes import ChangesEncoder
    from tcpsnap.record.writer import Writer

    calls, handed = [], {}
    parts, write = ChangesEncoder.parts, Writer._write

    def counting(self, rows, *a, **kw):
        calls.append(len(rows))
        return parts(self, rows, *a, **kw)

    def noting(self, b):
        for i in range(b.s):  # a marker's clocks: its snapshot's (changes: its own timestamp)
            first = int(b.counts[:i].sum())
            handed[int(b.seq[i])] = (int(b.extra[2][first]), int(b.cap[i]), int(b.mono[i]))
        return write(self, b)

    monkeypatch.setattr(ChangesEncoder, "parts", counting)
    monkeypatch.setattr(Writer, "_write", noting)
    tables = _steady_tables(40)
    snap = Scripted(tables, pids=False)
    with Recorder(tmp_path / "c", interval="20ms", flush="30ms", mode="changes", keyframe="1h",
                  snapshotter=snap, nice=None, destroy=False) as rec:
        snap.rec = rec
        rec.run()
    assert len(calls) <= 10, calls  # not one a snapshot: 40 snapshots, 2 changes
    chg = tcpsnap.read(tmp_path / "c", mode="changes")
    m = chg[chg["family"] == 0].sort_values("seq")
    assert m["seq"].tolist() == list(range(40))
    got = list(zip(m["timestamp"].astype("int64"), m["capture_ns"], m["monotonic_ns"], strict=True))
    assert got == [handed[k] for k in range(40)]
    full = tcpsnap.read(tmp_path / "c")
    for k in range(40):
        have = full[full["seq"] == k]
        assert sorted(zip(have["cookie"], have["state"].astype(str))) == \
            sorted((int(r["cookie"]), S(r["state"]).name) for r in tables[k]), k


CRASH_CHILD = r"""
import os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_marker_frames import _steady_tables
from _changes_util import crash_replay
from tcpsnap import Recorder
from tcpsnap.record.writer import Writer
tables = _steady_tables(200)
log = open(sys.argv[4], "w")
write = Writer._write
def noting(self, b):
    # what capture handed over: each marker's seq and clocks
    for i in range(b.s):
        first = int(b.counts[:i].sum())
        print(int(b.seq[i]), int(b.extra[2][first]), int(b.cap[i]), int(b.mono[i]), file=log, flush=True)
    return write(self, b)
Writer._write = noting
snap = crash_replay(tables, int(sys.argv[3]))
rec = Recorder(sys.argv[1], interval="20ms", mode="changes", keyframe="1h", flush="30ms",
               row_group_rows=1 << 16, snapshotter=snap, nice=None, destroy=False)
snap.rec = rec
rec.open()
rec.run()
"""


def test_kill_9_with_repeat_frames_keeps_every_durable_marker(tmp_path):
    """kill -9 while lone markers are journaled as repeat frames: recovery keeps a prefix
    of the snapshots, each marker with its own clocks, and the table at every one."""
    tables = _steady_tables(200)
    folder = tmp_path / "rec"
    p = subprocess.run([sys.executable, "-c", CRASH_CHILD, str(folder), str(Path(__file__).parent), "60",
                        str(tmp_path / "handed")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    (jn,) = folder.rglob(".*.parquet.j0")
    frames = _frames(jn)
    assert sum(rows for rep, rows in frames if rep) >= 20, frames
    rec = tcpsnap.recover(folder)
    assert len(rec) == 1 and rec[0].path is not None
    ev = tcpsnap.read(folder, mode="changes")
    markers = ev[ev["family"] == 0].sort_values("seq")
    seqs = markers["seq"].tolist()
    # a flush (30 ms) is at most two snapshots: all but the last ones before the kill
    assert seqs == list(range(len(seqs))) and 55 <= len(seqs) <= 60, seqs
    handed = {int(k): tuple(map(int, v)) for k, *v in
              (line.split() for line in (tmp_path / "handed").read_text().splitlines())}
    got = list(zip(markers["timestamp"].astype("int64"), markers["capture_ns"], markers["monotonic_ns"],
                   strict=True))
    assert got == [handed[k] for k in seqs]
    got = tcpsnap.read(folder)
    for k in seqs:
        have = got[got["seq"] == k]
        assert sorted(zip(have["cookie"], have["state"].astype(str))) == \
            sorted((int(r["cookie"]), S(r["state"]).name) for r in tables[k]), k


def test_repeat_row_is_the_row_appended_again_with_its_own_clocks():
    """``RowGroupStore.repeat_row`` (the writer's lone markers after the first): what
    appending that row's parts again with the new seq and clocks gives, also for a column
    with nulls, a per-snapshot column and one that had only zeros."""
    from tcpsnap.record.changes import ChangesEncoder, build_schema
    from tcpsnap.record.rowgroup import RowGroupStore

    schema = build_schema()
    per = ("seq", "capture_ns", "monotonic_ns")
    enc, ref = ChangesEncoder(schema, "h", "b"), ChangesEncoder(schema, "h", "b")
    st = RowGroupStore(schema, 4, per)  # small: repeat_row grows it
    rows = np.zeros(3, ROW_DTYPE)
    rows["family"] = [4, 0, 4]
    rows["cookie"] = [7, 0, 8]
    rows["pid"] = [5, 0, 6]
    rows["state"] = [1, 7, 1]
    ev = np.array([1, 0, 1], np.uint8)  # opened, the marker, opened
    seen = np.array([True, False, True])
    codes = np.array([0, -1, 1], np.int32)  # the marker's process: null
    want = []

    def add(r, n, seq, ts, cap, mono, c, e, s):
        a = (r, np.array([n]), np.array([ts]), np.array([seq]), np.array([cap]), c, ["x", "y"])
        kw = dict(events=e, seen=s, row_ts=np.full(n, ts, np.int64), monotonic=np.array([mono]))
        want.append(ref.encode(*a, **kw))
        return a, kw

    a, kw = add(rows[:2], 2, 0, 1000, 11, 21, codes[:2], ev[:2], seen[:2])
    st.append(enc.parts(*a, **kw), 2, a[1], a[3])
    for k in range(1, 6):
        st.repeat_row(1, {"timestamp": 1000 + k, "seq": k, "capture_ns": 11 + k, "monotonic_ns": 21 + 2 * k}, k)
        add(rows[1:2], 1, k, 1000 + k, 11 + k, 21 + 2 * k, codes[1:2], ev[1:2], seen[1:2])
    a, kw = add(rows[2:], 1, 6, 2000, 30, 40, codes[2:], ev[2:], seen[2:])
    st.append(enc.parts(*a, **kw), 1, a[1], a[3])
    assert st.rows == 8 and st.snapshots == 7
    expect = pa.Table.from_batches(want).combine_chunks()
    assert st.batch().to_pylist() == expect.to_pylist()
    assert st.spans(0, 2) == [(0, 2, 0), (2, 4, 2), (4, 6, 4), (6, 8, 6)]
    with pytest.raises(IndexError):
        st.repeat_row(8, {}, 7)
