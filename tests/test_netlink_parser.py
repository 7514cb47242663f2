"""The netlink message parser on recorded and synthetic bytes: multi-part messages,
NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP_INTR, stale sequence numbers, truncation."""

import socket
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _badargs import KINDS, NOT_INTS, assert_only_value_or_type_error, assert_rejected, cases, one_bad_argument
from tcpsnap import ROW_DTYPE, TcpState
from tcpsnap.frame import format_address

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="netlink parser is built on Linux")
if sys.platform.startswith("linux"):
    from tcpsnap._destroy import DestroyFeed
    from tcpsnap._netlink import NetlinkDumper
    from tcpsnap._nlparse import CookieTable, dedupe_rows, parse_messages
    from tcpsnap._procfs import PidResolver

SOCK_DIAG_BY_FAMILY, NLMSG_DONE, NLMSG_ERROR = 20, 3, 2
NLM_F_MULTI, NLM_F_DUMP_INTR = 0x2, 0x10
LINUX = dict(ESTABLISHED=1, SYN_SENT=2, SYN_RECV=3, FIN_WAIT1=4, FIN_WAIT2=5, TIME_WAIT=6, CLOSE=7,
             CLOSE_WAIT=8, LAST_ACK=9, LISTEN=10, CLOSING=11, NEW_SYN_RECV=12)


def nlmsg(mtype, payload, seq=1, flags=NLM_F_MULTI):
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 4242) + payload + b"\0" * (-len(payload) % 4)


def diag(family, state, src, sport, dst, dport, *, ifindex=0, cookie=(0x11, 0x22), rq=0, wq=0,
         uid=1000, inode=5555, attrs=b""):
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    pad = lambda a: socket.inet_pton(af, a).ljust(16, b"\0")
    sockid = struct.pack(">HH", sport, dport) + pad(src) + pad(dst) + struct.pack("=III", ifindex, *cookie)
    return struct.pack("=BBBB", af, state, 0, 0) + sockid + struct.pack("=IIIII", 0, rq, wq, uid, inode) + attrs


def test_every_linux_state_maps_to_mib():
    want = dict(ESTABLISHED=5, SYN_SENT=3, SYN_RECV=4, FIN_WAIT1=6, FIN_WAIT2=7, TIME_WAIT=11,
                CLOSE=1, CLOSE_WAIT=8, LAST_ACK=10, LISTEN=2, CLOSING=9, NEW_SYN_RECV=4)
    data = b"".join(nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, LINUX[name], "10.0.0.1", i + 1, "10.0.0.2", 80))
                    for i, name in enumerate(want))
    out = np.zeros(len(want), ROW_DTYPE)
    n, status, err, intr = parse_messages(data, out, 1)
    assert (n, status, err, intr) == (len(want), "more", 0, False)
    assert out["state"].tolist() == list(want.values())


def test_fields_v4_and_v6():
    attrs = struct.pack("=HHB3x", 5, 8, 0)   # an INET_DIAG_SHUTDOWN attribute, ignored
    data = (nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 1, "127.0.0.1", 40000, "192.0.2.9", 443, rq=7, wq=9,
                                            uid=0, inode=99, cookie=(1, 2), attrs=attrs))
            + nlmsg(SOCK_DIAG_BY_FAMILY, diag(6, 10, "fe80::1", 22, "::", 0, ifindex=3))
            + nlmsg(NLMSG_DONE, struct.pack("=i", 0)))
    out = np.zeros(4, ROW_DTYPE)
    out["pid"] = 123                       # stale values must be overwritten
    n, status, err, intr = parse_messages(data, out, 1)
    assert (n, status) == (2, "done")
    a, b = out[0], out[1]
    assert (a["family"], a["state"], a["local_port"], a["remote_port"]) == (4, TcpState.ESTABLISHED, 40000, 443)
    assert format_address(4, a["local_addr"]) == "127.0.0.1" and format_address(4, a["remote_addr"]) == "192.0.2.9"
    assert not a["local_addr"][4:].any() and not a["remote_addr"][4:].any()
    assert (a["rx_queue"], a["tx_queue"], a["uid"], a["inode"], a["cookie"], a["pid"]) == (7, 9, 0, 99, (2 << 32) | 1, 0)
    assert (b["family"], b["state"], b["local_scope_id"], b["remote_scope_id"]) == (6, TcpState.LISTEN, 3, 3)
    assert format_address(6, b["local_addr"]) == "fe80::1"


