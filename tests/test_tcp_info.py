"""TCP internals: TCP_INFO_DTYPE is the C struct byte for byte; the parser reads a raw
struct tcp_info by offset and length (144, 232, 248, 280 bytes, truncated, longer than
known); absent fields are null in Arrow, never 0."""

import struct

import numpy as np
import pyarrow as pa
import pytest

from tcpsnap._arrow import TCP_INFO_COLUMNS, CongestionNames, tcp_info_columns, tcp_info_fields
from tcpsnap._schema import (
    ESTATS_DATA,
    ESTATS_FIELDS,
    ESTATS_PATH,
    TCP_INFO_DTYPE,
    TCP_INFO_FIELDS,
    TCP_INFO_KERNEL,
    TCP_INFO_KNOWN_LEN,
)
from tcpsnap._tcp_info import parse_attributes, parse_info, tcp_info_layout

# The kernel's struct tcp_info offsets, written out again from include/uapi/linux/tcp.h (not
# read from _schema.py, so that a wrong offset there fails here): name -> (offset, size).
UAPI = {
    "ca_state": (1, 1), "retransmits": (2, 1), "backoff": (4, 1), "rto": (8, 4), "snd_mss": (16, 4),
    "rcv_mss": (20, 4), "unacked": (24, 4), "sacked": (28, 4), "lost": (32, 4), "retrans": (36, 4),
    "last_data_sent": (44, 4), "last_data_recv": (52, 4), "last_ack_recv": (56, 4), "pmtu": (60, 4),
    "rtt": (68, 4), "rttvar": (72, 4), "snd_ssthresh": (76, 4), "snd_cwnd": (80, 4), "rcv_rtt": (92, 4),
    "rcv_space": (96, 4), "total_retrans": (100, 4), "pacing_rate": (104, 8), "bytes_acked": (120, 8),
    "bytes_received": (128, 8), "segs_out": (136, 4), "segs_in": (140, 4), "notsent_bytes": (144, 4),
    "min_rtt": (148, 4), "data_segs_in": (152, 4), "data_segs_out": (156, 4), "delivery_rate": (160, 8),
    "busy_time": (168, 8), "rwnd_limited": (176, 8), "sndbuf_limited": (184, 8), "delivered": (192, 4),
    "bytes_sent": (200, 8), "bytes_retrans": (208, 8), "dsack_dups": (216, 4), "reord_seen": (220, 4),
    "snd_wnd": (228, 4), "rcv_wnd": (232, 4), "total_rto": (240, 2), "total_rto_time": (244, 4),
}
FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}
INET_DIAG_INFO, INET_DIAG_CONG, INET_DIAG_CGROUP_ID, INET_DIAG_SHUTDOWN = 2, 4, 21, 8


def value_of(name):
    # a distinct value per field, using its whole width (so a wrong offset or size shows)
    size = UAPI[name][1]
    i = list(UAPI).index(name) + 1
    return {1: i, 2: 0x100 + i, 4: 0x01000000 + i, 8: 0x0100000000000000 + i}[size]


def kernel_struct(length):
    """A raw struct tcp_info of `length` bytes, every field we read set to value_of()."""
    buf = bytearray(max(length, 300))
    for name, (off, size) in UAPI.items():
        struct.pack_into("<" + FMT[size], buf, off, value_of(name))
    return bytes(buf[:length])


def rtattr(atype, payload):
    return struct.pack("=HH", 4 + len(payload), atype) + payload + b"\0" * (-len(payload) % 4)


def test_dtype_matches_compiled_struct_and_uapi():
    layout = tcp_info_layout()
    assert TCP_INFO_DTYPE.itemsize == layout.pop("itemsize") == 216
    fields = TCP_INFO_DTYPE.fields
    for name, (off, size, koff, ksize) in layout.items():
        assert fields[name][1] == off and fields[name][0].itemsize == size, name
        if koff >= 0:
            assert (koff, ksize) == UAPI[name] == TCP_INFO_KERNEL[name], name
    assert set(layout) == set(TCP_INFO_DTYPE.names) == {f[0] for f in TCP_INFO_FIELDS}
    assert set(UAPI) == set(TCP_INFO_KERNEL)
    assert TCP_INFO_KNOWN_LEN == 280


