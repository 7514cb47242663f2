"""One grammar for durations and one unit system for sizes, shared by the API and the CLI.

Durations: ``"10ms"``, ``"2s"``, ``"15m"`` (minutes), ``"1h30m"``, ``"1d"``, ``"0"`` or a
plain number of seconds. Units are lowercase, and ``m`` is always minutes, never months: a
capital (``1M``, ``10MS``, ``1H``) is refused with a message naming the lowercase spelling,
because ``M`` is a month to pandas and ISO 8601 and a minute to others. Every option that
takes a duration or a frequency (``--interval``, ``--rotate``, ``--flush``, ``--keyframe``,
``--duration``, ``--keep``, ``--tcp-info-every``, ``plot --freq``) goes through :func:`parse_duration`.

Sizes: shown in IEC binary units (B, KiB, MiB, GiB, TiB), so one file has one size in every
command. Read by :func:`parse_size` (``--max-bytes``): ``"5GiB"``, ``"500MiB"``, ``"1.5G"``, or a
plain number of bytes. As in GNU coreutils, ``K``/``M``/``G``/``T`` and ``KiB``... are powers of
1024 and ``KB``/``MB``/``GB``/``TB`` powers of 1000; case does not matter (every unit is bytes).
"""

from __future__ import annotations

import re

__all__ = ["parse_duration", "format_duration", "human_bytes", "parse_size"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0,
          "h": 3600.0, "d": 86400.0}
_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|min|s|m|h|d)?")


def parse_duration(value: object) -> float:
    """A duration -> seconds (float, >= 0).

    Accepts a non-negative int or float (seconds) or a string of one or more
    ``<number><unit>`` parts (units ns, us, µs, ms, s, m/min, h, d, lowercase; a lone
    number is seconds). Raises ``ValueError`` with a one-line message otherwise (for a
    capital unit, one that names the lowercase spelling and what it means).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0 or value != value:
            raise ValueError(f"bad duration {value!r}: must be >= 0")
        return float(value)
    text = str(value).strip()
    if text != text.lower():
        try:
            meaning = _say(_parse(text.lower()))
        except ValueError:
            meaning = None
        if meaning is not None:
            raise ValueError(f"bad duration {value!r}: units are lowercase: {text.lower()!r} is {meaning} "
                             f"(capitals are refused: M is a month to pandas, a minute to others)")
        raise ValueError(f"bad duration {value!r}: expected e.g. 10ms, 2s, 15m, 1h or 0 (lowercase units)")
    return _parse(text)


def _say(seconds: float) -> str:
    """``90.0`` -> ``"1.5 minutes"``: a duration in words, for messages."""
    for name, scale in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0),
                        ("millisecond", 1e-3), ("microsecond", 1e-6)):
        if seconds >= scale:
            n = round(seconds / scale, 6)
            return f"{n:g} {name}{'' if n == 1 else 's'}"
    n = round(seconds * 1e9, 3)
    return f"{n:g} nanosecond{'' if n == 1 else 's'}"


def _parse(value: str) -> float:
    text = value
    pos = 0
    total = 0.0
    parts = 0
    while pos < len(text):
        m = _DUR_RE.match(text, pos)
        if not m or m.end() == pos:
            break
        num, unit = m.groups()
        if unit is None and (parts or m.end() != len(text)):
            break
        total += float(num) * _UNITS[unit or "s"]
        parts += 1
        pos = m.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    if not parts or pos != len(text):
        raise ValueError(f"bad duration {value!r}: expected e.g. 10ms, 2s, 15m, 1h or 0")
    return total


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest exact spelling in :func:`parse_duration`'s grammar."""
    ns = round(seconds * 1e9)
    for unit, scale in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6),
                        ("us", 10**3)):
        if ns and ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def human_bytes(n: float) -> str:
    """A byte count in IEC units: ``"512 B"``, ``"7.4 KiB"``, ``"1.2 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
               "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
               "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")


def parse_size(value: object) -> int:
    """A size -> bytes (int, >= 0).

    Accepts a non-negative int (bytes) or a string ``<number>[unit]``: units B, K/KiB,
    M/MiB, G/GiB, T/TiB (powers of 1024) and KB, MB, GB, TB (powers of 1000), any case;
    a fraction is rounded to whole bytes (``"1.5KiB"`` is 1536). Raises ``ValueError``
    with a one-line message otherwise.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"bad size {value!r}: must be >= 0")
        return value
    m = _SIZE_RE.fullmatch(str(value).strip().lower())
    if not m or m.group(2) not in _SIZE_UNITS:
        raise ValueError(f"bad size {value!r}: expected e.g. 5GiB, 500MiB, 2G, 10GB or a "
                         f"number of bytes")
    num, unit = m.groups()
    scale = _SIZE_UNITS[unit]
    if "." not in num:
        return int(num) * scale
    from fractions import Fraction

    return round(Fraction(num) * scale)  # exact: "1.1GB" is 1,100,000,000 bytes
