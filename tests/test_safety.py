"""A recording is evidence: tcpsnap never writes through a link, never destroys what recovery
cannot vouch for, keeps its promises at every crash point, and survives hostile leftovers.

Planted links are made by root and handed to uid 65534 (``lchown``), as another user of a
shared (sticky, world-writable) folder would plant them.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import tcpsnap  # noqa: E402
from _changes_util import WALL0, Scripted, SimClock, row  # noqa: E402
from tcpsnap._arrow import SCHEMA, BatchEncoder  # noqa: E402
from tcpsnap.record import journal, layout, parquet  # noqa: E402
from tcpsnap.record import recovery as rcv  # noqa: E402
from tcpsnap.record.folder import UNRECOVERED  # noqa: E402
from test_recorder import _build_crash_case, encode, fake_rows  # noqa: E402

LINUX = sys.platform.startswith("linux")
ROOT = LINUX and os.geteuid() == 0
as_root = pytest.mark.skipif(not ROOT, reason="planting other users' links needs root")
NOBODY = 65534
PRECIOUS = b"precious: must never change\n"


def plant(link: Path, target: Path) -> None:
    os.symlink(target, link)
    os.lchown(link, NOBODY, NOBODY)


@pytest.fixture
def shared(tmp_path):
    """A root-owned folder every user may write to, sticky (like /tmp), plus a precious
    root-owned file elsewhere that planted links point at."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    target = victim / "precious"
    target.write_bytes(PRECIOUS)
    return d, target


def tables(n=6, conns=3):
    out = []
    for _ in range(n):
        out.append(np.array([row(1, "127.0.0.1", 5000 + c, "127.0.0.1", 6000 + c, 100 + c)
                             for c in range(conns)]))
    return out


def record(path, tabs=None, clock=None, **kw):
    snap = Scripted(tabs or tables(), pids=False)
    with tcpsnap.Recorder(path, interval=0, snapshotter=snap, clock=clock or SimClock(), nice=None,
                          **kw) as rec:
        snap.rec = rec
        rec.run()
        return dict(rec.stats)


def first_file(wall_ns=WALL0):
    return layout.file_names(wall_ns)


def all_rows(folder: Path):
    files = sorted(p for p in folder.rglob("*.parquet") if UNRECOVERED not in p.parts)
    if not files:
        return []
    t = pa.concat_tables([pq.read_table(f, columns=["seq", "cookie"]) for f in files])
    return sorted(zip(t.column("seq").to_pylist(), t.column("cookie").to_pylist(), strict=True))


# ---------------------------------------------------------------- links and unsafe folders

@as_root
def test_planted_lock_link_is_refused_and_its_target_untouched(shared):
    d, target = shared
    plant(d / ".tcpsnap.lock", target)
    with pytest.raises(tcpsnap.UnsafePath, match="symbolic link"):
        record(d)
    assert target.read_bytes() == PRECIOUS
    with pytest.raises(tcpsnap.UnsafePath):
        tcpsnap.recover(d)
    assert target.read_bytes() == PRECIOUS


@as_root
def test_planted_names_of_the_next_file_are_never_written_through(shared):
    """Links named like the next file's in-progress file, row-group log and journal (the
    names are predictable): the recorder picks another name, writes its rows, and the
    links and their target are as they were."""
    d, target = shared
    part, name = first_file()
    (d / part).mkdir()
    planted = [d / part / f".{name}.tmp", d / part / f".{name}.rglog", d / part / f".{name}.j0",
               d / part / name]
    for p in planted:
        plant(p, target)
    st = record(d, row_group_rows=4)  # small row groups: journals and row groups both happen
    assert st["snapshots"] == 6
    assert target.read_bytes() == PRECIOUS
    for p in planted:
        assert p.is_symlink() and os.readlink(p) == str(target)
    got = [f for f in (d / part).iterdir() if not f.is_symlink()]
    assert [f.name for f in got] == [name.replace(".parquet", "-1.parquet")]
    assert pq.read_table(got[0]).num_rows == 18
    # recovery leaves the links alone too (they only look like leftovers)
    assert tcpsnap.recover(d) == [rcv.RecoveryResult(None)]
    assert target.read_bytes() == PRECIOUS
    assert all(p.is_symlink() for p in planted)


