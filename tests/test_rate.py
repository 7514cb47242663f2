"""The recorder's rate at --interval 0 (issue 18): name codes written straight into the
batch (``PidResolver.names_into``), the batch copy (``_encode.put_rows``), and Parquet
statistics only for the columns readers skip row groups by."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from _sockets import listener, pair, socket_inodes, ss_owners
from tcpsnap import Recorder, Snapshotter
from tcpsnap._encode import put_rows
from tcpsnap._schema import ROW_DTYPE

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pid resolution")

#: a child named NAME (prctl) holding a listener and a connected pair on 127.0.0.1
CHILD = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)   # PR_SET_NAME
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(4)
c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
print(lst.getsockname()[1], flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def named_child():
    p = subprocess.Popen([sys.executable, "-c", CHILD, "tcpsnap-rate"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdin is not None
    p.stdout.readline()
    try:
        # its three sockets by inode: another socket on the host may have the
        # listener's port number at either end
        inodes = socket_inodes(p.pid)
        assert len(inodes) == 3
        yield p.pid, inodes
    finally:
        p.stdin.close()
        p.wait(10)


def _ss_owners(inodes: set[int]) -> set[tuple[str, int]]:
    """(name, pid) of these sockets as ``ss -tanpe`` shows them."""
    got = ss_owners(inodes)
    assert len(got) == len(inodes)
    return set(got.values())


@linux
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.parametrize("background", [True, False])
def test_names_into_gives_each_row_its_owners_name_as_ss_does(named_child, background):
    pid, inodes = named_child
    with Snapshotter(pids=True) as snap:
        res = snap.resolver
        res.background = background
        rows = snap.take()                    # the first walk runs in place: every pid
        rows = snap.take()
        names, index = ["already", "tcpsnap-rate-not"], {"already": 0, "tcpsnap-rate-not": 1}
        out = np.full(len(rows), 99, np.int32)
        res.names_into(rows["pid"], out, index, names)
        mine = np.isin(rows["inode"], list(inodes))
        assert mine.sum() == 3
        got = {(names[c], int(p)) for c, p in zip(out[mine], rows["pid"][mine], strict=True)}
        assert got == _ss_owners(inodes) == {("tcpsnap-rate", pid)}
        assert (out[rows["pid"] == 0] == -1).all()          # no owner: unknown
        assert names[:2] == ["already", "tcpsnap-rate-not"] and index["already"] == 0
        assert all(index[n] == i for i, n in enumerate(names))  # the dictionary stays one
        # exactly process_names' answer, folded into the running dictionary
        codes, pnames = snap.process_names(rows["pid"])
        assert [pnames[c] if c >= 0 else None for c in codes] == \
               [names[c] if c >= 0 else None for c in out]
        with pytest.raises(ValueError, match="differ in length"):
            res.names_into(rows["pid"], out[:-1], index, names)


@linux
def test_names_into_takes_other_integer_pids(named_child):
    pid, _ = named_child
    with Snapshotter(pids=True) as snap:
        res = snap.resolver
        res.background = True
        snap.take()
        out = np.zeros(3, np.int32)
        names: list[str] = []
        index: dict[str, int] = {}
        res.names_into(np.array([pid, 0, pid], np.int64), out, index, names)
        assert names == ["tcpsnap-rate"] and out.tolist() == [0, -1, 0]


def test_put_rows_copies_the_bytes_and_refuses_what_does_not_fit():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, 5 * ROW_DTYPE.itemsize, np.uint8).view(ROW_DTYPE)
    dst = np.zeros(8, ROW_DTYPE)
    put_rows(dst, 2, src)
    assert dst.view(np.uint8)[2 * ROW_DTYPE.itemsize:7 * ROW_DTYPE.itemsize].tobytes() == src.tobytes()
    assert not dst[:2].view(np.uint8).any() and not dst[7:].view(np.uint8).any()
    put_rows(dst, 8, src[:0])                 # nothing at the end: fine
    with pytest.raises(ValueError, match="do not fit"):
        put_rows(dst, 4, src)
    with pytest.raises(ValueError, match="one dtype"):
        put_rows(dst, 0, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="not C-contiguous"):
        put_rows(dst, 0, src[::2])


@linux
def test_statistics_only_where_readers_prune_and_time_filters_still_prune(tmp_path):
    """Row-group statistics for the time, seq, clocks, kind, host and boot columns (what
    tcpsnap.read, export, recovery, retention and fleet reads use), none for the per-row
    columns; a time range still skips row groups (pyarrow's scan, tcpsnap.read)."""
    import pandas as pd
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    import tcpsnap
    from tcpsnap.record.parquet import STATS_COLUMNS

    lst = listener()
    socks = [pair(lst=lst)[1:] for _ in range(20)]
    try:
        # batches of 1Ki rows: a row group holds 4096-5119 rows, so the 5 x 4096 rows below
        # make at least 4 (with 16Ki-row batches, one batch could be a row group, and a
        # loaded machine's 20k rows made 2: the check below failed on main and branch alike)
        with Recorder(tmp_path / "rec", interval="2ms", pids=True, row_group_rows=4096,
                      batch_rows=1024, nice=None) as rec:
            for _ in range(150):               # several row groups, however loaded the machine
                rec.run(duration="0.2s")
                if rec.rows >= 5 * 4096:
                    break
    finally:
        for s in [lst] + [x for p in socks for x in p]:
            s.close()
    files = sorted((tmp_path / "rec").glob("date=*/*.parquet"))
    md = pq.ParquetFile(files[0]).metadata
    assert md.num_row_groups >= 3
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    assert set(STATS_COLUMNS) <= set(names)
    for r in range(md.num_row_groups):
        for i, name in enumerate(names):
            st = md.row_group(r).column(i).statistics
            assert (st is not None and st.has_min_max) == (name in STATS_COLUMNS), name
    at = names.index("timestamp")
    ts = [md.row_group(r).column(at).statistics for r in range(md.num_row_groups)]
    cut = ts[-1].min                          # the last row group's first snapshot
    frag = next(iter(ds.dataset(str(files[0]), format="parquet").get_fragments()))
    kept = frag.split_by_row_group(ds.field("timestamp") >= cut)
    assert len(kept) == sum(1 for t in ts if t.max >= cut) < md.num_row_groups
    df = tcpsnap.read(tmp_path / "rec", start=pd.Timestamp(cut))
    whole = pd.read_parquet(tmp_path / "rec")
    assert len(df) == int((whole["timestamp"] >= pd.Timestamp(cut)).sum()) > 0


@linux
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.parametrize("mode", ["full", "changes"])
def test_recorded_process_names_are_ss_owners_in_both_modes(tmp_path, named_child, mode):
    """The recorder writes the names through ``names_into`` (full mode: into the batch;
    changes mode: into the tracker's dictionary): each of the child's rows recorded with
    the pid and name ``ss -p`` gives, every snapshot."""
    import tcpsnap

    pid, inodes = named_child
    with Recorder(tmp_path / "rec", interval="5ms", pids=True, mode=mode, nice=None) as rec:
        rec.run(duration="0.3s")
    df = tcpsnap.read(tmp_path / "rec")
    mine = df[df.inode.isin(inodes)]
    assert mine.seq.nunique() == rec.snapshots and len(mine) == 3 * rec.snapshots
    got = set(zip(mine.process.astype(str), mine.pid.astype(int), strict=True))
    assert got == _ss_owners(inodes) == {("tcpsnap-rate", pid)}
