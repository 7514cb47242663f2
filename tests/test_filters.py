"""The filter language: parsing (every form, precedence, errors), the numpy mask on fixed
rows, the bytecode (run by an interpreter of the kernel's rules against the mask), its
audit, the stored-data expression against read() of a recording, and the commands."""

import random
import struct
import subprocess
import sys

import numpy as np
import pytest

import tcpsnap
from _changes_util import record, row
from tcpsnap import Filter, FilterError, parse_filter
from tcpsnap._kbytecode import MAX_BYTECODE, compile_bytecode, compile_kernel, linux_states
from tcpsnap._schema import TcpState as S

# ------------------------------------------------------------------ fixed rows

ROWS = np.array([
    row(S.LISTEN, "0.0.0.0", 22, "0.0.0.0", 0, 1),                          # 0
    row(S.ESTABLISHED, "10.0.0.1", 22, "192.168.1.5", 51000, 2, pid=100),    # 1
    row(S.ESTABLISHED, "10.0.0.1", 40000, "93.184.216.34", 443, 3, pid=200),  # 2
    row(S.TIME_WAIT, "10.0.0.1", 40001, "93.184.216.34", 443, 4),            # 3
    row(S.LISTEN, "::", 443, "::", 0, 5, pid=300, family=6),                  # 4
    row(S.ESTABLISHED, "::ffff:10.1.2.3", 443, "::ffff:172.16.0.9", 60000, 6, pid=300, family=6),  # 5
    row(S.CLOSE_WAIT, "2001:db8::1", 8080, "2001:db8:1::7", 1023, 7, pid=400, family=6),  # 6
    row(S.SYN_SENT, "127.0.0.1", 50000, "127.0.0.1", 1, 8, pid=200),         # 7
    row(S.FIN_WAIT2, "::1", 5000, "::1", 6000, 9, family=6),                  # 8
    row(S.SYN_RCVD, "10.0.0.1", 22, "192.168.1.9", 51001, 10),               # 9
])
ROWS["uid"] = [0, 0, 1000, 0, 33, 33, 1000, 1000, 0, 0]
NAMES = ["nginx", "python3", "sshd"]
CODES = np.array([-1, 2, 1, -1, 0, 0, -1, 1, -1, -1], np.int32)


def kept(text):
    f = parse_filter(text)
    return list(np.flatnonzero(f.mask(ROWS, process=(CODES, NAMES))))