@as_root
def test_planted_partition_link_is_refused(shared):
    d, target = shared
    part, _ = first_file()
    plant(d / part, target.parent)
    (target.parent / ".x.parquet.j0").write_bytes(b"not ours")
    with pytest.raises(tcpsnap.RecorderError, match="link or not a folder"):
        record(d)
    assert sorted(p.name for p in target.parent.iterdir()) == [".x.parquet.j0", "precious"]
    assert target.read_bytes() == PRECIOUS
    # recover walks past it and deletes nothing in the folder it points at
    assert tcpsnap.recover(d) == []
    assert sorted(p.name for p in target.parent.iterdir()) == [".x.parquet.j0", "precious"]


@as_root
def test_planted_leftovers_of_recovery_are_left_alone(shared):
    """A link named like an in-progress file or a journal: recover neither truncates,
    fills nor deletes it, nor its target."""
    d, target = shared
    part = d / "date=2026-01-01"
    part.mkdir()
    plant(part / ".a.parquet.tmp", target)
    plant(part / ".a.parquet.rglog", target)
    plant(part / ".b.parquet.j0", target)
    res = tcpsnap.recover(d)
    assert all(r.path is None for r in res)
    assert target.read_bytes() == PRECIOUS
    assert sorted(p.name for p in part.iterdir()) == [".a.parquet.rglog", ".a.parquet.tmp",
                                                      ".b.parquet.j0"]
    assert all(p.is_symlink() for p in part.iterdir())


@as_root
@pytest.mark.parametrize("how", ["other owner", "world-writable", "link by other user",
                                 "partition of other owner"])
def test_unsafe_folders_are_refused_in_one_line(tmp_path, how):
    d = tmp_path / "rec"
    d.mkdir()
    if how == "other owner":
        os.chown(d, NOBODY, NOBODY)
    elif how == "world-writable":
        os.chmod(d, 0o777)
    elif how == "link by other user":
        real = d
        d = tmp_path / "link"
        plant(d, real)
    else:
        os.chmod(d, 0o1777)
        (d / first_file()[0]).mkdir()
        os.chown(d / first_file()[0], NOBODY, NOBODY)
    with pytest.raises(tcpsnap.UnsafePath if how != "partition of other owner" else tcpsnap.RecorderError):
        record(d)
    if how == "partition of other owner":
        return
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(d), "--duration", "0.2s",
                        "--no-pids"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcpsnap: error: ") and "refusing" in lines[0], r.stderr


def test_files_are_0644_and_folders_0755_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        d = tmp_path / "a" / "b" / "rec"
        record(d)
        j = journal.Journal(d / ".x.parquet.j0", SCHEMA)
        j.append(encode(fake_rows(10), 1))
        app = parquet.ParquetAppender(d / "y.parquet", SCHEMA)
        modes = {p.name: (p.stat().st_mode & 0o7777) for p in d.rglob("*")}
        j.close()
        app.discard()
    finally:
        os.umask(old)
    assert {n: m for n, m in modes.items() if not n.startswith("date=")} == {
        ".x.parquet.j0": 0o644, ".y.parquet.tmp": 0o644, ".y.parquet.rglog": 0o644,
        first_file()[1]: 0o644}
    assert modes[first_file()[0]] == 0o755
    for p in (tmp_path / "a", tmp_path / "a" / "b", d):
        assert p.stat().st_mode & 0o7777 == 0o755, p


# ---------------------------------------------------------------- recovery: idempotent at every crash point

class Crash(BaseException):
    pass


def _leftovers(folder: Path):
    """A file in progress with two row groups and a journal of its third (kill -9 after
    the last append), as the recorder leaves it; returns the rows it must recover."""
    name, steps, full = _build_crash_case(folder)
    cookies = sorted(zip(full.column("seq").to_pylist(), full.column("cookie").to_pylist(), strict=True))
    return name, cookies


@pytest.mark.parametrize("call", ["unlink", "link", "fsync", "ftruncate", "pwrite"])
def test_recovery_is_idempotent_at_every_crash_point(tmp_path, monkeypatch, call):
    """Recovery killed at its Nth ``call`` (every N), then run again: every row exactly
    once, nothing left behind."""
    real = getattr(os, call)
    n = 0
    while True:
        n += 1
        d = tmp_path / f"{call}{n}"
        d.mkdir()
        name, want = _leftovers(d)
        count = 0

        def crashing(*a, _n=n, **kw):
            nonlocal count
            count += 1
            if count == _n:
                raise Crash(f"{call} #{_n}")
            return real(*a, **kw)

        monkeypatch.setattr(os, call, crashing)
        try:
            rcv.recover_file(d / name)
            crashed = False
        except Crash:
            crashed = True
        finally:
            monkeypatch.setattr(os, call, real)
        res = rcv.recover_file(d / name)
        assert res.ok, (call, n, res)
        assert all_rows(d) == want, (call, n)
        assert sorted(p.name for p in d.iterdir() if not p.name.endswith(".parquet")) == [], (call, n)
        if not crashed:
            break
    assert n > 1


