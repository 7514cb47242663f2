"""``tcpsnap config``: check a ``record --config`` file, or show its effective settings."""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from ._config import DEFAULT_PATH

EPILOG_CONFIG = f"""\
The file: one key per 'tcpsnap record' option, spelled as the option without its leading
dashes (--row-group-rows is row-group-rows, DIR is dir), for example:
  dir = "/var/lib/tcpsnap"
  interval = "10ms"
  rotate = "1h"
  state = ["established", "listen"]
  port = "443,8000-8010"
  no-pids = true
Values are checked by the same parsers as the command line, whose options override the
file. A relative dir is relative to the file's folder.

exit status: 0 the file is good; 1 something is wrong with it (each problem is printed,
one line each, FILE:LINE: ...); 2 a bad command line. 'tcpsnap record --config FILE'
exits 1 for a bad file too. FILE defaults to {DEFAULT_PATH}.
"""


def register(sub) -> None:
    cfg = sub.add_parser(
        "config", help="check a 'record --config' file, or show its effective settings",
        description="Check a tcpsnap.toml (the settings of 'tcpsnap record --config FILE') "
                    "or print the settings the recorder would run with.",
        epilog=EPILOG_CONFIG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = cfg.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", nargs="?", const=DEFAULT_PATH, metavar="FILE",
                      help="print what is wrong, line by line; 'ok' if nothing is")
    what.add_argument("--show", nargs="?", const=DEFAULT_PATH, metavar="FILE",
                      help="print every setting, from the file or the default")
    cfg.set_defaults(func=cmd_config)


# -- tcpsnap config ----------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    from ._config import ConfigError, check, load, show

    if args.check is not None:
        problems = check(args.check)
        for p in problems:  # the findings are the output, as a linter's
            print(p)
        if problems:
            return 1
        if "dir" not in load(args.check).values:
            print(f"tcpsnap: note: {args.check} sets no dir: 'tcpsnap record --config "
                  f"{args.check}' needs DIR on its command line", file=sys.stderr)
        print(f"{args.check}: ok")
        return 0
    try:
        text = show(args.show)
    except ConfigError as e:
        for p in e.problems:
            print(f"tcpsnap: error: {p}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def default_config_text() -> str:
    return resources.files("tcpsnap").joinpath("data", "tcpsnap.toml").read_text(encoding="utf-8")
