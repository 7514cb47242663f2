"""Argument types and options the subcommands share (imported by the ``_cmd_*`` modules,
never importing ``cli``)."""

from __future__ import annotations

import argparse

from ._filters import parse_ports, parse_states
from ._units import parse_duration

__all__ = ["add_filter_args", "merged", "duration_arg", "positive_duration_arg", "freq_arg", "time_arg",
           "TIME_HELP"]

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