@pytest.mark.parametrize("length", [144, 232, 248, 280])
def test_kernel_lengths(length):
    row = parse_info(kernel_struct(length), b"cubic\0")[0]
    assert row["tcp_info_len"] == length
    assert row["congestion"] == b"cubic"
    for name, (off, size) in UAPI.items():
        want = value_of(name) if off + size <= length else 0
        assert row[name] == want, name
    # what each length has: 4.4 stops after segs_in, 5.4 after snd_wnd, 6.7 after total_rto_time
    present = {n for n, (o, s) in UAPI.items() if o + s <= length}
    assert ("segs_in" in present, "notsent_bytes" in present) == (True, length > 144)
    assert ("snd_wnd" in present, "rcv_wnd" in present) == (length >= 232, length >= 248)


@pytest.mark.parametrize("length", [0, 1, 3, 7, 99, 103, 121, 127, 145, 150, 201, 231, 233, 247, 279])
def test_truncated_lengths_zero_every_partial_field(length):
    row = parse_info(kernel_struct(length))[0]
    assert row["tcp_info_len"] == length
    for name, (off, size) in UAPI.items():
        assert row[name] == (value_of(name) if off + size <= length else 0), (name, length)


def test_longer_than_known_is_parsed_and_counted():
    long = kernel_struct(280) + bytes(range(40))
    row, cg, len_max, longer = parse_attributes(rtattr(INET_DIAG_INFO, long) + rtattr(INET_DIAG_CONG, b"bbr\0"))
    assert (row[0]["tcp_info_len"], len_max, longer, cg) == (320, 320, 1, 0)
    for name in UAPI:
        assert row[0][name] == value_of(name), name
    assert row[0]["congestion"] == b"bbr"
    # exactly the known length is not "longer"
    assert parse_attributes(rtattr(INET_DIAG_INFO, kernel_struct(280)))[2:] == (280, 0)
    # a length that does not fit u16 cannot come in an rtattr; the parser caps it anyway
    assert parse_info(bytes(70000))[0]["tcp_info_len"] == 0xFFFF


def test_attributes_in_one_pass_and_none():
    attrs = (rtattr(INET_DIAG_SHUTDOWN, b"\0") + rtattr(INET_DIAG_INFO, kernel_struct(232))
             + rtattr(INET_DIAG_CGROUP_ID, struct.pack("=Q", 777)) + rtattr(INET_DIAG_CONG, b"reno\0"))
    row, cg, len_max, longer = parse_attributes(attrs)
    assert (cg, len_max, longer, row[0]["tcp_info_len"], row[0]["congestion"]) == (777, 232, 0, 232, b"reno")
    assert row[0]["bytes_sent"] == value_of("bytes_sent") and row[0]["rcv_wnd"] == 0
    # TIME_WAIT sockets send no INET_DIAG_INFO: the whole row is zero
    row, cg, len_max, longer = parse_attributes(rtattr(INET_DIAG_SHUTDOWN, b"\0"))
    assert row.tobytes() == bytes(TCP_INFO_DTYPE.itemsize) and (cg, len_max, longer) == (0, 0, 0)
    # a malformed attribute (length past the end) ends the walk; what came before stays
    bad = rtattr(INET_DIAG_CONG, b"dctcp\0") + struct.pack("=HH", 400, INET_DIAG_INFO) + bytes(8)
    row = parse_attributes(bad)[0][0]
    assert row["congestion"] == b"dctcp" and row["tcp_info_len"] == 0


def test_congestion_names_cut_and_padded():
    assert parse_info(None, b"a-very-long-algorithm-name\0")[0]["congestion"] == b"a-very-long-alg"
    assert parse_info(None, b"bbr")[0]["congestion"] == b"bbr"       # no NUL sent
    assert parse_info(None, b"")[0]["congestion"] == b""


def test_arrow_columns_null_when_not_sent():
    rows = np.concatenate([parse_info(kernel_struct(n), c) for n, c in
                           [(280, b"cubic\0"), (144, b"bbr\0"), (0, None), (232, b"cubic\0")]])
    cols = tcp_info_columns(rows)
    assert list(cols) == list(TCP_INFO_COLUMNS)
    assert pa.schema(tcp_info_fields()) == pa.schema([pa.field(n, cols[n].type) for n in TCP_INFO_COLUMNS])
    assert cols["tcp_info_len"].to_pylist() == [280, 144, 0, 232]
    assert cols["congestion"].to_pylist() == ["cubic", "bbr", None, "cubic"]
    assert cols["congestion"].type == pa.dictionary(pa.int32(), pa.string())
    for name, (off, size) in UAPI.items():
        want = [value_of(name) if off + size <= n else None for n in (280, 144, 0, 232)]
        assert cols[name].to_pylist() == want, name
    assert cols["bytes_acked"].type == pa.uint64() and cols["rtt"].type == pa.uint32()
    assert cols["ca_state"].type == pa.uint8() and cols["total_rto"].type == pa.uint16()