def test_interrupted_recovery_after_publishing_does_not_duplicate(tmp_path, monkeypatch):
    """The case that was seen: killed after the recovered file is published, before the
    replayed journal is removed. The next recovery must not replay it again."""
    name, want = _leftovers(tmp_path)
    real = os.unlink

    def no_unlink(*a, **kw):
        if ".j" in str(a[0] if a else kw["path"]):
            raise Crash("before the journal goes")
        return real(*a, **kw)

    monkeypatch.setattr(os, "unlink", no_unlink)
    with pytest.raises(Crash):
        rcv.recover_file(tmp_path / name)
    monkeypatch.setattr(os, "unlink", real)
    assert any(p.name.endswith(".j2") for p in tmp_path.iterdir())
    res = rcv.recover_file(tmp_path / name)
    assert res.ok and res.path is None
    assert all_rows(tmp_path) == want
    assert len(list(tmp_path.glob("*.parquet"))) == 1


# ---------------------------------------------------------------- recovery never destroys what it cannot read

def _many_row_groups(folder: Path, groups=9, rows=30):
    """An in-progress file of ``groups`` row groups (no journal), as after kill -9."""
    final = folder / "m.parquet"
    app = parquet.ParquetAppender(final, SCHEMA)
    want = []
    for g in range(groups):
        b = encode(fake_rows(rows, seed=g), 1, seq0=g)
        app.write_row_group(pa.Table.from_batches([b]))
        want.append(sorted(zip(b.column("seq").to_pylist(), b.column("cookie").to_pylist(), strict=True)))
    app.close_files()
    return final, want


def _entries(log: bytes):
    """Offsets of the row-group log's entries."""
    i, out = len(parquet.LOG_MAGIC), []
    while i < len(log):
        _, n, _, _ = struct.unpack_from("<cIIQ", log, i)
        out.append(i)
        i += 17 + n
    return out


def test_flipped_bit_in_the_log_header_keeps_the_file_aside(tmp_path):
    final, _ = _many_row_groups(tmp_path)
    tmp, log = layout.tmp_path(final), layout.rglog_path(final)
    blob = bytearray(log.read_bytes())
    blob[_entries(bytes(blob))[0] + 20] ^= 0x04
    log.write_bytes(blob)
    data = tmp.read_bytes()
    res = rcv.recover_file(final)
    assert not res.ok and res.path is None and "entry at byte 8 is corrupt" in res.problems[0]
    kept = tmp_path / UNRECOVERED
    assert (kept / tmp.name).read_bytes() == data  # every byte, under a clear name
    assert (kept / log.name).read_bytes() == bytes(blob)
    assert sorted(p.name for p in tmp_path.iterdir()) == [UNRECOVERED]
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "recover", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "nothing to recover" in r.stderr  # aside, it is no leftover


def test_flipped_bit_in_the_third_log_entry_keeps_the_other_row_groups(tmp_path):
    final, want = _many_row_groups(tmp_path, groups=9)
    log = layout.rglog_path(final)
    blob = bytearray(log.read_bytes())
    e = _entries(bytes(blob))  # [header, rg0, rg1, rg2, ...]
    blob[e[3] + 40] ^= 0x01
    log.write_bytes(blob)
    res = rcv.recover_file(final)
    assert not res.ok and "corrupt" in res.problems[0]
    assert res.rows == 8 * 30
    assert all_rows(tmp_path) == sorted(x for g, rows in enumerate(want) if g != 2 for x in rows)
    assert (tmp_path / UNRECOVERED / log.name).read_bytes() == bytes(blob)  # the entry's bytes
    # the bytes of the lost row group stay in the published file (unreferenced)
    assert res.path.stat().st_size > sum(pq.ParquetFile(res.path).metadata.row_group(i).total_byte_size
                                         for i in range(8)) * 0


def test_missing_log_keeps_the_data_aside_and_exit_1(tmp_path):
    part = tmp_path / "date=2026-01-01"
    part.mkdir()
    final, _ = _many_row_groups(part)
    layout.rglog_path(final).unlink()
    data = layout.tmp_path(final).read_bytes()
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "recover", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "row-group log missing" in r.stderr and "Traceback" not in r.stderr
    kept = tmp_path / UNRECOVERED / part.name / layout.tmp_path(final).name
    assert kept.read_bytes() == data
    assert list(part.iterdir()) == []


