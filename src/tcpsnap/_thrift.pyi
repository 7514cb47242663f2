from typing import Any

def decode_struct(data: bytes | bytearray | memoryview) -> dict[int, tuple[int, Any]]:
    """One Thrift compact-protocol struct from the start of ``data``:
    ``{field_id: (type, value)}``; ThriftError for bytes that do not decode."""
def encode_struct(s: dict[int, tuple[int, Any]]) -> bytes:
    """``s`` in the Thrift compact protocol (a struct value may be bytes already encoded)."""
