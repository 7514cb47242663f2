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
    ap.add_argument("--child", choices=("plot", "duckdb"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default="/tmp/bench-plot-phases.png", help=argparse.SUPPRESS)
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    rec = os.path.abspath(args.data)
    if args.child:
        print(json.dumps(child_plot(rec, args.out) if args.child == "plot" else child_duckdb(rec)))
        return 0
    run = _results.Run("bench_plot_phases", args.json, argv)
    pythons = args.python.split(",")
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
