"""Bad files in a recording folder: every reader names the file at fault, ``skip_bad`` /
``--skip-bad`` reads the others exactly and says what it skipped, and nothing is silently
wrong: a corrupt page (checksums), a truncated file, a foreign Parquet file, a copy of a
file, a file moved to another ``date=`` folder, a folder of two modes.

The recordings are scripted (``_changes_util.record``): known tables, several files."""

import io
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import tcpsnap
from _changes_util import record, row
from tcpsnap import ROW_DTYPE, BadRecording
from tcpsnap import TcpState as S

N = 12                                  # snapshots; 2..5 rows each, about 3 per file


def tables():
    out = []
    for i in range(N):
        rows = [row(S.LISTEN, "127.0.0.1", 80, "0.0.0.0", 0, cookie=1)]
        for c in range(i % 4 + 1):
            rows.append(row(S.ESTABLISHED, "127.0.0.1", 5000 + c, "10.0.0.1", 443, cookie=100 + c, rxq=i))
        out.append(np.array(rows, ROW_DTYPE))
    return out


ROWS = {i: 2 + i % 4 for i in range(N)}  # rows per snapshot


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """{mode: (folder, its full-mode DataFrame)}, recorded once; tests damage copies."""
    out = {}
    for mode in ("full", "changes"):
        path = tmp_path_factory.mktemp("clean") / mode
        record(path, tables(), mode=mode, rotate="300ms")
        df = tcpsnap.read(path)
        assert df.groupby("seq").size().to_dict() == ROWS
        assert len(files(path)) >= 4
        out[mode] = (path, df)
    return out


def files(path):
    return sorted(path.glob("date=*/*.parquet"))


def copy(clean, tmp_path, mode="full"):
    src, df = clean[mode]
    dst = tmp_path / "rec"
    shutil.copytree(src, dst)
    return dst, df


def seq_range(f):
    kv = pq.read_metadata(f).metadata
    return int(kv[b"tcpsnap.first_seq"]), int(kv[b"tcpsnap.last_seq"])


def without(df, f):
    """``df`` without the snapshots of file ``f`` (as its footer numbers them)."""
    a, b = seq_range(f)
    assert 0 < a <= b < N - 1            # a file in the middle: others before and after
    return df[(df.seq < a) | (df.seq > b)].reset_index(drop=True)


def same(got, want):
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))


def flip_silently(f):
    """Flip one bit in a data page of ``f`` so that a read without checksum verification
    returns other values and no error: the bit rot only the page checksums catch."""
    data = f.read_bytes()
    before = pq.read_table(f)
    md = pq.read_metadata(f)
    for col in range(md.num_columns):
        c = md.row_group(0).column(col)
        begin = c.dictionary_page_offset or c.data_page_offset
        for pos in range(begin + c.total_compressed_size - 1, c.data_page_offset + 8, -1):
            bad = bytearray(data)
            bad[pos] ^= 0x04
            f.write_bytes(bytes(bad))
            try:
                after = pq.read_table(f)
            except (OSError, pa.ArrowException):
                continue
            if not after.equals(before):
                return
    raise AssertionError(f"no silent bit flip found in {f}")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def one_line_naming(p, *paths):
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for path in paths:
        assert str(path) in lines[0], p.stderr
    return lines[0]


def skipped_warning(caplog, *paths):
    recs = [r for r in caplog.records if r.name == "tcpsnap.reading"]
    assert len(recs) == 1 and recs[0].levelno == logging.WARNING, [r.getMessage() for r in recs]
    msg = recs[0].getMessage()
    assert msg.startswith(f"skipped {len(paths)} bad file")
    for path in paths:
        assert str(path) in msg
    return msg


# ---------------------------------------------------------------- a corrupt page


def test_corrupt_page_is_an_error_naming_the_file(clean, tmp_path, caplog):
    rec, df = copy(clean, tmp_path)
    f = files(rec)[2]
    flip_silently(f)                     # pyarrow alone reads it without a word
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    msg = str(e.value)
    assert f"{f}: not a readable recording file: corrupt data (" in msg and "CRC" in msg
    assert "skip_bad=True or --skip-bad" in msg and "\n" not in msg
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        got = tcpsnap.read(rec, skip_bad=True)
    same(got, without(df, f))
    skipped_warning(caplog, f)
    # the same with a time range, and table_at of a snapshot in another file
    ts = df.groupby("seq")["timestamp"].first()
    with pytest.raises(BadRecording, match="corrupt data"):
        tcpsnap.read(rec, start=ts[0], end=ts[N - 1])
    want = without(df, f)
    same(tcpsnap.read(rec, start=ts[0], end=ts[N - 1], skip_bad=True), want[want.seq < N - 1])
    same(tcpsnap.table_at(rec, ts[N - 1], skip_bad=True), df[df.seq == N - 1])