def test_stale_sequence_numbers_are_skipped():
    data = (nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 1, "1.1.1.1", 1, "2.2.2.2", 2), seq=6)
            + nlmsg(NLMSG_DONE, struct.pack("=i", 0), seq=6)
            + nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 10, "3.3.3.3", 3, "0.0.0.0", 0), seq=7)
            + nlmsg(NLMSG_DONE, struct.pack("=i", 0), seq=7))
    out = np.zeros(4, ROW_DTYPE)
    n, status, _, _ = parse_messages(data, out, 7)
    assert (n, status) == (1, "done") and out[0]["local_port"] == 3


def test_dump_intr_is_reported():
    data = nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 1, "1.1.1.1", 1, "2.2.2.2", 2), flags=NLM_F_MULTI | NLM_F_DUMP_INTR)
    data += nlmsg(NLMSG_DONE, struct.pack("=i", 0), flags=NLM_F_MULTI | NLM_F_DUMP_INTR)
    n, status, _, intr = parse_messages(data, np.zeros(2, ROW_DTYPE), 1)
    assert (n, status, intr) == (1, "done", True)


def test_nlmsg_error_and_ack():
    ack = nlmsg(NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16)
    err = nlmsg(NLMSG_ERROR, struct.pack("=i", -22) + b"\0" * 16)
    n, status, errno_, _ = parse_messages(ack + err, np.zeros(1, ROW_DTYPE), 1)
    assert (n, status, errno_) == (0, "error", 22)


def test_full_output_stops_on_the_message():
    data = b"".join(nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 1, "1.1.1.1", p, "2.2.2.2", 2)) for p in (1, 2, 3))
    n, status, _, _ = parse_messages(data, np.zeros(2, ROW_DTYPE), 1)
    assert (n, status) == (2, "full")


def test_unknown_state_and_family_are_skipped_not_guessed():
    data = (nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 13, "1.1.1.1", 1, "2.2.2.2", 2))      # TCP_BOUND_INACTIVE
            + nlmsg(SOCK_DIAG_BY_FAMILY, b"\x01" + diag(4, 1, "1.1.1.1", 1, "2.2.2.2", 2)[1:])  # AF_UNIX?
            + nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 1, "1.1.1.1", 9, "2.2.2.2", 2)))
    out = np.zeros(3, ROW_DTYPE)
    n, status, _, _ = parse_messages(data, out, 1)
    assert n == 1 and out[0]["local_port"] == 9


@pytest.mark.parametrize("cut", [1, 15, 16, 40, 87])
def test_truncated_message_is_malformed(cut):
    msg = nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 1, "1.1.1.1", 1, "2.2.2.2", 2))
    n, status, _, _ = parse_messages(msg[:cut], np.zeros(2, ROW_DTYPE), 1)
    assert (n, status) == (0, "malformed")


def test_message_shorter_than_inet_diag_msg_is_malformed():
    n, status, _, _ = parse_messages(nlmsg(SOCK_DIAG_BY_FAMILY, b"\0" * 40), np.zeros(2, ROW_DTYPE), 1)
    assert (n, status) == (0, "malformed")


def test_length_field_lies():
    msg = bytearray(nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, 1, "1.1.1.1", 1, "2.2.2.2", 2)))
    struct.pack_into("=I", msg, 0, 10_000)
    assert parse_messages(bytes(msg), np.zeros(2, ROW_DTYPE), 1)[1] == "malformed"
    struct.pack_into("=I", msg, 0, 3)
    assert parse_messages(bytes(msg), np.zeros(2, ROW_DTYPE), 1)[1] == "malformed"


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 8), st.integers(0, 2**32 - 1),
       one_bad_argument(["data", "out", "seq"]))
def test_random_bytes_never_crash(data, cap, seq, bad):
    args = dict(data=data, out=np.zeros(cap, ROW_DTYPE), seq=seq)
    if bad is not None:
        args[bad[0]] = bad[1]
    # a bad argument of any kind is a ValueError or a TypeError, never another exception
    got = assert_only_value_or_type_error(lambda: parse_messages(args["data"], args["out"], args["seq"]))
    if got is None:
        return
    n, status, _, _ = got
    assert 0 <= n <= len(args["out"]) and status in {"more", "done", "full", "error", "malformed"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(LINUX.values())), st.integers(0, 65535), st.integers(0, 65535),
                          st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=30),
       st.binary(max_size=12))
def test_generated_dumps_parse_exactly(rows, junk_attrs):
    data = b"".join(nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, s, "10.0.0.1", lp, "10.0.0.2", rp, inode=ino,
                                                    cookie=(c & 0xFFFF, c >> 16), attrs=junk_attrs))
                    for s, lp, rp, ino, c in rows) + nlmsg(NLMSG_DONE, b"\0\0\0\0")
    out = np.zeros(len(rows), ROW_DTYPE)
    n, status, _, _ = parse_messages(data, out, 1)
    assert (n, status) == (len(rows), "done")
    assert out["local_port"].tolist() == [r[1] for r in rows]
    assert out["inode"].tolist() == [r[3] for r in rows]


