"""``tcpsnap record`` and ``tcpsnap recover``: the recorder on the command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from . import _cli_ops
from ._cli_args import (
    add_filter_args,
    duration_arg,
    filter_from_args,
    merged,
    positive_duration_arg,
    positive_int_arg,
)
from ._config import layer as config_layer
from ._units import human_bytes

EPILOG_RECORD = """\
examples:
  tcpsnap record rec --duration 1m          a minute of snapshots every 100 ms into ./rec
  tcpsnap record /var/lib/tcpsnap --interval 10ms --rotate 1h
  tcpsnap record rec --interval 0           as fast as the kernel answers
  tcpsnap record rec --state established --port 443
  tcpsnap record rec --mode changes         only what changed (+ keyframes, destroyed sockets)
  python3 -c "import pandas; print(pandas.read_parquet('rec'))"

durations: 10ms, 2s, 15m, 1h (also 1h30m, 500us, 0). Without --duration it records
until stopped: Ctrl-C, SIGTERM or SIGHUP (a closed terminal) close the current file
cleanly. SIGUSR1 prints the counters so far on stderr (as dd does) and goes on.
files: DIR/date=YYYY-MM-DD/tcpsnap-<UTC start>.parquet, one every --rotate; the file
in progress is hidden (.*.tmp) until complete. DIR holds one recording: recording
into it with another --mode or other --state/--port/--family is refused (exit 1)
unless --new-dataset, which records into DIR.2 instead. After a crash, the next 'tcpsnap record'
on DIR or 'tcpsnap recover DIR' turns what was captured (all but the last --flush)
into Parquet.
"""

EPILOG_RECOVER = """\
Finishes the files a crashed or killed recorder left in DIR (normally the next
'tcpsnap record DIR' does this by itself). Refuses while a recorder runs on DIR.
Keeps every row a row-group log or journal vouches for. What it cannot vouch for
(a corrupt log entry, a damaged journal frame, data without a log) is never deleted:
it is moved to DIR/_tcpsnap_unrecovered/, each case is printed, and the exit status
is 1. Files that only look like leftovers (links, other users' files) are left alone.
"""


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="errors only; no status line")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log messages (-vv for debug)")


def register(sub) -> None:
    rec = sub.add_parser(
        "record", help="record snapshots into a folder of Parquet files",
        description="Take a snapshot of the TCP table every --interval and write each one, "
                    "timestamped, to Parquet files under DIR (hive partitions by date) that "
                    "pandas.read_parquet(DIR), pyarrow.dataset, DuckDB and polars read.",
        epilog=EPILOG_RECORD, formatter_class=argparse.RawDescriptionHelpFormatter)
    rec.add_argument("dir", metavar="DIR", nargs="?",
                     help="recording folder (created if missing; or 'dir' in --config)")
    rec.add_argument("--config", metavar="FILE",
                     help="take options from this TOML file (one key per option: interval = "
                          "\"10ms\", row-group-rows = 65536...); the command line overrides it; "
                          "check it with 'tcpsnap config --check FILE'")
    rec.add_argument("--interval", type=duration_arg, default=0.1, metavar="DUR",
                     help="time between snapshots; 0 = as fast as possible (default: 100ms)")
    rec.add_argument("--duration", type=duration_arg, default=None, metavar="DUR",
                     help="stop after this long (default: until stopped)")
    rec.add_argument("--rotate", type=positive_duration_arg, default=900.0, metavar="DUR",
                     help="start a new file this often (default: 15m)")
    rec.add_argument("--flush", type=positive_duration_arg, default=1.0, metavar="DUR",
                     help="a crash loses at most this much (default: 1s)")
    rec.add_argument("--compression", default="zstd",
                     choices=("zstd", "lz4", "snappy", "gzip", "brotli", "none"),
                     help="Parquet compression (default: zstd)")
    rec.add_argument("--compression-level", type=int, default=None, metavar="N",
                     help="codec level (default: the codec's default)")
    rec.add_argument("--no-pids", action="store_true",
                     help="do not look up owning pids / process names")
    rec.add_argument("--row-group-rows", type=positive_int_arg, default=1 << 20, metavar="N",
                     help="rows per Parquet row group (default: 1048576)")
    rec.add_argument("--compat", action="store_true",
                     help="only dictionary/plain Parquet encodings, for old readers "
                          "(pyarrow < 16, Spark 3); larger files")
    rec.add_argument("--nice", type=int, default=-10, metavar="N",
                     help="nice value of the capture thread while it keeps a schedule "
                          "(default: -10 where permitted, so snapshots start on time on a "
                          "busy machine; 0 to leave it)")
    rec.add_argument("--mode", choices=("full", "changes"), default="full",
                     help="full: every row of every snapshot (default); changes: only what "
                          "changed, a keyframe every --keyframe, and (Linux, CAP_NET_ADMIN) "
                          "every socket the kernel destroys, also between snapshots; "
                          "tcpsnap.read rebuilds every snapshot exactly")
    rec.add_argument("--keyframe", type=positive_duration_arg, default=60.0, metavar="DUR",
                     help="--mode changes: a full snapshot this often (default: 1m)")
    rec.add_argument("--no-destroy-feed", action="store_true",
                     help="--mode changes: do not subscribe to socket-destroy notifications")
    rec.add_argument("--new-dataset", action="store_true",
                     help="when DIR holds another recording (another --mode, --state/--port/"
                          "--family, or a newer tcpsnap's files), record into DIR.2 (or the first "
                          "DIR.N that is new or holds this same recording) instead of refusing; "
                          "nothing is moved")
    rec.add_argument("--fsync", action="store_true",
                     help="fsync at every flush too (survive power loss, not just a crash)")
    rec.add_argument("--all-netns", action="store_true",
                     help="every network namespace of the machine (containers...), not just "
                          "this process's; needs CAP_SYS_ADMIN and CAP_SYS_PTRACE (root)")
    rec.add_argument("--netns", metavar="NAME|PATH|PID", default=None,
                     help="one other network namespace, as 'ss -N' takes it: a name under "
                          "/run/netns, a path, or a process's pid")
    add_filter_args(rec)
    _cli_ops.add_args(rec)
    _add_verbosity(rec)
    # last, after every option: each one above is a key of the --config file
    config_layer(rec)
    rec.set_defaults(func=cmd_record)

    rcv = sub.add_parser(
        "recover", help="finish the files an interrupted recorder left behind",
        description="Turn what a killed or crashed 'tcpsnap record' captured into Parquet.",
        epilog=EPILOG_RECOVER, formatter_class=argparse.RawDescriptionHelpFormatter)
    rcv.add_argument("dir", metavar="DIR", help="recording folder")
    _add_verbosity(rcv)
    rcv.set_defaults(func=cmd_recover)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"tcpsnap: {record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(args: argparse.Namespace, status: _Status | None = None) -> None:
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    root = logging.getLogger("tcpsnap")
    for h in list(root.handlers):
        if getattr(h, "_tcpsnap_cli", False):
            root.removeHandler(h)
    h = _StatusAwareHandler(status)
    h._tcpsnap_cli = True  # type: ignore[attr-defined]
    h.setFormatter(_cli_ops.JournalFormatter() if _cli_ops.to_journal() else _Formatter())
    root.addHandler(h)
    root.setLevel(level)
    root.propagate = False


class _StatusAwareHandler(logging.StreamHandler):
    """Log lines go above the status line instead of through it."""

    def __init__(self, status: _Status | None) -> None:
        super().__init__(sys.stderr)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        st = self.status
        if st is not None:
            with st.lock:
                st.clear()
                super().emit(record)
                st.draw()
        else:
            super().emit(record)


def _stats_line(rec, rate: float | None = None) -> str:
    """elapsed, snapshots, rows/s (over the run if no ``rate``), overruns, bytes, file."""
    if rate is None:
        rate = rec.rows / rec.elapsed if rec.elapsed > 0 else 0.0
    cur = rec.current_file
    cur_s = f"{cur.parent.name}/{cur.name}" if cur is not None else "-"
    return (f"{rec.elapsed:7.1f}s  {rec.snapshots:,} snapshots  {rate:,.0f} rows/s  "
            f"{rec.overruns:,} overruns  {human_bytes(rec.bytes_written)}  {cur_s}")


class _Status:
    """The live status line on a terminal (stderr), redrawn twice a second."""

    def __init__(self, rec) -> None:
        self.rec = rec
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.line = ""
        self._prev = (time.monotonic(), 0)
        self.thread = threading.Thread(target=self._loop, name="tcpsnap-status", daemon=True)
        self.hung_up = False

    def start(self) -> None:
        self.thread.start()

    def text(self) -> str:
        now = time.monotonic()
        t0, r0 = self._prev
        rows = self.rec.rows
        rate = (rows - r0) / (now - t0) if now > t0 else 0.0
        self._prev = (now, rows)
        return _stats_line(self.rec, rate)

    def hangup(self) -> None:
        """The terminal is gone (SIGHUP): stop drawing, without waiting for a lock (this
        runs in a signal handler)."""
        self.hung_up = True
        self.line = ""
        self.stopped.set()

    def clear(self) -> None:
        if self.line and not self.hung_up:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    def draw(self) -> None:
        if self.line and not self.hung_up:
            sys.stderr.write(self.line)
            sys.stderr.flush()

    def _loop(self) -> None:
        while not self.stopped.wait(0.5):
            with self.lock:
                self.clear()
                self.line = self.text()
                self.draw()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        with self.lock:
            self.clear()
            self.line = ""


def cmd_record(args: argparse.Namespace) -> int:
    from ._config import ConfigError, resolve
    from .record import Recorder

    try:  # each option from the command line, else from --config, else its default
        args = resolve(args)
    except ConfigError as e:
        for p in e.problems:
            print(f"tcpsnap: error: {p}", file=sys.stderr)
        return 1
    if args.all_netns and args.netns is not None:
        print("tcpsnap: error: --all-netns and --netns exclude each other", file=sys.stderr)
        return 2
    if args.all_netns or args.netns is not None:
        from .netns import check_capabilities, namespace_path

        # before the folder is touched: NamespaceError, one line naming what is missing
        check_capabilities(args.all_netns)
        if args.netns is not None:
            namespace_path(args.netns)
    _setup_logging(args)
    _cli_ops.check(args)
    rec = Recorder(
        args.dir, interval=args.interval, rotate=args.rotate, flush=args.flush,
        compression=args.compression, compression_level=args.compression_level,
        pids=False if args.no_pids else None, states=merged(args.state), ports=merged(args.port),
        family=args.family, row_group_rows=args.row_group_rows, compat=args.compat,
        fsync=args.fsync, nice=args.nice if args.nice != 0 else None,
        mode=args.mode, keyframe=args.keyframe, destroy=False if args.no_destroy_feed else None,
        new_dataset=args.new_dataset, netns="all" if args.all_netns else args.netns,
        filter=filter_from_args(args, legacy=False),
        **_cli_ops.recorder_kwargs(args))

    signals = {"n": 0}
    status: _Status | None = None

    def on_signal(signum, frame):
        if signum == signal.SIGHUP and status is not None:
            status.hangup()  # the terminal is gone: draw nothing more on it
        signals["n"] += 1
        if signals["n"] > 1:  # a second Ctrl-C: stop waiting; files are left for recovery
            raise KeyboardInterrupt
        rec.stop()

    def on_usr1(signum, frame):
        # as dd does: the progress line on stderr, whatever the verbosity
        line = _stats_line(rec) + "\n"
        if status is not None and status.line:
            line = "\r\x1b[K" + line + status.line
        with contextlib.suppress(OSError):
            os.write(2, line.encode())

    # SIGHUP (a closed terminal, a dropped ssh session) ends a recording as cleanly as
    # SIGTERM and Ctrl-C; SIGUSR1 prints the counters and goes on
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_usr1)
    exporter = None
    try:
        rec.open()
        exporter = _cli_ops.start(args, rec)
        log = logging.getLogger("tcpsnap.recorder")
        log.info("recording %s every %s%s into %s", "the TCP table",
                 f"{args.interval:g}s" if args.interval else "moment (--interval 0)",
                 f" for {args.duration:g}s" if args.duration is not None else "", rec.path)
        if not args.quiet and sys.stderr.isatty():
            status = _Status(rec)
            _setup_logging(args, status)
            status.start()
        try:
            rec.run(duration=args.duration)
        finally:
            if status is not None:
                status.stop()
                _setup_logging(args)
            t0 = time.monotonic()
            rec.close()
            logging.getLogger("tcpsnap.recorder").debug("closed in %.3f s", time.monotonic() - t0)
    finally:
        _cli_ops.stop(exporter)
        for s, h in old.items():
            signal.signal(s, h)
    st = rec.stats
    msg = (f"recorded {st['snapshots']:,} snapshots ({st['rows']:,} rows, "
           f"{human_bytes(st['bytes_written'])}) into {len(st['files'])} file(s) in {rec.path}; "
           f"{st['overruns']:,} overruns")
    if not args.quiet and sys.stderr.isatty() and not (status is not None and status.hung_up):
        with contextlib.suppress(OSError):  # a terminal that went away meanwhile
            print(msg, file=sys.stderr)
    else:
        logging.getLogger("tcpsnap.recorder").info(msg)
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from .record import recover

    _setup_logging(args)
    logging.getLogger("tcpsnap.recorder").setLevel(logging.CRITICAL)  # said once, below
    results = recover(args.dir)
    done = [r for r in results if r.path is not None]
    bad = [r for r in results if not r.ok]
    if not args.quiet:
        if not done and not bad:
            print(f"nothing to recover in {args.dir}", file=sys.stderr)
        for r in done:
            print(f"recovered {r.path}: {r.rows:,} rows ({r.from_journal:,} from the journal"
                  f"{', torn tail dropped' if r.torn else ''})", file=sys.stderr)
    for r in bad:  # even with -q: what could not be recovered is never silent
        for p in r.problems:
            print(f"tcpsnap: error: {p}", file=sys.stderr)
        for k in r.kept:
            print(f"tcpsnap: kept for inspection: {k}", file=sys.stderr)
    return 1 if bad else 0


def record_layer() -> Any:
    """The keys a config file may hold: the options of ``tcpsnap record`` (a
    ``tcpsnap._config.Layer``)."""
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    register(sub)
    return sub.choices["record"].get_default("_config_layer")
