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
    positive_size_arg,
)
from ._cmd_ship import add_ship_args, make_target
from ._config import layer as config_layer
from ._errors import ShipError
from ._units import format_duration, human_bytes

EPILOG_RECORD = """\
examples:
  tcpsnap record rec --duration 1m          a minute, a snapshot every 100 ms
  tcpsnap record /var/lib/tcpsnap --interval 10ms --rotate 1h
  tcpsnap record rec --interval 0           as fast as the kernel answers
  tcpsnap record rec --state established --port 443
  tcpsnap record rec --mode changes         only what changed (+ keyframes)
  python3 -c "import pandas; print(pandas.read_parquet('rec'))"


durations: 10ms, 2s, 15m (minutes), 1h (also 1h30m, 500us, 0); units are lowercase
(1M and 10MS are refused: M is a month to pandas). Without --duration it records
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
examples:
  tcpsnap recover rec                  finish what a killed recorder left
  tcpsnap recover /var/lib/tcpsnap -q  say only what could not be recovered
  ls rec/_tcpsnap_unrecovered/         what recovery kept aside (exit status 1)

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
    rec.add_argument("--max-rss", type=positive_size_arg, default=None, metavar="SIZE",
                     help="memory limit (e.g. 100MiB; default: the cgroup's memory.max, "
                          "systemd's MemoryMax=): near it the recorder uses smaller row groups "
                          "and flushes earlier, and says once that --mode changes needs less; "
                          "it never stops for memory")
    rec.add_argument("--no-page-out", action="store_true",
                     help="keep the library pages start-up touched resident (by default they are "
                          "paged out once the recorder is open: ~20 MiB less peak RSS; also "
                          "TCPSNAP_NO_PAGE_OUT=1)")
    rec.add_argument("--fsync", action="store_true",
                     help="fsync at every flush too (survive power loss, not just a crash)")
    rec.add_argument("--all-netns", action="store_true",
                     help="every network namespace of the machine (containers...), not just "
                          "this process's; needs CAP_SYS_ADMIN and CAP_SYS_PTRACE (root)")
    rec.add_argument("--netns", metavar="NAME|PATH|PID", default=None,
                     help="one other network namespace, as 'ss -N' takes it: a name under "
                          "/run/netns, a path, or a process's pid")
    rec.add_argument("--tcp-info", action="store_true",
                     help="also record each connection's internals, as 'ss -ti' shows them (Linux: "
                          "rtt, retransmits, bytes, cwnd...; columns after boot_id, null where the "
                          "kernel sends none); full mode")
    rec.add_argument("--tcp-info-every", type=positive_duration_arg, default=None, metavar="DUR",
                     help="--tcp-info: sample the internals at most this often (default: every "
                          "snapshot); rows of the snapshots between have them null")
    add_filter_args(rec)
    _cli_ops.add_args(rec)
    rec.add_argument("--ship", metavar="URL", default=None,
                     help="also ship each finished file to s3://BUCKET/PREFIX, in a thread of "
                          "its own below the capture's priority (see 'tcpsnap ship --help')")
    add_ship_args(rec, record=True)
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


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _stats_line(rec, rate: float | None = None) -> str:
    """elapsed, snapshots, rows/s (over the run if no ``rate``), overruns, bytes on disk
    (finished files, the open file's row groups and its journal), files. The file in
    progress is not named: its name exists only once it is finished."""
    if rate is None:
        rate = rec.rows / rec.elapsed if rec.elapsed > 0 else 0.0
    done = len(rec.files)
    files = _plural(done, "file") + (" + 1 open" if rec.current_file is not None else "")
    return (f"{rec.elapsed:7.1f}s  {_plural(rec.snapshots, 'snapshot')}  {rate:,.0f} rows/s  "
            f"{_plural(rec.overruns, 'overrun')}  {human_bytes(rec.bytes_on_disk)}  {files}")


def _width() -> int:
    """The terminal's columns now (read at every redraw: a resized window is followed at
    the next one); 80 if stderr is no terminal."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


def fit(line: str, width: int) -> str:
    """``line`` cut to ``width - 1`` characters, so that a terminal never wraps it (a
    wrapped status line leaves a line behind at every redraw)."""
    room = max(width - 1, 1)
    return line if len(line) <= room else line[:max(room - 1, 0)] + "…"