def test_compat_reply_type_is_parsed_like_sock_diag():
    TCPDIAG_GETSOCK = 18
    data = (nlmsg(TCPDIAG_GETSOCK, diag(4, 1, "1.1.1.1", 1, "2.2.2.2", 2))
            + nlmsg(TCPDIAG_GETSOCK, diag(6, 10, "::1", 3, "::", 0)) + nlmsg(NLMSG_DONE, b"\0\0\0\0"))
    out = np.zeros(2, ROW_DTYPE)
    assert parse_messages(data, out, 1)[:2] == (2, "done")
    assert out["family"].tolist() == [4, 6]


def test_dedupe_keeps_first_of_each_cookie_in_order():
    out = np.zeros(8, ROW_DTYPE)
    out["cookie"] = [5, 7, 5, 9, 7, 0, 0, 11]
    out["local_port"] = [1, 2, 3, 4, 5, 6, 7, 8]
    n = dedupe_rows(out, 8)
    assert n == 6
    assert out["cookie"][:n].tolist() == [5, 7, 9, 0, 0, 11]
    assert out["local_port"][:n].tolist() == [1, 2, 4, 6, 7, 8]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=300))
def test_dedupe_matches_a_python_model(cookies):
    out = np.zeros(len(cookies), ROW_DTYPE)
    out["cookie"] = cookies
    out["inode"] = range(len(cookies))
    n = dedupe_rows(out, len(cookies))
    seen, want = set(), []
    for i, c in enumerate(cookies):
        if c == 0 or c not in seen:
            want.append(i)
            seen.add(c)
    assert out["inode"][:n].tolist() == want


# --- the dumper's dedupe across dumps (CookieTable: what NetlinkDumper.dump() runs) ---

def _model(dumps):
    """The rule, written plainly: in each dump the first row of each cookie stays (cookie 0
    always); a kept row without a cgroup takes the one its cookie had in the table of the
    dump before: that dump's kept rows, plus the sockets of the dump before it that it
    lacked (carried once, those with a cgroup)."""
    prev, outs = {}, []
    for rows in dumps:
        seen, kept = set(), []
        for c, g, tag in rows:
            if c and c in seen:
                continue
            seen.add(c)
            kept.append([c, g, tag])
        table = {}
        for r in kept:
            if r[0] == 0:
                continue
            if r[1] == 0 and prev.get(r[0], (0, False))[0]:
                r[1] = prev[r[0]][0]
            table[r[0]] = (r[1], False)
        for c, (g, carried) in prev.items():
            if c not in table and g and not carried:
                table[c] = (g, True)
        prev = table
        outs.append([tuple(r) for r in kept])
    return outs


def _through_table(dumps, info=False):
    t, outs = CookieTable(), []
    for rows in dumps:
        a = np.zeros(len(rows) + 3, ROW_DTYPE)        # room after the rows: left alone
        a["cookie"][:len(rows)] = [r[0] for r in rows]
        a["cgroup_id"][:len(rows)] = [r[1] for r in rows]
        a["inode"][:len(rows)] = [r[2] for r in rows]
        a["inode"][len(rows):] = 99
        inf = None
        if info:
            from tcpsnap._schema import TCP_INFO_DTYPE
            inf = np.zeros(len(rows), TCP_INFO_DTYPE)
            inf["bytes_sent"] = a["inode"][:len(rows)]
        n = t.dedupe(a, len(rows), inf)
        assert (a["inode"][len(rows):] == 99).all()
        if info:
            assert inf["bytes_sent"][:n].tolist() == a["inode"][:n].tolist()   # moved with their rows
        outs.append(list(zip(a["cookie"][:n].tolist(), a["cgroup_id"][:n].tolist(), a["inode"][:n].tolist(),
                             strict=True)))
    return outs


