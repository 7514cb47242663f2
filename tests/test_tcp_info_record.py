"""Recording internals in full mode (record --tcp-info): exact values read back, null (not
0) where the kernel sent none or the snapshot sampled none, the footer's tcp_info length
(the kernel's own struct size, from getsockopt), folders mixing runs with and without,
kill -9 and recovery, usage errors."""

import socket
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

import tcpsnap
from _sockets import inode, pair, wait_for
from tcpsnap._arrow import TCP_INFO_COLUMNS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="internals are Linux's")
N = 12_345


def kernel_tcp_info_len():
    with socket.socket() as s:  # the kernel copies at most its own struct: its length
        return len(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1024))


@pytest.fixture
def traffic():
    """A connection that sent N bytes (all acknowledged), and a TIME_WAIT socket: (the
    listener's port, the client's port, the TIME_WAIT's port, the client's inode). The
    tests select the client by its inode and the TIME_WAIT by both ends with address and
    family: another socket on the host may have any of these port numbers."""
    lst, c, s = pair("127.0.0.1")
    c.sendall(b"q" * N)
    got = 0
    while got < N:
        got += len(s.recv(65536))
    _, c2, s2 = pair("127.0.0.1", lst=lst)
    tw_port = c2.getsockname()[1]
    c2.close()                       # active close: TIME_WAIT
    assert s2.recv(1) == b""         # its FIN read first: no simultaneous close (two TIME_WAITs)
    s2.close()
    ours = f"( src 127.0.0.1:{tw_port} and dst 127.0.0.1:{lst.getsockname()[1]} )"
    assert wait_for(lambda: subprocess.run(["ss", "-tanH", "state", "time-wait", ours], capture_output=True).stdout)
    yield lst.getsockname()[1], c.getsockname()[1], tw_port, inode(c)
    for x in (c, s, lst):
        x.close()


def conns(d):
    return pd.read_parquet(d).query("kind == 'connection'")


def test_recorded_values_nulls_and_footer(tmp_path, traffic):
    port, cport, tw_port, ino = traffic
    d = tmp_path / "rec"
    with tcpsnap.Recorder(d, interval="20ms", tcp_info=True, pids=False) as rec:
        rec.run(duration="0.3s")
    df = conns(d)
    assert list(df.columns[df.columns.get_loc("boot_id") + 1:]) == [*TCP_INFO_COLUMNS, "date"]
    mine = df[df.inode == ino]
    assert len(mine) == df.seq.nunique() >= 2
    assert set(mine.bytes_sent) == {N} and set(mine.bytes_acked) == {N + 1} and set(mine.bytes_received) == {0}
    assert (mine.min_rtt > 0).all() and mine.congestion.notna().all()
    # TIME_WAIT: no internals at all -- null, never 0
    # this connection's end only, by both ends and addresses: another socket on the host
    # may have either port number
    tw = df[(df.local_port == tw_port) & (df.remote_port == port) & (df.state == "TIME_WAIT")
            & (df.local_addr.astype(str) == "127.0.0.1") & (df.remote_addr.astype(str) == "127.0.0.1")]
    assert len(tw) == len(mine)
    assert (tw.tcp_info_len == 0).all()
    for name in TCP_INFO_COLUMNS:
        if name != "tcp_info_len":
            assert tw[name].isna().all(), name
    files = sorted(d.glob("date=*/*.parquet"))
    md = pq.read_metadata(files[0]).metadata
    assert md[b"tcpsnap.tcp_info"] == b"true"
    assert int(md[b"tcpsnap.tcp_info_len"]) == kernel_tcp_info_len()
    assert md[b"tcpsnap.tcp_info_longer"] == b"0"
    # the Parquet types: unsigned as in the dtype, congestion a dictionary
    sch = pq.read_schema(files[0])
    assert str(sch.field("bytes_acked").type) == "uint64" and str(sch.field("rtt").type) == "uint32"
    assert str(sch.field("congestion").type) == "dictionary<values=string, indices=int32, ordered=0>"
    # tcpsnap.read has them too
    r = tcpsnap.read(d)
    assert set(r[r.inode == ino].bytes_sent) == {N}