def test_corrupt_page_in_a_changes_recording(clean, tmp_path, caplog):
    rec, df = copy(clean, tmp_path, "changes")
    f = files(rec)[2]
    flip_silently(f)
    with pytest.raises(BadRecording, match="corrupt data") as e:
        tcpsnap.read(rec)
    assert str(f) in str(e.value)
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        got = tcpsnap.read(rec, skip_bad=True)
    same(got, without(df, f))             # every file starts with a keyframe
    skipped_warning(caplog, f)


def test_corrupt_page_cli(clean, tmp_path):
    rec, df = copy(clean, tmp_path)
    f = files(rec)[2]
    flip_silently(f)
    want = without(df, f)
    for cmd in (["info"], ["export", "--to", "csv"]):
        p = cli(cmd[0], rec, *cmd[1:])
        assert p.returncode == 1
        line = one_line_naming(p, f)
        assert line.startswith("tcpsnap: error: ") and "--skip-bad" in line
    p = cli("info", rec, "--json", "--skip-bad")
    assert p.returncode == 0, p.stderr
    line = one_line_naming(p, f)
    assert line.startswith("tcpsnap: note: skipped 1 bad file of ")
    s = json.loads(p.stdout)
    assert (s["snapshots"], s["rows"], s["files"]) == (want.seq.nunique(), len(want), len(files(rec)) - 1)
    assert s["skipped"] == [{"file": str(f), "problem": s["skipped"][0]["problem"]}]
    assert s["skipped"][0]["problem"].startswith("not a readable recording file: corrupt data (")
    p = cli("export", rec, "--to", "csv", "--skip-bad")
    assert p.returncode == 0, p.stderr
    one_line_naming(p, f)
    got = pd.read_csv(io.StringIO(p.stdout))
    assert got["seq"].tolist() == want["seq"].tolist()
    assert got["rx_queue"].tolist() == want["rx_queue"].tolist()
    pytest.importorskip("matplotlib")
    png = tmp_path / "states.png"
    p = cli("plot", rec, "-o", png, "--utc")
    assert p.returncode == 1 and "corrupt data" in one_line_naming(p, f) and not png.exists()
    p = cli("plot", rec, "-o", png, "--utc", "--skip-bad")
    assert p.returncode == 0 and "skipped 1 bad file" in one_line_naming(p, f)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- a truncated file


def test_truncated_file(clean, tmp_path, caplog):
    rec, df = copy(clean, tmp_path)
    f = files(rec)[1]
    want = without(df, f)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])    # a crash, a full disk: no footer
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value).startswith(f"{f}: not a readable recording file: unreadable Parquet footer (")
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        same(tcpsnap.read(rec, skip_bad=True), want)
    skipped_warning(caplog, f)
    for cmd in (["info"], ["export", "--to", "jsonl"]):
        p = cli(cmd[0], rec, *cmd[1:])
        assert p.returncode == 1 and "unreadable Parquet footer" in one_line_naming(p, f)
    p = cli("export", rec, "--to", "jsonl", "--skip-bad")
    assert p.returncode == 0, p.stderr
    assert "skipped 1 bad file" in one_line_naming(p, f)
    assert [json.loads(x)["seq"] for x in p.stdout.splitlines()] == want["seq"].tolist()


# ---------------------------------------------------------------- a foreign file


def test_foreign_parquet_file_is_named_not_read_instead(clean, tmp_path, caplog):
    rec, df = copy(clean, tmp_path)
    foreign = files(rec)[0].parent / "a-foreign.parquet"      # first by name
    pd.DataFrame({"x": [1]}).to_parquet(foreign)
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value).startswith(f"{foreign}: not a tcpsnap recording file (no tcpsnap.version")
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        same(tcpsnap.read(rec, skip_bad=True), df)
    skipped_warning(caplog, foreign)
    # tcpsnap's metadata but not a recording's columns
    t = pa.table({"timestamp": [1], "x": [2]}).replace_schema_metadata({"tcpsnap.version": "0.1.0"})
    pq.write_table(t, foreign)
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    # no tcpsnap.schema_version: checked as a file of version 1 (made before the key existed)
    assert str(e.value).startswith(f"{foreign}: not a tcpsnap recording file (its columns are not a "
                                   "full-mode recording's of schema version 1: no seq, family, state ... column)")
    t = t.replace_schema_metadata({"tcpsnap.version": "0.1.0", "tcpsnap.schema_version": "2"})
    pq.write_table(t, foreign)
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value).startswith(f"{foreign}: not a tcpsnap recording file (its columns are not a "
                                   "full-mode recording's of schema version 2: no seq, kind, family ... column)")
    p = cli("info", rec)
    assert p.returncode == 1 and "not a tcpsnap recording file" in one_line_naming(p, foreign)


