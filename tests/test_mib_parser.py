"""The MIB_TCPTABLE2 / MIB_TCP6TABLE2 parser on real Windows buffers, padded synthetic
buffers, every bad input, and random bytes."""

import ipaddress
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpsnap
from _badargs import KINDS, NOT_INTS, assert_only_value_or_type_error, assert_rejected, cases, one_bad_argument
from tcpsnap import ROW_DTYPE, TcpState
from tcpsnap._diff import Differ
from tcpsnap._mib import check_out_array
from tcpsnap.frame import format_address

V4 = dict(fn=tcpsnap.parse_tcptable2, size=28, family=4)
V6 = dict(fn=tcpsnap.parse_tcp6table2, size=60, family=6)


def _addr(family, raw):
    return ipaddress.ip_address(format_address(family, bytes(raw)))


def _check_expected(rows, expected, family):
    assert len(rows) == len(expected)
    for r, e in zip(rows, expected):
        assert r["family"] == family
        assert r["state"] == e["state"] and TcpState(r["state"]).name == e["state_name"]
        assert _addr(family, r["local_addr"]) == ipaddress.ip_address(e["local_addr"])
        assert _addr(family, r["remote_addr"]) == ipaddress.ip_address(e["remote_addr"])
        assert r["local_port"] == e["local_port"] and r["remote_port"] == e["remote_port"]
        assert r["pid"] == e["pid"] and r["offload_state"] == e["offload_state"]
        assert r["local_scope_id"] == e.get("local_scope_id", 0)
        assert r["remote_scope_id"] == e.get("remote_scope_id", 0)
        assert r["uid"] == r["inode"] == r["cookie"] == 0
        if family == 4:
            assert not r["local_addr"][4:].any() and not r["remote_addr"][4:].any()


@pytest.mark.parametrize("name,kind", [("tcptable2", V4), ("tcp6table2", V6)])
def test_real_fixture_buffers(windows_fixtures, name, kind):
    buf = (windows_fixtures / f"{name}.bin").read_bytes()
    expected = json.loads((windows_fixtures / f"{name}.expected.json").read_text())
    out = np.zeros(len(expected) + 5, ROW_DTYPE)
    n = kind["fn"](buf, out)
    assert n == len(expected)
    _check_expected(out[:n], expected, kind["family"])


def test_fixture_pid_and_states_seen(windows_fixtures):
    buf = (windows_fixtures / "tcptable2.bin").read_bytes()
    out = np.zeros(64, ROW_DTYPE)
    n = tcpsnap.parse_tcptable2(memoryview(buf), out)
    assert 32 in out[:n]["pid"]
    assert {2, 3, 5, 7, 8, 11} <= set(out[:n]["state"].tolist())


@pytest.mark.parametrize("name,fn,fam", [
    ("tcpext4_ownerpid", tcpsnap.parse_tcptable_owner_pid, 4),
    ("tcpext6_ownerpid", tcpsnap.parse_tcp6table_owner_pid, 6),
])
def test_owner_pid_tables_match_table2_rows(windows_fixtures, name, fn, fam):
    buf = (windows_fixtures / f"{name}.bin").read_bytes()
    out = np.zeros(64, ROW_DTYPE)
    n = fn(buf, out)
    assert n == struct.unpack_from("<I", buf)[0] and n > 0
    other = "tcptable2" if fam == 4 else "tcp6table2"
    expected = json.loads((windows_fixtures / f"{other}.expected.json").read_text())
    key = lambda f, la, lp, ra, rp: (ipaddress.ip_address(la), lp, ipaddress.ip_address(ra), rp)
    want = {key(fam, e["local_addr"], e["local_port"], e["remote_addr"], e["remote_port"]): e["state"]
            for e in expected}
    got = {key(fam, format_address(fam, r["local_addr"]), int(r["local_port"]),
               format_address(fam, r["remote_addr"]), int(r["remote_port"])): int(r["state"])
           for r in out[:n]}
    # taken moments apart from the table2 buffers: the listeners and most connections agree
    common = set(want) & set(got)
    assert len(common) >= n // 2
    assert all(want[k] == got[k] for k in common if want[k] == TcpState.LISTEN)
    assert (out[:n]["offload_state"] == 0).all()


def _row4(state, la, lp, ra, rp, pid, offload, port_high=0):
    return struct.pack("<I4sI4sII I", state, ipaddress.IPv4Address(la).packed,
                       (port_high << 16) | int.from_bytes(lp.to_bytes(2, "big"), "little"),
                       ipaddress.IPv4Address(ra).packed,
                       (port_high << 16) | int.from_bytes(rp.to_bytes(2, "big"), "little"),
                       pid, offload)


