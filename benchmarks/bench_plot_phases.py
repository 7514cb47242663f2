#!/usr/bin/env python3
"""Where ``tcpsnap plot --kind states`` spends its time, phase by phase, beside DuckDB
answering the plot's question (issue 13: the plot within 1.5x DuckDB).

Each round runs, each in a fresh child process and back to back: the phases of the plot
for every ``--python`` given (an interpreter with a tcpsnap installed: this tree's, or
another tree's to compare with), then DuckDB's reference query (``bench_analysis.py``'s
``duckdb-plot``: the per-snapshot state counts binned by 10 s, 2 threads). The plot's
phases run one after the other on one thread (the CLI overlaps the imports with the
data): importing ``tcpsnap.cli``, then ``tcpsnap.analysis`` and ``tcpsnap.plot``
(pandas), then matplotlib's figure and Agg canvas; opening the recording; the snapshot
list with its state counts (``Selection.snapshots()``, which the CLI runs on a thread);
``analysis.state_counts``; ``plot.plot_states``; ``savefig``. A tree that draws the states
plot from numpy (``plot.draw_state_bins``: no pandas) has its own phases: importing
``tcpsnap.cli``; opening the recording; ``aggregate.state_tally`` (the data: seq, state and
timestamp counted, on two threads); matplotlib's figure and Agg canvas; ``tally.state_bins``;
``plot.draw_state_bins``; ``savefig``. Per phase: wall seconds and
the process's CPU seconds (user + system, all threads), medians over the rounds; the
load average before each child.

    python3 benchmarks/bench_plot_phases.py --data /work/benchdata-bounded/recording --rounds 5 \\
        --python /work/venv/bin/python,.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _results

PHASES = ("import tcpsnap.cli", "import analysis, plot (pandas)", "import matplotlib figure + agg",
          "open the recording", "snapshots + state counts (the data)", "analysis.state_counts",
          "plot_states", "savefig")
DUCK = ("import duckdb", "query")
#: a tree that draws the states plot from numpy (``plot.draw_state_bins``)
NUMPY_PHASES = ("import tcpsnap.cli", "open the recording", "state_tally (seq, state, timestamp)",
                "import matplotlib figure + agg", "state_bins (numpy)", "draw_state_bins", "savefig")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def child_plot(rec: str, out: str) -> dict:
    rows: dict = {}

    def ph(name, fn):
        w, c = time.perf_counter(), _cpu()
        got = fn()
        rows[name] = [time.perf_counter() - w, _cpu() - c]
        return got

    ph(PHASES[0], lambda: __import__("tcpsnap.cli"))
    import importlib.util

    # which tree, without importing tcpsnap.plot (an older one imports pandas with it)
    spec = importlib.util.find_spec("tcpsnap.plot")
    if spec is not None and spec.origin and "def draw_state_bins" in open(spec.origin).read():
        return _numpy_phases(rec, out, ph, rows)
    ph(PHASES[1], lambda: (__import__("tcpsnap.analysis"), __import__("tcpsnap.plot")))
    ph(PHASES[2], lambda: (__import__("matplotlib.figure"), __import__("matplotlib.backends.backend_agg")))
    from tcpsnap import analysis, plot

    sel = ph(PHASES[3], lambda: analysis.Selection(rec))
    snaps = ph(PHASES[4], sel.snapshots)
    ph(PHASES[5], lambda: analysis.state_counts(sel, freq="10s"))
    fig = ph(PHASES[6], lambda: plot.plot_states(sel, tz="UTC", snapshots=snaps, source=rec))
    ph(PHASES[7], lambda: fig.savefig(out))
    return rows


def _numpy_phases(rec: str, out: str, ph, rows: dict) -> dict:
    """The phases of a tree whose ``plot --kind states`` counts, bins and draws from numpy
    (``aggregate.state_tally``, ``tally.state_bins``, ``plot.draw_state_bins``; no pandas)."""
    from tcpsnap import plot
    from tcpsnap._cmd_analyse import _open
    from tcpsnap.reading import aggregate
    from tcpsnap.reading.tally import state_bins

    recording = ph(NUMPY_PHASES[1], lambda: _open(rec))
    host, t = ph(NUMPY_PHASES[2], lambda: aggregate.state_tally(recording, None, None))
    ph(NUMPY_PHASES[3], lambda: (__import__("matplotlib.figure"), __import__("matplotlib.backends.backend_agg")))
    rng = (int(t.ts.min()), int(t.ts.max()))
    freq = "10s"
    bins = ph(NUMPY_PHASES[4], lambda: state_bins(t, plot.freq_ns(freq)))
    fig = ph(NUMPY_PHASES[5], lambda: plot.draw_state_bins(bins, freq, host, rng, tz="UTC", source=rec))
    ph(NUMPY_PHASES[6], lambda: fig.savefig(out))
    rows["pandas imported"] = [float("pandas" in sys.modules), 0.0]
    return rows


#: what ``--timeline`` times in the command itself: (module, function, phase name)
HOOKS = (("tcpsnap._cmd_analyse", "cmd_plot", "cmd_plot"),
         ("tcpsnap._cmd_analyse", "_open", "open the recording (footers)"),
         ("tcpsnap.reading.aggregate", "state_tally", "count (state_tally)"),
         ("tcpsnap.reading.tally", "_job", "count job"),
         ("tcpsnap.reading.tally", "state_bins", "state_bins"),
         ("tcpsnap._plotfork", "_child", "child: all (import matplotlib .. savefig)"),
         ("tcpsnap._plotfork", "_recv", "receive"),
         ("tcpsnap.plot", "new_figure", "new_figure"),
         ("tcpsnap.plot", "draw_state_bins", "draw_state_bins"))


def _hwm() -> float:
    """This process's peak RSS in MiB (``VmHWM``)."""
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024


