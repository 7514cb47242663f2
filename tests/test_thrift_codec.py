"""The compiled Thrift codec (``tcpsnap._thrift``, behind ``tcpsnap.record.thrift``) against
the Python codec it replaced (``tests/_thrift_ref.py``, that codec as it was): the same
structures from the same bytes, the same bytes from the same structures, the same error
messages for bytes that do not decode -- on real footers of every schema the recorder
writes, on damaged copies of them, and on random bytes and structures."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import _thrift_ref as ref
from tcpsnap._arrow import build_schema
from tcpsnap._errors import ThriftError
from tcpsnap.record import thrift
from tcpsnap.record.parquet import split_parquet, writer_kwargs


def _outcome(codec, data: bytes):
    # what decoding gives: the struct, or the error's message (any other exception propagates)
    try:
        return ("ok", codec.decode_struct(data))
    except (ThriftError, ref.ThriftError) as e:
        assert isinstance(e, ThriftError if codec is thrift else ref.ThriftError)
        return ("error", str(e))


def _footers() -> list[bytes]:
    """Footers as the recorder's row groups make them: full, changes and --tcp-info
    schemas, with their encodings and statistics, a few rows of varied values."""
    out = []
    rng = np.random.default_rng(7)
    for tcp_info, changes in ((False, False), (True, False), (False, True)):
        schema = build_schema(tcp_info=tcp_info)
        if changes:
            schema = schema.append(pa.field("event", pa.dictionary(pa.int8(), pa.string())))
        cols = []
        for f in schema:
            typ = f.type
            if pa.types.is_dictionary(typ):
                vals = pa.array(["a", "bb", "ccc"], pa.string())
                cols.append(pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 3, 300), typ.index_type), vals))
            elif pa.types.is_integer(typ):
                info = np.iinfo(typ.to_pandas_dtype())
                cols.append(pa.array(rng.integers(max(info.min, -10**12), min(info.max, 10**12), 300,
                                                  dtype=typ.to_pandas_dtype()), typ))
            elif pa.types.is_timestamp(typ):
                cols.append(pa.array(rng.integers(0, 2**62, 300), pa.int64()).cast(typ))
            else:
                cols.append(pa.nulls(300, typ))
        t = pa.Table.from_arrays(cols, schema=schema)
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, schema, **writer_kwargs("zstd", None, 1 << 17, schema)) as w:
            w.write_table(t, row_group_size=100)
        out.append(split_parquet(sink.getvalue())[1])
    return out


FOOTERS = _footers()


def test_real_footers_decode_alike_and_encode_to_their_own_bytes():
    for footer in FOOTERS:
        got, want = thrift.decode_struct(footer), ref.decode_struct(footer)
        assert got == want
        assert thrift.encode_struct(got) == ref.encode_struct(want) == footer
        # a row group struct encoded alone, then spliced back in as bytes (what the writer does)
        rg = got[4][1][1][0]
        assert thrift.encode_struct(rg) == ref.encode_struct(rg)
        spliced = dict(got)
        spliced[4] = (thrift.T_LIST, (thrift.T_STRUCT, [thrift.encode_struct(x) for x in got[4][1][1]]))
        assert thrift.encode_struct(spliced) == footer


def test_damaged_footers_decode_alike():
    rnd = random.Random(11)
    for footer in FOOTERS:
        for cut in rnd.sample(range(len(footer)), 60):
            assert _outcome(thrift, footer[:cut]) == _outcome(ref, footer[:cut])
        for _ in range(120):
            b = bytearray(footer)
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            assert _outcome(thrift, bytes(b)) == _outcome(ref, bytes(b))


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_alike(data):
    assert _outcome(thrift, data) == _outcome(ref, data)


def test_edge_cases_decode_alike():
    cases = [
        b"", b"\x00", b"\x15", b"\x00\x00",                           # empty, stop, truncated, trailing
        b"\x16" + b"\xff" * 8 + b"\x7f\x00",                         # i64 of 63 bits
        b"\x16" + b"\xff" * 9 + b"\x01\x00",                         # 71 bits: wider than a C integer
        b"\x16" + b"\xff" * 10 + b"\x7f\x00",                        # 77 bits
        b"\x16" + b"\xff" * 11 + b"\x01\x00",                        # too long
        b"\x06" + b"\xff" * 9 + b"\x01" + b"\x02\x00",               # a 71-bit field id
        b"\x18\xff\xff\xff\xff\x0f",                                 # a binary longer than the data
        b"\x19\xf1\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x01\x00",     # a list claiming 2^63 bools
        b"\x1b\x02\x11\x01\x02\x01\x02\x00",                         # a map of bools
        b"\x1b\x00\x00", b"\x1e\x00",                                # empty map, unknown type 14
        b"\x1c" * 70 + b"\x00" * 71,                                 # nested too deep
        b"\x1c" * 60 + b"\x00" * 61,                                 # nested, within the limit
        b"\x11\x12\x13\x05\x17" + bytes(8) + b"\x1d" + bytes(16) + b"\x00",
    ]
    for data in cases:
        assert _outcome(thrift, data) == _outcome(ref, data), data


_ints = st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-2**70, 2**70), st.integers(0, 300))


def _value(t: int, depth: int):
    if t in (1, 2):
        return st.booleans()
    if t == 3:
        return st.integers(0, 255)
    if t in (4, 5, 6):
        return _ints
    if t == 7:
        return st.binary(min_size=8, max_size=8)
    if t == 8:
        return st.binary(max_size=20)
    if t == 13:
        return st.binary(min_size=16, max_size=16)
    if t in (9, 10):
        et = st.sampled_from([1, 3, 5, 6, 8] + ([12] if depth < 3 else []))
        return et.flatmap(lambda e: st.tuples(st.just(e), st.lists(_value(e, depth + 1), max_size=18)))
    if t == 11:
        return st.tuples(st.sampled_from([5, 8]), st.sampled_from([1, 6, 8])).flatmap(
            lambda kv: st.tuples(st.just(kv[0]), st.just(kv[1]),
                                 st.lists(st.tuples(_value(kv[0], depth + 1), _value(kv[1], depth + 1)),
                                          max_size=4)))
    return _struct(depth + 1)


def _struct(depth: int):
    types = [1, 2, 3, 4, 5, 6, 7, 8, 13] + ([9, 10, 11, 12] if depth < 3 else [])
    field = st.sampled_from(types).flatmap(lambda t: st.tuples(st.just(t), _value(t, depth)))
    return st.dictionaries(st.one_of(st.integers(1, 40), st.integers(-5, 40000)), field, max_size=6)


@settings(max_examples=400, deadline=None)
@given(_struct(0))
def test_random_structs_encode_alike_and_read_back(s):
    data = thrift.encode_struct(s)
    assert data == ref.encode_struct(s)
    assert thrift.decode_struct(data) == ref.decode_struct(data)


def test_encoding_errors_alike():
    for s in ({1: (8, b"x"), 2: (99, 1)}, {1: (6, 1)}, {1: (12, {1: (14, b"")})}):
        try:
            want = ("ok", ref.encode_struct(s))
        except ref.ThriftError as e:
            want = ("error", str(e))
        try:
            got = ("ok", thrift.encode_struct(s))
        except ThriftError as e:
            got = ("error", str(e))
        assert got == want
    with pytest.raises(ThriftError, match="unknown thrift type 99"):
        thrift.encode_struct({1: (99, 0)})