class _Status:
    """The live status line on a terminal (stderr), redrawn twice a second (once at an
    interval of 1 s or more)."""

    def __init__(self, rec) -> None:
        self.rec = rec
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.line = ""
        self._prev = (time.monotonic(), 0)
        self.thread = threading.Thread(target=self._loop, name="tcpsnap-status", daemon=True)
        self.hung_up = False
        self.extra: Any = None  # () -> str, said after the counters (the shipper's progress)

    def start(self) -> None:
        self.thread.start()

    def text(self) -> str:
        now = time.monotonic()
        t0, r0 = self._prev
        rows = self.rec.rows
        rate = (rows - r0) / (now - t0) if now > t0 else 0.0
        self._prev = (now, rows)
        extra = f"  {self.extra()}" if self.extra is not None else ""
        return fit(_stats_line(self.rec, rate) + extra, _width())

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
        # twice a second, or once when snapshots come once a second or slower (the
        # counters move once a snapshot: a redraw between says nothing new)
        period = 1.0 if (self.rec.interval or 0) >= 1.0 else 0.5
        while not self.stopped.wait(period):
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
    from .record.footprint import lean_process

    lean_process()  # before pyarrow loads: freed memory goes back to the system
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
    if args.tcp_info_every is not None and not args.tcp_info:
        print("tcpsnap: error: --tcp-info-every needs --tcp-info", file=sys.stderr)
        return 2
    where = filter_from_args(args, legacy=False)
    if where is not None and where.needs_pids and args.no_pids:
        print("tcpsnap: error: --pid/--process filters need pids: drop --no-pids", file=sys.stderr)
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
        filter=where,
        **_cli_ops.recorder_kwargs(args),
        **({"tcp_info": True, "tcp_info_every": args.tcp_info_every} if args.tcp_info else {}),
        **({"max_rss": args.max_rss} if args.max_rss is not None else {}))
    shipper = _make_shipper(args, rec)  # before open: a bad URL or no credentials stop us here

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
        if not args.no_page_out:  # before the schedule starts: README "Memory"
            from .record.footprint import page_out
            page_out()
        if not args.quiet:  # one start line, as daemons do (on a terminal, piped, in the journal)
            _announce(f"recording the TCP table every "
                      f"{format_duration(args.interval) if args.interval else 'moment (--interval 0)'}"
                      f"{' for ' + format_duration(args.duration) if args.duration is not None else ''}"
                      f" into {rec.path} ({args.mode} mode); stop with Ctrl-C or SIGTERM")
        ship_thread = None
        if shipper is not None:
            shipper.path = rec.path  # --new-dataset may have chosen DIR.2
            try:
                shipper.acquire()  # one shipper per folder: a 'tcpsnap ship' on it stops us here
            except ShipError:
                rec.close()
                raise
            setattr(rec, "shipper", shipper)  # noqa: B010 - read by the metrics exporter
            ship_thread = threading.Thread(target=shipper.run, name="tcpsnap-ship", daemon=True)
            ship_thread.start()
        if not args.quiet and sys.stderr.isatty():
            status = _Status(rec)
            status.extra = shipper.status_text if shipper is not None else None
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
            if shipper is not None and ship_thread is not None:
                shipper.stop()
                ship_thread.join()
                try:
                    left = shipper.finish(give_up=30.0)  # the last file too
                except ShipError as e:   # the recording itself is fine: say it, exit 0
                    logging.getLogger("tcpsnap.ship").error("ship: %s", e)
                    left = shipper.stats.pending_files
                finally:
                    shipper.release()
                _announce(f"shipped {_plural(shipper.stats.shipped_files, 'file')} to {args.ship}"
                          f"; {left} pending (the next 'tcpsnap ship' or 'record --ship' sends them)")
    finally:
        _cli_ops.stop(exporter)
        for s, h in old.items():
            signal.signal(s, h)
    st = rec.stats
    msg = (f"recorded {_plural(st['snapshots'], 'snapshot')} ({_plural(st['rows'], 'row')}, "
           f"{human_bytes(st['bytes_written'])}) into {_plural(len(st['files']), 'file')} in {rec.path} "
           f"in {st['elapsed']:.1f} s; {_plural(st['overruns'], 'overrun')}")
    if not args.quiet and not (status is not None and status.hung_up):
        with contextlib.suppress(OSError):  # a terminal that went away meanwhile
            _announce(msg)
    return 0


def _make_shipper(args: argparse.Namespace, rec: Any) -> Any:
    """The shipper of ``record --ship`` (None without it); retention then never deletes an
    unshipped file for age, and for space only counted and logged."""
    if not getattr(args, "ship", None):
        return None
    from .ship import Shipper, Transient, unshipped

    target = make_target(args, args.ship)
    try:
        target.check_bucket()   # a bucket that refuses us: ShipError, exit 1 before recording
    except Transient as e:      # unreachable now: record anyway, the shipper retries
        logging.getLogger("tcpsnap.ship").warning("ship: %s; recording anyway, retrying", e)
    if rec.retention is not None:
        rec.retention.unshipped = unshipped
    return Shipper(rec.path, target, host=args.ship_host, delete_after=args.delete_after_ship)


def _announce(msg: str) -> None:
    """One line at the default level (the start and the summary of a recording): through
    the command line's log handler, so that under systemd it is a journal line (priority
    info), else ``tcpsnap: msg`` on stderr."""
    for h in logging.getLogger("tcpsnap").handlers:
        if getattr(h, "_tcpsnap_cli", False) and isinstance(h, logging.StreamHandler):
            if isinstance(h.formatter, _cli_ops.JournalFormatter):
                h.handle(logging.LogRecord("tcpsnap.recorder", logging.INFO, __file__, 0, msg, None, None))
            else:
                h.acquire()
                try:
                    h.stream.write(f"tcpsnap: {msg}\n")
                    h.flush()
                finally:
                    h.release()
            return


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
            print(f"recovered {r.path}: {_plural(r.rows, 'row')} ({r.from_journal:,} from the journal"
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
