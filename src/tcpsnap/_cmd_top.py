"""``tcpsnap top``: the TCP table live in the terminal (a TCPView), or a recording replayed."""

from __future__ import annotations

import argparse
import sys

from ._cli_args import FILTER_HELP, add_filter_arguments, filter_from_args, positive_duration_arg, time_arg
from ._errors import UsageError

EPILOG_TOP = """\
examples:
  tcpsnap top                           the live table, refreshed every second
  tcpsnap top --interval 250ms dport = :443
  tcpsnap top --record /var/lib/tcpsnap/now    watch and record what is shown
  tcpsnap top --replay /var/lib/tcpsnap/web --at '2026-11-29 03:12'

keys: q quit, space pause, / filter (as 'show' takes it), s sort by the next column,
r reverse, o stable order on/off (on: rows keep their place), g group by process;
replay: left/right (b/n) one snapshot back/on, home/end, t jump to a time.
Rows: green (+) opened, yellow (~) changed, red (-) closed since the last refresh.

""" + FILTER_HELP


def register(sub) -> None:
    top = sub.add_parser(
        "top", help="the TCP table live in the terminal (or a recording replayed)",
        description="Show the TCP table live, like TCPView: new rows green, changed rows "
                    "yellow, closed rows red for one refresh; or replay a recording snapshot "
                    "by snapshot. Needs the tui extra: pip install 'tcpsnap[tui]'.",
        epilog=EPILOG_TOP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_filter_arguments(top, positional=True)
    top.add_argument("--interval", type=positive_duration_arg, default=1.0, metavar="DURATION",
                     help="time between refreshes (default: 1s)")
    top.add_argument("--no-pids", action="store_true",
                     help="do not look up owning processes (pid 0, no process name)")
    top.add_argument("--all-netns", action="store_true",
                     help="every network namespace (a Netns column when more than one); needs "
                          "CAP_SYS_ADMIN and CAP_SYS_PTRACE (root)")
    top.add_argument("--netns", metavar="NAME|PATH|PID", default=None,
                     help="this network namespace instead of ours: a name under /run/netns, a path, a pid")
    top.add_argument("--replay", metavar="DIR", help="show a recording instead of the live table")
    top.add_argument("--at", type=time_arg, metavar="TIME",
                     help="with --replay: start at the last snapshot at or before TIME (default: the last)")
    top.add_argument("--record", metavar="DIR",
                     help="record what is shown into DIR (a normal full recording)")
    top.set_defaults(func=cmd_top)


def cmd_top(args: argparse.Namespace) -> int:
    where = filter_from_args(args)
    if where is not None and where.needs_pids and args.no_pids:
        raise UsageError("--pid/--process filters need pids: drop --no-pids")
    if args.at is not None and args.replay is None:
        raise UsageError("--at needs --replay DIR")
    if args.replay is not None and args.record is not None:
        raise UsageError("--record records the live table: it cannot go with --replay")
    if args.all_netns and args.netns is not None:
        raise UsageError("--all-netns and --netns exclude each other")
    if args.replay is not None and (args.all_netns or args.netns is not None):
        raise UsageError("--all-netns/--netns choose what is captured: they cannot go with --replay")
    if args.all_netns or args.netns is not None:
        from .netns import check_capabilities, namespace_path

        # before the terminal is taken: NamespaceError, one line naming what is missing
        check_capabilities(args.all_netns)
        if args.netns is not None:
            namespace_path(args.netns)
    try:
        from .top.app import TopApp
    except ImportError as e:
        if getattr(e, "name", "") and str(e.name).split(".")[0] in ("textual", "rich"):
            print("tcpsnap: error: top needs textual: pip install 'tcpsnap[tui]'", file=sys.stderr)
            return 1
        raise
    from .top.sources import LiveSource, ReplaySource

    if args.replay is not None:
        try:
            src = ReplaySource(args.replay, filter=where)
            at = src.index_at(args.at) if args.at is not None else None
        except LookupError as e:            # no snapshot there: a failure to say, not a bug
            print(f"tcpsnap: error: {e}", file=sys.stderr)
            return 1
        app = TopApp(src, replay=True, at=at)
    else:
        live = LiveSource(args.interval, filter=where, record=args.record, pids=not args.no_pids,
                          netns="all" if args.all_netns else args.netns)
        app = TopApp(live)
    app.run()
    if app.error is not None:             # the capture thread's or the view's: cli.main's one line
        raise app.error
    # Textual printed what went wrong in the view itself (a bug): say so in the status too
    return 1 if app.return_code else 0