def _edited_dumps(rnd, count=10):
    """Dumps as a churned table gives them: mostly the dump before in the same order, with
    sockets gone, new ones (some inserted in runs longer than the look-ahead), moved ones,
    TIME_WAIT successors (same cookie, no cgroup), repeats next to or far from the first
    row, sometimes a whole reshuffle."""
    table = [[c, rnd.choice([0, 0, 1, 2, 3])] for c in rnd.sample(range(1, 60), rnd.randint(0, 25))]
    nxt, dumps = 100, []
    for _ in range(count):
        for _ in range(rnd.randint(0, 4)):
            op = rnd.random()
            if op < 0.25 and table:
                del table[rnd.randrange(len(table))]
            elif op < 0.5:
                k = rnd.choice([1, 1, 2, 12])
                i = rnd.randint(0, len(table))
                table[i:i] = [[nxt + j, rnd.choice([0, 5, 6])] for j in range(k)]
                nxt += k
            elif op < 0.6 and table:
                table.insert(rnd.randint(0, len(table)), table.pop(rnd.randrange(len(table))))
            elif op < 0.75 and table:
                table[rnd.randrange(len(table))][1] = 0        # now a timewait socket
            elif op < 0.8:
                rnd.shuffle(table)
            elif op < 0.85 and len(table) > 12:
                i = rnd.randrange(len(table) - 12)
                del table[i:i + rnd.randint(9, 12)]            # gone: a run past the look-ahead
        rows = [(c, g) for c, g in table]
        for _ in range(rnd.choice([0, 0, 0, 1, 2])):          # the kernel repeats one
            if rows:
                c, g = rows[rnd.randrange(len(rows))]
                rows.insert(rnd.randint(0, len(rows)), (c, rnd.choice([g, 0])))
        if rnd.random() < 0.2:
            rows.insert(rnd.randint(0, len(rows)), (0, rnd.choice([0, 4])))
        if rnd.random() < 0.1:
            rows.append((rnd.randint(1, 30), rnd.choice([0, 7])))   # an old cookie back, maybe carried
        dumps.append([(c, g, i + 1) for i, (c, g) in enumerate(rows)])
    return dumps


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False))
def test_cookie_table_matches_the_model_over_churned_dumps(rnd):
    dumps = _edited_dumps(rnd)
    assert _through_table(dumps, info=rnd.random() < 0.3) == _model(dumps)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 30), st.sampled_from([0, 0, 1, 2])), max_size=40),
                min_size=1, max_size=6))
def test_cookie_table_matches_the_model_over_arbitrary_dumps(dumps):
    dumps = [[(c, g, i + 1) for i, (c, g) in enumerate(d)] for d in dumps]
    assert _through_table(dumps) == _model(dumps)


def test_a_repeated_socket_in_a_crafted_dump_is_dropped_after_a_dump_without_it():
    # The second dump repeats socket 0x22 (one row in order, as the first dump had it, and
    # one the kernel gave again after a resumed bucket shifted): the first row stays, and
    # the timewait row of 0x33 (no cgroup attribute) takes 0x33's cgroup from dump one.
    def dump(*socks, seq):
        body = b"".join(nlmsg(SOCK_DIAG_BY_FAMILY, diag(4, st_, "10.0.0.1", port, "10.0.0.2", 80,
                                                        cookie=(ck, 0), inode=ino, attrs=cg), seq=seq)
                        for st_, port, ck, ino, cg in socks)
        return body + nlmsg(NLMSG_DONE, b"\0\0\0\0", seq=seq)

    cgroup = lambda v: struct.pack("=HHQ", 12, 21, v)          # INET_DIAG_CGROUP_ID
    est, tw = LINUX["ESTABLISHED"], LINUX["TIME_WAIT"]
    t, out = CookieTable(), np.zeros(8, ROW_DTYPE)
    one = dump((est, 1, 0x11, 1, cgroup(7)), (est, 2, 0x22, 2, cgroup(7)), (est, 3, 0x33, 3, cgroup(8)), seq=1)
    assert parse_messages(one, out, 1)[:2] == (3, "done")
    assert t.dedupe(out, 3) == 3
    two = dump((est, 1, 0x11, 1, cgroup(7)), (est, 2, 0x22, 2, cgroup(7)), (tw, 3, 0x33, 0, b""),
               (est, 2, 0x22, 2, cgroup(7)), (est, 4, 0x44, 4, cgroup(9)), seq=2)
    assert parse_messages(two, out, 2)[:2] == (5, "done")
    assert t.dedupe(out, 5) == 4
    assert out["cookie"][:4].tolist() == [0x11, 0x22, 0x33, 0x44]
    assert out["cgroup_id"][:4].tolist() == [7, 7, 8, 9]
    assert out["state"][2] == TcpState.TIME_WAIT and out["inode"][2] == 0
    # the repeat before the row in order: still the first row that stays
    three = dump((est, 2, 0x22, 20, cgroup(7)), (est, 1, 0x11, 1, cgroup(7)), (est, 2, 0x22, 2, cgroup(7)),
                 (tw, 3, 0x33, 0, b""), (est, 4, 0x44, 4, cgroup(9)), seq=3)
    assert parse_messages(three, out, 3)[:2] == (5, "done")
    assert t.dedupe(out, 5) == 4
    assert out["inode"][:4].tolist() == [20, 1, 0, 4]
    assert out["cgroup_id"][:4].tolist() == [7, 7, 8, 9]


