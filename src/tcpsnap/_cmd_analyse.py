"""``tcpsnap info``, ``tcpsnap plot``, ``tcpsnap export``: recordings, read back."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ._cli_args import TIME_HELP, add_filter_arguments, filter_from_args, freq_arg, time_arg
from ._errors import TcpsnapError
from ._units import human_bytes

EPILOG_INFO = """\
examples:
  tcpsnap info recording                   summary of a recording folder
  tcpsnap info recording/date=2026-11-26/x.parquet
  tcpsnap info recording --skip-bad        summary of the files that are not corrupt or foreign
"""
EPILOG_PLOT = """\
examples:
  tcpsnap plot recording -o states.png                  connections by state over time
  tcpsnap plot recording -o churn.png --kind churn --freq 10s
  tcpsnap plot recording -o peers.png --kind remotes
  tcpsnap plot recording -o s.png --start '2026-11-26 10:00' --end '2026-11-26 11:00' --utc
  tcpsnap plot recording -o last-hour.png --start now-1h

times: ISO 8601 ('2026-11-26 10:00', '2026-11-26T10:00:00.5+01:00'; no zone means UTC), 'now',
'now-5m', or '@1795000000' (seconds since the epoch): the forms tcpsnap.read's start/end take.
"""
EPILOG_EXPORT = """\
examples:
  tcpsnap export recording --to csv > all.csv
  tcpsnap export recording --to jsonl --start '2026-11-26 10:00' --end '2026-11-26 10:05' -o five-min.jsonl
  tcpsnap export recording --to csv --start now-5m        the last five minutes (of a live recording too)

