"""The analysis functions on a recording read piece by piece (``analysis.lifetimes(path)``...,
``tcpsnap._bounded``) give what they give on the whole DataFrame in memory: on recordings of
both modes with gaps, clock steps, two hosts, a reboot, cookie-less rows, the schema-1
fixtures, cut into pieces of a few rows (so every connection spans pieces)."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import tcpsnap
from _recordings import copy_v1
from tcpsnap import TcpState, analysis
from tcpsnap.analysis import Selection
from test_recorded_analysis import history
from test_truthful import EST, LISTEN, SEC, Clock, record, tables

MODES = ["full", "changes"]


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as objects: pieces list only the categories they hold."""
    df = df.copy()
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _fleet(root, mode, monkeypatch):
    """test_truthful's fleet: web-1, and web-2 rebooted; colliding cookies, cookie-less rows."""
    from _changes_util import WALL0, row

    S = TcpState
    win = row(S.ESTABLISHED, "10.9.9.9", 7000, "10.0.0.3", 22, cookie=0)
    c1 = row(S.ESTABLISHED, "10.0.0.1", 5001, "10.0.0.2", 443, cookie=1)
    c2 = row(S.ESTABLISHED, "10.0.0.1", 5002, "10.0.0.2", 443, cookie=2)
    c2b = row(S.CLOSE_WAIT, "10.0.0.1", 5002, "10.0.0.2", 443, cookie=2)

    def run(host, boot, path, tabs, clock):
        monkeypatch.setattr(tcpsnap._host, "host_name", lambda: host)
        monkeypatch.setattr(tcpsnap._host, "boot_id", lambda: boot)
        record(path, tabs, mode, clock)

    run("web-1", "boot-a", root / "host=web-1", tables(20, [(c1, range(20)), (c2, range(5, 9)), (c2b, range(9, 12)),
                                                            (win, range(3)), (win, range(6, 15))]), Clock())
    run("web-2", "boot-b1", root / "host=web-2", tables(10, [(c1, range(10)), (c2, range(2, 5)), (win, range(3))]),
        Clock())
    run("web-2", "boot-b2", root / "host=web-2", tables(10, [(c1, range(5)), (c2, range(3, 10))]),
        Clock(wall0=WALL0 + 61 * SEC, mono0=5 * SEC))


def _recordings(tmp_path, mode, monkeypatch):
    """name -> path of the recordings compared."""
    from _changes_util import Scripted
    from tcpsnap import Recorder

    out = {}
    p = tmp_path / "history"
    snap = Scripted(history(), names={100: "srv", 200: "cli"})
    extra = {"mode": mode, "destroy": False} if mode != "full" else {}
    with Recorder(p, interval=0, snapshotter=snap, clock=Clock(), nice=None, rotate="0.3s", **extra) as rec:
        snap.rec = rec
        rec.run()
    out["history"] = p
    p = tmp_path / "gap"
    record(p, tables(30, [(EST, range(5, 11)), (LISTEN, range(0, 30))]), mode, Clock(pauses={15: 2 * SEC}))
    out["gap"] = p
    p = tmp_path / "step"
    record(p, tables(30, [(EST, range(15, 26))]), mode, Clock(steps={20: -5 * SEC}))
    out["step"] = p
    p = tmp_path / "fleet"
    _fleet(p, mode, monkeypatch)
    out["fleet"] = p
    out["v1"] = copy_v1(mode, tmp_path / "v1")
    return out