def test_arrow_columns_unsampled_rows_are_null():
    rows = np.concatenate([parse_info(kernel_struct(280), b"cubic\0")] * 3)
    sampled = np.array([True, False, True])
    names = CongestionNames()
    cols = tcp_info_columns(rows, sampled, names)
    for name in TCP_INFO_COLUMNS:
        assert cols[name].to_pylist()[1] is None, name
        assert cols[name].to_pylist()[0] is not None, name
    # the dictionary grows across calls; codes stay valid
    again = tcp_info_columns(np.concatenate([parse_info(None, b"bbr\0"), rows[:1]]), congestion=names)
    assert again["congestion"].dictionary.to_pylist() == ["cubic", "bbr"]
    assert again["congestion"].indices.to_pylist() == [1, 0]


def test_arrow_windows_rows_have_only_their_structs_fields():
    rows = np.zeros(3, TCP_INFO_DTYPE)
    rows["estats"] = [ESTATS_DATA, ESTATS_PATH, ESTATS_DATA | ESTATS_PATH]
    rows["bytes_sent"] = 5
    rows["rtt"] = 7000
    cols = tcp_info_columns(rows)
    assert cols["bytes_sent"].to_pylist() == [5, None, 5]
    assert cols["rtt"].to_pylist() == [None, 7000, 7000]
    assert cols["snd_cwnd"].to_pylist() == [None, None, None]    # no Windows struct read here
    assert set(ESTATS_FIELDS) <= set(TCP_INFO_COLUMNS)


# Windows: GetPerTcpConnectionEStats' read-only dynamic structs, laid out as tcpestats.h
# documents them (Wine does not export the call: synthetic buffers, as the MIB parser's).
DATA_ROD = struct.Struct("<6Q5I4xQI4xQ")      # TCP_ESTATS_DATA_ROD_v0, 96 bytes
PATH_ROD = struct.Struct("<40I")              # TCP_ESTATS_PATH_ROD_v0, 160 bytes
PATH_NAMES = ("FastRetran Timeouts SubsequentTimeouts CurTimeoutCount AbruptTimeouts PktsRetrans "
              "BytesRetrans DupAcksIn SacksRcvd SackBlocksRcvd CongSignals PreCongSumCwnd PreCongSumRtt "
              "PostCongSumRtt PostCongCountRtt EcnSignals EceRcvd SendStall QuenchRcvd RetranThresh "
              "SndDupAckEpisodes SumBytesReordered NonRecovDa NonRecovDaEpisodes AckAfterFr DsackDups "
              "SampleRtt SmoothedRtt RttVar MaxRtt MinRtt SumRtt CountRtt CurRto MaxRto MinRto CurMss "
              "MaxMss MinMss SpuriousRtoDetections").split()


def data_rod(**kw):
    names = ("DataBytesOut DataSegsOut DataBytesIn DataSegsIn SegsOut SegsIn SoftErrors SoftErrorReason "
             "SndUna SndNxt SndMax ThruBytesAcked RcvNxt ThruBytesReceived").split()
    return DATA_ROD.pack(*(kw.get(n, 1000 + i) for i, n in enumerate(names)))


def path_rod(**kw):
    return PATH_ROD.pack(*(kw.get(n, 7000 + i) for i, n in enumerate(PATH_NAMES)))


def test_estats_struct_sizes():
    from tcpsnap._tcp_info import ESTATS_SIZES

    assert DATA_ROD.size == 96 and PATH_ROD.size == 160 and ESTATS_SIZES == (96, 160)