times: ISO 8601 ('2026-11-26 10:00', '2026-11-26T10:00:00.5+01:00'; no zone means UTC), 'now',
'now-5m', or '@1795000000' (seconds since the epoch): the forms tcpsnap.read's start/end take.
"""
SKIP_BAD_HELP = ("read the other files when some are bad (corrupt, not tcpsnap's, a copy of another, of "
                 "the other mode) and say on stderr which were skipped; without it, a bad file is an "
                 "error naming it")


def register(sub) -> None:
    p = sub.add_parser("info", help="summarize a recording",
                       description="Time range, snapshots, rows, interval, gaps, files, bytes on disk, "
                                   "distinct connections, and the busiest processes and remotes.",
                       epilog=EPILOG_INFO, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a recording folder or one of its .parquet files")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    add_filter_arguments(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("plot", help="draw a recording as a PNG/SVG/PDF",
                       description="Draw connections by state over time, churn, or the busiest remotes.",
                       epilog=EPILOG_PLOT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a recording folder or file")
    p.add_argument("-o", "--output", required=True, help="image file to write (.png, .svg, .pdf)")
    p.add_argument("--kind", choices=("states", "churn", "remotes"), default="states",
                   help="what to draw (default: states)")
    p.add_argument("--freq", type=freq_arg, metavar="DUR",
                   help="bin width, e.g. 1s, 10s, 15m (default: chosen from the span)")
    p.add_argument("--start", type=time_arg, metavar="TIME", help=f"from this time (inclusive): {TIME_HELP}")
    p.add_argument("--end", type=time_arg, metavar="TIME", help="up to this time (exclusive), as --start")
    p.add_argument("--utc", action="store_true", help="time axis in UTC (default: local time)")
    p.add_argument("--tz", help="time axis in this zone, e.g. Europe/Berlin")
    p.add_argument("--skip-bad", action="store_true", help=SKIP_BAD_HELP)
    add_filter_arguments(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("export", help="write a recording as CSV or JSON lines",
                       description="Stream a recording (or a time range of it) as CSV or JSON lines, "
                                   "for tools that don't read Parquet. Timestamps are ISO 8601 UTC.",
                       epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a recording folder or file")
    p.add_argument("--to", choices=("csv", "jsonl"), required=True, help="output format")
    p.add_argument("--start", type=time_arg, metavar="TIME", help=f"from this time (inclusive): {TIME_HELP}")
    p.add_argument("--end", type=time_arg, metavar="TIME", help="up to this time (exclusive), as --start")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
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


def _read(rec, start=None, end=None, columns=None, where=None):
    import pyarrow as pa

    from .reading.full import read_recording

    try:
        df = read_recording(rec, start=start, end=end, columns=columns, filters=where)
    except pa.ArrowException as e:
        raise TcpsnapError(f"{rec.path}: not a readable recording ({e})") from None
    rec.report()
    return df


def summarize(path: str, skip_bad: bool = False, where=None) -> dict:
    """The numbers ``tcpsnap info`` prints, as a dict (``skipped``: the bad files
    ``skip_bad`` left out, each with what is wrong with it).

    Snapshots are every snapshot taken (``tcpsnap.snapshots``: empty ones too), ``start``
    / ``end`` the wall clock of the first and the last, ``elapsed_s`` the time between
    them (on the monotonic clock within a boot), ``gaps`` / ``gap_list`` where no snapshot
    was taken for over 1.5 intervals (or ``seq`` jumped, or the host rebooted:
    ``analysis.gaps``), ``clock_steps`` where the wall clock was stepped
    (``analysis.clock_steps``)."""

    import pandas as pd

    from . import analysis
    from .reading.dataset import list_files
    from .reading.live import recorder_state
    from .reading.snapshots import snapshots_of

    state = recorder_state(path)        # a recorder running, or stopped without finishing
    live = None if state is None else {
        "pid": state.pid, "running": state.running, "unfinished": state.unfinished,
        "unfinished_bytes": state.unfinished_bytes, "since": state.since, "text": state.describe(path)}
    if state is not None and not list_files(path):
        return {"path": str(path), "files": 0, "bytes": 0, "rows": 0, "overruns": 0, "metadata": {},
                "skipped": [], "recorder": live, "snapshots": 0}
    rec = _open(path, skip_bad)
    cols = [c for c in analysis.COLUMNS if c in rec.schema.names]
    df = _read(rec, columns=cols, where=where)
    snaps = snapshots_of(rec)
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
    out: dict = {"path": str(path), "files": len(files), "bytes": nbytes, "rows": len(df),
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
    life = analysis.lifetimes(df, snapshots=snaps)
    out["connections"] = len(life)
    bp = analysis.by_process(df, life=life)
    bp = bp[bp.index != 0].head(5)
    out["top_processes"] = [{"pid": int(pid), "process": r["process"], "connections": int(r["connections"])}
                            for pid, r in bp.iterrows()]
    top = analysis.top_remotes(df, n=5, life=life)
    out["top_remotes"] = [{"remote_addr": a, "connections": int(r["connections"]),
                           "connection_seconds": round(float(r["connection_seconds"]), 1)}
                          for a, r in top.iterrows()]
    return out


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


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if abs(seconds) >= 1 else f"{seconds * 1000:g} ms"


def cmd_info(args: argparse.Namespace) -> int:
    s = summarize(args.path, skip_bad=args.skip_bad, where=_where(args))
    if args.json:
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
        w(f"clock        ... and {len(s['clock_steps']) - 10} more steps\n")
    if len(s["hosts"]) > 1 or s["boots"] > 1:
        w(f"hosts        {len(s['hosts'])} ({', '.join(s['hosts'][:5])}{' ...' if len(s['hosts']) > 5 else ''}), "
          f"{s['boots']} boot{'s' if s['boots'] != 1 else ''}\n")
    w(f"snapshots    {s['snapshots']:,} (seq {s['seq_range'][0]}..{s['seq_range'][1]}, "
      f"{s['missing_seq']} missing)\n")
    w(f"rows         {s['rows']:,}\n")
    if "interval_ms" in s:
        n = s["gaps"]
        w(f"interval     {s['interval_ms']:g} ms; {n} gap{'' if n == 1 else 's'} over 1.5x"
          + (f", largest {s['largest_gap_s']:.3f} s" if n else "") + f"; {s['overruns']} overruns\n")
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
        w("top processes\n")
        for p in s["top_processes"]:
            w(f"  {p['pid']:>8}  {str(p['process'] or '?'):<20} {p['connections']:,} connections\n")
    if s["top_remotes"]:
        w("top remotes\n")
        for r in s["top_remotes"]:
            w(f"  {r['remote_addr']:<40} {r['connections']:,} connections, "
              f"{r['connection_seconds']:,} conn-s\n")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plot

    out = Path(args.output)
    if not out.parent.exists():
        raise TcpsnapError(f"cannot write {out}: folder {out.parent} does not exist")
    rec = _open(args.path, args.skip_bad, args.start, args.end)
    df = _read(rec, start=args.start, end=args.end, where=_where(args))
    from .reading.snapshots import snapshots_of

    snaps = snapshots_of(rec, args.start, args.end)   # empty snapshots count 0, not a gap
    rec.report()
    if len(snaps) == 0:
        raise TcpsnapError(f"{args.path}: no snapshots in that time range")
    tz = "UTC" if args.utc else args.tz
    if args.kind == "remotes":
        fig = plot.plot_remotes(df)
    else:
        fn = plot.plot_states if args.kind == "states" else plot.plot_churn
        fig = fn(df, freq=args.freq, tz=tz, snapshots=snaps)
    fig.savefig(out)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from .reading.dataset import time_filter

    rec = _open(args.path, args.skip_bad, args.start, args.end)
    expr = time_filter(rec, args.start, args.end)
    where = _where(args)
    expr = where if expr is None else expr if where is None else expr & where
    columns = [c for c in rec.schema.names if c != "date"]
    sink = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        wrote_header = False
        # batch by batch, file by file: memory stays flat however long the recording is
        # (bounded by one file with --skip-bad, which reads a file whole before writing it)
        for batch in rec.to_batches(columns=columns, filter=expr):
            if batch.num_rows == 0:
                continue
            batch = _plain(batch)
            if args.to == "csv":
                opts = pacsv.WriteOptions(include_header=not wrote_header)
                pacsv.write_csv(pa.Table.from_batches([batch]), sink, write_options=opts)
                wrote_header = True
            else:
                for r in batch.to_pylist():
                    sink.write(json.dumps(r, default=str).encode() + b"\n")
        if args.to == "csv" and not wrote_header:
            sink.write((",".join(columns) + "\n").encode())
    finally:
        if args.output:
            sink.close()
        else:
            sink.flush()
    rec.report()
    return 0


def _plain(batch):
    """Dictionary columns decoded, timestamps as ISO 8601 strings: what CSV and JSON
    readers expect."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols, names = [], []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if pa.types.is_timestamp(col.type):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ" if col.type.tz else "%Y-%m-%dT%H:%M:%S")
        cols.append(col)
        names.append(name)
    return pa.RecordBatch.from_arrays(cols, names=names)
