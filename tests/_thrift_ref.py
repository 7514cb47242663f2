"""A small Thrift compact-protocol codec, enough to edit Parquet footers.

The recorder writes each row group with its own in-memory Parquet writer and appends
the encoded bytes to one growing file. The offsets in that writer's footer are then
relative to its own buffer; ``shift_row_group`` moves them to the row group's real
place in the file. Structs decode to ``{field_id: (type, value)}`` dicts, kept in
field order so that re-encoding an unmodified struct gives the same bytes back.

Compact protocol: https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
"""

from __future__ import annotations

__all__ = ["decode_struct", "encode_struct", "T_I16", "T_I32", "T_I64", "T_BINARY",
           "T_LIST", "T_STRUCT"]

T_STOP = 0
T_TRUE = 1
T_FALSE = 2
T_BYTE = 3
T_I16 = 4
T_I32 = 5
T_I64 = 6
T_DOUBLE = 7
T_BINARY = 8
T_LIST = 9
T_SET = 10
T_MAP = 11
T_STRUCT = 12
T_UUID = 13

_MAX_DEPTH = 64


class ThriftError(ValueError):
    pass


class _Reader:
    __slots__ = ("b", "i")

    def __init__(self, data: bytes | memoryview) -> None:
        self.b = bytes(data)
        self.i = 0

    def byte(self) -> int:
        try:
            v = self.b[self.i]
        except IndexError:
            raise ThriftError("truncated thrift data") from None
        self.i += 1
        return v

    def varint(self) -> int:
        shift = 0
        out = 0
        while True:
            v = self.byte()
            out |= (v & 0x7F) << shift
            if not v & 0x80:
                return out
            shift += 7
            if shift > 70:
                raise ThriftError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        if n < 0 or self.i + n > len(self.b):
            raise ThriftError("truncated thrift data")
        v = self.b[self.i:self.i + n]
        self.i += n
        return v

    def value(self, t: int, depth: int):
        if depth > _MAX_DEPTH:
            raise ThriftError("thrift data nested too deep")
        if t in (T_TRUE, T_FALSE):  # a bool inside a list/set/map: one byte
            return self.byte() == T_TRUE
        if t == T_BYTE:
            return self.byte()
        if t in (T_I16, T_I32, T_I64):
            return self.zigzag()
        if t == T_DOUBLE:
            return self.take(8)
        if t == T_BINARY:
            return self.take(self.varint())
        if t == T_UUID:
            return self.take(16)
        if t in (T_LIST, T_SET):
            h = self.byte()
            size, et = h >> 4, h & 0x0F
            if size == 15:
                size = self.varint()
            return (et, [self.value(et, depth + 1) for _ in range(size)])
        if t == T_MAP:
            size = self.varint()
            if size == 0:
                return (0, 0, [])
            h = self.byte()
            kt, vt = h >> 4, h & 0x0F
            return (kt, vt, [(self.value(kt, depth + 1), self.value(vt, depth + 1)) for _ in range(size)])
        if t == T_STRUCT:
            return self.struct(depth + 1)
        raise ThriftError(f"unknown thrift type {t}")

    def struct(self, depth: int = 0) -> dict:
        out: dict = {}
        last = 0
        while True:
            h = self.byte()
            if h == T_STOP:
                return out
            t = h & 0x0F
            delta = h >> 4
            fid = last + delta if delta else self.zigzag()
            if t in (T_TRUE, T_FALSE):
                out[fid] = (T_TRUE, t == T_TRUE)  # normalised: the value says which
            else:
                out[fid] = (t, self.value(t, depth))
            last = fid


def _varint(n: int, out: bytearray) -> None:
    if n < 0:
        raise ThriftError("negative varint")
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _zigzag(n: int, out: bytearray) -> None:
    _varint((n << 1) ^ (n >> 63), out)


def _value(t: int, v, out: bytearray) -> None:
    if t in (T_TRUE, T_FALSE):
        out.append(T_TRUE if v else T_FALSE)
    elif t == T_BYTE:
        out.append(v & 0xFF)
    elif t in (T_I16, T_I32, T_I64):
        _zigzag(v, out)
    elif t == T_DOUBLE:
        out += v
    elif t == T_BINARY:
        _varint(len(v), out)
        out += v
    elif t == T_UUID:
        out += v
    elif t in (T_LIST, T_SET):
        et, items = v
        if len(items) < 15:
            out.append((len(items) << 4) | et)
        else:
            out.append(0xF0 | et)
            _varint(len(items), out)
        for x in items:
            _value(et, x, out)
    elif t == T_MAP:
        kt, vt, items = v
        _varint(len(items), out)
        if items:
            out.append((kt << 4) | vt)
            for k, x in items:
                _value(kt, k, out)
                _value(vt, x, out)
    elif t == T_STRUCT:
        if isinstance(v, bytes):  # a struct encoded already (encode_struct)
            out += v
        else:
            _struct(v, out)
    else:
        raise ThriftError(f"unknown thrift type {t}")


def _struct(s: dict, out: bytearray) -> None:
    last = 0
    for fid in sorted(s):
        t, v = s[fid]
        wire_t = (T_TRUE if v else T_FALSE) if t in (T_TRUE, T_FALSE) else t
        delta = fid - last
        if 0 < delta <= 15:
            out.append((delta << 4) | wire_t)
        else:
            out.append(wire_t)
            _zigzag(fid, out)
        if t not in (T_TRUE, T_FALSE):
            _value(t, v, out)
        last = fid
    out.append(T_STOP)


def decode_struct(data: bytes | memoryview) -> dict:
    """One struct from the start of ``data`` (trailing bytes are an error)."""
    r = _Reader(data)
    s = r.struct()
    if r.i != len(r.b):
        raise ThriftError(f"{len(r.b) - r.i} trailing bytes after thrift struct")
    return s


def encode_struct(s: dict) -> bytes:
    out = bytearray()
    _struct(s, out)
    return bytes(out)
