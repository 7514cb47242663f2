"""A small Thrift compact-protocol codec, enough to edit Parquet footers.

The recorder writes each row group with its own in-memory Parquet writer and appends
the encoded bytes to one growing file. The offsets in that writer's footer are then
relative to its own buffer; ``shift_row_group`` moves them to the row group's real
place in the file. Structs decode to ``{field_id: (type, value)}`` dicts, kept in
field order so that re-encoding an unmodified struct gives the same bytes back.

The codec itself is compiled (``tcpsnap._thrift``, ``decode_struct`` / ``encode_struct``):
the writer runs it for every row group while holding the GIL that the capture thread
waits for (~1.3 ms of Python a row group before, ~0.2 ms now: benchmarks/RESULTS.md,
"Writer cost in full mode (session 8)", its session 9 paragraph).

Compact protocol: https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
"""

from __future__ import annotations

from .._errors import ThriftError
from .._thrift import T_BINARY, T_I16, T_I32, T_I64, T_LIST, T_STRUCT, decode_struct, encode_struct

__all__ = ["decode_struct", "encode_struct", "ThriftError", "T_I16", "T_I32", "T_I64", "T_BINARY",
           "T_LIST", "T_STRUCT"]