def test_estats_data_and_path_into_the_tcp_info_row():
    from tcpsnap._tcp_info import parse_estats

    d = data_rod(DataBytesOut=5_000_000_000, DataSegsOut=40, DataSegsIn=30, SegsOut=55, SegsIn=45,
                 ThruBytesAcked=4_999_999_000, ThruBytesReceived=123_456, DataBytesIn=999)
    p = path_rod(Timeouts=2, SubsequentTimeouts=3, CurTimeoutCount=1, PktsRetrans=6, BytesRetrans=7300,
                 DsackDups=2, SmoothedRtt=12, RttVar=3, MinRtt=9, CurRto=300, CurMss=1460)
    row = parse_estats(d, p)[0]
    assert row["estats"] == ESTATS_DATA | ESTATS_PATH and row["tcp_info_len"] == 0
    got = {n: int(row[n]) for n in ESTATS_FIELDS}
    assert got == {"bytes_sent": 5_000_000_000, "data_segs_out": 40, "data_segs_in": 30, "segs_out": 55,
                   "segs_in": 45, "bytes_acked": 4_999_999_000, "bytes_received": 123_456,
                   "total_rto": 5, "retransmits": 1, "total_retrans": 6, "bytes_retrans": 7300,
                   "dsack_dups": 2, "rtt": 12_000, "rttvar": 3_000, "min_rtt": 9_000, "rto": 300_000,
                   "snd_mss": 1460}
    # what Windows does not give stays 0 in the row and null in Arrow
    assert row["snd_cwnd"] == 0 and row["congestion"] == b""
    cols = tcp_info_columns(parse_estats(d, p))
    assert cols["snd_cwnd"].to_pylist() == [None] and cols["bytes_sent"].to_pylist() == [5_000_000_000]
    assert cols["tcp_info_len"].to_pylist() == [0]


def test_estats_one_struct_or_short_buffers():
    from tcpsnap._tcp_info import parse_estats

    only_data = parse_estats(data_rod(DataBytesOut=10))
    assert only_data[0]["estats"] == ESTATS_DATA and only_data[0]["rtt"] == 0
    cols = tcp_info_columns(only_data)
    assert cols["bytes_sent"].to_pylist() == [10] and cols["rtt"].to_pylist() == [None]
    only_path = parse_estats(None, path_rod(SmoothedRtt=1))
    assert only_path[0]["estats"] == ESTATS_PATH and only_path[0]["rtt"] == 1000
    assert tcp_info_columns(only_path)["bytes_sent"].to_pylist() == [None]
    # a buffer shorter than its struct is not read: nothing (estats 0 and all zero)
    short = parse_estats(data_rod()[:95], path_rod()[:159])
    assert short.tobytes() == bytes(TCP_INFO_DTYPE.itemsize)
    # ms beyond what µs in 32 bits hold saturate; so does "no sample" (ULONG_MAX)
    sat = parse_estats(None, path_rod(MinRtt=0xFFFFFFFF, SmoothedRtt=4_294_967, CurRto=4_294_966,
                                      Timeouts=70_000, CurTimeoutCount=300))[0]
    assert (int(sat["min_rtt"]), int(sat["rtt"]), int(sat["rto"])) == (0xFFFFFFFF, 0xFFFFFFFF, 4_294_966_000)
    assert (int(sat["total_rto"]), int(sat["retransmits"])) == (0xFFFF, 0xFF)
    with pytest.raises(TypeError):
        parse_estats(12)


def test_dedupe_moves_the_internals_with_their_rows():
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the netlink parser is built on Linux")
    from tcpsnap import ROW_DTYPE
    from tcpsnap._nlparse import dedupe_rows

    cookies = [5, 6, 5, 7, 6, 8]                 # rows 2 and 4 repeat sockets seen before
    rows = np.zeros(6, ROW_DTYPE)
    rows["cookie"] = cookies
    info = np.zeros(6, TCP_INFO_DTYPE)
    info["bytes_sent"] = [c * 100 + i for i, c in enumerate(cookies)]
    assert dedupe_rows(rows, 6, info) == 4
    assert rows["cookie"][:4].tolist() == [5, 6, 7, 8]
    assert info["bytes_sent"][:4].tolist() == [500, 601, 703, 805]   # each row's own, still aligned
    with pytest.raises(ValueError, match="TCP_INFO_DTYPE"):
        dedupe_rows(rows, 4, np.zeros(3, TCP_INFO_DTYPE))


# Windows, live: which connections a snapshot enables and reads (tcpsnap._tcp_info.EstatsPlan,
# the C plan the Windows backend runs, _win/estats_plan.h).

def estab_rows(ports, state=5, family=4):
    from tcpsnap import ROW_DTYPE

    rows = np.zeros(len(ports), ROW_DTYPE)
    rows["family"] = family
    rows["state"] = state
    rows["local_addr"][:, 0], rows["local_addr"][:, 3] = 127, 1
    rows["remote_addr"][:, 0], rows["remote_addr"][:, 3] = 127, 1
    rows["local_port"] = ports
    rows["remote_port"] = 443
    return rows


