"""``tcpsnap info``, ``tcpsnap plot``, ``tcpsnap export``: recordings, read back."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ._cli_args import TIME_HELP, add_filter_arguments, filter_from_args, freq_arg, time_arg, tz_arg
from ._cmd_ship import add_fleet_arguments
from ._errors import TcpsnapError, UsageError
from ._units import human_bytes

EPILOG_INFO = """\
examples:
  tcpsnap info recording                 summary of a recording folder
  tcpsnap info recording/date=2026-11-26/x.parquet
  tcpsnap info recording --skip-bad      leave out corrupt or foreign files
  tcpsnap info recording --json          the same numbers, for a program
  tcpsnap info s3://fleet/tcpsnap        a shipped fleet: one summary per host

terms: a snapshot is one reading of the whole TCP table; a gap is a time over 1.5
intervals with no snapshot (the recorder stopped, stalled or the host rebooted: not an
empty table, which is a snapshot of 0 connections); conn-s (connection-seconds) is the
lifetimes of a peer's connections summed: 3 connections open 10 s each are 30 conn-s;
a listener-only process has 0 connections and lists the ports it listens on.
"""
EPILOG_PLOT = """\
examples:
  tcpsnap plot recording -o states.png      connections by state over time
  tcpsnap plot recording -o churn.png --kind churn --freq 10s
  tcpsnap plot recording -o peers.png --kind remotes
  tcpsnap plot rec -o s.png --start '2026-11-26 10:00' --end '2026-11-26 11:00'
  tcpsnap plot recording -o last-hour.png --start now-1h --tz Europe/Paris

Needs matplotlib: pip install 'tcpsnap[plot]'. Time with no snapshot (the recorder
stopped) is drawn as a gap: a break in the lines and a grey span, never as 0.
Durations (--freq): 100ms, 10s, 15m (minutes), 1h, 1d; units are lowercase.

times: ISO 8601 ('2026-11-26 10:00', '2026-11-26T10:00:00.5+01:00'; no zone means UTC), 'now',
'now-5m', or '@1795000000' (seconds since the epoch): the forms tcpsnap.read's start/end take.
"""
EPILOG_EXPORT = """\
examples:
  tcpsnap export recording --format csv > all.csv
  tcpsnap export rec --format jsonl --start '2026-11-26 10:00' -o x.jsonl
  tcpsnap export recording --format csv --start now-5m     the last five minutes
  tcpsnap export recording --format parquet -o all.parquet   one Parquet file

times: ISO 8601 ('2026-11-26 10:00', '2026-11-26T10:00:00.5+01:00'; no zone means UTC), 'now',
'now-5m', or '@1795000000' (seconds since the epoch): the forms tcpsnap.read's start/end take.
"""
#: what export writes (--format)
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
SKIP_BAD_HELP = ("read the other files when some are bad (corrupt, not tcpsnap's, a copy of another, of "
                 "the other mode) and say on stderr which were skipped; without it, a bad file is an "
                 "error naming it")


def register(sub) -> None:
    p = sub.add_parser("info", help="summarize a recording",
                       description="Time range, snapshots, rows, interval, gaps, files, bytes on disk, "
                                   "distinct connections, the busiest processes (with the ports they "
                                   "listen on) and remotes (with their connection-seconds).",
                       epilog=EPILOG_INFO, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a recording folder or one of its .parquet files, or a shipped fleet "
                                "(s3://BUCKET/PREFIX)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    add_filter_arguments(p)
    add_fleet_arguments(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plot", help="draw a recording as a PNG/SVG/PDF",
                       description="Draw connections by state over time, churn, or the busiest remotes.",
                       epilog=EPILOG_PLOT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a recording folder or file")
    p.add_argument("-o", "--output", required=True, help="image file to write (.png, .svg, .pdf)")
    p.add_argument("--kind", choices=("states", "churn", "remotes", "throughput", "rtt", "retrans"),
                   default="states", help="what to draw (default: states; throughput, rtt and retrans need a "
                   "recording made with --tcp-info)")
    p.add_argument("--freq", type=freq_arg, metavar="DUR",
                   help="bin width, e.g. 1s, 10s, 15m (default: chosen from the span)")
    p.add_argument("--start", type=time_arg, metavar="TIME", help=f"from this time (inclusive): {TIME_HELP}")
    p.add_argument("--end", type=time_arg, metavar="TIME", help="up to this time (exclusive), as --start")
    p.add_argument("--utc", action="store_true", help="time axis in UTC (default: local time)")
    p.add_argument("--tz", type=tz_arg, metavar="ZONE",
                   help="time axis in this IANA zone, e.g. Europe/Berlin (default: this machine's)")
    p.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    add_filter_arguments(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("export", help="write a recording as CSV or JSON lines",
                       description="Stream a recording (or a time range of it) as CSV or JSON lines, "
                                   "for tools that don't read Parquet. Timestamps are ISO 8601 UTC.",
                       epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a recording folder or file")
    p.add_argument("--format", dest="to", choices=EXPORT_FORMATS,
                   help="output format (required; parquet: one compacted file, needs -o)")
    # --to: the spelling before 'show --format' and this were one; kept, not shown
    p.add_argument("--to", dest="to", choices=EXPORT_FORMATS, help=argparse.SUPPRESS)
    p.add_argument("--start", type=time_arg, metavar="TIME", help=f"from this time (inclusive): {TIME_HELP}")
    p.add_argument("--end", type=time_arg, metavar="TIME", help="up to this time (exclusive), as --start")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.add_argument("--force", action="store_true", help="replace an existing --format parquet file")
    p.add_argument("--events", action="store_true",
                   help="a changes recording's events as recorded (default: its table rebuilt per snapshot)")
    p.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    add_filter_arguments(p)
    p.set_defaults(func=cmd_export)


class _Notes(logging.Handler):
    """The readers' warnings (what ``--skip-bad`` skipped...) as one ``tcpsnap: note:``
    line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"tcpsnap: note: {' '.join(record.getMessage().split())}\n")


