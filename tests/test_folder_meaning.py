"""One folder, one recording: a recorder refuses a folder that holds another recording
(another mode, another filter set, a newer tcpsnap's files) with one line naming the
difference, starts a new one in DIR.2 only when asked (``new_dataset`` / ``--new-dataset``)
and moves nothing; files of the release before schema version 2 are an upgrade, not
another recording; readers name the files of a folder that mixes filter sets.

The recordings are scripted (``_recordings``): known tables on a simulated clock."""

import hashlib
import json
import logging
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import tcpsnap
from _recordings import V1_ROWS, copy_v1, record_at, rows_of, shifted, v1_tables
from tcpsnap import BadRecording, RecorderError

FIRST = "date=2026-11-18/tcpsnap-20261118T110640.000Z.parquet"
SECOND = "date=2026-11-18/tcpsnap-20261118T110640.400Z.parquet"


def state(path):
    """Every file under ``path`` (hidden ones too) with a hash of its bytes."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def refusal(path, **kw):
    before = state(path)
    with pytest.raises(RecorderError) as e:
        record_at(path, v1_tables(), 10, **kw)
    assert state(path) == before, "a refused recorder changed the folder"
    assert type(e.value) is RecorderError and "\n" not in str(e.value)
    return str(e.value)


def hint(path):
    return (". A folder holds one recording: record with the options it was made with, into another "
            f"folder, or add --new-dataset (new_dataset=True) to record into {path}.2")


# ------------------------------------------------------------------ the recorder refuses


@pytest.mark.parametrize("first,then", [("full", "changes"), ("changes", "full")])
def test_another_mode_is_refused(tmp_path, first, then):
    rec = tmp_path / "rec"
    record_at(rec, v1_tables(), 0, mode=first)
    assert refusal(rec, mode=then) == (
        f"{rec} holds a {first}-mode recording ({rec / FIRST} and 1 more file); this one would be "
        f"{then}-mode" + hint(rec))
    assert rows_of(tcpsnap.read(rec)) == V1_ROWS


@pytest.mark.parametrize("made,asked,made_text,asked_text", [
    ({}, {"ports": "22"}, "no filters", "--port 22"),
    ({"ports": "22,443"}, {}, "--port 22,443", "no filters"),
    ({"ports": "22"}, {"ports": "22,443"}, "--port 22", "--port 22,443"),
    ({"states": "listen"}, {"states": "listen,established"}, "--state listen", "--state listen,established"),
    ({"family": 4}, {"family": 6}, "--family 4", "--family 6"),
    ({"states": "established", "ports": "8000-8010,22"}, {"states": "established"},
     "--state established --port 22,8000-8010", "--state established"),
])
def test_another_filter_set_is_refused(tmp_path, made, asked, made_text, asked_text):
    rec = tmp_path / "rec"
    record_at(rec, v1_tables(), 0, **made)
    n = len(list(rec.glob("date=*/*.parquet")))
    more = f" and {n - 1} more file{'s' if n > 2 else ''}" if n > 1 else ""
    assert refusal(rec, **asked) == (
        f"{rec} holds a recording made with {made_text} ({rec / FIRST}{more}); this one would have "
        f"{asked_text}" + hint(rec))


def test_the_same_recording_continues_whatever_else_changes(tmp_path):
    """Mode and filters make the recording; compression, encoding, rotation, pids do not.
    The same filter set spelled otherwise is the same."""
    rec = tmp_path / "rec"
    record_at(rec, v1_tables(), 0, ports="22,443", states="listen,established,time-wait")
    st = record_at(rec, v1_tables(), 10, ports=[443, 22], states=["TIME_WAIT", 5, "listen"],
                   compression="snappy", compat=True, rotate="1s")
    assert st["first_seq"] == 8 and st["path"] == rec
    kept = [r for r in V1_ROWS if r[2] in ("LISTEN", "ESTABLISHED", "TIME_WAIT") and {r[4], r[6]} & {22, 443}]
    assert len(kept) == 13
    assert rows_of(tcpsnap.read(rec)) == kept + shifted(kept, 8, 1000)


def test_files_of_schema_version_1_are_an_upgrade(tmp_path):
    """A folder recorded by the release before schema version 2 goes on with today's
    recorder (same mode, same filters): the readers read both, seq goes on."""
    for mode in ("full", "changes"):
        rec = copy_v1(mode, tmp_path / mode)
        st = record_at(rec, v1_tables(), 10, mode=mode)
        assert st["first_seq"] == 8
        assert rows_of(tcpsnap.read(rec)) == V1_ROWS + shifted(V1_ROWS, 8, 1000)
        versions = sorted(pq.read_metadata(f).metadata.get(b"tcpsnap.schema_version", b"-")
                          for f in rec.glob("date=*/*.parquet"))
        assert versions == [b"-", b"-", b"3", b"3"]
    # ... but not as another recording
    rec = copy_v1("full", tmp_path / "other")
    assert refusal(rec, mode="changes") == (
        f"{rec} holds a full-mode recording ({rec / FIRST} and 1 more file); this one would be "
        "changes-mode" + hint(rec))
    assert refusal(rec, ports="22") == (
        f"{rec} holds a recording made with no filters ({rec / FIRST} and 1 more file); this one "
        "would have --port 22" + hint(rec))


def _retag(path, **kv):
    """Rewrite the file ``path`` with its footer's key-value metadata changed."""
    t = pq.read_table(path)
    md = dict(t.schema.metadata)
    md.update({f"tcpsnap.{k}".encode(): str(v).encode() for k, v in kv.items()})
    pq.write_table(t.replace_schema_metadata(md), path)