def child_timeline(rec: str, out: str, t0: float, log: str) -> dict:
    """``tcpsnap plot --kind states`` as the CLI runs it (``cli.main``), each hooked
    function's calls logged as (pid, thread, phase, wall start and end from ``t0``, the
    thread's CPU in it) to ``log``, from every thread and from a forked child too."""
    import importlib.abc
    import importlib.util
    import threading

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def event(name, w0, w1, c, c0=None):
        # c0: the thread's CPU (since it started: a forked child's thread, since the fork)
        # when the phase began; cpu1: when it ended
        os.write(fd, (json.dumps({"pid": os.getpid(), "thread": threading.current_thread().name, "phase": name,
                                  "start": w0 - t0, "end": w1 - t0, "cpu": c, "cpu0": c0,
                                  "cpu1": time.thread_time()}) + "\n").encode())

    event("interpreter start (+ this script)", t0, time.perf_counter(), _cpu())

    def hook(m) -> None:
        for mod, fn, name in HOOKS:
            f = getattr(m, fn, None) if mod == m.__name__ else None
            if f is None:
                continue

            def wrapped(*a, _f=f, _name=name, **kw):
                w, c = time.perf_counter(), time.thread_time()
                try:
                    return _f(*a, **kw)
                finally:
                    event(_name, w, time.perf_counter(), time.thread_time() - c, c)
                    if _name.startswith("child"):
                        event("child process CPU", t0, time.perf_counter(), _cpu())
                        event("child peak RSS (MiB, as cpu)", t0, time.perf_counter(), _hwm())
            setattr(m, fn, wrapped)

    class Finder(importlib.abc.MetaPathFinder):
        """Hooks a module of HOOKS as it is imported (by the command, when it imports it):
        importing them all first would move their imports out of the command's timeline."""

        def find_spec(self, name, path, target=None):
            if name not in {h[0] for h in HOOKS}:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            exec_module = spec.loader.exec_module

            def run(m, _exec=exec_module):
                _exec(m)
                hook(m)
            spec.loader.exec_module = run
            return spec

    sys.meta_path.insert(0, Finder())
    w, c = time.perf_counter(), _cpu()
    from tcpsnap.cli import main as cli_main

    event("import tcpsnap.cli", w, time.perf_counter(), _cpu() - c)

    w = time.perf_counter()
    code = cli_main(["plot", rec, "-o", out, "--utc"])
    event("cli.main", w, time.perf_counter(), _cpu())
    event("process CPU (waited-for children included)", t0, time.perf_counter(),
          _cpu() + os.times().children_user + os.times().children_system)
    event("peak RSS (MiB, as cpu)", t0, time.perf_counter(), _hwm())
    os.close(fd)
    return {"code": code}


