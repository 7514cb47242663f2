"""The Windows fetch layer (src/tcpsnap/_win/tcpfetch.c), built with mingw-w64 as it is built
for Windows and run under Wine (whose GetTcpTable2 / GetTcp6Table2 / GetExtendedTcpTable read the
Linux kernel's tables), in a private network namespace. The buffers it fetched are parsed here by
tcpsnap's parser and checked against ``ss`` and against the sockets the driver made.

Skips where wine, x86_64-w64-mingw32-gcc or ``unshare -n`` is missing (.ci/run installs them:
``apt-get install wine gcc-mingw-w64-x86-64``).
"""

import collections
import ipaddress
import json
import subprocess

import numpy as np
import pytest

import tcpsnap
from tcpsnap import ROW_DTYPE, TcpState
from wine import harness

pytestmark = pytest.mark.netns

MIB = {  # the layouts _mib.pyx's parser is built with (x86_64 / arm64 Windows SDK)
    "tcp4": dict(header_size=4, stride=28, row_size=28, family=4, off_state=0, off_laddr=4, off_lscope=-1,
                 off_lport=8, off_raddr=12, off_rscope=-1, off_rport=16, off_pid=20, off_offload=24),
    "tcp6": dict(header_size=4, stride=60, row_size=60, family=6, off_state=48, off_laddr=0, off_lscope=16,
                 off_lport=20, off_raddr=24, off_rscope=40, off_rport=44, off_pid=52, off_offload=56),
    "ownerpid4": dict(header_size=4, stride=24, row_size=24, family=4, off_state=0, off_laddr=4, off_lscope=-1,
                      off_lport=8, off_raddr=12, off_rscope=-1, off_rport=16, off_pid=20, off_offload=-1),
    "ownerpid6": dict(header_size=4, stride=56, row_size=56, family=6, off_state=48, off_laddr=0, off_lscope=16,
                      off_lport=20, off_raddr=24, off_rscope=40, off_rport=44, off_pid=52, off_offload=-1),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return harness.wine_run(tmp_path_factory.getbasetemp())


def _keys(rows):
    return collections.Counter(map(harness.row_key, rows))


# --- the build ---------------------------------------------------------------------------------

@pytest.mark.parametrize("src", ["tcpfetch.c", "estats.c"])
@pytest.mark.parametrize("std", ["c99", "c11"])
def test_tcpfetch_compiles_without_warnings(tmp_path, std, src):
    if not harness.shutil.which(harness.MINGW_CC):
        pytest.skip(f"{harness.MINGW_CC} not found")
    p = subprocess.run([harness.MINGW_CC, f"-std={std}", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror",
                        "-c", str(harness.WIN_SRC / src), "-o", str(tmp_path / "out.o")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_sdk_layouts_are_the_parsers(run):
    """offsetof/sizeof from the SDK headers (mingw-w64's) agree with the parser's layouts."""
    assert run.result["layouts"] == MIB


# --- the whole table ----------------------------------------------------------------------------

def test_table2_buffers_parse_with_the_sdk_layout(run):
    for name in ("tcp4", "tcp6", "ownerpid4", "ownerpid6"):
        lay = run.result["layouts"][name]
        rows = run.rows(name, header_size=lay["header_size"], row_stride=lay["stride"])
        assert len(rows) == int.from_bytes(run.raw[name][:4], "little") > 0
        assert (rows["family"] == lay["family"]).all()
        assert (rows == run.rows(name)).all()


def test_whole_table_matches_ss(run):
    """Every row Wine's GetTcpTable2 / GetTcp6Table2 returned is a socket ss shows, in the same
    state, and (where Wine lists every socket of the namespace, as 8.0 does) the other way round."""
    ours = _keys(run.table2_rows())
    ss = collections.Counter(run.ss_rows())
    assert ours - ss == collections.Counter(), "rows ss does not show"
    if run.lists_all:
        assert ours == ss
    else:  # a Wine that lists only its own processes' sockets
        assert not any(harness.sock_key(s) in ours for s in run.report["linux"])


def test_every_state_the_driver_made_is_seen(run):
    ours = _keys(run.table2_rows())
    ss = collections.Counter(run.ss_rows())
    for s in run.result["sockets"]:
        assert ss[harness.sock_key(s)] == 1, f"{s['name']}: {harness.sock_key(s)} not in ss"
    for s in run.expected_sockets():
        k = harness.sock_key(s)
        assert ours[k] == 1, f"{s['name']}: {k} not in the fetched table"
    made = {s["state"] for s in run.result["sockets"]}
    assert made == {TcpState.LISTEN, TcpState.SYN_SENT, TcpState.ESTABLISHED, TcpState.FIN_WAIT1,
                    TcpState.FIN_WAIT2, TcpState.CLOSE_WAIT, TcpState.CLOSING, TcpState.LAST_ACK,
                    TcpState.TIME_WAIT}
    for fam in (4, 6):
        assert {s["state"] for s in run.result["sockets"] if s["family"] == fam} >= made - {TcpState.SYN_SENT}


def test_syn_rcvd_request_socket(run):
    """SYN_RCVD comes from a Linux-side listener (TCP_DEFER_ACCEPT), seen only by a Wine that
    lists every socket of the namespace."""
    want = [harness.sock_key(s) for s in run.report["linux"] if s["state"] == TcpState.SYN_RCVD]
    ours = _keys(run.table2_rows())
    if not run.lists_all:
        pytest.skip("this Wine lists only sockets of Wine processes")
    assert want and all(ours[k] == 1 for k in want)


def test_rows_fields(run):
    rows = run.table2_rows()
    assert rows.dtype == ROW_DTYPE
    v4 = rows[rows["family"] == 4]
    assert not v4["local_addr"][:, 4:].any() and not v4["remote_addr"][:, 4:].any()
    assert not v4["local_scope_id"].any() and not v4["remote_scope_id"].any()
    # uid, inode, cookie, queues: Linux-only fields stay 0; Wine offloads nothing
    for f in ("uid", "inode", "cookie", "rx_queue", "tx_queue", "offload_state", "_reserved"):
        assert not rows[f].any(), f


def test_owning_pids(run):
    """Rows of sockets the driver holds carry its pid where Wine finds the owner (Wine 8.0 finds
    it for some, reports 0 for the rest); sockets no Wine process owns carry 0."""
    pid = run.result["pid"]
    by_key = {harness.row_key(r): int(r["pid"]) for r in run.table2_rows()}
    for s in run.expected_sockets():
        assert by_key[harness.sock_key(s)] in ((pid, 0) if s["owned"] else (0,)), s["name"]
    for s in run.report["linux"]:
        assert by_key.get(harness.sock_key(s), 0) == 0
    assert pid in by_key.values()


def test_owner_pid_tables_match_table2(run):
    """GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL) rows parse to the same rows (no offload state)."""
    for fam in (4, 6):
        t2, ext = run.rows(f"tcp{fam}"), run.rows(f"ownerpid{fam}")
        assert _keys(ext) == _keys(t2)
        assert not ext["offload_state"].any()
        pids2 = {harness.row_key(r): int(r["pid"]) for r in t2}
        assert {harness.row_key(r): int(r["pid"]) for r in ext} == pids2


# --- the fetch loop -----------------------------------------------------------------------------

def _headroom(needed):
    return min(needed + needed // 4 + 4096, 0xFFFFFFF0)


@pytest.mark.parametrize("fam", [4, 6])
def test_grown_table_retry(run, fam):
    """A 4-byte buffer: the first call is the size probe; the hook then opens more connections
    than the headroom holds, so the next call says ERROR_INSUFFICIENT_BUFFER again (the table grew
    between two calls) and the loop grows once more before it gets the table."""
    g = run.result["grow"][0 if fam == 4 else 1]
    probe, regrow, _ = g["needed"]
    assert g["opened"] == 200
    assert regrow > _headroom(probe), "the table did not outgrow the buffer between the calls"
    assert g["stats"] == dict(fetches=1, calls=3, retries=1, grows=3, busy=0)
    rows = run.rows(f"grow{fam}")
    assert len(rows) * (28 if fam == 4 else 60) + 4 == regrow
    got = _keys(rows)
    grown = [s for s in run.result["sockets"] if s["name"].startswith(f"grow{fam}.")]
    assert len(grown) == 201
    assert all(got[harness.sock_key(s)] == 1 for s in grown)


def test_buffers_are_kept_and_reused(run):
    st = run.result["stats"]
    assert st["fetches"] == 4 and st["busy"] == 0 and st["retries"] == 0
    assert run.result["reuse"] == dict(calls=2, grows=0, same_buffer=True)


def test_status_unsuccessful_is_retried(run):
    f = run.result["faults"]
    assert f["busy_then_ok"] == dict(status=0, calls=3, busy=2)


def test_retries_are_bounded(run):
    f = run.result["faults"]
    attempts = f["max_attempts"]
    assert f["busy_always"] == dict(status=2, winerr=0xC0000001, calls=attempts)      # TCPFETCH_CHANGING
    assert f["short_always"] == dict(status=2, winerr=122, calls=attempts)


def test_other_errors_name_the_call_and_code(run):
    f = run.result["faults"]["not_supported"]
    assert (f["status"], f["winerr"], f["call"], f["name"]) == (1, 50, "GetTcp6Table2", "ERROR_NOT_SUPPORTED")
    assert f["message"]          # FormatMessage's text


# --- the real fixture buffers ----------------------------------------------------------------------

@pytest.mark.parametrize("name,fn,lay", [("tcptable2", tcpsnap.parse_tcptable2, "tcp4"),
                                         ("tcp6table2", tcpsnap.parse_tcp6table2, "tcp6")])
def test_fixture_buffers_parse_to_their_expected_rows_with_the_sdk_layout(run, windows_fixtures, name, fn, lay):
    buf = (windows_fixtures / f"{name}.bin").read_bytes()
    expected = json.loads((windows_fixtures / f"{name}.expected.json").read_text())
    L = run.result["layouts"][lay]
    out = np.zeros(len(expected), ROW_DTYPE)
    assert fn(buf, out, header_size=L["header_size"], row_stride=L["stride"]) == len(expected)
    fam = L["family"]
    for r, e in zip(out, expected):
        assert harness.row_key(r) == (fam, e["state"], ipaddress.ip_address(e["local_addr"]), e["local_port"],
                                      ipaddress.ip_address(e["remote_addr"]), e["remote_port"])
        assert (int(r["pid"]), int(r["offload_state"])) == (e["pid"], e["offload_state"])
        assert (int(r["local_scope_id"]), int(r["remote_scope_id"])) == (e.get("local_scope_id", 0),
                                                                         e.get("remote_scope_id", 0))


# --- the Cython backend (tcpsnap._windows) on those buffers ------------------------------------------
# Built here with tests/wine/fake_tcpfetch.c standing in for tcpfetch.c: the real WindowsDumper
# (GIL release, shared parser, row growth, error helper, counters) on what Wine returned.

import struct  # noqa: E402

OK, WINERR, CHANGING, NOMEM = 0, 1, 2, 3
TCP4, TCP6 = 0, 1


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    return harness.windows_replay_module(tmp_path_factory.getbasetemp())


def _serve(lib, table, buf=b"", status=OK, winerr=0):
    lib.tcpfetch_fake_set(table, buf, len(buf), status, winerr)


def test_backend_dumps_what_wine_returned(run, replay):
    mod, lib = replay
    _serve(lib, TCP4, run.raw["tcp4"])
    _serve(lib, TCP6, run.raw["tcp6"])
    d = mod.WindowsDumper(4)
    n = d.dump()
    want = np.concatenate([run.rows("tcp4"), run.rows("tcp6")])
    assert n == len(want) > 400 and d.grows > 0 and d.capacity >= n
    assert (d.rows[:n] == want).all()
    calls, grows = d.calls, d.grows
    assert d.dump() == n and (d.rows[:n] == want).all()
    assert (d.calls, d.grows, d.dumps, d.retries, d.skipped) == (calls + 2, grows, 2, 0, 0)
    assert mod.sdk_layouts() == {"GetTcpTable2": MIB["tcp4"], "GetTcp6Table2": MIB["tcp6"]}


def test_backend_behind_snapshotter(run, replay, monkeypatch):
    import tcpsnap._backend
    mod, lib = replay
    _serve(lib, TCP4, run.raw["tcp4"])
    _serve(lib, TCP6, run.raw["tcp6"])
    monkeypatch.setattr(tcpsnap._backend, "_CLASS", mod.WindowsDumper)
    with tcpsnap.Snapshotter(capacity=8) as snap:
        rows = snap.take()
        assert _keys(rows) == _keys(run.table2_rows())
        assert snap.stats["dumps"] == 1 and snap.stats["grows"] > 0


def _row4(state, la, lp, ra, rp, pid=0, offload=0):
    port = lambda p: 0xABCD0000 | int.from_bytes(p.to_bytes(2, "big"), "little")   # junk high bits
    return struct.pack("<I4sI4sIII", state, ipaddress.IPv4Address(la).packed, port(lp),
                       ipaddress.IPv4Address(ra).packed, port(rp), pid, offload)


def test_backend_clears_listener_peers_and_keeps_pid_and_offload(replay):
    mod, lib = replay
    rows = [_row4(2, "0.0.0.0", 445, "10.9.8.7", 4242, pid=4), _row4(5, "10.0.0.1", 50000, "10.0.0.2", 443, 77, 2)]
    _serve(lib, TCP4, struct.pack("<I", 2) + b"".join(rows))
    _serve(lib, TCP6, struct.pack("<I", 0))
    d = mod.WindowsDumper()
    assert d.dump() == 2
    lst, est = d.rows[0], d.rows[1]
    assert (lst["state"], lst["local_port"], lst["remote_port"], lst["pid"]) == (2, 445, 0, 4)
    assert not lst["remote_addr"].any()
    assert (est["remote_port"], est["pid"], est["offload_state"]) == (443, 77, 2)
    assert bytes(est["remote_addr"][:4]) == ipaddress.IPv4Address("10.0.0.2").packed


def test_backend_errors_name_the_call_and_code(replay):
    mod, lib = replay
    _serve(lib, TCP6, struct.pack("<I", 0))
    d = mod.WindowsDumper()
    _serve(lib, TCP4, status=WINERR, winerr=87)
    with pytest.raises(OSError, match=r"GetTcpTable2 failed: Windows error 87 \(ERROR_INVALID_PARAMETER\)"):
        d.dump()
    _serve(lib, TCP4, status=CHANGING, winerr=0xC0000001)
    with pytest.raises(tcpsnap.DumpInterrupted, match="GetTcpTable2: the TCP table kept changing: "
                                                      "Windows error 0xc0000001 \\(STATUS_UNSUCCESSFUL\\)"):
        d.dump()
    _serve(lib, TCP4, status=NOMEM)
    with pytest.raises(MemoryError, match="GetTcpTable2"):
        d.dump()
    _serve(lib, TCP4, struct.pack("<I", 1) + _row4(13, "1.2.3.4", 1, "5.6.7.8", 2))
    with pytest.raises(OSError, match="GetTcpTable2 returned a table tcpsnap cannot read: row 0: dwState=13") as e:
        d.dump()
    assert e.value.errno == __import__("errno").EPROTO
    _serve(lib, TCP4, struct.pack("<I", 5) + _row4(5, "1.2.3.4", 1, "5.6.7.8", 2))
    with pytest.raises(OSError, match="dwNumEntries=5 rows do not fit"):
        d.dump()
    _serve(lib, TCP4, struct.pack("<I", 0))
    _serve(lib, TCP6, status=WINERR, winerr=1234)
    with pytest.raises(OSError, match="GetTcp6Table2 failed: Windows error 1234$"):
        d.dump()
    assert d.dumps == 0


def test_backend_without_ipv6_stack(replay):
    mod, lib = replay
    _serve(lib, TCP4, struct.pack("<I", 1) + _row4(5, "1.2.3.4", 1, "5.6.7.8", 2))
    _serve(lib, TCP6, status=WINERR, winerr=50)        # ERROR_NOT_SUPPORTED
    d = mod.WindowsDumper()
    assert d.dump() == 1 and d.dump() == 1
    assert lib.tcpfetch_fake_calls(TCP6) == 1          # asked once, then not again


def test_backend_close(replay):
    mod, lib = replay
    d = mod.WindowsDumper()
    d.close()
    with pytest.raises(ValueError, match="closed"):
        d.dump()
    with pytest.raises(ValueError, match="capacity"):
        mod.WindowsDumper(0)


@pytest.mark.parametrize("capacity,exc", [(-1, ValueError), (2**64, ValueError), (2**63 - 1, ValueError),
                                          (1.5, TypeError), (None, TypeError), ("8", TypeError)])
def test_backend_bad_capacity_is_value_or_type_error(replay, capacity, exc):
    # exactly these (no OverflowError for 2**64), with a message naming the argument
    mod, lib = replay
    with pytest.raises((ValueError, TypeError), match="^capacity ") as info:
        mod.WindowsDumper(capacity)
    assert type(info.value) is exc


# --- TCP internals: GetPerTcpConnectionEStats ---------------------------------------------------------
# Under Wine (the real estats.c in the driver) the call is not exported; through the replay module
# (fake_tcpfetch.c's tcpestats_* in place of estats.c) every state of the live path.

READY, NO_DLL, NO_EXPORT, NOT_ELEVATED = 0, 1, 2, 3
WINE_REASON = ("iphlpapi.dll does not export GetPerTcpConnectionEStats (Wine does not have it; "
               "Windows has it since Vista)")


def test_estats_under_wine_is_the_missing_export_not_a_load_failure(run):
    """The driver linked estats.c and ran (resolution is GetProcAddress, not the import table);
    tcpestats_open() says which export is missing, and enable/read fail with
    ERROR_NOT_SUPPORTED instead of calling through a NULL pointer."""
    assert run.result["estats"] == dict(state=NO_EXPORT, missing="GetPerTcpConnectionEStats",
                                        enable=50, read=50, got=0)


def test_estats_sdk_layout_is_the_synthetic_buffers(run):
    """The Windows SDK's TCP_ESTATS_DATA_ROD_v0 / _PATH_ROD_v0 (mingw-w64's tcpestats.h, offsetof
    in the driver) put every field _tcp_info.h reads where tests/test_tcp_info.py's synthetic
    buffers (DATA_ROD, PATH_ROD) put it: the parser tested there reads real structs."""
    from test_tcp_info import DATA_ROD, PATH_NAMES, PATH_ROD

    lay = run.result["estats_layout"]
    assert (lay["data_size"], lay["path_size"]) == (DATA_ROD.size, PATH_ROD.size) == (96, 160)
    data_fmt = dict(DataBytesOut="<", DataSegsOut="<Q", DataSegsIn="<3Q", SegsOut="<4Q", SegsIn="<5Q",
                    ThruBytesAcked="<6Q5I4x", ThruBytesReceived="<6Q5I4xQI4x")    # what precedes each
    assert lay["data"] == {k: struct.calcsize(f) for k, f in data_fmt.items()}
    assert lay["path"] == {k: 4 * PATH_NAMES.index(k) for k in lay["path"]}
    assert len(lay["path"]) == 11


def _wine_tables(lib, run):
    _serve(lib, TCP4, run.raw["tcp4"])
    _serve(lib, TCP6, run.raw["tcp6"])


def test_take_with_tcp_info_under_a_missing_export_is_null_with_the_reason(run, replay, monkeypatch):
    import tcpsnap._backend
    from tcpsnap._arrow import TCP_INFO_COLUMNS, tcp_info_columns

    mod, lib = replay
    _wine_tables(lib, run)
    lib.tcpestats_fake_state(NO_EXPORT, -1)
    monkeypatch.setattr(tcpsnap._backend, "_CLASS", mod.WindowsDumper)
    with tcpsnap.Snapshotter(capacity=8, tcp_info=True) as snap:
        rows = snap.take()
        info = snap.tcp_info
        assert len(rows) == len(run.table2_rows()) and (rows["state"] == TcpState.ESTABLISHED).sum() >= 4
        assert info is not None and len(info) == len(rows)
        assert not info["estats"].any() and not info["bytes_sent"].any()
        cols = tcp_info_columns(info)
        for name in TCP_INFO_COLUMNS:
            if name != "tcp_info_len":
                assert cols[name].null_count == len(rows), name
        assert snap._impl.tcp_info_unavailable == WINE_REASON
        assert snap.tcp_info_stats == {"tcp_info_len": 0, "tcp_info_longer": 0}
    assert (lib.tcpestats_fake_calls(0), lib.tcpestats_fake_calls(1)) == (0, 0)   # nothing called
    assert mod.estats_unavailable() == WINE_REASON


def test_show_info_says_the_reason_once(run, replay, monkeypatch, capsys):
    import sys

    import tcpsnap._backend
    from tcpsnap.cli import main

    mod, lib = replay
    _wine_tables(lib, run)
    lib.tcpestats_fake_state(NO_EXPORT, -1)
    monkeypatch.setattr(tcpsnap._backend, "_CLASS", mod.WindowsDumper)
    monkeypatch.setattr(tcpsnap._backend, "BACKEND", "windows")
    monkeypatch.setitem(sys.modules, "tcpsnap._windows", mod)
    assert main(["show", "--info", "--no-pids", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("tcpsnap: note:") == 1
    assert err == f"tcpsnap: note: --info: no TCP internals: {WINE_REASON}; the info columns are null\n"
    recs = json.loads(out)
    assert len(recs) == len(run.table2_rows())
    assert all(r["rtt"] is None and r["bytes_sent"] is None for r in recs)


def _table(*rows4, rows6=()):
    return (struct.pack("<I", len(rows4)) + b"".join(rows4), struct.pack("<I", len(rows6)) + b"".join(rows6))


def _row6(state, lp, rp, scope=0):
    port = lambda p: int.from_bytes(p.to_bytes(2, "big"), "little")
    return struct.pack("<16sII16sIIIII", ipaddress.IPv6Address("::1").packed, scope, port(lp),
                       ipaddress.IPv6Address("::1").packed, scope, port(rp), state, 0, 0)


def test_elevated_take_enables_each_connection_once_and_reads_at_most_the_cap(replay):
    """READY (the calls there, elevated): each ESTABLISHED connection, IPv4 and IPv6, is enabled
    the first dump that sees it, and the reads go round-robin, ``estats_cap`` a dump: the fake's
    Data says DataBytesOut = local port, ThruBytesReceived = remote port, Path SmoothedRtt =
    (1 + times enabled) ms."""
    mod, lib = replay
    v4 = [_row4(5, "127.0.0.1", p, "127.0.0.1", 443) for p in range(3000, 3005)]
    v6 = [_row6(5, p, 8443) for p in (4000, 4001)]
    t4, t6 = _table(*v4, _row4(2, "0.0.0.0", 445, "0.0.0.0", 0), rows6=v6)
    _serve(lib, TCP4, t4)
    _serve(lib, TCP6, t6)
    lib.tcpestats_fake_state(READY, -1)
    d = mod.WindowsDumper()
    d.set_tcp_info(True)
    d.estats_cap = 3
    assert d.tcp_info_unavailable is None
    seen = collections.Counter()
    for _ in range(3):                                   # 7 connections, 3 a dump: ceil(7/3) = 3 dumps
        n = d.dump()
        rows, info = d.rows[:n], d.tcp_info[:n]
        read = info["estats"] == 3
        assert read.sum() == 3 and not read[rows["state"] != 5].any()
        assert (info["bytes_sent"][read] == rows["local_port"][read]).all()
        assert (info["bytes_received"][read] == rows["remote_port"][read]).all()
        assert (info["rtt"][read] == 2000).all() and not info["rtt"][~read].any()
        seen.update(rows["local_port"][read].tolist())
    assert set(seen) == set(range(3000, 3005)) | {4000, 4001} and max(seen.values()) <= 2
    assert lib.tcpestats_fake_calls(0) == 7 and lib.tcpestats_fake_calls(1) == 9
    assert all(lib.tcpestats_fake_conn(p, 0) == 1 for p in seen)       # enabled once each
    assert d.estats_stats == dict(enabled=7, reads=9, failures=0)
    # a new connection: enabled at once (its counts start when first seen), whatever the cap
    t4, t6 = _table(*v4, _row4(5, "127.0.0.1", 3999, "127.0.0.1", 443), rows6=v6)
    _serve(lib, TCP4, t4)
    d.dump()
    assert lib.tcpestats_fake_calls(0) == 8 and lib.tcpestats_fake_conn(3999, 0) == 1
    d.set_tcp_info(False)
    assert d.tcp_info is None and d.dump() == 8 and lib.tcpestats_fake_calls(1) == 12


def test_enabling_denied_means_not_elevated_and_null(replay):
    mod, lib = replay
    t4, t6 = _table(*[_row4(5, "127.0.0.1", p, "127.0.0.1", 443) for p in range(3000, 3004)])
    _serve(lib, TCP4, t4)
    _serve(lib, TCP6, t6)
    lib.tcpestats_fake_state(READY, 2)                   # ERROR_ACCESS_DENIED from the third enable
    d = mod.WindowsDumper()
    d.set_tcp_info(True)
    assert d.dump() == 4
    assert not any(d.tcp_info[:4].tobytes()) and lib.tcpestats_fake_calls(1) == 0
    assert d.tcp_info_unavailable.startswith("tcpsnap is not elevated: Windows enables per-connection")
    lib.tcpestats_fake_state(NOT_ELEVATED, -1)
    assert mod.estats_unavailable() == d.tcp_info_unavailable
    with pytest.raises(ValueError, match="estats_cap must be at least 1"):
        d.estats_cap = 0