@pytest.mark.parametrize("text, want", [
    ("sport = :22", [0, 1, 9]),
    ("sport == 22", [0, 1, 9]),
    ("sport eq :ssh", [0, 1, 9]),
    ("dport = :443", [2, 3]),
    ("dport != :443", [0, 1, 4, 5, 6, 7, 8, 9]),
    ("sport >= :40000", [2, 3, 7]),
    ("sport > :40000", [3, 7]),
    ("sport < :443", [0, 1, 9]),
    ("sport <= :443", [0, 1, 4, 5, 9]),
    ("dport geq :60000 or dport lt :2", [0, 4, 5, 7]),
    ("port = :443", [2, 3, 4, 5]),
    ("src 10.0.0.0/8", [1, 2, 3, 5, 9]),                 # v4 rows and the v4-mapped one
    ("src 10.1/16", [5]),
    ("src ::ffff:10.1.2.3", [5]),                        # written as v6, taken as its v4 form
    ("dst 172.16.0.0/12", [5]),
    ("dst 93.184.216.34:443", [2, 3]),
    ("dst [2001:db8::]/32", [6]),
    ("dst [2001:db8:1::7]:1023", [6]),
    ("src ::1", [8]),
    ("src [::]/0", [4, 5, 6, 8]),                        # every v6 row, no v4 one
    ("src 0.0.0.0/0", [0, 1, 2, 3, 5, 7, 9]),            # every v4 row and the v4-mapped one
    ("src *:22", [0, 1, 9]),
    ("dst != 93.184.216.34", [0, 1, 4, 5, 6, 7, 8, 9]),
    ("state established", [1, 2, 5]),
    ("state listening", [0, 4]),
    ("state syn-recv,syn-sent", [7, 9]),
    ("state connected", [1, 2, 3, 5, 6, 7, 8, 9]),
    ("state synchronized", [1, 2, 3, 5, 6, 8, 9]),
    ("state bucket", [3, 9]),
    ("state big", [0, 1, 2, 4, 5, 6, 7, 8]),
    ("state all", list(range(10))),
    ("exclude time-wait", [0, 1, 2, 4, 5, 6, 7, 8, 9]),
    ("family 6", [4, 5, 6, 8]),
    ("family inet", [0, 1, 2, 3, 7, 9]),
    ("uid = 1000", [2, 6, 7]),
    ("uid >= 33 and uid < 1000", [4, 5]),
    ("pid = 300", [4, 5]),
    ("process sshd", [1]),
    ("process nginx,python3", [2, 4, 5, 7]),
    ("process != nginx", [0, 1, 2, 3, 6, 7, 8, 9]),
    # precedence: not > and > or; no operator is 'and'
    ("sport = :22 or dport = :443 and state time-wait", [0, 1, 3, 9]),
    ("(sport = :22 or dport = :443) and state time-wait", [3]),
    ("not state listening and sport = :22", [1, 9]),
    ("not (state listening and sport = :22)", [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("! sport = :22 & family 4", [2, 3, 7]),
    ("sport = :22 state established", [1]),
    ("sport = :22 || sport = :443 && family 6", [0, 1, 4, 5, 9]),
    ("( dport = :443 or sport = :443 ) and not src 10.0.0.0/8", [4]),
    ("all", list(range(10))),
])
def test_mask_keeps_exactly(text, want):
    assert kept(text) == want


def test_canonical_text_parses_back_to_the_same_filter():
    for text in ("sport = :22 or dport = :443 and state time-wait", "not (state bucket and dst [::1]:80)",
                 "src 10.1/16 dport > 1000 dport < 2000 uid >= 5 pid <= 9 process a,b",
                 "dst ::ffff:10.0.0.0/104", "src *:443", "exclude listening", "family 6"):
        f = parse_filter(text)
        assert parse_filter(str(f)) == f
        assert list(f.mask(ROWS, process=(CODES, NAMES))) == list(
            parse_filter(str(f)).mask(ROWS, process=(CODES, NAMES)))


def test_options_combine_with_and_and_lists_with_or():
    f = Filter.from_options(port="22,443", state="established", family=4)
    assert list(np.flatnonzero(f.mask(ROWS))) == [1, 2]
    f = Filter.from_options("not dst 93.184.216.34", sport="8000-9000", dport=[1023])
    assert list(np.flatnonzero(f.mask(ROWS))) == [6]
    f = Filter.from_options(src="10.0.0.0/8,[::1]", uid="0")
    assert list(np.flatnonzero(f.mask(ROWS))) == [1, 3, 8, 9]
    assert not Filter.from_options()


@pytest.mark.parametrize("text, says", [
    ("", "empty filter"),
    ("sport =", "ends where a port was expected"),
    ("sport = :70000", "ports are 0..65535"),
    ("sport = :nosuchservice", "not a number or a known TCP service"),
    ("src 10.0.0.0/33", "bad address '10.0.0.0/33'"),
    ("dst [::1", "no closing ']'"),
    ("state sleeping", "unknown TCP state 'sleeping'"),
    ("(sport = :22", "ends where ')' was expected"),
    ("sport = :22)", "unexpected ')'"),
    ("sport = :22 or", "ends where a predicate was expected"),
    ("color = red", "unknown filter keyword 'color'"),
    ("src > 10.0.0.1", "operator '>' cannot follow"),
    ("uid = -1", "bad uid '-1'"),
    ("family 5", "bad family '5'"),
    ("process ,", "empty process name"),
])
def test_malformed_filters_say_what_in_one_line(text, says):
    with pytest.raises(FilterError) as e:
        parse_filter(text)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("opts, says", [
    ({"port": ""}, "empty"), ({"sport": "22,"}, "empty"), ({"state": ""}, "empty"),
    ({"state": "established,"}, "empty"), ({"src": "10.0.0.0/33"}, "bad address"),
    ({"dst": ""}, "empty"), ({"pid": "x"}, "bad --pid 'x'"), ({"uid": ""}, "empty"),
    ({"process": ""}, "empty"), ({"port": "9-1"}, "low to high"), ({"family": 5}, "bad family"),
])
def test_empty_or_malformed_option_values_are_errors(opts, says):
    with pytest.raises(FilterError, match=says):
        Filter.from_options(**opts)


def test_process_filter_needs_the_names():
    with pytest.raises(ValueError, match="process names"):
        parse_filter("process sshd").mask(ROWS)
    assert parse_filter("process sshd or pid = 1").needs_pids
    assert parse_filter("pid = 1").needs_pids and not parse_filter("uid = 1").needs_pids


# ------------------------------------------------------------------ the kernel's side

def run_bytecode(bc: bytes, r) -> bool:
    """net/ipv4/inet_diag.c inet_diag_bc_run, for one ROW_DTYPE row."""
    fam = int(r["family"])
    sport, dport = int(r["local_port"]), int(r["remote_port"])
    length, off = len(bc), 0
    while length > 0:
        code, yes_len, no_len = struct.unpack_from("=BBH", bc, off)
        yes = True
        if code == 1:                                   # JMP
            yes = False
        elif code in (2, 3, 4, 5, 11, 12):              # S_GE S_LE D_GE D_LE S_EQ D_EQ
            port = struct.unpack_from("=BBH", bc, off + 4)[2]
            v = sport if code in (2, 3, 11) else dport
            yes = {2: v >= port, 3: v <= port, 4: v >= port, 5: v <= port, 11: v == port, 12: v == port}[code]
        elif code in (7, 8):                            # S_COND D_COND
            cfam, plen, cport = struct.unpack_from("=BBxxi", bc, off + 4)
            addr = bytes(r["local_addr" if code == 7 else "remote_addr"])
            caddr = bc[off + 12: off + 12 + (4 if cfam == 2 else 16 if cfam == 10 else 0)]
            v = sport if code == 7 else dport
            kfam = {4: 2, 6: 10}[fam]

            def match(a, c, bits):
                return int.from_bytes(a, "big") >> (len(a) * 8 - bits) == int.from_bytes(c, "big") >> (len(c) * 8 - bits) \
                    if bits else True
            if cport != -1 and cport != v:
                yes = False
            elif cfam != 0 and cfam != kfam:
                yes = (kfam == 10 and cfam == 2 and addr[:12] == b"\0" * 10 + b"\xff\xff"
                       and match(addr[12:], caddr, plen))
            elif plen:
                yes = match(addr[:len(caddr)], caddr, plen)
        else:
            raise AssertionError(f"op {code}")
        step = yes_len if yes else no_len
        length -= step
        off += step
    return length == 0


PREDICATES = ["sport = :22", "sport >= :40000", "dport < :1024", "dport = :443", "src 10.0.0.0/8",
              "dst 93.184.216.34", "src [::]/0", "dst [2001:db8::]/32", "family 6", "family 4",
              "src *:443", "dst 172.16.0.0/12:60000", "sport > :5000", "dport != :0",
              "state established", "uid = 1000", "pid = 300"]


def random_expr(rng, depth=0):
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(PREDICATES)
    op = rng.choice(["and", "or", "not"])
    if op == "not":
        return f"not ({random_expr(rng, depth + 1)})"
    return f"({random_expr(rng, depth + 1)}) {op} ({random_expr(rng, depth + 1)})"


def test_bytecode_keeps_a_superset_exactly_the_mask_where_it_can():
    """500 random expressions: the program, run by the kernel's rules, keeps every row the
    mask keeps, and exactly those when the filter has no state, uid or pid test."""
    rng = random.Random(13)
    from tcpsnap._kbytecode import _maybe
    for _ in range(500):
        text = random_expr(rng)
        f = parse_filter(text)
        mask = f.mask(ROWS)
        states, bc = f.kernel()
        from tcpsnap._nlparse import audit_bytecode
        if bc is not None:
            audit_bytecode(bc)
        by_kernel = np.array([(bc is None or run_bytecode(bc, r)) and bool(states & linux_states([r["state"]]))
                              for r in ROWS])
        assert not (mask & ~by_kernel).any(), text
        if not any(w in text for w in ("state", "uid", "pid")):
            assert (mask == by_kernel).all(), text
        assert all(_maybe(f.node, int(s)) is not False for s in ROWS["state"][mask])


def test_states_reach_idiag_states_with_both_syn_recv_bits():
    assert compile_kernel(parse_filter("state established").node) == (1 << 1, None)
    assert compile_kernel(parse_filter("state syn-recv").node)[0] == (1 << 3) | (1 << 12)
    # the state tests become "maybe" in the program: a superset, narrowed by the mask
    states, bc = compile_kernel(parse_filter("state listening and sport = :22 or state time-wait").node)
    assert states == (1 << 10) | (1 << 6) and bc is None
    states, bc = compile_kernel(parse_filter("state listening and sport = :22 or state time-wait "
                                             "and dport = :80").node)
    assert states == (1 << 10) | (1 << 6) and bc == compile_bytecode(parse_filter("sport = :22 or dport = :80").node)
    # a state that cannot match: nothing is asked for
    states, bc = compile_kernel(parse_filter("state listening and not state listening").node)
    assert bc is not None and not run_bytecode(bc, ROWS[0])


def test_audit_rejects_malformed_programs_before_the_kernel():
    from tcpsnap._netlink import NetlinkDumper
    from tcpsnap._nlparse import audit_bytecode

    good = compile_bytecode(parse_filter("sport = :22 or dst 10.0.0.0/8").node)
    audit_bytecode(good)
    bad = {
        "shorter than one instruction": b"\x01\x04",
        "unknown or privileged instruction": struct.pack("=BBH", 10, 4, 8),      # MARK_COND
        "bad 'yes' jump": struct.pack("=BBH", 0, 6, 0),
        "bad 'no' jump": struct.pack("=BBH", 1, 4, 12),                         # past end + 4
        "port comparison cut short": struct.pack("=BBH", 11, 4, 8),
        "prefix longer than the address": struct.pack("=BBH", 7, 16, 20) + struct.pack("=BBxxi", 2, 33, -1)
        + bytes(4),
        "address condition of an unknown family": struct.pack("=BBH", 7, 12, 16) + struct.pack("=BBxxi", 7, 0, -1),
        "'no' jump into an instruction": struct.pack("=BBH", 1, 4, 8) + struct.pack("=BBH", 11, 8, 12)
        + struct.pack("=BBH", 0, 0, 22),
        "not a whole number of instructions": struct.pack("=BBH", 1, 4, 8) + b"\0\0",
        "longer than a netlink attribute holds": struct.pack("=BBH", 0, 4, 0) * (MAX_BYTECODE // 4 + 1),
    }
    d = NetlinkDumper()
    try:
        d.set_filter(1 << 10, None)
        for why, bc in bad.items():
            with pytest.raises(ValueError, match=why):
                audit_bytecode(bc)
            with pytest.raises(ValueError, match=why):
                d.set_filter(0x1FFE, bc)
            assert d.states == 1 << 10 and d.bytecode is None     # the filter in place stays
        d.dump()                                                   # and the dumper still works
        with pytest.raises(ValueError, match="states"):
            d.set_filter(0)
        with pytest.raises(ValueError, match="states"):
            d.set_filter(1 << 13)
    finally:
        d.close()


def test_a_program_too_long_to_send_leaves_the_filtering_to_the_mask():
    ports = ",".join(str(p) for p in range(1, 40000, 2))       # 20,000 single ports
    f = Filter.from_options(port=ports)
    assert f.kernel()[1] is None
    assert list(np.flatnonzero(f.mask(ROWS))) == [2, 3, 4, 5, 6, 7]     # an odd port below 40000


# ------------------------------------------------------------------ stored rows

def test_where_on_a_recording_keeps_what_the_mask_keeps(tmp_path):
    names = {100: "sshd", 200: "python3", 300: "nginx", 400: "java"}
    tables = [ROWS, ROWS[[0, 1, 4, 5, 6]], ROWS[[2, 3, 7, 8, 9]]]
    record(tmp_path / "rec", tables, names=names)
    code_of = {n: i for i, n in enumerate(sorted(set(names.values())))}
    for text in ["dport = :443 or sport = :443", "src 10.0.0.0/8", "not dst 93.184.216.34",
                 "state connected and family 6", "process nginx,sshd", "dst [2001:db8::]/32",
                 "src ::ffff:10.1.2.3", "uid >= 1000", "exclude listening and pid != 300",
                 "dst 172.16.0.9:60000"]:
        f = parse_filter(text)
        want = []
        for seq, t in enumerate(tables):
            codes = np.array([code_of.get(names.get(int(p), ""), -1) for p in t["pid"]], np.int32)
            want += [(seq, int(c)) for c in t["cookie"][f.mask(t, process=(codes, sorted(code_of)))]]
        for where in (text, f, f.expression()):
            df = tcpsnap.read(tmp_path / "rec", where=where)
            got = sorted(zip(df["seq"].astype(int), df["cookie"].astype(int)))
            assert got == sorted(want), text


def test_recording_says_its_filter(tmp_path):
    record(tmp_path / "rec", [ROWS, ROWS], filter="dport = :443 or state listening", ports="22,443")
    import glob

    import pyarrow.parquet as pq

    meta = pq.read_metadata(glob.glob(str(tmp_path / "rec/date=*/*.parquet"))[0]).metadata
    assert meta[b"tcpsnap.filters"] == b'{"ports": [22, 443], "where": "dport = :443 or state listen"}'
    df = tcpsnap.read(tmp_path / "rec")
    # --port 22,443 (either side) and (dport 443 or listening)
    assert sorted(set(df["cookie"].astype(int))) == [1, 3, 4, 5]
    with pytest.raises(tcpsnap.RecorderError, match="--filter 'dport = :443 or state listen'"):
        record(tmp_path / "rec", [ROWS], ports="22,443")


# ------------------------------------------------------------------ the commands

def run(*args):
    return subprocess.run([sys.executable, "-m", "tcpsnap", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, says", [
    (["show", "--port", ""], "argument --port: empty port"),
    (["show", "--src", "10.0.0.0/33"], "argument --src: bad address '10.0.0.0/33'"),
    (["show", "--state", "sleeping"], "argument --state: unknown TCP state 'sleeping'"),
    (["show", "--dport", "70000"], "argument --dport: bad port '70000'"),
    (["show", "--filter", "sport = :22 or"], "argument --filter: filter 'sport = :22 or' ends"),
    (["show", "sport", "=", ":22", ")"], "unexpected ')'"),
    (["record", "rec", "--pid", "x"], "argument --pid: bad --pid 'x'"),
    (["info", "rec", "--uid", ""], "argument --uid: empty value"),
    (["export", "rec", "--to", "csv", "--dst", "[::1"], "argument --dst: bad address"),
    (["plot", "rec", "-o", "x.png", "--process", ""], "argument --process: empty"),
])
def test_bad_filter_options_are_usage_errors_in_one_line(args, says):
    p = run(*args)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("usage:") and ln.startswith("tcpsnap")]
    assert len(lines) == 1 and says in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_changes_mode_asks_the_kernel_only_for_what_a_connection_keeps():
    """A connection can leave a state, pid, uid or process filter while it lives, never its
    ports or addresses: in changes mode only those reach the kernel (it is followed until
    it closes); full mode sends the whole filter."""
    from tcpsnap.record.config import RecorderConfig

    opts = dict(states="established", ports="443", filter="uid = 0 or dst 10.0.0.0/8")
    changes = RecorderConfig.make("x", mode="changes", **opts)
    assert str(changes.capture_filter()) == "sport = :443 or dport = :443"
    assert changes.capture_filter().kernel()[0] == 0x1FFE
    full = RecorderConfig.make("x", **opts)
    assert full.capture_filter() == full.row_filter()
    assert str(full.row_filter()) == ("(sport = :443 or dport = :443) and state established and "
                                      "(uid = 0 or dst 10.0.0.0/8)")
    assert full.capture_filter().kernel()[0] == 1 << 1