def test_a_newer_tcpsnaps_files_are_refused_and_not_read(tmp_path):
    rec = tmp_path / "rec"
    record_at(rec, v1_tables(), 0)
    _retag(rec / SECOND, schema_version=4)
    assert refusal(rec) == (
        f"{rec} holds files of schema version 4 ({rec / SECOND}), written by a newer tcpsnap than this "
        "one (it writes version 3). A folder holds one recording: upgrade tcpsnap, record into another "
        f"folder, or add --new-dataset (new_dataset=True) to record into {rec}.2")
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value) == (f"{rec / SECOND}: written by a newer tcpsnap (schema version 4; this one reads 1 "
                            "to 3): upgrade tcpsnap to read it; skip_bad=True or --skip-bad reads the other files")
    assert rows_of(tcpsnap.read(rec, skip_bad=True)) == [r for r in V1_ROWS if r[0] < 4]


def test_a_mixed_folder_is_refused_too(tmp_path):
    """A folder an older tcpsnap let two recordings into: whatever this one is, one of
    them differs, and it is named."""
    rec = tmp_path / "rec"
    record_at(rec, v1_tables(), 0)
    _retag(rec / SECOND, mode="changes")
    msg = refusal(rec)
    assert msg.startswith(f"{rec} holds a changes-mode recording ({rec / SECOND}); this one would be full-mode")


# ------------------------------------------------------------------ only when asked