def _notes() -> None:
    log = logging.getLogger("tcpsnap.reading")
    if not any(isinstance(h, _Notes) for h in log.handlers):
        log.addHandler(_Notes(logging.WARNING))


def _open(path: str, skip_bad: bool = False, start=None, end=None):
    """The recording at ``path``, its files checked (``tcpsnap.reading.Recording``)."""
    import pyarrow as pa

    from .reading import open_recording

    _notes()
    p = Path(path)
    if p.exists() and not (p.is_dir() or p.is_file()):
        raise TcpsnapError(f"{path} is not a recording: give a recording folder or one of its "
                           f".parquet files")
    try:
        return open_recording(path, skip_bad=skip_bad, start=start, end=end)
    except (pa.ArrowException, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise TcpsnapError(str(e)) from None
        raise TcpsnapError(f"{path}: not a readable recording ({e})") from None


def _where(args: argparse.Namespace):
    """The filter options as the pyarrow expression the data functions take (``where``)."""
    f = filter_from_args(args)
    return None if f is None else f.expression()


def summarize(path: str, skip_bad: bool = False, where=None) -> dict:
    """The numbers ``tcpsnap info`` prints, as a dict (``skipped``: the bad files
    ``skip_bad`` left out, each with what is wrong with it).

    Snapshots are every snapshot taken (``tcpsnap.snapshots``: empty ones too), ``start``
    / ``end`` the wall clock of the first and the last, ``elapsed_s`` the time between
    them (on the monotonic clock within a boot), ``gaps`` / ``gap_list`` where no snapshot
    was taken for over 1.5 intervals (or ``seq`` jumped, or the host rebooted:
    ``analysis.gaps``), ``clock_steps`` where the wall clock was stepped
    (``analysis.clock_steps``). ``where``: a ``pyarrow.compute.Expression`` the rows
    (``rows``, ``connections``, the top lists) are filtered by; snapshots are all counted.

    Bounded memory: the rows are read piece by piece (``analysis``' path form)."""

    import pandas as pd

    from . import analysis
    from .reading.dataset import list_files
    from .reading.live import recorder_state

    state = recorder_state(path)        # a recorder running, or stopped without finishing
    live = None if state is None else {
        "pid": state.pid, "running": state.running, "unfinished": state.unfinished,
        "unfinished_bytes": state.unfinished_bytes, "since": state.since, "text": state.describe(path)}
    if state is not None and not list_files(path):
        return {"path": str(path), "files": 0, "bytes": 0, "rows": 0, "overruns": 0, "metadata": {},
                "skipped": [], "recorder": live, "snapshots": 0}
    rec = _open(path, skip_bad)
    sel = analysis.Selection(rec, where=where)
    snaps = sel.snapshots()
    life = _scan(sel, analysis.lifetimes)
    rec.report()
    files = [f for f in rec.files if f.path not in rec.skipped]
    nbytes = sum(f.size for f in files)
    meta: dict[str, str] = {}
    overruns = 0
    intervals = []
    for f in files:           # their footers, as the check read them
        kv = f.kv or {}
        meta = meta or kv
        overruns += int(kv["overruns"]) if kv.get("overruns", "").isdigit() else 0
        if kv.get("interval_ns", "").isdigit() and int(kv["interval_ns"]) > 0:
            intervals.append(int(kv["interval_ns"]))
    out: dict = {"path": str(path), "files": len(files), "bytes": nbytes, "rows": int(life["snapshots"].sum()),
                 "overruns": overruns, "metadata": meta,
                 "skipped": [{"file": f, "problem": why} for f, why in rec.skipped.items()],
                 "recorder": live}
    if len(snaps) == 0:
        out.update(snapshots=0)
        return out
    out["hosts"] = [str(h) for h in snaps["host"].dropna().unique().tolist()]
    out["boots"] = int(snaps["boot_id"].nunique())
    out["snapshots"] = len(snaps)
    seqs = snaps["seq"].to_numpy()
    out["seq_range"] = [int(seqs.min()), int(seqs.max())]
    by_host = snaps.groupby("host", observed=True, sort=False, dropna=False)
    out["missing_seq"] = int(sum(int(g["seq"].max() - g["seq"].min() + 1 - len(g)) for _, g in by_host))
    firsts = by_host["timestamp"].first()      # each host's first and last snapshot, by seq
    lasts = by_host["timestamp"].last()
    out["start"] = str(firsts.min())
    out["end"] = str(lasts.max())
    # the interval asked for (the footers), else the median step between snapshots
    interval = analysis.interval_of(snaps, pd.Timedelta(int(np.median(intervals)), unit="ns")
                                    if intervals else None)
    gaps = analysis.gaps(snaps, interval=pd.Timedelta(interval, unit="ns"))
    steps = analysis.clock_steps(snaps, interval=pd.Timedelta(interval, unit="ns"))
    # elapsed: each step between consecutive snapshots on the monotonic clock within a
    # boot (the wall clock across boots), per host; the longest host
    out["elapsed_s"] = round(max(_elapsed(g) for _, g in by_host) / 1e9, 6)
    if len(snaps) > 1:
        out["interval_ms"] = interval / 1e6
        out["gaps"] = len(gaps)
        out["largest_gap_s"] = float(gaps["length"].max().total_seconds()) if len(gaps) else 0.0
        out["gap_list"] = [{"host": r.host, "seq": int(r.seq), "after_seq": int(r.before_seq),
                            "length_s": round(r.length.total_seconds(), 6), "why": r.why}
                           for r in gaps.itertuples()]
        out["clock_steps"] = [{"host": r.host, "seq": int(r.seq), "step_s": round(r.step.total_seconds(), 6)}
                              for r in steps.itertuples()]
    out["connections"] = len(life)
    bp = analysis.by_process(sel, life=life)
    bp = bp[bp.index != 0].head(5)
    out["top_processes"] = [{"pid": int(pid), "process": r["process"], "connections": int(r["connections"]),
                             "listening": [int(x) for x in str(r["listening"]).split(",") if x]}
                            for pid, r in bp.iterrows()]
    top = analysis.top_remotes(sel, n=5, life=life)
    out["top_remotes"] = [{"remote_addr": a, "connections": int(r["connections"]),
                           "connection_seconds": round(float(r["connection_seconds"]), 1)}
                          for a, r in top.iterrows()]
    return out


def _scan(sel, fn, *args, **kw):
    """``fn(sel, ...)`` (an analysis function on a recording), a file the scan cannot read
    as a TcpsnapError naming the recording."""
    import pyarrow as pa

    try:
        return fn(sel, *args, **kw)
    except pa.ArrowException as e:
        raise TcpsnapError(f"{sel.path}: not a readable recording ({e})") from None


def _elapsed(g) -> int:
    """ns from a host's first snapshot to its last: monotonic steps within a boot, wall
    clock steps across boots."""
    if len(g) < 2:
        return 0
    t = g["timestamp"].dt.as_unit("ns").astype("int64").to_numpy()
    mono = g["monotonic_ns"]
    boot = g["boot_id"].astype(object).to_numpy()
    ok = mono.notna().to_numpy()
    m = mono.fillna(0).to_numpy().astype(np.int64)
    same = (boot[1:] == boot[:-1]) & ok[1:] & ok[:-1]
    d = np.where(same, m[1:] - m[:-1], t[1:] - t[:-1])
    return int(d.sum())


def _n(n: int, word: str) -> str:
    """``1 connection``, ``2 connections``: a count and its noun, plural when it is one."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if abs(seconds) >= 1 else f"{seconds * 1000:g} ms"


def cmd_info(args: argparse.Namespace) -> int:
    if "://" in args.path:  # a shipped fleet: one summary per host (tcpsnap._cmd_ship)
        from ._cmd_ship import info_url

        return info_url(args, lambda p: summarize(p, skip_bad=args.skip_bad, where=_where(args)), show_info)
    return show_info(summarize(args.path, skip_bad=args.skip_bad, where=_where(args)), args.json)


def show_info(s: dict, as_json: bool = False) -> int:
    """Print ``summarize``'s dict as ``tcpsnap info`` does (as JSON with ``as_json``)."""
    if as_json:
        json.dump(s, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return 0
    w = sys.stdout.write
    w(f"recording    {s['path']}\n")
    if s.get("recorder"):
        w(f"recorder     {s['recorder']['text']}\n")
    w(f"files        {s['files']} ({human_bytes(s['bytes'])} on disk")
    w(f", {s['bytes'] / s['rows']:.2f} bytes/row)\n" if s["rows"] else ")\n")
    if not s["snapshots"]:
        w("snapshots    0 (nothing finished yet)\n" if s.get("recorder") else "snapshots    0 (empty recording)\n")
        return 0
    w(f"time         {s['start']} .. {s['end']} (first to last snapshot, wall clock; "
      f"{s['elapsed_s']:.1f} s elapsed)\n")
    for st in s.get("clock_steps", [])[:10]:
        where = f" on {st['host']}" if len(s["hosts"]) > 1 else ""
        w(f"clock        stepped {'back' if st['step_s'] < 0 else 'forward'} {abs(st['step_s']):.1f} s "
          f"at seq {st['seq']}{where}\n")
    if len(s.get("clock_steps", [])) > 10:
        w(f"clock        ... and {_n(len(s['clock_steps']) - 10, 'more step')}\n")
    if len(s["hosts"]) > 1 or s["boots"] > 1:
        w(f"hosts        {len(s['hosts'])} ({', '.join(s['hosts'][:5])}{' ...' if len(s['hosts']) > 5 else ''}), "
          f"{s['boots']} boot{'s' if s['boots'] != 1 else ''}\n")
    w(f"snapshots    {s['snapshots']:,} (seq {s['seq_range'][0]}..{s['seq_range'][1]}, "
      f"{s['missing_seq']} missing)\n")
    w(f"rows         {s['rows']:,}\n")
    if "interval_ms" in s:
        n = s["gaps"]
        w(f"interval     {s['interval_ms']:g} ms; {n} gap{'' if n == 1 else 's'} over 1.5x"
          + (f", largest {s['largest_gap_s']:.3f} s" if n else "") + f"; {_n(s['overruns'], 'overrun')}"
          + " (a gap: over 1.5 intervals with no snapshot taken)\n")
        why = {"late": "no snapshot taken", "seq": "snapshots missing (seq jumped)", "reboot": "reboot"}
        for g in s["gap_list"][:10]:
            where = f" on {g['host']}" if len(s["hosts"]) > 1 else ""
            w(f"gap          {_s(g['length_s'])} before seq {g['seq']}{where} ({why[g['why']]})\n")
        if n > 10:
            w(f"gap          ... and {n - 10} more\n")
    w(f"connections  {s['connections']:,} distinct\n")
    md = s["metadata"]
    for k, label in (("host", "host"), ("os", "os"), ("kernel", "kernel"), ("version", "tcpsnap"),
                     ("backend", "backend"), ("interval", "asked every"), ("pids", "pids"),
                     ("mode", "mode"), ("keyframe", "keyframes"), ("destroy_feed", "destroy feed")):
        if k in md and not (k == "host" and len(s["hosts"]) > 1):
            w(f"{label:<12} {md[k]}\n")
    if s["top_processes"]:
        w("top processes (connections, not counting listeners; the ports they listen on)\n")
        for p in s["top_processes"]:
            ports = p.get("listening") or []
            listen = (f", listening on {', '.join(str(x) for x in ports[:8])}"
                      f"{' ...' if len(ports) > 8 else ''}") if ports else ""
            w(f"  {p['pid']:>8}  {str(p['process'] or '?'):<20} {_n(p['connections'], 'connection')}{listen}\n")
    if s["top_remotes"]:
        w("top remotes (conn-s: connection-seconds, the connections' lifetimes summed)\n")
        for r in s["top_remotes"]:
            w(f"  {r['remote_addr']:<40} {_n(r['connections'], 'connection')}, "
              f"{r['connection_seconds']:,} conn-s\n")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        from . import plot

        plot.require()              # before reading anything: no matplotlib, one line
    if args.utc and args.tz and args.tz != "UTC":
        raise UsageError(f"--utc and --tz {args.tz} name two zones: give one")
    out = Path(args.output)
    if not out.parent.exists():
        raise TcpsnapError(f"cannot write {out}: folder {out.parent} does not exist")
    if args.kind == "states" and _plot_forked(args, out):
        return 0
    return _plot_threads(args, out)


def _plot_forked(args: argparse.Namespace, out: Path) -> bool:
    """``plot --kind states`` with the drawing in a forked child (``_plotfork``: it imports
    matplotlib on the other core while this process counts); False where it cannot (not
    Linux, or a recording ``aggregate.state_tally`` does not count: read piece by piece
    on threads then)."""
    from . import _plotfork

    drawer = _plotfork.start(str(out))
    if drawer is None:
        return False
    _keep_heap()
    try:
        from .reading.aggregate import state_tally

        rec = _open(args.path, args.skip_bad, args.start, args.end)
        fast = state_tally(rec, args.start, args.end, _where(args), wait=drawer.ready)
        if fast is None:
            drawer.cancel()
            return False
        host, t = fast
        rng, freq = _bins_freq(args, t)
        from .reading.tally import state_bins

        bins = state_bins(t, _freq_ns(freq))
        rec.report()
        drawer.draw(bins, freq, host, rng, "UTC" if args.utc else args.tz, args.path)
    finally:
        drawer.cancel()
    _quick_exit()
    return True


def _quick_exit() -> None:
    """At interpreter exit, ``gc.freeze()`` before the modules are torn down: the cyclic
    collections of that teardown then skip every object this command made (pyarrow's,
    numpy's, the count's), ~0.01 s to exit instead of ~0.035-0.075 s after the plot is
    written (strace, benchmarks/RESULTS.md "plot, session 7"). Objects are still freed
    as their references go, and the std streams and logging are flushed as always; only
    an object kept alive by a cycle is left to the process's end. Registered at exit, so
    a caller of ``cli.main`` in a longer process keeps its collections until then."""
    import atexit
    import gc

    atexit.register(gc.freeze)


def _keep_heap() -> None:
    """Let glibc keep 64 MiB at the top of each heap it trims (``mallopt(M_TOP_PAD)``;
    nothing where the C library has no ``mallopt``): the count's threads free and
    allocate the same few MB of numpy temporaries a row group, which glibc otherwise hands
    back to the kernel and faults in again (~40,000 page faults, 0.1-0.2 s of system time
    over the hour; ~9,000 with it). For this command's own process only: a library
    function does not change its caller's allocator."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-2, 64 << 20)        # M_TOP_PAD
    except (OSError, AttributeError):
        pass


def _freq_ns(freq: str) -> int:
    from .plot import freq_ns

    return freq_ns(freq)


def _bins_freq(args: argparse.Namespace, t) -> tuple[tuple[int, int], str]:
    """The (first, last) snapshot times (UTC ns) of tally ``t`` and the bin width
    (``--freq`` or one chosen from the span); ``UsageError`` for too many bins."""
    from . import plot

    rng = (int(t.ts.min()), int(t.ts.max()))
    freq = args.freq or plot.auto_freq_ns(rng[1] - rng[0])
    try:
        plot.check_bins_ns(rng[1] - rng[0], freq)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return rng, freq


def _plot_threads(args: argparse.Namespace, out: Path) -> int:
    """``plot`` in this process: the data read on a thread while this one imports
    matplotlib."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    opened = threading.Event()
    # set once this thread is done with its imports: until then one thread counts
    # (reading.tally's ``wait``), the other core is this thread's
    idle = threading.Event()

    def read():
        # the data is read on a thread while this one imports matplotlib (~0.3 s of
        # Python): the count runs mostly without the GIL (pyarrow decoding, numpy), so the
        # two overlap. Errors come out of .result(), after the checks below
        try:
            from .reading.scan import Selection

            rec = _open(args.path, args.skip_bad, args.start, args.end)
            # the rows are read piece by piece by the analysis functions the plot calls
            sel = Selection(rec, args.start, args.end, where=_where(args))
        finally:
            opened.set()
        if args.kind == "states":
            # one host and boot, full mode: the per-snapshot state counts from
            # reading.tally, binned and drawn from numpy (no pandas on this path)
            from .reading.aggregate import state_tally

            fast = state_tally(rec, args.start, args.end, sel.where, wait=idle)
            if fast is not None:
                return rec, sel, fast
        sel.snapshots()          # empty snapshots count 0, not a gap
        return rec, sel, None

    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read)
        # the reading thread's own imports and footers first (Python, holding the GIL):
        # imported side by side, both would take as long as one after the other, and
        # the count (the longest part) would start later
        opened.wait()
        # while this thread imports (Python, holding the GIL), the counting thread wants the
        # GIL back after each of its C calls (a few dozen a row group) and waits up to a
        # switch interval each time: 0.5 ms instead of 5 lets the count go on beside the
        # imports (benchmarks/RESULTS.md, "plot, session 6")
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, 0.0005))
        try:
            # no pyplot (plot.new_figure: a Figure on the Agg canvas)
            from . import plot

            plot.require()
            from matplotlib.backend_bases import FigureCanvasBase

            if out.suffix.lower().lstrip(".") not in FigureCanvasBase.get_supported_filetypes():
                raise UsageError(f"cannot tell the image type of {out}: name it .png, .svg or .pdf")
            # the figure and its axes while the data is read
            ax = plot.new_figure().add_subplot()
        finally:
            sys.setswitchinterval(switch)
            idle.set()
        rec, sel, fast = reading.result()
    tz = "UTC" if args.utc else args.tz
    if fast is not None:
        fig = _plot_tallied(args, fast, tz, ax)
    else:
        fig = _plot_scanned(args, rec, sel, tz, ax)
    rec.report()
    fig.savefig(out)
    if "matplotlib.pyplot" in sys.modules:       # a figure pyplot keeps (plot.new_figure)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return 0