def test_sampled_slower_than_the_table(tmp_path, traffic):
    _, _, _, ino = traffic
    d = tmp_path / "rec"
    with tcpsnap.Recorder(d, interval="20ms", tcp_info=True, tcp_info_every="1h", pids=False) as rec:
        rec.run(duration="0.3s")
    df = conns(d)
    sampled = df.groupby("seq").tcp_info_len.apply(lambda s: s.notna().all())
    partly = df.groupby("seq").tcp_info_len.apply(lambda s: s.notna().any())
    assert (sampled == partly).all()           # a snapshot samples all its rows or none
    assert sampled.tolist() == [True] + [False] * (len(sampled) - 1)   # the first, once an hour
    later = df[(df.seq > df.seq.min()) & (df.inode == ino)]
    assert len(later) == df.seq.nunique() - 1
    for name in TCP_INFO_COLUMNS:
        assert later[name].isna().all(), name    # never a stale value carried over
    md = pq.read_metadata(sorted(d.glob("date=*/*.parquet"))[0]).metadata
    assert md[b"tcpsnap.tcp_info_every"] == b"1h"


def test_a_folder_with_and_without_internals_reads_as_one(tmp_path, traffic):
    _, _, _, ino = traffic
    d = tmp_path / "rec"
    with tcpsnap.Recorder(d, interval="20ms", pids=False) as rec:
        rec.run(duration="0.1s")
    with tcpsnap.Recorder(d, interval="20ms", tcp_info=True, pids=False) as rec:
        rec.run(duration="0.1s")
    with tcpsnap.Recorder(d, interval="20ms", pids=False) as rec:
        rec.run(duration="0.1s")
    r = tcpsnap.read(d)
    files = sorted(d.glob("date=*/*.parquet"))
    assert len(files) == 3
    first, second, third = (set(pq.read_table(f, columns=["seq"]).column("seq").to_pylist()) for f in files)
    mine = r[r.inode == ino]
    with_info = mine[mine.seq.isin(second)]
    assert len(with_info) and set(with_info.bytes_sent) == {N}
    assert mine[mine.seq.isin(first | third)].bytes_sent.isna().all()
    assert len(mine) == len(first | second | third)


def test_kill_9_and_recovery_keep_the_internals(tmp_path, traffic):
    _, _, _, ino = traffic
    out = tmp_path / "rec"
    p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "record", str(out), "--interval", "10ms",
                          "--no-pids", "--flush", "0.2s", "--tcp-info", "-q"])
    try:
        assert wait_for(lambda: list(out.glob("date=*/.*tmp")), 20)
        time.sleep(0.8)
    finally:
        p.kill()
        p.wait()
    r = subprocess.run([sys.executable, "-m", "tcpsnap", "recover", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    df = conns(out)
    mine = df[df.inode == ino]
    assert len(mine) >= 2 and set(mine.bytes_sent) == {N}


@pytest.mark.parametrize("argv, message", [
    (["--tcp-info-every", "1s"], "tcpsnap: error: --tcp-info-every needs --tcp-info"),
    (["--tcp-info", "--tcp-info-every", "0"], "must be more than 0"),
])
def test_usage_errors(tmp_path, argv, message):
    p = subprocess.run([sys.executable, "-m", "tcpsnap", "record", str(tmp_path / "rec"), *argv],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "rec").exists()


def test_recorder_rejects_a_snapshotter_without_internals(tmp_path):
    with tcpsnap.Snapshotter() as snap, pytest.raises(ValueError, match="Snapshotter\\(tcp_info=True\\)"):
        tcpsnap.Recorder(tmp_path / "rec", tcp_info=True, snapshotter=snap).open()
    with pytest.raises(ValueError, match="needs tcp_info"):
        tcpsnap.Recorder(tmp_path / "rec", tcp_info_every="1s")