def _row6(state, la, lscope, lp, ra, rscope, rp, pid, offload):
    nport = lambda p: int.from_bytes(p.to_bytes(2, "big"), "little")
    return struct.pack("<16sII16sIIIII", ipaddress.IPv6Address(la).packed, lscope, nport(lp),
                       ipaddress.IPv6Address(ra).packed, rscope, nport(rp), state, pid, offload)


def _table(rows, header_size=4, stride=None, fill=b"\xee"):
    out = struct.pack("<I", len(rows)) + fill * (header_size - 4)
    for r in rows:
        out += r + fill * ((stride or len(r)) - len(r))
    return out


@pytest.mark.parametrize("header_size,stride", [(4, 28), (8, 28), (8, 32), (16, 40)])
def test_padding_after_count_and_between_rows(header_size, stride):
    rows = [_row4(2, "0.0.0.0", 445, "0.0.0.0", 0, 4, 0, port_high=0xBEEF),
            _row4(5, "10.1.2.3", 50000, "192.0.2.7", 443, 4242, 3, port_high=0xFFFF),
            _row4(11, "127.0.0.1", 1, "127.0.0.1", 65535, 0, 1)]
    buf = _table(rows, header_size, stride)
    out = np.zeros(3, ROW_DTYPE)
    assert tcpsnap.parse_tcptable2(buf, out, header_size=header_size, row_stride=stride) == 3
    assert out["state"].tolist() == [2, 5, 11]
    assert out["local_port"].tolist() == [445, 50000, 1]        # high 16 bits ignored
    assert out["remote_port"].tolist() == [0, 443, 65535]
    assert out["pid"].tolist() == [4, 4242, 0]
    assert out["offload_state"].tolist() == [0, 3, 1]
    assert format_address(4, out[1]["local_addr"]) == "10.1.2.3"
    assert format_address(4, out[1]["remote_addr"]) == "192.0.2.7"


def test_v6_padding_and_scope():
    rows = [_row6(5, "fe80::1", 7, 22, "fe80::2", 7, 40000, 99, 2), _row6(2, "::", 0, 80, "::", 0, 0, 1, 0)]
    buf = _table(rows, 8, 64)
    out = np.zeros(2, ROW_DTYPE)
    assert tcpsnap.parse_tcp6table2(buf, out, header_size=8, row_stride=64) == 2
    r = out[0]
    assert (r["family"], r["state"], r["local_port"], r["remote_port"], r["pid"], r["offload_state"]) == (6, 5, 22, 40000, 99, 2)
    assert (r["local_scope_id"], r["remote_scope_id"]) == (7, 7)
    assert format_address(6, r["local_addr"]) == "fe80::1"


def test_last_row_without_trailing_padding():
    rows = [_row4(5, "1.2.3.4", 1, "5.6.7.8", 2, 3, 0)] * 2
    buf = _table(rows, 4, 32)[:-4]     # the last row's padding is not there
    out = np.zeros(2, ROW_DTYPE)
    assert tcpsnap.parse_tcptable2(buf, out, row_stride=32) == 2


def test_empty_table():
    out = np.zeros(0, ROW_DTYPE)
    assert tcpsnap.parse_tcptable2(struct.pack("<I", 0), out) == 0


# --- bad input: a clear ValueError, nothing written, never a read past the end ---

def _sentinel(n=4):
    out = np.zeros(n, ROW_DTYPE)
    out["pid"] = 777
    return out


@pytest.mark.parametrize("buf", [b"", b"\x01", b"\x01\x00\x00"])
def test_shorter_than_header(buf):
    with pytest.raises(ValueError, match="shorter than its 4-byte header"):
        tcpsnap.parse_tcptable2(buf, _sentinel())


def test_shorter_than_padded_header():
    with pytest.raises(ValueError, match="8-byte header"):
        tcpsnap.parse_tcptable2(struct.pack("<I", 0), _sentinel(), header_size=8)


def test_count_larger_than_buffer():
    buf = _table([_row4(5, "1.2.3.4", 1, "5.6.7.8", 2, 3, 0)] * 2)
    bad = struct.pack("<I", 3) + buf[4:]
    out = _sentinel()
    with pytest.raises(ValueError, match=r"dwNumEntries=3 .* hold only 2 rows"):
        tcpsnap.parse_tcptable2(bad, out)
    assert (out["pid"] == 777).all()


