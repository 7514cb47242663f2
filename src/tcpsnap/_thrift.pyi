from typing import Any

# the compact protocol's type ids
T_STOP: int
T_TRUE: int
T_FALSE: int
T_BYTE: int
T_I16: int
T_I32: int
T_I64: int
T_DOUBLE: int
T_BINARY: int
T_LIST: int
T_SET: int
T_MAP: int
T_STRUCT: int
T_UUID: int


def decode_struct(data: bytes | bytearray | memoryview) -> dict[int, tuple[int, Any]]:
    """One Thrift compact-protocol struct from the start of ``data``:
    ``{field_id: (type, value)}``; ThriftError for bytes that do not decode."""
def encode_struct(s: dict[int, tuple[int, Any]]) -> bytes:
    """``s`` in the Thrift compact protocol (a struct value may be bytes already encoded)."""
