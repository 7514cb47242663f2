"""Retention (``Recorder(keep=..., max_bytes=...)``, ``tcpsnap record --keep/--max-bytes``):
which files go, which never do, on folders of real aged recordings made on simulated
clocks; and ``parse_size``."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from _changes_util import Scripted, row
from tcpsnap import Recorder
from tcpsnap._units import parse_size
from tcpsnap.record.layout import file_names
from tcpsnap.record.retention import Retention
from tcpsnap.record.safedir import SafeDir

S = 10**9
H = 3600 * S
DAY = 86400 * S
NOW = 1_795_000_000 * S  # 2026-11-18T11:06:40Z
TICK = 100_000_000


class AgedClock:
    """tests/_changes_util.SimClock starting at ``wall0``, one ``step`` per snapshot:
    each ``time_ns()`` (one per snapshot) starts the next step, ``monotonic_ns()``
    follows."""

    def __init__(self, wall0: int, step: int = TICK) -> None:
        self.k, self.wall0, self.step = -1, wall0, step

    def time_ns(self) -> int:
        self.k += 1
        return self.wall0 + self.k * self.step

    def monotonic_ns(self) -> int:
        return 10**12 + self.k * self.step + 1_000_000


def tables(n: int) -> list[np.ndarray]:
    return [np.array([row(1, "127.0.0.1", 1000 + i, "127.0.0.1", 80, i + 1)]) for i in range(n)]


def record(path: Path, wall0: int, n: int, step: int = TICK, on_take=None, **kw) -> Recorder:
    """``n`` snapshots, ``step`` apart from ``wall0``, through the real Recorder.
    ``on_take(i, rec)`` runs before take ``i`` (0 is the warm-up)."""
    snap = Scripted(tables(n), pids=False, on_take=on_take)
    clock = AgedClock(wall0, step)
    rec = Recorder(path, interval=0, snapshotter=snap, clock=clock, nice=None, **kw)
    if rec.retention is not None:  # its passes read the time without starting a slot
        rec.retention.now_ns = lambda: clock.wall0 + max(clock.k, 0) * clock.step
    with rec:
        snap.rec = rec
        rec.run()
    return rec


def name_of(first_ns: int) -> str:
    part, name = file_names(first_ns)
    return f"{part}/{name}"


def tree(root: Path) -> set[str]:
    """Every entry under ``root`` (links as themselves, not followed), relative."""
    out = set()
    for dp, dns, fns in os.walk(root):
        for n in fns + [d for d in dns if os.path.islink(os.path.join(dp, d))]:
            out.add(os.path.relpath(os.path.join(dp, n), root))
    return out


def in_progress(root: Path) -> list[Path]:
    return [p for p in root.glob("date=*/.tcpsnap-*") if p.is_file()]


# The aged recording: (first snapshot, snapshots, step) of each file, one run each.
F20 = NOW - 20 * DAY                      # expired
F15 = NOW - 15 * DAY                      # 3 snapshots over 2 h: still expired
FSTRADDLE = NOW - 14 * DAY - 2 * H        # starts before the cutoff, ends 2 h after it: kept
F13 = NOW - 13 * DAY
F1 = NOW - 1 * DAY
AGED = [(F20, 1, TICK), (F15, 3, H), (FSTRADDLE, 3, 2 * H), (F13, 1, TICK), (F1, 2, TICK)]


@pytest.fixture(scope="module")
def aged_template(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("aged") / "rec"
    for first, n, step in AGED:
        record(d, first, n, step, rotate="1d")
    assert tree(d) == {name_of(first) for first, _, _ in AGED}
    return d


@pytest.fixture
def aged(aged_template, tmp_path) -> Path:
    d = tmp_path / "rec"
    shutil.copytree(aged_template, d, symlinks=True)
    return d


def plant(root: Path, tmp_path: Path) -> set[str]:
    """What retention must never touch: what recovery kept aside, a link named like an
    expired file (to a file outside), a link named like a partition, a file of another
    name. Returns their relative names."""
    old = root / name_of(F20)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.parquet"
    shutil.copyfile(old, victim)
    (outside / Path(name_of(F20)).name).write_bytes(old.read_bytes())
    aside = root / "_tcpsnap_unrecovered" / name_of(F20)
    aside.parent.mkdir(parents=True)
    shutil.copyfile(old, aside)
    link = root / file_names(F15)[0] / file_names(F15 - 3 * DAY)[1]  # older still
    link.symlink_to(victim)
    (root / "date=2026-10-01").symlink_to(outside, target_is_directory=True)
    other = root / file_names(F13)[0] / "notes.parquet"
    other.write_bytes(b"not ours")
    return {str(p.relative_to(root)) for p in (aside, link, root / "date=2026-10-01", other)}


def outside_intact(tmp_path: Path, template: Path) -> None:
    outside = tmp_path / "outside"
    want = (template / name_of(F20)).read_bytes()
    assert (outside / "victim.parquet").read_bytes() == want
    assert (outside / Path(name_of(F20)).name).read_bytes() == want


# ---------------------------------------------------------------- keep

def test_keep_deletes_files_whose_newest_snapshot_is_older(aged, aged_template, tmp_path, caplog):
    planted = plant(aged, tmp_path)
    caplog.set_level(logging.INFO, logger="tcpsnap")
    rec = record(aged, NOW, 25, rotate="1s", keep="14d")
    new = [str(p.relative_to(aged)) for p in rec.files]
    assert len(new) == 3  # 25 snapshots, 10 a file
    # F20 and F15 gone (and their partitions, F15's but for the planted link); the file
    # that began before the cutoff but ends after it stays
    assert tree(aged) == {name_of(FSTRADDLE), name_of(F13), name_of(F1), *new, *planted}
    assert not (aged / file_names(F20)[0]).exists()
    outside_intact(tmp_path, aged_template)
    st = rec.stats
    assert st["retention_deleted_files"] == 2 and st["retention_errors"] == 0
    assert st["retention_deleted_bytes"] == sum(
        (aged_template / name_of(f)).stat().st_size for f in (F20, F15))
    deleted = [r.getMessage() for r in caplog.records if "retention: deleted date=" in r.getMessage()]
    assert len(deleted) == 2 and all("older than 14d" in m for m in deleted), deleted


def test_keep_leaves_unshipped_files(aged):
    ret = Retention(keep="14d", now_ns=lambda: NOW)
    ret.unshipped = lambda p: p.name == Path(name_of(F20)).name
    with SafeDir.open(aged) as root:
        assert ret.run(root) == [name_of(F15)]
    assert tree(aged) == {name_of(f) for f in (F20, FSTRADDLE, F13, F1)}
    ret.unshipped = None
    with SafeDir.open(aged) as root:
        assert ret.run(root) == [name_of(F20)]


def test_keep_ages_a_file_without_statistics_by_its_mtime(aged):
    bad = aged / name_of(F20)
    bad.write_bytes(b"PAR1 not a footer PAR1")  # damaged: no statistics to read
    ret = Retention(keep="14d", now_ns=lambda: NOW)
    with SafeDir.open(aged) as root:
        assert ret.run(root) == [name_of(F15)]  # mtime is now: not old
        os.utime(bad, ns=(F20, F20))
        assert ret.run(root) == [name_of(F20)]


# ---------------------------------------------------------------- max_bytes

def sizes(root: Path, firsts) -> list[int]:
    return [(root / name_of(f)).stat().st_size for f in firsts]


def test_max_bytes_deletes_oldest_first_exactly(aged):
    firsts = [f for f, _, _ in AGED]
    total = sum(sizes(aged, firsts))
    s20, s15, sst = sizes(aged, [F20, F15, FSTRADDLE])
    with SafeDir.open(aged) as root:
        assert Retention(max_bytes=total).run(root) == []
        assert Retention(max_bytes=total - s20).run(root) == [name_of(F20)]
        assert Retention(max_bytes=total - s20 - s15 - 1).run(root) == [name_of(F15), name_of(FSTRADDLE)]
    assert tree(aged) == {name_of(F13), name_of(F1)}
    assert sst > 1


def test_max_bytes_counts_the_file_in_progress_and_never_deletes_it(aged):
    part = file_names(F1)[0]
    tmp = aged / part / f".{Path(name_of(F1 + H)).name}.tmp"
    tmp.write_bytes(b"x" * 5000)
    total = sum(sizes(aged, [f for f, _, _ in AGED]))
    with SafeDir.open(aged) as root:
        ret = Retention(max_bytes=total)  # the file in progress's 5000 bytes push one out
        assert ret.run(root) == [name_of(F20)]
        assert ret.bytes == total - ret.deleted_bytes + 5000
        ret = Retention(max_bytes=1)  # all but the newest finished file and the one in progress
        ret.run(root)
    assert tree(aged) == {name_of(F1), str(tmp.relative_to(aged))}


def test_max_bytes_deletes_unshipped_files_last(aged, caplog):
    total = sum(sizes(aged, [f for f, _, _ in AGED]))
    s20, s15, sst, s13 = sizes(aged, [F20, F15, FSTRADDLE, F13])
    unshipped = {Path(name_of(f)).name for f in (F20, F15)}
    with SafeDir.open(aged) as root:
        ret = Retention(max_bytes=total - sst, unshipped=lambda p: p.name in unshipped)
        assert ret.run(root) == [name_of(FSTRADDLE)]  # the oldest shipped one
        caplog.set_level(logging.INFO, logger="tcpsnap")
        ret.max_bytes = total - sst - s13 - 1  # F13 is not enough: then the oldest unshipped
        assert ret.run(root) == [name_of(F20), name_of(F13)]
    assert ret.deleted_unshipped == 1
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "not shipped yet" in warned[0].getMessage()
    assert tree(aged) == {name_of(F15), name_of(F1)}


def test_max_bytes_during_a_recording_keeps_the_open_file(aged, aged_template, tmp_path):
    """max_bytes=1: the pass at open leaves only the newest old file; each finished file
    then pushes the one before out; a pass while a file is open (over the limit with the
    file just finished) deletes neither, and the open file ends up as the one file
    left, with every snapshot."""
    planted = plant(aged, tmp_path)
    seen = {}

    def on_take(i, rec):
        if i != 17:  # the second file's first batch went to the writer at snapshot 14
            return
        # the second file (snapshots 9..18: the monotonic origin is one slot before
        # the first) is open; wait until the writer is on it and its rows are on disk,
        # then run a pass as the writer would
        for _ in range(500):
            cur = rec.current_file
            if cur is not None and "T110640.900Z" in cur.name and in_progress(aged):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the writer never got to the second file")
        seen["before"] = {p: p.stat().st_size for p in in_progress(aged)}
        assert sum(seen["before"].values()) > 1
        seen["deleted"] = rec.retention.run(rec._root, busy_part=cur.parent.name)
        seen["after"] = {p: p.stat().st_size for p in in_progress(aged)}
        seen["tree"] = tree(aged)

    rec = record(aged, NOW, 19, rotate="1s", max_bytes=1, on_take=on_take)
    first, second = [str(p.relative_to(aged)) for p in rec.files]
    # mid-run, over the limit: only the newest finished file and the open one are left,
    # and the pass deletes neither
    assert seen["deleted"] == []
    # every file in progress is still there, none shorter (the writer goes on meanwhile:
    # a file may grow, or the next appear, between the two looks)
    assert all(p in seen["after"] and seen["after"][p] >= n for p, n in seen["before"].items())
    shown = {p for p in seen["tree"] if not Path(p).name.startswith(".tcpsnap-")}
    assert shown == {first, *planted, ".tcpsnap.lock"}
    assert {str(p.relative_to(aged)) for p in seen["before"]} <= seen["tree"]
    assert tree(aged) == {second, *planted}
    outside_intact(tmp_path, aged_template)
    seq = pq.read_table(aged / second, columns=["seq"]).column("seq").to_pylist()
    assert seq == list(range(rec.first_seq + 9, rec.first_seq + 19))
    assert rec.stats["retention_deleted_files"] == len(AGED) + 1
    assert rec.stats["retention_files"] == 1


# ---------------------------------------------------------------- folders and owners

def test_empty_partitions_go_but_not_the_busy_one(aged):
    (aged / "date=2026-01-01").mkdir()
    (aged / "date=2026-01-02").mkdir()
    with SafeDir.open(aged) as root:
        Retention(keep="1d", now_ns=lambda: NOW - 30 * DAY).run(root, busy_part="date=2026-01-02")
    assert not (aged / "date=2026-01-01").exists()
    assert (aged / "date=2026-01-02").is_dir()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_another_users_file_is_left_alone(aged):
    theirs = aged / name_of(F20)
    os.chown(theirs, 65534, 65534)
    with SafeDir.open(aged) as root:
        assert Retention(keep="14d", now_ns=lambda: NOW).run(root) == [name_of(F15)]
    assert theirs.exists()


def test_a_failed_deletion_is_counted_and_the_recording_goes_on(aged, monkeypatch, caplog):
    real = os.unlink

    def refuse(path, *a, dir_fd=None, **kw):
        if dir_fd is not None and str(path).startswith("tcpsnap-2026102"):
            raise PermissionError(13, "Permission denied")
        return real(path, *a, dir_fd=dir_fd, **kw)

    monkeypatch.setattr(os, "unlink", refuse)
    with SafeDir.open(aged) as root:
        ret = Retention(keep="14d", now_ns=lambda: NOW)
        assert ret.run(root) == [name_of(F15)]
    assert ret.errors == 1 and ret.deleted_files == 1
    assert (aged / name_of(F20)).exists()


# ---------------------------------------------------------------- options

def test_bad_retention_options():
    for kw in ({"keep": 0}, {"keep": "soon"}, {"max_bytes": 0}, {"max_bytes": "5 parsecs"}, {}):
        with pytest.raises(ValueError):
            Retention(**kw)
    with pytest.raises(ValueError, match="bad size"):
        Recorder("unused", max_bytes="lots")
    assert Recorder("unused").retention is None
    assert not Path("unused").exists()


@pytest.mark.parametrize("text, n", [
    ("5GiB", 5 << 30), ("500MiB", 500 << 20), ("1.5G", 3 << 29), ("1.5GB", 1_500_000_000),
    ("10", 10), ("0", 0), ("2k", 2048), ("2KB", 2000), ("1tib", 1 << 40), ("1 TB", 10**12),
    ("1.1GB", 1_100_000_000), (".5KiB", 512), (7, 7), ("12B", 12),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "-1", "5x", "GiB", "1.2.3", "5gibs", "1e9", -1, "5 G B"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError, match="bad size"):
        parse_size(bad)


# ---------------------------------------------------------------- the command line

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="live capture")
def test_record_cli_keep_and_max_bytes(tmp_path):
    import subprocess

    d = tmp_path / "rec"
    now = time.time_ns()
    old, recent = now - 30 * DAY, now - 1 * DAY
    record(d, old, 1)
    record(d, recent, 1)
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(d), "--duration", "0.3s",
                        "--no-pids", "--keep", "14d", "--max-bytes", "1GiB", "-v"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "retention: keep 14d, at most 1.0 GiB" in r.stderr, r.stderr
    assert f"retention: deleted {name_of(old)}" in r.stderr, r.stderr
    left = tree(d)
    assert name_of(recent) in left and name_of(old) not in left and len(left) == 2, left
    for bad in (["--max-bytes", "lots"], ["--keep", "0"], ["--max-bytes", "0"]):
        r = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "x"), *bad],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert not (tmp_path / "x").exists()