def test_estats_plan_caps_each_snapshot_and_covers_every_connection_round_robin():
    from tcpsnap._tcp_info import EstatsPlan

    rows = np.concatenate([estab_rows(range(1000, 1010)), estab_rows([80, 81], state=2)])   # + 2 listeners
    plan = EstatsPlan(3)
    picks, fresh0 = [], None
    for i in range(8):
        fresh, pick = plan.step(rows)
        if i == 0:
            fresh0 = fresh
        else:
            assert len(fresh) == 0                      # enabled once, when first seen
        assert len(pick) == 3 and len(set(pick)) == 3 and (pick < 10).all()   # never a listener
        picks.append(rows["local_port"][pick].tolist())
    assert sorted(rows["local_port"][fresh0].tolist()) == list(range(1000, 1010))
    # 10 connections, 3 a snapshot: all 10 read within ceil(10/3) = 4 snapshots, and every one
    # again within the next 4 (the order is the key order, so it repeats with period 10)
    assert sorted(set(sum(picks[:3], []))) != list(range(1000, 1010))
    assert sorted(set(sum(picks[:4], []))) == list(range(1000, 1010))
    flat = sum(picks, [])
    assert len(set(flat[:9])) == 9 and flat[10:20] == flat[:10]          # round-robin, no repeat in a turn


def test_estats_plan_fresh_is_first_seen_whatever_the_row_order():
    from tcpsnap._tcp_info import EstatsPlan

    plan = EstatsPlan(100)
    rows = estab_rows([1, 2, 3, 4])
    fresh, pick = plan.step(rows)
    assert sorted(fresh.tolist()) == [0, 1, 2, 3] and sorted(pick.tolist()) == [0, 1, 2, 3]
    # 2 closed, 5 opened, the table in another order: only 5 is fresh; all are read (<= cap)
    rows = estab_rows([5, 4, 1, 3])
    fresh, pick = plan.step(rows)
    assert rows["local_port"][fresh].tolist() == [5]
    assert sorted(pick.tolist()) == [0, 1, 2, 3]
    # a connection that left the ESTABLISHED state is not read; one coming back is fresh again
    rows["state"][1] = 8                                  # 4: CLOSE_WAIT
    fresh, pick = plan.step(rows)
    assert len(fresh) == 0 and sorted(rows["local_port"][pick].tolist()) == [1, 3, 5]
    rows["state"][1] = 5
    fresh, _ = plan.step(rows)
    assert rows["local_port"][fresh].tolist() == [4]


def test_estats_plan_goes_on_after_the_connection_at_the_cursor_closed():
    from tcpsnap._tcp_info import EstatsPlan, estats_keys

    rows = estab_rows(range(2000, 2006))
    order = rows["local_port"][np.argsort(estats_keys(rows))].tolist()    # the read order
    plan = EstatsPlan(2)
    _, pick = plan.step(rows)
    assert rows["local_port"][pick].tolist() == order[:2]
    assert plan.cursor == int(estats_keys(rows[pick[-1:]])[0])
    gone = rows[rows["local_port"] != order[1]]          # the last one read closed
    _, pick = plan.step(gone)
    assert gone["local_port"][pick].tolist() == order[2:4]


def test_estats_keys_are_the_connection_not_its_state_or_owner():
    from tcpsnap._tcp_info import estats_keys

    a = estab_rows([1000, 1000, 1001])
    a["pid"] = [1, 2, 1]
    a["state"][1] = 8
    k = estats_keys(a)
    assert k.dtype == np.uint64 and k[0] == k[1] != k[2]
    v6 = estab_rows([1000, 1000], family=6)
    v6["local_scope_id"][1] = 3                           # scope ids tell IPv6 connections apart
    k6 = estats_keys(v6)
    assert k6[0] != k6[1] and k6[0] != k[0]


def test_estats_plan_bad_arguments():
    from tcpsnap._tcp_info import ESTATS_CAP, EstatsPlan, estats_keys

    assert ESTATS_CAP == 1000 and EstatsPlan().cap == 1000
    with pytest.raises(ValueError, match="cap must be at least 1"):
        EstatsPlan(0)
    with pytest.raises(TypeError, match="ROW_DTYPE"):
        EstatsPlan(1).step(np.zeros(3, TCP_INFO_DTYPE))
    with pytest.raises(TypeError, match="ROW_DTYPE"):
        estats_keys([1, 2])
    fresh, pick = EstatsPlan(1).step(estab_rows([]))
    assert len(fresh) == len(pick) == 0