def test_huge_count_no_overflow():
    bad = struct.pack("<I", 0xFFFFFFFF) + b"\0" * 28
    with pytest.raises(ValueError, match="hold only 1 rows"):
        tcpsnap.parse_tcptable2(bad, _sentinel(), row_stride=2**40)
    with pytest.raises(ValueError, match="dwNumEntries=4294967295"):
        tcpsnap.parse_tcp6table2(bad, _sentinel())


@pytest.mark.parametrize("fn,size", [(tcpsnap.parse_tcptable2, 28), (tcpsnap.parse_tcp6table2, 60),
                                     (tcpsnap.parse_tcptable_owner_pid, 24),
                                     (tcpsnap.parse_tcp6table_owner_pid, 56)])
def test_stride_smaller_than_row(fn, size):
    with pytest.raises(ValueError, match=f"row_stride {size - 1} is smaller than .*{size} bytes"):
        fn(struct.pack("<I", 0), _sentinel(), row_stride=size - 1)


def test_header_too_small():
    with pytest.raises(ValueError, match="cannot hold dwNumEntries"):
        tcpsnap.parse_tcptable2(struct.pack("<I", 0), _sentinel(), header_size=2)


def test_out_too_small_says_how_many():
    buf = _table([_row4(5, "1.2.3.4", 1, "5.6.7.8", 2, 3, 0)] * 5)
    out = _sentinel(3)
    with pytest.raises(ValueError, match="out holds 3 rows .* at least 5 rows"):
        tcpsnap.parse_tcptable2(buf, out)
    assert (out["pid"] == 777).all()


@pytest.mark.parametrize("out", [
    np.zeros(4, np.uint8), np.zeros((2, 2), ROW_DTYPE), np.zeros(8, ROW_DTYPE)[::2], [1, 2], None,
])
def test_out_wrong_kind(out):
    with pytest.raises(ValueError, match="out must"):
        tcpsnap.parse_tcptable2(struct.pack("<I", 0), out)


def test_out_readonly():
    out = np.zeros(2, ROW_DTYPE)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        tcpsnap.parse_tcptable2(struct.pack("<I", 0), out)


@pytest.mark.parametrize("state", [0, 13, 0xFFFFFFFF])
def test_bad_state_rejected(state):
    buf = _table([_row4(5, "1.2.3.4", 1, "5.6.7.8", 2, 3, 0), _row4(state, "1.2.3.4", 1, "5.6.7.8", 2, 3, 0)])
    out = _sentinel()
    with pytest.raises(ValueError, match=f"row 1: dwState={state} is not a MIB_TCP_STATE"):
        tcpsnap.parse_tcptable2(buf, out)
    assert (out["pid"] == 777).all()


def test_bad_offload_rejected():
    buf = _table([_row4(5, "1.2.3.4", 1, "5.6.7.8", 2, 3, 1000)])
    with pytest.raises(ValueError, match="dwOffloadState=1000"):
        tcpsnap.parse_tcptable2(buf, _sentinel())


def test_not_a_buffer():
    with pytest.raises(TypeError):
        tcpsnap.parse_tcptable2("not bytes", _sentinel())


@settings(max_examples=600, deadline=None)
@given(data=st.binary(max_size=400), header=st.integers(0, 64), stride_extra=st.integers(-2, 40),
       which=st.sampled_from([V4, V6]), cap=st.integers(0, 16),
       bad=one_bad_argument(["buf", "out", "header_size", "row_stride"]))
def test_random_bytes_never_crash(data, header, stride_extra, which, cap, bad):
    out = np.zeros(cap, ROW_DTYPE)
    args = dict(buf=data, out=out, header_size=header, row_stride=which["size"] + stride_extra)
    if bad is not None:
        args[bad[0]] = bad[1]
    # a bad argument of any kind is a ValueError or a TypeError, never another exception
    n = assert_only_value_or_type_error(
        lambda: which["fn"](args["buf"], args["out"], header_size=args["header_size"],
                            row_stride=args["row_stride"]))
    if n is None:
        return
    out = args["out"]
    assert 0 <= n <= len(out)
    assert set(out[:n]["state"].tolist()) <= set(range(1, 13))
    assert (out[:n]["family"] == which["family"]).all()


# --- every bad argument of every entry point: exactly ValueError or TypeError, naming it ---

_EMPTY = struct.pack("<I", 0)
_PARSERS = [tcpsnap.parse_tcptable2, tcpsnap.parse_tcp6table2, tcpsnap.parse_tcptable_owner_pid,
            tcpsnap.parse_tcp6table_owner_pid]
