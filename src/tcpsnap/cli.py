"""The ``tcpsnap`` command line."""

from __future__ import annotations

import argparse
import sys

from ._errors import TcpsnapError
from ._version import __version__

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """One line on a bad command line, as Unix tools do; --help has the rest."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tcpsnap",
        description="Record a machine's TCP connection table (IPv4 and IPv6) over time.",
        epilog="Run 'tcpsnap COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tcpsnap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for mod in _command_modules():
        mod.register(sub)
    return parser


def _command_modules():
    # One module per subcommand keeps each command's code (and its imports) apart.
    from . import _cmd_analyse, _cmd_record, _cmd_service, _cmd_show

    return (_cmd_show, _cmd_record, _cmd_analyse, _cmd_service)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # reader went away (tcpsnap show | head): not an error for a Unix tool
        sys.stdout = None  # no flush of the dead pipe at exit
        return 0
    except (TcpsnapError, OSError, ValueError) as e:
        print(f"tcpsnap: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