def test_new_dataset_records_into_dir_2_and_moves_nothing(tmp_path, caplog):
    rec = tmp_path / "rec"
    record_at(rec, v1_tables(), 0)
    before = state(rec)
    with caplog.at_level(logging.WARNING, logger="tcpsnap.recorder"):
        st = record_at(rec, v1_tables(), 10, mode="changes", new_dataset=True)
    assert st["path"] == tmp_path / "rec.2" and st["first_seq"] == 0
    assert state(rec) == before
    assert [r.getMessage() for r in caplog.records] == [
        f"{rec} holds a full-mode recording ({rec / FIRST} and 1 more file); this one would be changes-mode; "
        f"recording into {rec}.2 (new_dataset)"]
    assert rows_of(tcpsnap.read(rec)) == V1_ROWS
    assert rows_of(tcpsnap.read(tmp_path / "rec.2")) == shifted(V1_ROWS, 0, 1000)
    assert tcpsnap.read(tmp_path / "rec.2", mode="changes").event.iloc[0] == "keyframe"
    # asked again with the same options: rec.2 holds this recording, it goes on there
    st = record_at(rec, v1_tables(), 20, mode="changes", new_dataset=True)
    assert st["path"] == tmp_path / "rec.2" and st["first_seq"] == 8
    # the hint of a refusal names where new_dataset would record
    assert refusal(rec, mode="changes").endswith(f"to record into {rec}.2")
    assert refusal(rec, ports="22").endswith(f"to record into {rec}.3")
    # a third recording: rec.3; the same as rec's: rec itself
    assert record_at(rec, v1_tables(), 30, ports="22", new_dataset=True)["path"] == tmp_path / "rec.3"
    st = record_at(rec, v1_tables(), 40, new_dataset=True)
    assert st["path"] == rec and st["first_seq"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec", "rec.2", "rec.3"]


def test_new_dataset_in_an_empty_or_matching_folder_records_there(tmp_path):
    rec = tmp_path / "rec"
    assert record_at(rec, v1_tables(), 0, new_dataset=True)["path"] == rec
    assert record_at(rec, v1_tables(), 10, new_dataset=True)["path"] == rec
    assert not (tmp_path / "rec.2").exists()


# ------------------------------------------------------------------ the command line


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="records the live table (Linux)")
def test_record_cli_refuses_in_one_line_and_new_dataset(tmp_path):
    rec = tmp_path / "rec"
    p = _cli("record", rec, "--duration", "0.3s", "--no-pids", "-q")
    assert p.returncode == 0, p.stderr
    before = state(rec)
    for args, diff in ((["--mode", "changes"], "this one would be changes-mode"),
                       (["--state", "listen"], "this one would have --state listen"),
                       (["--port", "22,80", "--family", "6"], "this one would have --port 22,80 --family 6")):
        p = _cli("record", rec, "--duration", "0.3s", "--no-pids", *args)
        assert p.returncode == 1
        assert p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith(f"tcpsnap: error: {rec} holds a ")
        assert diff in p.stderr and f"add --new-dataset (new_dataset=True) to record into {rec}.2\n" in p.stderr
    assert state(rec) == before
    p = _cli("record", rec, "--duration", "0.3s", "--no-pids", "--mode", "changes", "--new-dataset")
    assert p.returncode == 0
    warning = p.stderr.splitlines()[0]          # then the start and the summary line
    assert warning.startswith(f"tcpsnap: warning: {rec} holds a full-mode recording (") and \
        warning.endswith(f"recording into {rec}.2 (new_dataset)")
    assert state(rec) == before
    assert tcpsnap.reading.open_recording(tmp_path / "rec.2").mode == "changes"
    assert "--new-dataset" in _cli("record", "--help").stdout


# ------------------------------------------------------------------ readers say so


def test_readers_name_the_files_of_another_filter_set(tmp_path, caplog):
    """A folder an older tcpsnap let two filter sets into (``record DIR`` then ``record
    DIR --port 22``): one recording's files are named, skip_bad reads the other's."""
    rec = tmp_path / "rec"
    record_at(rec, v1_tables(), 0)
    _retag(rec / SECOND, filters=json.dumps({"ports": [22]}))
    msg = (f"{rec / SECOND}: recorded with --port 22 in a recording made with no filters (one folder holds "
           "one recording: mixed filters)")
    with pytest.raises(BadRecording) as e:
        tcpsnap.read(rec)
    assert str(e.value) == f"{msg}; skip_bad=True or --skip-bad reads the other files"
    with pytest.raises(BadRecording):
        tcpsnap.table_at(rec, seq=0)
    with caplog.at_level(logging.WARNING, logger="tcpsnap.reading"):
        assert rows_of(tcpsnap.read(rec, skip_bad=True)) == [r for r in V1_ROWS if r[0] < 4]
    assert [r.getMessage() for r in caplog.records] == [f"skipped 1 bad file of {rec}: {msg}"]
    p = _cli("info", rec)
    assert p.returncode == 1 and p.stderr == f"tcpsnap: error: {msg}; skip_bad=True or --skip-bad reads the other files\n"
    # the same filters written otherwise are the same filter set
    _retag(rec / SECOND, filters=json.dumps({}))
    shutil.copy(rec / FIRST, tmp_path / "first.parquet")
    _retag(rec / FIRST, filters=' {  }')
    assert rows_of(tcpsnap.read(rec)) == V1_ROWS
