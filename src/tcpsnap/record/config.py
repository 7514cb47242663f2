"""A recorder's settings, checked once, and the file metadata they become."""

from __future__ import annotations

import json
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._filters import parse_ports, parse_states
from .._units import format_duration, parse_duration, parse_size
from ..filters import Filter, parse_filter

__all__ = ["RecorderConfig", "canonical_filters", "describe_filters", "recording_filter"]

_COMPRESSIONS = (None, "none", "zstd", "snappy", "gzip", "lz4", "brotli")


def _int_set(value: Any, parse: Any) -> frozenset[int] | None:
    """A filter option (a string, or an iterable of names/numbers) as numbers, or None."""
    if value is None or (not isinstance(value, str) and not value):
        return None
    return parse(value) or None


def _ranges(values: list[int]) -> list:
    """[1, 2, 3, 7] -> [[1, 3], 7]: port filters as written in the metadata."""
    out: list = []
    for v in values:
        if out and isinstance(out[-1], list) and out[-1][1] == v - 1:
            out[-1][1] = v
        elif out and isinstance(out[-1], int) and out[-1] == v - 1:
            out[-1] = [out[-1], v]
        else:
            out.append(v)
    return out


def canonical_filters(value: Any) -> str:
    """A file's ``tcpsnap.filters`` (JSON text or bytes; None: no such key, as no filter)
    in one spelling, so two files' filter sets compare as strings. Text that is not a
    JSON object is kept as it is (and so differs from every real filter set)."""
    if value is None:
        return "{}"
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if not isinstance(obj, dict):
        return text
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def describe_filters(value: Any) -> str:
    """A filter set (``canonical_filters``' text) as the ``record`` options that make it:
    ``"--state listen --port 22,8000-8010"``, or ``"no filters"``."""
    text = canonical_filters(value)
    try:
        obj = json.loads(text)
    except ValueError:
        return f"filters {text!r}"
    if not isinstance(obj, dict) or not obj:
        return "no filters" if obj == {} else f"filters {text!r}"
    from .._schema import TcpState

    parts = []
    try:
        if "states" in obj:
            parts.append("--state " + ",".join(TcpState(int(v)).name.lower() for v in obj["states"]))
        if "ports" in obj:
            parts.append("--port " + ",".join(f"{v[0]}-{v[1]}" if isinstance(v, list) else str(v)
                                              for v in obj["ports"]))
        if "family" in obj:
            parts.append(f"--family {int(obj['family'])}")
        if "where" in obj:
            parts.append(f"--filter {str(obj['where'])!r}")
    except (TypeError, ValueError, IndexError):
        return f"filters {text!r}"
    other = sorted(set(obj) - {"states", "ports", "family", "where"})
    if other:
        parts.append(f"filters {text!r}")
    return " ".join(parts)


def recording_filter(value: Any) -> Filter | None:
    """A file's ``tcpsnap.filters`` (``canonical_filters``' text) as the one ``Filter`` its
    rows were kept by, None for none (or a filter set this version cannot read)."""
    try:
        obj = json.loads(canonical_filters(value))
        f = Filter.from_options(state=frozenset(obj["states"]) if obj.get("states") else None,
                                port=frozenset(p for v in obj.get("ports", ())
                                               for p in (range(v[0], v[1] + 1) if isinstance(v, list) else (v,)))
                                or None,
                                family=obj.get("family"))
        if obj.get("where"):
            f = f & parse_filter(obj["where"])
    except (ValueError, TypeError, AttributeError, KeyError):
        return None
    return f if f else None