@pytest.fixture(params=MODES)
def recordings(request, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        yield request.param, _recordings(tmp_path_factory.mktemp(request.param), request.param, mp)
    finally:
        mp.undo()


def _both(path, start=None, end=None):
    """(rows in memory, their snapshots) as the DataFrame form is given them."""
    return tcpsnap.read(path, start, end), tcpsnap.snapshots(path, start, end)


@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
def test_bounded_equals_in_memory(recordings, chunk_rows):
    mode, recs = recordings
    for name, path in recs.items():
        df, snaps = _both(path)
        assert len(df) and len(snaps), name
        sel = Selection(path, chunk_rows=chunk_rows)
        life = analysis.lifetimes(df, snapshots=snaps)
        got = analysis.lifetimes(sel)
        pd.testing.assert_frame_equal(_plain(got), _plain(life), obj=f"{mode} {name} lifetimes")
        for freq in ("100ms", "1s", "7s"):
            for agg in ("mean", "max", "last"):
                pd.testing.assert_frame_equal(analysis.state_counts(sel, freq=freq, agg=agg),
                                              analysis.state_counts(df, freq=freq, agg=agg, snapshots=snaps),
                                              obj=f"{mode} {name} state_counts {freq} {agg}")
            pd.testing.assert_frame_equal(analysis.churn(sel, freq=freq), analysis.churn(df, freq=freq, snapshots=snaps),
                                          obj=f"{mode} {name} churn {freq}")
        pd.testing.assert_frame_equal(_plain(analysis.top_remotes(sel, n=3)),
                                      _plain(analysis.top_remotes(df, n=3, life=life)), obj=f"{name} top_remotes")
        pd.testing.assert_frame_equal(_plain(analysis.by_process(sel)), _plain(analysis.by_process(df, life=life)),
                                      obj=f"{name} by_process")


def test_bounded_time_range_and_where(recordings):
    """start / end and where select the same rows as reading them and filtering."""
    mode, recs = recordings
    path = recs["history"]
    snaps_all = tcpsnap.snapshots(path)
    t = snaps_all["timestamp"]
    start, end = t.iloc[2], t.iloc[7]
    df, snaps = _both(path, start, end)
    got = analysis.lifetimes(path, start=start, end=end)
    pd.testing.assert_frame_equal(_plain(got), _plain(analysis.lifetimes(df, snapshots=snaps)))
    assert set(got["cookie"]) == set(df["cookie"]) and len(set(df["seq"])) == 5
    where = pc.field("local_port") == 80
    sub = df[df["local_port"] == 80].reset_index(drop=True)
    got = analysis.lifetimes(Selection(path, start, end, where=where, chunk_rows=2))
    pd.testing.assert_frame_equal(_plain(got), _plain(analysis.lifetimes(sub, snapshots=snaps)))
    # a snapshot in which nothing matched counts 0, not a gap
    sc = analysis.state_counts(path, freq="100ms", start=start, end=end, where=ds.field("state") == "LISTEN")
    np.testing.assert_array_equal(sc["LISTEN"].to_numpy(), np.ones(5))
    assert list(sc.columns) == ["LISTEN"]


def test_dataframe_form_refuses_range_arguments():
    with pytest.raises(TypeError, match="filter a DataFrame first"):
        analysis.lifetimes(pd.DataFrame(), start="now")
    with pytest.raises(TypeError, match="expected a DataFrame"):
        analysis.state_counts(42)


def test_bounded_reads_piece_by_piece(tmp_path, monkeypatch):
    """The rows reach the in-memory code in pieces of at most chunk_rows rows (plus one
    batch): never the whole recording at once."""
    path = tmp_path / "rec"
    shutil.rmtree(path, ignore_errors=True)
    record(path, tables(50, [(EST, range(0, 50)), (LISTEN, range(0, 50))]), "full", Clock(), rotate="1s")
    from tcpsnap import _frames

    sizes = []
    real = _frames.lifetimes

    def spy(df, *a, **kw):
        sizes.append(len(df))
        return real(df, *a, **kw)

    monkeypatch.setattr(_frames, "lifetimes", spy)
    from tcpsnap.reading import aggregate

    monkeypatch.setattr(aggregate, "connections", lambda *a, **kw: None)    # not the one-query path
    life = analysis.lifetimes(Selection(path, chunk_rows=10))
    assert sum(sizes) == 100 and len(sizes) >= 5 and max(sizes) <= 40
    assert life["snapshots"].tolist() == [50, 50]


def test_recorder_and_reader_never_import_duckdb(tmp_path):
    """duckdb answers aggregates (``reading.aggregate``) and writes JSON lines: recording and
    ``tcpsnap.read`` never load it (nor polars), nor does ``state_counts`` of a one-host full
    recording (``reading.tally`` counts it); ``lifetimes`` of one does."""
    import subprocess
    import sys

    path = tmp_path / "rec"
    code = f"""
import sys
sys.path[:0] = {sys.path!r}
from test_truthful import EST, Clock, record, tables
import tcpsnap
record({str(path)!r}, tables(5, [(EST, range(5))]), "full", Clock())
assert len(tcpsnap.read({str(path)!r})) == 5
print(sorted(m for m in sys.modules if m.split(".")[0] in ("duckdb", "polars")))
from tcpsnap import analysis
assert analysis.state_counts({str(path)!r})["ESTABLISHED"].max() == 1.0
print("duckdb" in sys.modules)
assert len(analysis.lifetimes({str(path)!r})) == 1
print("duckdb" in sys.modules)
from tcpsnap.cli import exit_process
exit_process(0)  # Arrow's threads read: no teardown (apache/arrow#34314)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[]", "False", "True"]


@pytest.mark.parametrize("mode", MODES)
def test_info_plot_export_never_read_the_whole_recording(tmp_path, monkeypatch, mode, capsys):
    """The commands go through the piece-by-piece readers: the whole-recording readers
    (tcpsnap.read's) are not called at all."""
    from tcpsnap.cli import main
    from tcpsnap.reading import changes, full

    path = tmp_path / "rec"
    record(path, tables(30, [(EST, range(5, 20)), (LISTEN, range(30))]), mode, Clock(pauses={15: 2 * SEC}))

    def whole(*a, **kw):
        raise AssertionError("read the whole recording")

    monkeypatch.setattr(full, "read_recording", whole)
    monkeypatch.setattr(changes, "read_changes", whole)
    monkeypatch.setattr(changes, "to_full", whole)
    assert main(["info", str(path), "--json"]) == 0
    assert '"connections": 2' in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    for kind in ("states", "churn", "remotes"):
        assert main(["plot", str(path), "-o", str(tmp_path / f"{kind}.png"), "--kind", kind, "--utc"]) == 0
    assert main(["export", str(path), "--format", "parquet", "-o", str(tmp_path / "x.parquet")]) == 0
    assert len(pd.read_parquet(tmp_path / "x.parquet")) == 45


@pytest.mark.parametrize("via", ["tally", "duckdb"])
def test_one_query_path_equals_piece_by_piece(recordings, via, monkeypatch):
    """Full recordings of schema 2 (one host folder-less): snapshots and state counts come
    from ``reading.tally`` (numpy over the decoded columns) or, where it declines, one
    DuckDB query (``reading.aggregate``), no row read piece by piece, and equal the
    in-memory answers; elsewhere (changes mode, schema 1, host= folders, a where) that
    path declines and the rows are read piece by piece."""
    from tcpsnap.reading import aggregate, tally

    if via == "duckdb":
        monkeypatch.setattr(tally, "tally", lambda *a: None)
    mode, recs = recordings
    for name, path in recs.items():
        sel = Selection(path)
        fast = mode == "full" and name in ("history", "gap", "step")
        assert (aggregate.summary(sel.rec, None, None) is not None) == fast, name
        if not fast:
            continue
        df, snaps = _both(path)
        pd.testing.assert_frame_equal(sel.snapshots(), snaps, obj=f"{name} snapshots")

        def no_rows(*a, **kw):
            raise AssertionError("read the rows piece by piece")

        sel.tables = no_rows                          # type: ignore[method-assign]
        # the connections from one query too (history has cookie-less rows: piece by piece)
        assert (aggregate.connections(sel.rec, None, None) is not None) == (name != "history"), name
        if name == "history":
            sel = Selection(path)
        life = analysis.lifetimes(df, snapshots=snaps)
        pd.testing.assert_frame_equal(_plain(analysis.lifetimes(sel)), _plain(life), obj=f"{name} lifetimes")
        pd.testing.assert_frame_equal(_plain(analysis.by_process(sel)), _plain(analysis.by_process(df, life=life)))
        pd.testing.assert_frame_equal(_plain(analysis.top_remotes(sel)), _plain(analysis.top_remotes(df, life=life)))
        for freq in ("100ms", "1s", "7s"):
            pd.testing.assert_frame_equal(analysis.state_counts(sel, freq=freq),
                                          analysis.state_counts(df, freq=freq, snapshots=snaps), obj=name)
        t = snaps["timestamp"]
        start, end = t.iloc[3], t.iloc[len(t) // 2]
        part = Selection(path, start, end)
        part.tables = no_rows                         # type: ignore[method-assign]
        dfp, snp = _both(path, start, end)
        pd.testing.assert_frame_equal(part.snapshots(), snp, obj=f"{name} snapshots in range")
        pd.testing.assert_frame_equal(analysis.state_counts(part, freq="1s"),
                                      analysis.state_counts(dfp, freq="1s", snapshots=snp), obj=f"{name} range")
        if name != "history":
            pd.testing.assert_frame_equal(_plain(analysis.lifetimes(part)),
                                          _plain(analysis.lifetimes(dfp, snapshots=snp)), obj=f"{name} range lifetimes")
        # a where: the counts are read piece by piece (the snapshots still from the query)
        w = Selection(path, where=ds.field("state") == "LISTEN")
        assert w.summary() is None and w.summary(any_where=True) is not None
        pd.testing.assert_frame_equal(analysis.state_counts(w, freq="1s"),
                                      analysis.state_counts(df[df["state"] == "LISTEN"], freq="1s", snapshots=snaps))


@pytest.mark.parametrize("column", ["seq", "state", "timestamp", "inode"])
def test_one_query_path_reports_a_corrupt_page(tmp_path, column):
    """A flipped byte in a value page of a column the query reads: DuckDB does not check page
    CRCs, so ``aggregate.bad_pages`` does (as stored, nothing decoded) and the question goes to
    the piece-by-piece path, which names the file; never an answer from the corrupt page."""
    import pyarrow.parquet as pq

    from tcpsnap.reading import aggregate

    path = tmp_path / "rec"
    # three empty snapshots first: their family-0 rows' inode is read (their count)
    record(path, tables(40, [(EST, range(3, 40)), (LISTEN, range(3, 40))]), "full", Clock())
    f = sorted(path.rglob("*.parquet"))[0]
    assert aggregate.bad_pages(str(f), aggregate.COLUMNS) is None
    md = pq.ParquetFile(f).metadata
    rg = md.row_group(0)
    c = next(rg.column(k) for k in range(rg.num_columns) if rg.column(k).path_in_schema == column)
    b = bytearray(f.read_bytes())
    lo = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
    size, crc, end = aggregate.page_header(bytes(b[lo:lo + c.total_compressed_size]), 0)
    assert crc is not None and size > 0                # the recorder writes page CRCs
    b[lo + end] ^= 0x5A                                # the page's first byte, after its header
    f.write_bytes(bytes(b))
    assert aggregate.bad_pages(str(f), aggregate.COLUMNS) == f"column {column}: a page whose CRC does not match"
    assert aggregate.summary(Selection(path).rec, None, None) is None
    with pytest.raises(tcpsnap.BadRecording, match=f.name):
        analysis.state_counts(path, freq="1s")


def test_connections_query_declines_what_only_the_rows_tell(tmp_path):
    """``aggregate.connections`` answers from a few groups per connection; where the rows'
    order decides (a cookie-less row, two rows of a connection in one snapshot at its
    first row, a connection back in an earlier state) it declines and the rows are read
    piece by piece: the same lifetimes as in memory either way."""
    from _changes_util import row
    from tcpsnap.reading import aggregate

    S = TcpState

    def conn(state, port=5000, pid=0, cookie=7):
        return row(S[state], "10.0.0.1", port, "10.0.0.2", 443, cookie=cookie, pid=pid)

    cases = {   # name -> (rows, whether the query answers)
        "owner known late, then TIME_WAIT": ([(conn("SYN_SENT"), range(0, 2)), (conn("ESTABLISHED", pid=100), range(2, 5)),
                                              (conn("TIME_WAIT"), range(5, 8)), (LISTEN, range(8))], True),
        "two rows of one connection, not at its ends": ([(conn("ESTABLISHED"), range(6)),
                                                         (conn("ESTABLISHED", port=5001), range(3, 8))], True),
        "cookie-less": ([(conn("ESTABLISHED", cookie=0), range(3)), (LISTEN, range(8))], False),
        "two rows of one connection at its first": ([(conn("ESTABLISHED"), range(5)),
                                                     (conn("ESTABLISHED", port=5001), range(0, 2))], False),
        "back to a state": ([(conn("ESTABLISHED"), range(0, 3)), (conn("CLOSE_WAIT"), range(3, 5)),
                             (conn("ESTABLISHED"), range(5, 8))], False),
    }
    for name, (live, answers) in cases.items():
        path = tmp_path / name.replace(" ", "-").replace(",", "")
        record(path, tables(8, live), "full", Clock())
        sel = Selection(path)
        assert (aggregate.connections(sel.rec, None, None) is not None) == answers, name
        df, snaps = _both(path)
        life = analysis.lifetimes(df, snapshots=snaps)
        pd.testing.assert_frame_equal(_plain(analysis.lifetimes(sel)), _plain(life), obj=name)
    assert life["states"].tolist() == ["ESTABLISHED>CLOSE_WAIT>ESTABLISHED"]


@pytest.mark.parametrize("column", ["cookie", "local_addr", "pid"])
def test_connections_query_reports_a_corrupt_page(tmp_path, column):
    """A flipped byte in a page of a column only the connections' query reads: never an
    answer from it; the rows are read piece by piece and the file is named."""
    import pyarrow.parquet as pq

    from tcpsnap.reading import aggregate

    path = tmp_path / "rec"
    record(path, tables(40, [(EST, range(40)), (LISTEN, range(40))]), "full", Clock())
    f = sorted(path.rglob("*.parquet"))[0]
    assert aggregate.bad_pages(str(f), aggregate.CONN_COLUMNS) is None
    rg = pq.ParquetFile(f).metadata.row_group(0)
    c = next(rg.column(k) for k in range(rg.num_columns) if rg.column(k).path_in_schema == column)
    b = bytearray(f.read_bytes())
    lo = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
    size, crc, end = aggregate.page_header(bytes(b[lo:lo + c.total_compressed_size]), 0)
    b[lo + end] ^= 0x5A
    f.write_bytes(bytes(b))
    assert aggregate.connections(Selection(path).rec, None, None) is None
    with pytest.raises(tcpsnap.BadRecording, match=f.name):
        analysis.lifetimes(path)
    from tcpsnap._cmd_analyse import summarize

    with pytest.raises(tcpsnap.BadRecording, match=f.name):
        summarize(str(path))


def test_connections_query_two_boots_in_one_folder(tmp_path, monkeypatch):
    """A reboot in the folder (no host= partition): the boots are group keys of the
    query (the statistics do not show one), and a cookie reused after the reboot is
    another connection, as in memory."""
    from _changes_util import WALL0
    from tcpsnap.reading import aggregate

    path = tmp_path / "rec"
    for boot, clock in (("boot-1", Clock()), ("boot-2", Clock(wall0=WALL0 + 61 * SEC, mono0=5 * SEC))):
        monkeypatch.setattr(tcpsnap._host, "boot_id", lambda boot=boot: boot)
        record(path, tables(10, [(EST, range(2, 10)), (LISTEN, range(10))]), "full", clock)
    sel = Selection(path)
    assert aggregate._one_origin(sel.rec) is None
    assert len(aggregate.connections(sel.rec, None, None)) == 4
    df, snaps = _both(path)
    life = analysis.lifetimes(df, snapshots=snaps)
    pd.testing.assert_frame_equal(_plain(analysis.lifetimes(sel)), _plain(life))
    assert life["boot_id"].astype(str).tolist() == ["boot-1", "boot-2", "boot-1", "boot-2"]


def test_one_query_path_counts_empty_snapshots_zero(tmp_path):
    """An empty snapshot is one family-0 row that counts its inode (0), not 1: the one-host
    query path's snapshot list says so, as ``tcpsnap.snapshots`` does."""
    path = tmp_path / "rec"
    record(path, tables(10, [(EST, range(2, 5))]), "full", Clock())
    sel = Selection(path)
    assert sel.summary() is not None
    snaps = tcpsnap.snapshots(path)
    assert snaps["connections"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    pd.testing.assert_frame_equal(sel.snapshots(), snaps)


def _batch_jsonl(sel, out, monkeypatch):
    """JSON lines written batch by batch (the sink declined)."""
    from tcpsnap.reading import export

    with monkeypatch.context() as m:
        m.setattr(export, "_sink_jsonl", lambda *a: None)
        return export.export(sel, "jsonl", out)


def test_jsonl_export_by_the_sink_is_the_batches_bytes(tmp_path, monkeypatch):
    """A full recording's JSON lines go through polars' lazy sink (the time range pushed
    down): the same bytes, byte for byte, as batch by batch, with and without a range;
    a where, a changes recording or schema-1 files: batch by batch."""
    from tcpsnap.reading import export

    path = tmp_path / "rec"
    record(path, tables(40, [(EST, range(5, 30)), (LISTEN, range(40))]), "full", Clock(), rotate="1s")
    snaps = tcpsnap.snapshots(path)
    t = snaps["timestamp"]
    for start, end in ((None, None), (t.iloc[7], t.iloc[22])):
        sel = Selection(path, start, end)
        assert export._sink_jsonl(sel, tmp_path / "sink.jsonl") is not None
        n = export.export(Selection(path, start, end), "jsonl", tmp_path / "a.jsonl")
        m = _batch_jsonl(Selection(path, start, end), tmp_path / "b.jsonl", monkeypatch)
        assert n == m == (65 if start is None else 30)
        assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
        assert (tmp_path / "sink.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
        first = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])
        assert first["timestamp"] == t.iloc[0 if start is None else 7].strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    assert export._sink_jsonl(Selection(path, where=ds.field("local_port") == 80), tmp_path / "w.jsonl") is None
    assert export._sink_jsonl(Selection(copy_v1("full", tmp_path / "v1")), tmp_path / "v.jsonl") is None
    ch = tmp_path / "changes"
    record(ch, tables(10, [(EST, range(5))]), "changes", Clock())
    assert export._sink_jsonl(Selection(ch), tmp_path / "c.jsonl") is None


def test_jsonl_export_reports_a_corrupt_page_in_its_range(tmp_path):
    """A flipped byte in a page the range needs: polars would read it as another value, so
    the sink declines and the batch path names the file; a corrupt row group outside the
    range does not stop the sink (it is not read)."""
    import pyarrow.parquet as pq

    from tcpsnap.reading import aggregate, export

    path = tmp_path / "rec"
    record(path, tables(40, [(EST, range(40)), (LISTEN, range(40))]), "full", Clock(), rotate="1s")
    files = sorted(path.rglob("*.parquet"))
    f = files[0]
    rg = pq.ParquetFile(f).metadata.row_group(0)
    c = next(rg.column(k) for k in range(rg.num_columns) if rg.column(k).path_in_schema == "remote_port")
    b = bytearray(f.read_bytes())
    lo = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
    size, crc, end = aggregate.page_header(bytes(b[lo:lo + c.total_compressed_size]), 0)
    b[lo + end] ^= 0x5A
    f.write_bytes(bytes(b))
    later = tcpsnap.snapshots(files[-1])["timestamp"].iloc[0]
    assert export._sink_jsonl(Selection(path, start=later), tmp_path / "late.jsonl") is not None
    assert export._sink_jsonl(Selection(path), tmp_path / "all.jsonl") is None
    with pytest.raises(tcpsnap.BadRecording, match=f.name):
        export.export(Selection(path), "jsonl", tmp_path / "x.jsonl")


def test_parquet_export_of_an_older_schema(tmp_path):
    """A schema-2 full recording (before cgroup_id, netns...) exported to one Parquet file:
    the newer columns are null, not an error ("Casting field 'cgroup_id' with null values
    to non-nullable"); every row is there."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from tcpsnap.cli import main

    src = Path(__file__).parent / "fixtures" / "v2" / "full"
    out = tmp_path / "x.parquet"
    assert main(["export", str(src), "--format", "parquet", "-o", str(out)]) == 0
    t = pq.read_table(out)
    assert t.num_rows == sum(pq.ParquetFile(f).metadata.num_rows for f in src.rglob("*.parquet"))
    assert t.column("cgroup_id").null_count == t.num_rows and t.schema.field("cgroup_id").nullable
    assert t.column("seq").to_pylist() == sorted(t.column("seq").to_pylist())


def _binned(sel, freq, start=None, end=None):
    """``reading.tally.state_bins`` of the selection's ``aggregate.state_tally`` (None
    where it declines) as the DataFrame ``analysis.state_counts`` gives."""
    from tcpsnap.plot import freq_ns
    from tcpsnap.reading import aggregate, tally

    got = aggregate.state_tally(sel.rec, start, end)
    if got is None:
        return None
    b = tally.state_bins(got[1], freq_ns(freq))
    idx = pd.DatetimeIndex(pd.to_datetime(b.start, unit="ns", utc=True), name="timestamp")
    return pd.DataFrame(b.mean, index=idx, columns=b.states)


def _same(got, want, obj):
    want = want.astype(np.float64)
    want.index.freq = None
    pd.testing.assert_frame_equal(got, want, check_exact=True, obj=obj)


def test_state_bins_equal_state_counts(recordings):
    """What ``plot --kind states`` draws (``state_tally`` then ``state_bins``: numpy, no
    pandas) is ``analysis.state_counts`` of the same rows: the same bins (a clock stepped
    back leaves bins out), the same gaps (NaN rows), the same means to the last bit, in a
    time range too; it declines where the tally does (changes mode, schema 1, two hosts)."""
    mode, recs = recordings
    for name, path in recs.items():
        sel = Selection(path)
        fast = mode == "full" and name in ("history", "gap", "step")
        assert (_binned(sel, "1s") is not None) == fast, name
        if not fast:
            continue
        df, snaps = _both(path)
        for freq in ("100ms", "300ms", "1s", "7s", "1min"):
            want = analysis.state_counts(df, freq=freq, snapshots=snaps)
            got = _binned(sel, freq)
            _same(got, want, f"{name} {freq}")
        t0 = snaps["timestamp"].iloc[0]
        start, end = t0 + pd.Timedelta("0.45s"), t0 + pd.Timedelta("2.05s")
        rdf, rsnaps = _both(path, start, end)
        got = _binned(Selection(path, start, end), "300ms", start, end)
        _same(got, analysis.state_counts(rdf, freq="300ms", snapshots=rsnaps), f"{name} range")


def test_tally_joins_a_snapshot_split_over_row_groups(tmp_path):
    """``reading.tally`` counts each row group on its own: a snapshot whose rows sit in two
    row groups (here, row groups of 3 rows over snapshots of 2 to 4 rows, empty ones
    among them) is one snapshot, its rows and state counts summed, as in memory."""
    import pyarrow.parquet as pq

    from tcpsnap.reading import tally

    path = tmp_path / "rec"
    record(path, tables(12, [(EST, range(2, 9)), (LISTEN, range(4, 12)), (EST, range(6, 10))]), "full", Clock())
    for f in path.rglob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t, f, row_group_size=3, write_page_checksum=True)
        assert pq.ParquetFile(f).metadata.num_row_groups > 3
    sel = Selection(path)
    got = tally.tally(sel.rec, None, None)
    assert got is not None
    df, snaps = _both(path)
    assert snaps["connections"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 2, 1, 1]
    pd.testing.assert_frame_equal(sel.snapshots(), snaps)
    for freq in ("100ms", "300ms"):
        pd.testing.assert_frame_equal(analysis.state_counts(sel, freq=freq),
                                      analysis.state_counts(df, freq=freq, snapshots=snaps))
        _same(_binned(sel, freq), analysis.state_counts(df, freq=freq, snapshots=snaps), freq)


def test_tally_threads_wait_for_the_caller_and_stop_on_a_bad_piece(tmp_path, monkeypatch):
    """``tally(wait=event)`` (what ``plot`` passes while it imports matplotlib): one thread
    counts until the event is set, then two; never set, the first does every job; the
    same answer either way. A piece it cannot count exactly stops every thread: None."""
    import threading

    import pyarrow.parquet as pq

    from tcpsnap.reading import tally

    path = tmp_path / "rec"
    record(path, tables(40, [(EST, range(2, 30)), (LISTEN, range(40))]), "full", Clock())
    for f in path.rglob("*.parquet"):
        pq.write_table(pq.read_table(f), f, row_group_size=2, write_page_checksum=True)
    monkeypatch.setattr(tally, "THREADS", 2)
    monkeypatch.setattr(tally, "GROUPS_PER_JOB", 1)
    rec = Selection(path).rec
    jobs = sum(pq.ParquetFile(f.path).metadata.num_row_groups for f in rec.files)
    want = tally.tally(rec, None, None)
    assert want is not None and len(want.seq) == 40
    names = []
    job = tally._job

    def seen(*a, **kw):
        names.append(threading.current_thread().name)
        return job(*a, **kw)

    monkeypatch.setattr(tally, "_job", seen)
    for gate in (threading.Event(), None):
        names.clear()
        got = tally.tally(rec, None, None, wait=gate)
        for k in ("seq", "ts", "mono", "cap", "rows", "c_seq", "c_state", "c_n", "c_code"):
            np.testing.assert_array_equal(getattr(got, k), getattr(want, k), err_msg=k)
        assert len(names) == jobs > 10
        if gate is not None:
            assert len(set(names)) == 1           # the event never set: the first thread did all
    calls = []

    def bad(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise tally._Unfit("a bad piece")
        return job(*a, **kw)

    monkeypatch.setattr(tally, "_job", bad)
    assert tally.tally(rec, None, None, wait=threading.Event()) is None
    assert len(calls) == 3                        # the one thread stopped at the bad piece