def timeline(pythons: list[str], rec: str, rounds: int) -> dict:
    """Per interpreter and round, the timeline of one whole ``plot`` command; printed as
    the median start, end and CPU of each phase over the rounds."""
    import tempfile

    got: dict = {p: [] for p in pythons}
    for rnd in range(rounds):
        for py in (pythons if rnd % 2 == 0 else pythons[::-1]):
            with tempfile.NamedTemporaryFile(suffix=".jsonl") as log:
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                subprocess.run([py, os.path.abspath(__file__), "--child", "timeline", "--data", rec,
                                "--t0", repr(t0), "--log", log.name], check=True, capture_output=True)
                wall = time.perf_counter() - t0
                evs = [json.loads(x) for x in open(log.name)]
            got[py].append({"load": round(load, 2), "wall": wall, "events": evs})
    out: dict = {}
    for py, runs in got.items():
        print(f"\n{py}: whole command {statistics.median(r['wall'] for r in runs):.3f} s (median of {len(runs)}; "
              f"load {min(r['load'] for r in runs)}-{max(r['load'] for r in runs)})")
        out[py] = {"wall": statistics.median(r["wall"] for r in runs), "phases": {}}
        pid0 = runs[0]["events"][0]["pid"]
        keys = []
        for e in runs[0]["events"]:
            k = (e["pid"] == pid0, e["thread"], e["phase"])
            if k not in keys:
                keys.append(k)
        for main_pid, thread, phase in keys:
            per = []
            for r in runs:
                p0 = r["events"][0]["pid"]
                es = [e for e in r["events"] if (e["pid"] == p0) == main_pid and e["thread"] == thread
                      and e["phase"] == phase]
                if es:
                    per.append((min(e["start"] for e in es), max(e["end"] for e in es), sum(e["cpu"] for e in es),
                                len(es)))
            name = f"{'parent' if main_pid else 'child'}/{thread}: {phase}"
            row = {k: statistics.median(x[i] for x in per) for i, k in enumerate(("start", "end", "cpu", "calls"))}
            out[py]["phases"][name] = row
            calls = "" if row["calls"] == 1 else f"  ({row['calls']:.0f} calls)"
            print(f"  {name:62s} {row['start']:6.3f} .. {row['end']:6.3f} s  cpu {row['cpu']:6.3f} s{calls}")
        paths = [critical_path(r["events"]) for r in runs]
        out[py]["critical_path"] = {k: statistics.median(x[k] for x in paths) for k in paths[0]}
        print("  CPU seconds, medians: " + ", ".join(f"{k} {v:.3f}" for k, v in out[py]["critical_path"].items()))
    return {"timeline": out, "runs": got}


def critical_path(events: list[dict]) -> dict:
    """The CPU critical path of one command from its events, in CPU seconds: ``start``
    (the main thread's CPU when ``cmd_plot`` begins: interpreter, imports, the parser),
    then two chains side by side: ``matplotlib`` (importing it and making the figure: the
    forked child's CPU until it waits for the bins, or the main thread's from
    ``cmd_plot`` to the end of ``new_figure``) and ``count`` (opening the recording, the
    counting call's own thread, and the busier of the two counting threads, as the
    scheduler shared them out), then ``tail`` (binning, drawing and writing the file, on
    one thread). ``path``: start + the longer chain + tail, as this run went.
    ``two_cores``: the least wall time on two idle cores without a GIL: start, then
    matplotlib beside the count (one counting thread while matplotlib runs, two after, so
    the middle is the longest of matplotlib, half of all the middle's CPU, and the count
    on two threads), then the tail. One process can reach it only where its threads do
    not wait for each other's GIL; interpreter exit is not in it."""
    p0 = events[0]["pid"]

    def one(phase, child=None):
        es = [e for e in events if e["phase"] == phase and (child is None or (e["pid"] != p0) == child)]
        return es[0] if es else None

    cmd = one("cmd_plot")
    start = cmd["cpu0"]
    jobs: dict = {}
    for e in events:
        if e["phase"] == "count job":
            jobs[e["thread"]] = jobs.get(e["thread"], 0.0) + e["cpu"]
    opened, counted = one("open the recording (footers)"), one("count (state_tally)")
    count = opened["cpu"] + counted["cpu"] + max(jobs.values())
    count_all = opened["cpu"] + counted["cpu"] + sum(jobs.values())
    ready = one("receive", child=True)
    if ready is not None:           # forked: the child's CPU until it waits for the bins
        mpl = ready["cpu0"]
        child_end = one("child: all (import matplotlib .. savefig)")
        tail = one("state_bins")["cpu"] + child_end["cpu1"] - ready["cpu1"]
    else:                           # one process: the main thread's import and figure
        mpl = one("new_figure", child=False)["cpu1"] - start
        tail = one("cli.main")["cpu1"] - one("state_bins")["cpu0"]
    fixed = opened["cpu"] + counted["cpu"]
    ideal = max(mpl, (mpl + count_all) / 2, fixed + (count_all - fixed) / 2)
    return {"start": start, "matplotlib": mpl, "count": count, "count_all_threads": count_all, "tail": tail,
            "path": start + max(mpl, count) + tail, "two_cores": start + ideal + tail}