_CONTIGUOUS_BUFFERS = {"readonly_rows", "wrong_dtype_rows", "2d_rows", "bytearray"}
BAD_ARGS = {}
for _fn in _PARSERS:
    BAD_ARGS |= {
        f"{_fn.__name__}.buf": (lambda v, f=_fn: f(v, _sentinel()), _CONTIGUOUS_BUFFERS),
        f"{_fn.__name__}.out": (lambda v, f=_fn: f(_EMPTY, v), set()),
        f"{_fn.__name__}.header_size": (lambda v, f=_fn: f(_EMPTY, _sentinel(), header_size=v), set()),
        # an empty table has no row a huge stride could reach
        f"{_fn.__name__}.row_stride": (lambda v, f=_fn: f(_EMPTY, _sentinel(), row_stride=v), {"2**63-1"}),
    }
BAD_ARGS |= {
    "check_out_array.out": (check_out_array, set()),
    # diff reads cur (a copy is made where it is not C-contiguous), so those kinds are good
    "Differ.diff.cur": (lambda v: Differ().diff(v, np.zeros(4, np.int32), False),
                        {"noncontig_rows", "readonly_rows"}),
    "Differ.diff.cproc": (lambda v: Differ().diff(np.zeros(4, ROW_DTYPE), v, False), set()),
    "Differ.lookup.cookies": (lambda v: Differ().lookup(v),
                              # any unsigned integers, an array or a scalar, are cookies
                              {"noncontig_memoryview", "noncontig_numpy_bytes", "wrong_dtype_rows", "bytearray",
                               "2**63-1"}),
}


@pytest.mark.parametrize("call,kind,argname", cases(BAD_ARGS))
def test_bad_arguments_raise_value_or_type_error(call, kind, argname):
    exc = assert_rejected(call, KINDS[kind](), argname, aliases={"header_size": "header"})
    if kind not in NOT_INTS and argname in ("header_size", "row_stride"):
        assert type(exc) is ValueError              # an integer out of range
    if kind in {"float", "str", "object", "None"} and argname in ("header_size", "row_stride"):
        assert type(exc) is TypeError               # not an integer at all


def test_noncontiguous_buffer_is_a_value_error_naming_it():
    for fn in _PARSERS:
        with pytest.raises(ValueError, match="^buf must be a C-contiguous buffer"):
            fn(memoryview(bytes(64))[::2], _sentinel())
    with pytest.raises(TypeError, match="^buf must be a bytes-like object, not str$"):
        tcpsnap.parse_tcptable2("x", _sentinel())


@pytest.mark.parametrize("value", [2**63, 2**64])
def test_sizes_beyond_ssize_t_are_value_errors(value):
    with pytest.raises(ValueError, match=r"^header_size must be an integer in 4\.\.\d+, got \d+$"):
        tcpsnap.parse_tcptable2(_EMPTY, _sentinel(), header_size=value)
    with pytest.raises(ValueError, match=r"^row_stride must be an integer in 28\.\.\d+, got \d+$"):
        tcpsnap.parse_tcptable2(_EMPTY, _sentinel(), row_stride=value)


def test_negative_sizes_keep_their_messages():
    with pytest.raises(ValueError, match=f"^header_size {-(2**64)} cannot hold dwNumEntries"):
        tcpsnap.parse_tcptable2(_EMPTY, _sentinel(), header_size=-(2**64))
    with pytest.raises(ValueError, match=f"^row_stride {-(2**64)} is smaller than a MIB_TCPTABLE2 row"):
        tcpsnap.parse_tcptable2(_EMPTY, _sentinel(), row_stride=-(2**64))


def test_huge_integer_message_stays_short():
    with pytest.raises(ValueError, match=r"got an integer of 1329 bits$"):
        tcpsnap.parse_tcptable2(_EMPTY, _sentinel(), row_stride=10**400)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 12), st.integers(0, 2**32 - 1), st.integers(0, 65535),
                               st.integers(0, 2**32 - 1), st.integers(0, 65535), st.integers(0, 2**32 - 1),
                               st.integers(0, 3), st.integers(0, 65535)), max_size=20),
       pad_header=st.sampled_from([0, 4, 12]), pad_row=st.sampled_from([0, 4, 8]))