def test_corrupt_journal_frame_recovers_the_frames_before_it(tmp_path):
    final = tmp_path / "j.parquet"
    app = parquet.ParquetAppender(final, SCHEMA)
    j = journal.Journal(layout.journal_path(final, 0), SCHEMA)
    enc = BatchEncoder()
    batches = [encode(fake_rows(20, seed=k), 1, seq0=k, enc=enc) for k in range(3)]
    sizes = []
    for b in batches:
        j.append(b)
        sizes.append(j.nbytes)
    j.close()
    app.close_files()
    blob = bytearray(j.path.read_bytes())
    blob[sizes[1] + 30] ^= 0x80  # inside the third frame's payload
    j.path.write_bytes(blob)
    res = rcv.recover_file(final)
    assert not res.ok and "does not check" in res.problems[0]
    assert res.from_journal == 40
    assert all_rows(tmp_path) == sorted(
        x for b in batches[:2] for x in zip(b.column("seq").to_pylist(), b.column("cookie").to_pylist(), strict=True))
    assert (tmp_path / UNRECOVERED / j.path.name).read_bytes() == bytes(blob)


def test_stray_files_that_look_like_leftovers_are_not_deleted(tmp_path):
    part = tmp_path / "date=2026-01-01"
    part.mkdir()
    (part / ".notes.parquet.j0").write_bytes(b"my own notes\n")
    (part / ".other.parquet.tmp").write_bytes(b"GIF89a...")
    res = tcpsnap.recover(tmp_path)
    assert all(r.path is None for r in res)
    assert (part / ".notes.parquet.j0").read_bytes() == b"my own notes\n"
    assert (part / ".other.parquet.tmp").read_bytes() == b"GIF89a..."


def test_a_crafted_leftover_does_not_stop_the_next_recording(tmp_path):
    part = tmp_path / first_file()[0]
    part.mkdir(parents=True)
    (part / ".x.parquet.tmp").write_bytes(b"PAR1" + os.urandom(5000))
    (part / ".x.parquet.rglog").write_bytes(parquet.LOG_MAGIC + os.urandom(300))
    st = record(tmp_path)
    assert st["snapshots"] == 6 and st["first_seq"] == 0
    assert (tmp_path / UNRECOVERED / part.name / ".x.parquet.tmp").exists()


def test_a_journal_that_claims_gigabytes_is_refused_without_allocating(tmp_path):
    """A 0.1 MB crafted journal claiming 1.8 GB once decompressed: recovery refuses the
    frame (kept aside), and the process does not grow anywhere near that."""
    final = tmp_path / "c.parquet"
    j = journal.Journal(layout.journal_path(final, 0), SCHEMA)
    j.close()
    payload = os.urandom(100_000)
    head = struct.pack("<IQ", len(payload), 1_800_000_000)
    with open(j.path, "ab") as f:
        f.write(head + struct.pack("<II", zlib.crc32(head), zlib.crc32(payload)) + payload)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = rcv.recover_file(final)
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert grew < 512 << 20
    assert not res.ok and res.path is None
    assert (tmp_path / UNRECOVERED / j.path.name).exists()


# ---------------------------------------------------------------- time, fds, journal size

def test_clock_set_back_between_runs_never_reuses_a_seq(tmp_path):
    """The next seq comes from the highest last_seq of every footer, not from the newest
    file by name (names follow the wall clock)."""

    class Back(SimClock):
        def time_ns(self):
            return super().time_ns() - 3600 * 10**9  # an hour earlier than the first run

    record(tmp_path, clock=SimClock())
    record(tmp_path, clock=Back())
    seqs = sorted(s for s, _ in all_rows(tmp_path))
    assert seqs == sorted(list(range(12)) * 3)
    names = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    first = pq.read_metadata(next(p for p in tmp_path.rglob("*.parquet") if p.name == names[0]))
    assert first.metadata[b"tcpsnap.first_seq"] == b"6"  # the file named earlier holds the later run