# --- every bad argument of every Linux entry point: exactly ValueError or TypeError, naming it ---

def _rows(n=4):
    return np.zeros(n, ROW_DTYPE)


def _set(name):
    def call(v):
        setattr(PidResolver(threads=1), name, v)
    return call


_CONTIGUOUS_BUFFERS = {"readonly_rows", "wrong_dtype_rows", "2d_rows", "bytearray"}
_NUMBERS = {"2**64", "2**63-1", "-1", "-2**64", "float"}   # good for a float argument
_INTS = {"seq", "n", "capacity", "recv_size", "rcvbuf", "threads", "max_pidfds", "inode", "block"}
_DURATIONS = ["walk_interval", "walk_share", "retry_interval", "verify_interval", "name_ttl"]
BAD_ARGS = {
    "parse_messages.data": (lambda v: parse_messages(v, _rows(), 1), _CONTIGUOUS_BUFFERS),
    "parse_messages.out": (lambda v: parse_messages(b"", v, 1), set()),
    "parse_messages.seq": (lambda v: parse_messages(b"", _rows(), v), set()),
    "dedupe_rows.out": (lambda v: dedupe_rows(v, 0), set()),
    "dedupe_rows.n": (lambda v: dedupe_rows(_rows(), v), set()),
    "CookieTable.dedupe.out": (lambda v: CookieTable().dedupe(v, 0), set()),
    "CookieTable.dedupe.n": (lambda v: CookieTable().dedupe(_rows(), v), set()),
    "NetlinkDumper.capacity": (lambda v: NetlinkDumper(v), set()),
    "NetlinkDumper.recv_size": (lambda v: NetlinkDumper(recv_size=v), set()),
    "DestroyFeed.rcvbuf": (lambda v: DestroyFeed(rcvbuf=v), set()),
    "DestroyFeed.capacity": (lambda v: DestroyFeed(capacity=v), set()),
    "PidResolver.threads": (lambda v: PidResolver(threads=v), set()),
    "PidResolver.max_pidfds": (lambda v: PidResolver(max_pidfds=v), {"-1", "-2**64"}),   # negative: the default
    "PidResolver.resolve.rows": (lambda v: PidResolver(threads=1).resolve(v, 0), set()),
    "PidResolver.resolve.n": (lambda v: PidResolver(threads=1).resolve(_rows(), v), set()),
    "PidResolver.process_names.pids": (lambda v: PidResolver(threads=1).process_names(v),
                                       # any integers are pids (unknown ones get -1)
                                       {"noncontig_memoryview", "noncontig_numpy_bytes", "wrong_dtype_rows",
                                        "bytearray"}),
    "PidResolver.owner.inode": (lambda v: PidResolver(threads=1).owner(v), {"2**63-1"}),
    "PidResolver.set.threads": (_set("threads"), set()),
    "PidResolver.set.block": (_set("block"), set()),
}
for _d in _DURATIONS:
    BAD_ARGS[f"PidResolver.{_d}"] = (lambda v, d=_d: PidResolver(**{d: v}), _NUMBERS)
    BAD_ARGS[f"PidResolver.set.{_d}"] = (_set(_d), _NUMBERS)


@pytest.mark.parametrize("call,kind,argname", cases(BAD_ARGS))
def test_bad_arguments_raise_value_or_type_error(call, kind, argname):
    exc = assert_rejected(call, KINDS[kind](), argname)
    if argname in _INTS and kind in {"float", "str", "object", "None"}:
        assert type(exc) is TypeError               # not an integer at all
    if argname in _INTS | set(_DURATIONS) and kind not in NOT_INTS:
        assert type(exc) is ValueError              # a number out of range


def test_resolve_refuses_a_count_that_overflows_the_row_array_size():
    # n * sizeof(row) wrapped around to 0 (or below): the old check passed and the walk
    # read far past the array
    for n in (2**62, 2**63 - 1, 5):
        with pytest.raises(ValueError, match="^n is larger than the row array"):
            PidResolver(threads=1).resolve(_rows(), n)


def test_noncontiguous_data_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="^data must be a C-contiguous buffer"):
        parse_messages(memoryview(bytes(64))[::2], _rows(), 1)
    with pytest.raises(ValueError, match=r"^seq must be an integer in 0\.\.4294967295, got -1$"):
        parse_messages(b"", _rows(), -1)