def _plot_tallied(args: argparse.Namespace, fast, tz, ax):
    """``plot --kind states`` from ``aggregate.state_tally``'s ``(host, tally)``."""
    from . import plot
    from .reading.tally import state_bins

    host, t = fast
    rng, freq = _bins_freq(args, t)
    return plot.draw_state_bins(state_bins(t, plot.freq_ns(freq)), freq, host, rng, tz=tz, ax=ax,
                                source=args.path)


def _plot_scanned(args: argparse.Namespace, rec, sel, tz, ax):
    """``plot`` from the recording read piece by piece (``analysis``' path form)."""
    from . import analysis, plot

    snaps = sel.snapshots()
    rec.report()
    if len(snaps) == 0:
        # the files were picked for the range asked: the whole recording's span, opened again
        whole = analysis.Selection(_open(args.path, args.skip_bad)).snapshots() if args.start or args.end \
            else snaps
        span = (f" (it holds {whole['timestamp'].min()} .. {whole['timestamp'].max()}: give --start/--end "
                f"within that)" if len(whole) else "")
        raise TcpsnapError(f"{args.path}: no snapshots in that time range{span}")
    if args.freq is not None:       # before the rows are read: a bin count that cannot fit
        try:
            plot.check_bins(snaps["timestamp"].max() - snaps["timestamp"].min(), args.freq)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.kind == "remotes":
        return _scan(sel, plot.plot_remotes, source=args.path, snapshots=snaps, tz=tz, ax=ax)
    if args.kind in plot.INTERNALS:
        return _scan(sel, plot.plot_internals, kind=args.kind, freq=args.freq, tz=tz, snapshots=snaps,
                     source=args.path, ax=ax)
    fn = plot.plot_states if args.kind == "states" else plot.plot_churn
    return _scan(sel, fn, freq=args.freq, tz=tz, snapshots=snaps, source=args.path, ax=ax)


def cmd_export(args: argparse.Namespace) -> int:
    if args.to is None:
        raise UsageError(f"--format is required: {' or '.join(EXPORT_FORMATS)}")
    from .reading.export import export
    from .reading.scan import Selection

    rec = _open(args.path, args.skip_bad, args.start, args.end)
    sel = Selection(rec, args.start, args.end, where=_where(args))
    try:
        export(sel, args.to, args.output, force=args.force, events=args.events)
    except OSError as e:
        raise TcpsnapError(f"cannot write {args.output or 'standard output'}: {e.strerror or e}") from None
    rec.report()
    return 0
