"""Argument types and options the subcommands share (imported by the ``_cmd_*`` modules,
never importing ``cli``)."""

from __future__ import annotations

import argparse
from typing import Any

from ._filters import parse_ports, parse_states
from ._units import parse_duration, parse_size
from .filters import Filter, parse_filter

__all__ = ["add_filter_args", "add_filter_arguments", "filter_from_args", "FILTER_HELP", "merged",
           "duration_arg", "positive_duration_arg", "freq_arg", "time_arg",
           "TIME_HELP", "tz_arg", "HelpFormatter"]

#: What --start/--end say they take.
TIME_HELP = ("'2026-11-26 10:00' (UTC unless it has a zone, e.g. +01:00 or Z), 'now-5m', "
             "'@1795000000' (epoch seconds)")


#: What the filter options say they take (every command that selects rows has them).
FILTER_HELP = """\
filters (all given must match; a comma list matches any of its values):
  --state established,listening   ss's states and groups (connected,
                                  synchronized, bucket, big, all);
                                  --sport/--dport/--port 443,8000-8010;
  --src/--dst 10.0.0.0/8,[::1]    addresses or networks (an IPv4 one also
                                  matches IPv4-mapped IPv6 peers);
                                  --pid, --uid, --process NAME;
  --family 4|6; --filter EXPR     an ss expression, e.g. 'dport = :443 or
                                  sport = :443', 'not src 10.0.0.0/8'
"""


def _checked(parse: Any):
    def check(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return check


def _states_arg(text: str) -> frozenset[int]:
    return _checked(parse_states)(text)


def _ports_arg(text: str) -> frozenset[int]:
    return _checked(parse_ports)(text)


def _option_arg(kw: str):
    """A value of --src/--dst/--pid/--uid/--process, checked now (a usage error) and kept
    as text for ``filter_from_args``."""
    def check(text: str) -> str:
        Filter.from_options(**{kw: text})
        return text
    return _checked(check)


def _expression_arg(text: str) -> str:
    _checked(parse_filter)(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("empty filter")
    return text


def add_filter_arguments(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """Every filter option (``FILTER_HELP``), shared by every command that selects rows;
    ``positional``: the ss-style expression may also follow the options, unquoted, as in
    ``ss -tn dport = :443`` (for commands without another trailing argument)."""
    p.add_argument("--state", type=_states_arg, action="append", metavar="STATES",
                   help="keep rows in these states (ss spellings and groups, comma-separated, "
                        "repeatable)")
    p.add_argument("--port", type=_ports_arg, action="append", metavar="PORTS",
                   help="keep rows whose local or remote port is one of these "
                        "(e.g. 22,8000-8010; repeatable)")
    p.add_argument("--sport", type=_ports_arg, action="append", metavar="PORTS",
                   help="keep rows whose local (source) port is one of these")
    p.add_argument("--dport", type=_ports_arg, action="append", metavar="PORTS",
                   help="keep rows whose remote (destination) port is one of these")
    p.add_argument("--src", type=_option_arg("src"), action="append", metavar="ADDRS",
                   help="keep rows whose local address is one of these (address or CIDR, "
                        "v4 or v6, [::1]:22 with a port)")
    p.add_argument("--dst", type=_option_arg("dst"), action="append", metavar="ADDRS",
                   help="keep rows whose remote address is one of these")
    p.add_argument("--pid", type=_option_arg("pid"), action="append", metavar="PIDS",
                   help="keep rows owned by these pids")
    p.add_argument("--process", type=_option_arg("process"), action="append", metavar="NAMES",
                   help="keep rows owned by processes of these names (exact)")
    p.add_argument("--uid", type=_option_arg("uid"), action="append", metavar="UIDS",
                   help="keep rows of sockets owned by these uids")
    p.add_argument("--family", type=int, choices=(4, 6), help="keep IPv4 or IPv6 rows only")
    p.add_argument("--filter", type=_expression_arg, action="append", metavar="EXPR",
                   help="an ss filter expression, e.g. 'dport = :443 or sport = :443'")
    if positional:
        p.add_argument("expression", nargs="*", metavar="FILTER",
                       help="an ss filter expression, as with --filter (e.g. dport = :443)")


#: The name the commands used before the filter language: the same options.
add_filter_args = add_filter_arguments


def filter_from_args(args: argparse.Namespace, *, legacy: bool = True) -> Filter | None:
    """The one ``Filter`` the filter options of ``args`` make (all of them at once), None
    when none is given. ``legacy=False`` leaves out --state/--port/--family (``record``
    keeps those as its own settings). FilterError (a ValueError) for a positional
    expression that does not parse (the options were checked by argparse)."""
    exprs = list(getattr(args, "filter", None) or [])
    pos = getattr(args, "expression", None)
    if pos:
        exprs.append(" ".join(pos))
    opts: dict[str, Any] = {}
    if legacy:
        opts.update(state=merged(args.state), port=merged(args.port), family=args.family)
    for kw in ("sport", "dport"):
        opts[kw] = merged(getattr(args, kw, None))
    for kw in ("src", "dst", "pid", "process", "uid"):
        vals = getattr(args, kw, None)
        opts[kw] = ",".join(vals) if vals else None
    f = Filter.from_options(None, **opts)
    for e in exprs:
        f = f & parse_filter(e)
    return f if f else None


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


def positive_size_arg(text: str) -> int:
    """A size in the one size grammar (``tcpsnap._units.parse_size``: ``100MiB``, ``1G``...),
    more than 0 (``--max-bytes``, ``--max-rss``)."""
    try:
        v = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return v


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