def child_duckdb(rec: str) -> dict:
    rows: dict = {}
    w, c = time.perf_counter(), _cpu()
    import duckdb

    rows[DUCK[0]] = [time.perf_counter() - w, _cpu() - c]
    w, c = time.perf_counter(), _cpu()
    con = duckdb.connect(config={"threads": 2, "memory_limit": "1GB"})
    con.execute(f"""SELECT time_bucket(INTERVAL '10 seconds', ts) AS b, state, avg(n) FROM
        (SELECT seq, any_value(timestamp) AS ts, state, count(*) AS n FROM
         read_parquet('{rec}/**/*.parquet', hive_partitioning=true)
         WHERE kind = 'connection' GROUP BY seq, state) GROUP BY ALL ORDER BY b""").fetchall()
    rows[DUCK[1]] = [time.perf_counter() - w, _cpu() - c]
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a recording folder (the one-hour benchmark recording)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python", default=sys.executable,
                    help="comma-separated interpreters whose tcpsnap to measure (default: this one)")
    ap.add_argument("--timeline", action="store_true",
                    help="time each phase of whole `plot` commands per thread and process (start, end, CPU) "
                         "instead of the phases one after the other")
    ap.add_argument("--child", choices=("plot", "duckdb", "timeline"), help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="/tmp/bench-plot-phases.png", help=argparse.SUPPRESS)
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    rec = os.path.abspath(args.data)
    if args.child == "timeline":
        print(json.dumps(child_timeline(rec, args.out, args.t0, args.log)))
        return 0
    if args.child:
        print(json.dumps(child_plot(rec, args.out) if args.child == "plot" else child_duckdb(rec)))
        return 0
    run = _results.Run("bench_plot_phases", args.json, argv)
    pythons = args.python.split(",")
    if args.timeline:
        run.write({"data": rec, "rounds": args.rounds, **timeline(pythons, rec, args.rounds)})
        return 0
    sides = [(p, "plot") for p in pythons] + [(sys.executable, "duckdb")]
    got: dict = {f"{k}:{p}": [] for p, k in sides}
    for rnd in range(args.rounds):
        for py, kind in (sides if rnd % 2 == 0 else sides[::-1]):
            load = os.getloadavg()[0]
            p = subprocess.run([py, os.path.abspath(__file__), "--child", kind, "--data", rec], capture_output=True,
                               text=True, check=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["load"] = round(load, 2)
            got[f"{kind}:{py}"].append(r)
            total = sum(v[0] for k, v in r.items() if k not in ("load", "pandas imported"))
            print(f"round {rnd + 1} {kind} {py}: {total:.2f} s, load {load:.2f}", file=sys.stderr)
    out: dict = {}
    for key, rs in got.items():
        names = [n for n in rs[0] if n not in ("load", "pandas imported")]
        out[key] = {n: {"seconds": statistics.median(r[n][0] for r in rs),
                        "cpu_seconds": statistics.median(r[n][1] for r in rs)} for n in names}
        out[key]["total"] = {"seconds": statistics.median(sum(r[n][0] for n in names) for r in rs),
                             "cpu_seconds": statistics.median(sum(r[n][1] for n in names) for r in rs)}
        out[key]["loads"] = [r["load"] for r in rs]
        print(f"\n{key} (medians of {len(rs)}; load {min(out[key]['loads'])}-{max(out[key]['loads'])})")
        for n in names + ["total"]:
            print(f"  {n:38s} {out[key][n]['seconds']:7.3f} s  cpu {out[key][n]['cpu_seconds']:7.3f} s")
    run.write({"data": rec, "rounds": args.rounds, "phases": out, "runs": got})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