@pytest.mark.skipif(not LINUX, reason="live capture")
def test_recording_in_a_process_with_more_than_1024_fds(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip("cannot raise the fd limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with tcpsnap.Recorder(tmp_path / "r", interval="10ms", pids=False) as rec:
            rec.run("0.3s")
            assert rec.snapshots >= 5
            mode_changes = tcpsnap.Recorder(tmp_path / "c", interval="10ms", pids=False, mode="changes")
        with mode_changes as rc:
            rc.run("0.2s")
            assert rc.snapshots >= 3
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_journal_is_compressed(tmp_path):
    """The journal is zstd frames: a steady table's rows take a fraction of their Arrow
    size (it once needed hundreds of times the Parquet's space)."""
    rows = fake_rows(2000, seed=1)
    enc = BatchEncoder()
    j = journal.Journal(tmp_path / "j", SCHEMA)
    raw = 0
    for k in range(20):
        b = encode(rows, 1, seq0=k, enc=enc)
        raw += b.nbytes
        j.append(b)
    j.close()
    assert j.path.stat().st_size < raw / 5
    schema, got, complete = journal.read_journal(j.path)
    assert complete and sum(b.num_rows for b in got) == 40_000


def test_page_checksums_turn_bit_rot_into_an_error(tmp_path):
    record(tmp_path, tables(n=40, conns=50))
    f = next(tmp_path.rglob("*.parquet"))
    md = pq.read_metadata(f)
    cc = md.row_group(0).column(md.schema.names.index("cookie"))
    start = cc.data_page_offset
    blob = bytearray(f.read_bytes())
    blob[start + cc.total_compressed_size // 2] ^= 0x10
    f.write_bytes(blob)
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(f, page_checksum_verification=True)


def test_full_disk_message_says_truly_what_was_kept():
    from tcpsnap.record.writer import wrap_error

    e = OSError(28, "No space left on device", "/r/x")
    assert "no snapshot of this run reached the disk" in str(wrap_error(e, None, Path("/r")))
    assert "the snapshots up to seq 41 are kept" in str(wrap_error(e, None, Path("/r"), 41))


def test_failed_journal_write_leaves_no_torn_frame(tmp_path, monkeypatch):
    j = journal.Journal(tmp_path / "j", SCHEMA)
    enc = BatchEncoder()
    j.append(encode(fake_rows(50), 1, seq0=0, enc=enc))
    size = j.path.stat().st_size
    real = os.pwrite

    def half(fd, data, pos):
        real(fd, bytes(data)[:len(data) // 2], pos)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half)
    with pytest.raises(OSError):
        j.append(encode(fake_rows(50, seed=2), 1, seq0=1, enc=enc))
    monkeypatch.setattr(os, "pwrite", real)
    assert j.path.stat().st_size == size
    with pytest.raises(OSError, match="unusable"):
        j.append(encode(fake_rows(5), 1, seq0=2, enc=enc))
    j.close()
    schema, got, complete, status = journal.read_journal(j.path, detail=True)
    assert status == "ok" and [b.num_rows for b in got] == [50]


# ---------------------------------------------------------------- fuzz: leftovers never lose verified rows

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=80, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.data())
def test_fuzzed_leftovers_never_crash_recovery_or_lose_verified_rows(tmp_path_factory, data):
    """Random damage (bit flips, cuts, inserted garbage) to a crash's leftovers (a file of two
    row groups, its log, a journal): recovery returns a result, publishes only real rows,
    never twice, in files whose pages check. A bit flip in one file is either reported
    (that file's bytes kept, in place or aside, byte for byte) or leaves the file where it
    is untouched; and the rows of the files not hit are all recovered."""
    d = tmp_path_factory.mktemp("fuzz")
    name, want = _leftovers(d)
    files = sorted(d.iterdir())
    jn = next(p.name for p in files if ".j" in p.name)
    _, jb, _ = journal.read_journal(d / jn)
    in_journal = {x for b in jb for x in zip(b.column("seq").to_pylist(), b.column("cookie").to_pylist(),
                                             strict=True)}
    original = {p.name: p.read_bytes() for p in files}
    kinds = []
    for _ in range(data.draw(st.integers(1, 3))):
        p = data.draw(st.sampled_from(files))
        blob = bytearray(p.read_bytes())
        kind = data.draw(st.sampled_from(["flip", "cut", "garbage"]))
        if kind == "flip" and blob:
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "cut":
            blob = blob[:data.draw(st.integers(0, len(blob)))]
        else:
            i = data.draw(st.integers(0, len(blob)))
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=64))
        p.write_bytes(bytes(blob))
        kinds.append((kind, p.name))
    damaged = {p.name: p.read_bytes() for p in files}
    res = rcv.recover_file(d / name)
    got = all_rows(d)
    assert len(got) == len(set(got))  # no row twice
    assert set(got) <= set(want)  # no invented row
    for f in d.glob("*.parquet"):
        pq.read_table(f, page_checksum_verification=True)
    hit = {n for _, n in kinds if damaged[n] != original[n]}
    if len(hit) == 1 and all(k == "flip" for k, _ in kinds):  # (flips of one file only)
        (n,) = hit
        aside = [p.read_bytes() for p in (d / UNRECOVERED).rglob("*") if p.is_file()] \
            if (d / UNRECOVERED).exists() else []
        in_place = (d / n).exists() and (d / n).read_bytes() == damaged[n]
        # a data file's bytes may also all stay inside the published file (a flip in a
        # page header field no reader uses changes no value, and no checksum covers it)
        inside = any(f.read_bytes().startswith(damaged[n]) for f in d.glob("*.parquet"))
        assert in_place or inside or (not res.ok and damaged[n] in aside), (kinds, res)
        others = in_journal if n != jn else set(want) - in_journal
        assert others <= set(got), (kinds, res)


# ---------------------------------------------------------------- every signal

def _pty_record(out: Path):
    """``tcpsnap record`` on a real terminal (a pty it controls): returns (pid, master fd)
    once its status line is drawn."""
    import pty
    import select as sel

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-m", "tcpsnap", "record", str(out),
                                  "--interval", "20ms", "--no-pids"])
    buf = b""
    deadline = time.monotonic() + 30
    while b"snapshots" not in buf and time.monotonic() < deadline:
        if sel.select([fd], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):
                buf += os.read(fd, 4096)
    assert b"snapshots" in buf, buf
    return pid, fd, buf