@dataclass
class RecorderConfig:
    """Every ``Recorder`` option after validation (durations in seconds); see
    :class:`tcpsnap.Recorder` for their meaning. Raises ``ValueError`` for a bad one."""

    path: Path
    interval: float
    rotate: float
    flush: float
    compression: str | None
    compression_level: int | None
    pids: bool | None
    states: frozenset[int] | None
    ports: frozenset[int] | None
    family: int | None
    row_group_rows: int
    compat: bool
    fsync: bool
    recover: bool
    nice: int | None
    mode: str
    keyframe: float
    destroy: bool | None
    batch_rows: int
    buffers: int
    new_dataset: bool = False
    where: Filter | None = None
    max_rss: int | None = None
    netns: str | None = None
    tcp_info: bool = False
    tcp_info_every: float = 0.0

    @classmethod
    def make(cls, path: Any, *, interval: Any = "100ms", rotate: Any = "15m", flush: Any = "1s",
             compression: str | None = "zstd", compression_level: int | None = None,
             pids: bool | None = None, states: Any = None, ports: Any = None,
             family: int | None = None, row_group_rows: int = 1 << 20, compat: bool = False,
             fsync: bool = False, recover: bool = True, nice: int | None = -10,
             mode: str = "full", keyframe: Any = "1m", destroy: bool | None = None,
             batch_rows: int = 1 << 14, buffers: int = 24, new_dataset: bool = False,
             filter: Any = None, max_rss: Any = None,
             netns: str | int | None = None, tcp_info: bool = False,
             tcp_info_every: Any = None) -> RecorderConfig:
        rotate_s, flush_s = parse_duration(rotate), parse_duration(flush)
        if rotate_s <= 0:
            raise ValueError("rotate must be > 0")
        if flush_s <= 0:
            raise ValueError("flush must be > 0")
        if compression not in _COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}")
        if family not in (None, 4, 6):
            raise ValueError(f"family must be 4 or 6, got {family!r}")
        if row_group_rows < 1:
            raise ValueError("row_group_rows must be >= 1")
        if mode not in ("full", "changes"):
            raise ValueError(f"mode must be 'full' or 'changes', got {mode!r}")
        where = parse_filter(filter) if filter is not None else None
        if where is not None and where.needs_pids and pids is False:
            raise ValueError(f"filter {str(where)!r} tests pids or process names: it needs pids")
        every = 0.0 if tcp_info_every is None else parse_duration(tcp_info_every)
        if every and not tcp_info:
            raise ValueError("tcp_info_every (--tcp-info-every) needs tcp_info (--tcp-info)")
        rss = None if max_rss is None else parse_size(max_rss)
        if rss is not None and rss <= 0:
            raise ValueError(f"max_rss must be more than 0, got {max_rss!r}")
        return cls(Path(path), parse_duration(interval), rotate_s, flush_s,
                   None if compression == "none" else compression, compression_level, pids,
                   _int_set(states, parse_states), _int_set(ports, parse_ports), family,
                   int(row_group_rows), bool(compat), bool(fsync), bool(recover), nice, mode,
                   parse_duration(keyframe), destroy, int(batch_rows), max(2, int(buffers)),
                   bool(new_dataset), where if where else None, rss,
                   None if netns is None else str(netns), bool(tcp_info), every)

    @staticmethod
    def ns(seconds: float) -> int:
        return int(round(seconds * 1e9))

    def filters(self) -> dict[str, Any]:
        """The row filters, as ``tcpsnap.filters`` holds them (JSON)."""
        filters: dict[str, Any] = {}
        if self.states:
            filters["states"] = sorted(self.states)
        if self.ports:
            filters["ports"] = _ranges(sorted(self.ports))
        if self.family:
            filters["family"] = self.family
        if self.where is not None:
            filters["where"] = str(self.where)     # tcpsnap.filters' canonical spelling
        return filters

    def capture_filter(self) -> Filter | None:
        """The filter the snapshotter (the kernel, then its mask) applies: ``row_filter``,
        but in changes mode without what a connection can leave while it lives (state,
        pid, uid, process): those are applied with the tracker (a connection the filter
        selected is followed until it closes); ports and addresses never change."""
        f = self.row_filter()
        if f is None or self.mode != "changes":
            return f
        from ..filters import kernel_safe

        return kernel_safe(f)

    def row_filter(self) -> Filter | None:
        """Every row filter of this recording as one ``Filter`` (``states``, ``ports``,
        ``family`` and ``filter``), None without any: what the snapshots keep."""
        f = Filter.from_options(state=self.states, port=self.ports, family=self.family)
        if self.where is not None:
            f = f & self.where
        return f if f else None

    def metadata(self, pids_enabled: bool, destroy_feed: bool | None) -> dict[str, str]:
        """Key-value metadata of every file: how and where it was recorded.
        ``destroy_feed`` is None in full mode."""
        from .._arrow import SCHEMA_VERSION
        from .._backend import BACKEND
        from .._host import boot_id
        from .._version import __version__

        filters = self.filters()
        return {
            "tcpsnap.version": __version__,
            "tcpsnap.host": socket.gethostname(),
            "tcpsnap.os": platform.system(),
            "tcpsnap.kernel": platform.release(),
            "tcpsnap.platform": platform.platform(),
            "tcpsnap.backend": BACKEND,
            "tcpsnap.interval": format_duration(self.interval),
            "tcpsnap.interval_ns": str(self.ns(self.interval)),
            "tcpsnap.rotate": format_duration(self.rotate),
            "tcpsnap.flush": format_duration(self.flush),
            "tcpsnap.pids": "true" if pids_enabled else "false",
            # which network namespaces: "own" (this process's, as ss), "all", or the one named
            "tcpsnap.netns": self.netns or "own",
            "tcpsnap.filters": json.dumps(filters),
            "tcpsnap.compression": self.compression or "none",
            "tcpsnap.compression_level": ("default" if self.compression_level is None
                                          else str(self.compression_level)),
            "tcpsnap.encoding": "compat" if self.compat else "compact",
            "tcpsnap.run": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tcpsnap.mode": self.mode,
            "tcpsnap.schema_version": str(SCHEMA_VERSION),
            "tcpsnap.boot_id": boot_id(),
            # internals columns (--tcp-info): "true" or "false"; sampled every snapshot
            # ("0") or at most that often; the lengths seen are added when a file closes
            "tcpsnap.tcp_info": "true" if self.tcp_info else "false",
            **({"tcpsnap.tcp_info_every": format_duration(self.tcp_info_every)} if self.tcp_info else {}),
            **({"tcpsnap.keyframe": format_duration(self.keyframe),
                "tcpsnap.destroy_feed": "true" if destroy_feed else "false"}
               if destroy_feed is not None else {}),
        }
