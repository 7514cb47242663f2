"""The ``tcpsnap`` command line.

Errors: one line on stderr, never a traceback. Exit status 2 for a command line that
cannot work (argparse's errors, :class:`~tcpsnap._errors.UsageError`, a filter expression
that does not parse), 1 for a failure
(tcpsnap's errors, the system's, a file that is not what it should be), 130 for Ctrl-C.
An exception nobody expected (a bug) is one line too, naming ``TCPSNAP_DEBUG=1``, under
which it is raised with its traceback.

The ``tcpsnap`` program (``run``: the console script and ``python -m tcpsnap``) ends through
:func:`exit_process`, never through the interpreter's own teardown: see there why.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from ._cli_args import HelpFormatter
from ._errors import FilterError, TcpsnapError, UsageError
from ._version import __version__

__all__ = ["main", "run", "exit_process", "build_parser", "DEBUG_ENV", "COMMANDS"]

#: Set to 1 for the traceback of an unexpected error.
DEBUG_ENV = "TCPSNAP_DEBUG"


class _Parser(argparse.ArgumentParser):
    """One line on a bad command line, as Unix tools do; --help has the rest."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


#: The module that registers each command: ``tcpsnap plot ...`` imports its own only (the
#: others' imports are start-up time a command does not use; ``--help`` imports them all).
COMMANDS = {"show": "_cmd_show", "record": "_cmd_record", "recover": "_cmd_record", "info": "_cmd_analyse",
            "plot": "_cmd_analyse", "export": "_cmd_analyse", "install-service": "_cmd_service",
            "config": "_cmd_service", "ship": "_cmd_ship", "top": "_cmd_top"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``command`` (a key of :data:`COMMANDS`), one that
    knows that command only."""
    parser = _Parser(
        prog="tcpsnap",
        description="Record a machine's TCP connection table (IPv4 and IPv6) over time.",
        epilog="Run 'tcpsnap COMMAND --help' for a command's options and examples.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tcpsnap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for mod in _command_modules(command):
        mod.register(sub)
    for p in sub.choices.values():
        # every command's help wrapped to the terminal, its examples kept as written
        p.formatter_class = HelpFormatter
    return parser


def _command_modules(command: str | None = None):
    # One module per subcommand keeps each command's code (and its imports) apart.
    import importlib

    names: tuple[str, ...] = ("_cmd_show", "_cmd_record", "_cmd_analyse", "_cmd_service", "_cmd_ship", "_cmd_top")
    if command in COMMANDS:
        names = (COMMANDS[command],)
    return tuple(importlib.import_module(f".{n}", __package__) for n in names)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename is not None and not isinstance(
            e, TcpsnapError):
        text = f"{e.filename}: {e.strerror}"      # not "[Errno 2] No such file...: 'x'"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def _bad_input() -> tuple[type[BaseException], ...]:
    """The exception classes bad input can raise (a file that is not what it should be,
    a value out of range): a failure to report, not a bug."""
    classes: list[type[BaseException]] = [TcpsnapError, OSError, ValueError, ImportError,
                                          EOFError, UnicodeError, OverflowError, MemoryError]
    if "pyarrow" in sys.modules:       # Arrow's errors, from a damaged or foreign file
        import pyarrow as pa

        classes.append(pa.ArrowException)
    return tuple(classes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    prog = f"tcpsnap {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # reader went away (tcpsnap show | head): not an error for a Unix tool
        sys.stdout = None  # no flush of the dead pipe at exit
        return 0
    except (UsageError, FilterError) as e:     # found after parsing, a command line all the same
        print(f"{prog}: error: {_one_line(e)} (see '{prog} --help')", file=sys.stderr)
        return 2
    except Exception as e:   # the one place every error becomes one line
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        if isinstance(e, _bad_input()):
            print(f"tcpsnap: error: {_one_line(e)}", file=sys.stderr)
        else:
            print(f"tcpsnap: internal error: {type(e).__name__}: {_one_line(e)} (a bug; run with "
                  f"{DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The ``tcpsnap`` program: :func:`main` on ``sys.argv``, then :func:`exit_process`
    with its status (what the console script and ``python -m tcpsnap`` call)."""
    try:
        code = main()
    except SystemExit as e:        # argparse's --help, --version and usage errors
        code = _status(e.code)
    exit_process(code)


def _status(code: object) -> int:
    # SystemExit's code as the interpreter maps it: None 0, an int as is, else 1 (printed)
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_process(code: int) -> NoReturn:
    """End the process with status ``code`` the orderly way, without the interpreter's
    teardown. What Python's exit does first is done here, in the same order: wait for the
    threads that are not daemons, run the ``atexit`` handlers (``logging`` flushed,
    ``weakref.finalize`` callbacks, pyarrow's S3 finalizer), flush stdout and stderr; then
    ``os._exit(code)``. What is skipped is the teardown after that: module globals
    cleared, then the C++ static destructors of pyarrow's CPU and IO thread pools. A pool
    thread still winding down a task there (a readahead that outlived its scan, a
    deleter that takes the GIL) is unwound by the finalizing interpreter or joined in a
    destroyed pool: ``terminate called without an active exception``, SIGABRT, a core
    dump from a command that had done its work (apache/arrow#34314), or a hang. Every file
    tcpsnap writes is closed (and fsynced where it promises) before a command returns,
    so nothing is lost by not tearing down.

    stdout gone (``tcpsnap show | head``): as a broken pipe inside a command, quiet, and
    ``code`` stands. Never returns; for the program only (a library caller of
    :func:`main` keeps its process)."""
    import threading

    try:
        me = threading.current_thread()
        for t in threading.enumerate():
            if t is not me and not t.daemon:
                t.join()
        import atexit

        atexit._run_exitfuncs()
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                if f is not None:
                    f.flush()
            except (OSError, ValueError):
                pass     # a reader that went away, a stream closed: nothing more can be said
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
