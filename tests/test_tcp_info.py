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