def test_round_trip_generated_tables(rows, pad_header, pad_row):
    raw = [_row4(s, ipaddress.IPv4Address(la).exploded, lp, ipaddress.IPv4Address(ra).exploded, rp, pid, off, hi)
           for s, la, lp, ra, rp, pid, off, hi in rows]
    buf = _table(raw, 4 + pad_header, 28 + pad_row)
    out = np.zeros(len(rows), ROW_DTYPE)
    assert tcpsnap.parse_tcptable2(buf, out, header_size=4 + pad_header, row_stride=28 + pad_row) == len(rows)
    for r, (s, la, lp, ra, rp, pid, off, _) in zip(out, rows):
        if s == TcpState.LISTEN:                 # a listener's remote fields have no meaning
            ra, rp = "0.0.0.0", 0
        assert (r["state"], r["local_port"], r["remote_port"], r["pid"], r["offload_state"]) == (s, lp, rp, pid, off)
        assert bytes(r["local_addr"][:4]) == ipaddress.IPv4Address(la).packed
        assert bytes(r["remote_addr"][:4]) == ipaddress.IPv4Address(ra).packed


# --- LISTEN rows: the SDK says their remote address, port and scope have no meaning ---

def _junk(n):
    out = _sentinel(n)
    out["remote_addr"], out["remote_port"], out["remote_scope_id"] = 0xFF, 7, 7
    return out


def _fields(r):
    fam = int(r["family"])
    return (fam, int(r["state"]), format_address(fam, r["local_addr"]), int(r["local_port"]),
            int(r["local_scope_id"]), format_address(fam, r["remote_addr"]), int(r["remote_port"]),
            int(r["remote_scope_id"]), int(r["pid"]), int(r["offload_state"]))


def test_listen_rows_remote_fields_are_zeroed_v4():
    rows = [_row4(2, "0.0.0.0", 445, "10.9.8.7", 4242, 4, 1, port_high=0xBEEF),     # junk peer
            _row4(2, "127.0.0.1", 8080, "255.255.255.255", 65535, 5, 0),
            _row4(5, "10.0.0.1", 50000, "10.0.0.2", 443, 77, 2),
            _row4(8, "10.0.0.1", 22, "10.0.0.3", 51000, 9, 0)]                     # not a listener: kept
    for parse, stride in ((tcpsnap.parse_tcptable2, 28), (tcpsnap.parse_tcptable_owner_pid, 24)):
        buf = _table([r[:stride] for r in rows], 8, stride + 4)
        out = _junk(4)
        assert parse(buf, out, header_size=8, row_stride=stride + 4) == 4
        off = (1, 0, 2, 0) if stride == 28 else (0, 0, 0, 0)
        assert [_fields(r) for r in out] == [
            (4, 2, "0.0.0.0", 445, 0, "0.0.0.0", 0, 0, 4, off[0]),
            (4, 2, "127.0.0.1", 8080, 0, "0.0.0.0", 0, 0, 5, off[1]),
            (4, 5, "10.0.0.1", 50000, 0, "10.0.0.2", 443, 0, 77, off[2]),
            (4, 8, "10.0.0.1", 22, 0, "10.0.0.3", 51000, 0, 9, off[3])]
        assert not out["remote_addr"][:2].any() and not out["remote_addr"][:, 4:].any()


def test_listen_rows_remote_fields_are_zeroed_v6():
    rows = [_row6(2, "fe80::1", 7, 22, "fe80::dead:beef", 9, 4242, 99, 1),        # junk peer and scope
            _row6(2, "::", 0, 80, "::1", 3, 1, 4, 0),
            _row6(5, "fe80::1", 7, 22, "fe80::2", 7, 40000, 99, 2)]
    for parse, stride in ((tcpsnap.parse_tcp6table2, 60), (tcpsnap.parse_tcp6table_owner_pid, 56)):
        buf = _table([r[:stride] for r in rows])
        out = _junk(3)
        assert parse(buf, out) == 3
        off = (1, 0, 2) if stride == 60 else (0, 0, 0)
        assert [_fields(r) for r in out] == [
            (6, 2, "fe80::1", 22, 7, "::", 0, 0, 99, off[0]),
            (6, 2, "::", 80, 0, "::", 0, 0, 4, off[1]),
            (6, 5, "fe80::1", 22, 7, "fe80::2", 40000, 7, 99, off[2])]
        assert not out["remote_addr"][:2].any()


def test_a_listener_with_junk_peers_is_one_connection_across_snapshots():
    """Junk in a listener's remote fields, different in each snapshot, must not make it a
    new connection (and a new peer) every snapshot: the rows are equal."""
    snaps = [_table([_row4(2, "0.0.0.0", 445, ra, rp, 4, 0)]) for ra, rp in
             (("1.2.3.4", 1), ("5.6.7.8", 2), ("0.0.0.0", 0), ("9.9.9.9", 65535))]
    parsed = []
    for buf in snaps:
        out = np.zeros(1, ROW_DTYPE)
        tcpsnap.parse_tcptable2(buf, out)
        parsed.append(out[0].tobytes())
    assert len(set(parsed)) == 1