def _read_all(fd, seconds):
    import select as sel

    buf = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sel.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def _closed_cleanly(out: Path):
    files = sorted(out.rglob("*.parquet"))
    assert files, "no file"
    assert [pq.read_metadata(f).metadata[b"tcpsnap.closed"] for f in files] == [b"clean"] * len(files)
    assert sorted(p.name for p in out.rglob(".*")) == []  # no lock, nothing in progress
    seqs = sorted(pq.read_table(files[0], columns=["seq"]).column("seq").to_pylist())
    return seqs


@pytest.mark.skipif(not LINUX, reason="live capture and POSIX signals")
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGHUP", "terminal closed"])
def test_every_stopping_signal_closes_the_recording_cleanly(tmp_path, how):
    """Ctrl-C, SIGTERM, SIGHUP, and the terminal going away (the kernel's SIGHUP to a
    session whose pty closes: a dropped ssh session) all finish the file: exit 0, a
    clean footer, no leftovers."""
    out = tmp_path / "rec"
    pid, fd, _ = _pty_record(out)
    time.sleep(0.3)
    if how == "terminal closed":
        os.close(fd)
    else:
        os.kill(pid, getattr(signal, how))
    _, status = os.waitpid(pid, 0)
    if how != "terminal closed":
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert _closed_cleanly(out)


@pytest.mark.skipif(not LINUX, reason="live capture and POSIX signals")
def test_sigusr1_prints_the_counters_and_goes_on(tmp_path):
    out = tmp_path / "rec"
    pid, fd, before = _pty_record(out)
    assert not re.search(rb"snapshots[^\r\n]*\n", before)  # the status line has no newline
    os.kill(pid, signal.SIGUSR1)
    got = _read_all(fd, 1.0)
    assert re.search(rb"\d+ snapshots +[\d,]+ rows/s +\d+ overruns? +[\d.]+ \w+ +\d+ files?( \+ 1 open)?\r?\n",
                     got), got
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    _closed_cleanly(out)
    # piped, quiet otherwise: SIGUSR1 still answers on stderr
    p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "p"),
                          "--interval", "20ms", "--no-pids"], stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, p.kill)      # a hang detector, not a timing
    watchdog.start()
    try:
        # its start line comes after its handlers are in place: a SIGUSR1 sent before
        # (a sleep on a loaded machine) would end it, SIGUSR1's default action
        got = [p.stderr.readline()]
        p.send_signal(signal.SIGUSR1)
        while not re.search(r"snapshots? .* rows/s .* overruns?\b", got[-1]):
            got.append(p.stderr.readline())
            assert got[-1], got
        p.send_signal(signal.SIGTERM)
        err = "".join(got) + p.communicate(timeout=120)[1]
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    assert len(re.findall(r"snapshots? .* rows/s .* overruns?\b", err)) == 1, err