# ---------------------------------------------------------------- a copy


def test_copy_of_a_file_is_a_duplicate_seq_range(clean, tmp_path, caplog):
    rec, df = copy(clean, tmp_path)
    f = files(rec)[1]
    dup = f.parent / "copy.parquet"
    shutil.copyfile(f, dup)
    a, b = seq_range(f)
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value).startswith(f"{dup}: duplicate seq range {a}..{b} of {f} (a copy?)")
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        got = tcpsnap.read(rec, skip_bad=True)
    same(got, df)                       # each snapshot exactly once
    assert got.groupby("seq").size().to_dict() == ROWS
    skipped_warning(caplog, dup)
    # a file that overlaps part of another's range
    t = pq.read_table(f)
    t = t.filter(pc.greater(t.column("seq"), a))    # not a copy: a part of it
    meta = {k: v for k, v in pq.read_metadata(f).metadata.items() if k.startswith(b"tcpsnap.")}
    meta[b"tcpsnap.first_seq"] = str(int(t.column("seq")[0].as_py())).encode()
    pq.write_table(t.replace_schema_metadata(meta), dup)
    c = int(t.column("seq")[0].as_py())
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value).startswith(f"{dup}: seq range {c}..{b} overlaps {a}..{b} of {f} (a copy?)")
    p = cli("info", rec, "--skip-bad", "--json")
    assert p.returncode == 0 and "skipped 1 bad file" in one_line_naming(p, dup)
    assert json.loads(p.stdout)["rows"] == len(df)


def test_copy_in_a_changes_recording(clean, tmp_path):
    rec, df = copy(clean, tmp_path, "changes")
    f = files(rec)[1]
    shutil.copyfile(f, f.parent / "copy.parquet")
    with pytest.raises(BadRecording, match="duplicate seq range"):
        tcpsnap.read(rec)
    same(tcpsnap.read(rec, skip_bad=True), df)
    ev = tcpsnap.read(rec, mode="changes", skip_bad=True)
    same(ev, tcpsnap.read(clean["changes"][0], mode="changes"))


# ---------------------------------------------------------------- a moved file


@pytest.mark.parametrize("mode", ["full", "changes"])
def test_file_moved_to_another_partition_is_still_read(clean, tmp_path, caplog, mode):
    rec, df = copy(clean, tmp_path, mode)
    f = files(rec)[2]
    moved = rec / "date=2020-01-01" / f.name
    moved.parent.mkdir()
    f.rename(moved)
    ts = df.groupby("seq")["timestamp"].first()
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        got = tcpsnap.read(rec)
    assert sorted(set(got["seq"])) == list(range(N))
    same(got, df)
    msg = " ".join(r.getMessage() for r in caplog.records if r.name == "tcpsnap.reading")
    assert f"{moved} holds {ts[0]:%Y-%m-%d}, outside its date= folder; read all the same" in msg
    # a time range does not leave it out either
    got = tcpsnap.read(rec, start=ts[1], end=ts[N - 1])
    assert sorted(set(got["seq"])) == list(range(1, N - 1))
    same(got, df[(df.seq >= 1) & (df.seq < N - 1)])
    a, _ = seq_range(moved)
    same(tcpsnap.table_at(rec, seq=a), df[df.seq == a])
    same(tcpsnap.table_at(rec, ts[a]), df[df.seq == a])


# ---------------------------------------------------------------- a folder of two modes


def test_full_and_changes_files_in_one_folder(clean, tmp_path, caplog):
    rec, df = copy(clean, tmp_path)
    stray = files(rec)[0].parent / "tcpsnap-20991231T000000.000Z.parquet"
    shutil.copyfile(files(clean["changes"][0])[0], stray)
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value).startswith(f"{stray}: a changes-mode file in a full-mode recording (")
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        same(tcpsnap.read(rec, skip_bad=True), df)
    skipped_warning(caplog, stray)
    p = cli("export", rec, "--to", "csv")
    assert p.returncode == 1 and "mixed modes" in one_line_naming(p, stray)


def test_skip_bad_in_every_readers_help():
    from tcpsnap.cli import build_parser

    parser = build_parser()
    for argv in (["info", "r"], ["plot", "r", "-o", "x.png"], ["export", "r", "--to", "csv"]):
        assert parser.parse_args(argv).skip_bad is False
        assert parser.parse_args([*argv, "--skip-bad"]).skip_bad is True
