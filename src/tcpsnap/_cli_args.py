"""Argument types and options the subcommands share (imported by the ``_cmd_*`` modules,
never importing ``cli``)."""

from __future__ import annotations

import argparse

from ._filters import parse_ports, parse_states
from ._units import parse_duration

__all__ = ["add_filter_args", "merged", "duration_arg", "positive_duration_arg", "freq_arg", "time_arg",
           "TIME_HELP", "tz_arg", "HelpFormatter"]

#: What --start/--end say they take.
TIME_HELP = ("'2026-11-26 10:00' (UTC unless it has a zone, e.g. +01:00 or Z), 'now-5m', "
             "'@1795000000' (epoch seconds)")


def _states_arg(text: str) -> frozenset[int]:
    try:
        return parse_states(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ports_arg(text: str) -> frozenset[int]:
    try:
        return parse_ports(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_filter_args(p: argparse.ArgumentParser) -> None:
    """--state / --port / --family, shared by every command that selects rows."""
    p.add_argument("--state", type=_states_arg, action="append", metavar="STATES",
                   help="keep rows in these states (comma-separated, repeatable)")
    p.add_argument("--port", type=_ports_arg, action="append", metavar="PORTS",
                   help="keep rows whose local or remote port is one of these "
                        "(e.g. 22,8000-8010; repeatable)")
    p.add_argument("--family", type=int, choices=(4, 6), help="keep IPv4 or IPv6 rows only")


def merged(values: list[frozenset[int]] | None) -> frozenset[int] | None:
    if not values:
        return None
    out: frozenset[int] = frozenset()
    for v in values:
        out |= v
    return out


def duration_arg(text: str) -> float:
    """A duration in ``_units.parse_duration``'s grammar -> seconds."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_duration_arg(text: str) -> float:
    v = duration_arg(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return v


def freq_arg(text: str) -> str:
    """A bin width in the duration grammar (``15m`` is 15 minutes, as in every other
    option) -> a pandas frequency naming the same time exactly. Pandas' own spellings
    differ (its ``m`` is not minutes), so the text never reaches pandas as given."""
    ns = round(positive_duration_arg(text) * 1e9)
    if ns <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1ns: {text!r}")
    for unit, scale in (("min", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def time_arg(text: str):
    """A time, in the forms and with the zone rule of the Python API's ``start``/``end``
    (``tcpsnap.reading.to_utc``: no zone means UTC) -> a UTC ``pandas.Timestamp``, read
    once (``now`` is the moment the command line is read)."""
    from .reading.dataset import to_utc

    try:
        return to_utc(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (give {TIME_HELP})") from None


def positive_int_arg(text: str) -> int:
    """An integer of at least 1 (``--row-group-rows``)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return v


def tz_arg(text: str) -> str:
    """An IANA time zone name (``Europe/Paris``, ``UTC``), checked against this
    machine's zone database."""
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(text)
    except (ValueError, KeyError):      # ZoneInfoNotFoundError is a KeyError
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text!r} (give an IANA name such as UTC, Europe/Paris or "
            f"America/New_York; see /usr/share/zoneinfo)") from None
    return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs wrapped to the terminal's width (argparse's own rule:
    ``COLUMNS`` or the terminal, minus 2), paragraph by paragraph; indented lines (the
    examples, continuations) are kept as written, so a command stays one line to copy."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out: list[str] = []
        para: list[str] = []
        hang = [indent]

        def flush() -> None:
            if para:
                out.append(textwrap.fill(" ".join(para), width, initial_indent=indent,
                                         subsequent_indent=hang[0]))
                para.clear()
                hang[0] = indent

        for line in text.splitlines():
            lead = len(line) - len(line.lstrip())
            if para and line.strip() and lead >= 4:      # a hanging paragraph's next line
                para.append(line.strip())
                hang[0] = indent + " " * lead
            elif not line.strip() or lead:
                flush()
                out.append(indent + line if line.strip() else "")
            else:
                para.append(line.strip())
        flush()
        return "\n".join(out) + "\n"
