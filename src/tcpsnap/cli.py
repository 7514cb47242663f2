"""The ``tcpsnap`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from ._errors import TcpsnapError
from ._filters import parse_ports, parse_states

__all__ = ["main", "build_parser"]

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
    from . import _cmd_analyse, _cmd_record, _cmd_show

    return (_cmd_show, _cmd_record, _cmd_analyse)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # reader went away (tcpsnap show | head): not an error for a Unix tool
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return 0
    except (TcpsnapError, OSError, ValueError) as e:
        print(f"tcpsnap: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
