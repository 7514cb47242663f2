#!/usr/bin/env python3
"""The dump's user-space work (parse and dedupe) of two builds side by side, in one process
(issue 18, "Capture thread at 1 s (session 9)").

Loads each ``--python``'s compiled ``tcpsnap._netlink`` into one process (the first
python's, which runs the script: the others' modules are loaded from their files beside
it) and dumps the same table with one ``NetlinkDumper`` of each, alternating, several
hundred rounds; before each dump it writes through ``--evict-mib`` MiB (default 64) so that
the rows, the dedupe's arrays and the receive buffer are as cold as at a 1 s interval (the
kernel's walk and other processes have evicted them). Each dump is timed by the thread's CPU
clock; the kernel's part is the same for every build, so the paired difference per round
is the builds' user-space difference, which a run of separate processes cannot resolve
(round-to-round spread of the kernel's walk: +-0.3 ms). The floor (benchmarks/floor.c)
dumps in each round too, after the same eviction, for scale.

    python3 benchmarks/bench_parse.py --python NEW --python BASE --n 10000 --rounds 400

Runs (as root) in a private network namespace with its own TCP hash, as bench_snapshot.py.
Prints a markdown table and writes the raw results to JSON (benchmarks/_results.py).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _results  # noqa: E402
import bench_snapshot as bs  # noqa: E402

FIND = "import tcpsnap._netlink as m; print(m.__file__)"


def netlink_module(python: str, first: bool):
    """That python's tcpsnap._netlink: imported (the first), else loaded from its file."""
    if first:
        import tcpsnap._netlink as m
        return m
    path = subprocess.run([python, "-c", FIND], capture_output=True, text=True, check=True).stdout.strip()
    loader = importlib.machinery.ExtensionFileLoader("tcpsnap._netlink", path)
    spec = importlib.util.spec_from_file_location("tcpsnap._netlink", path, loader=loader)
    assert spec is not None
    m = importlib.util.module_from_spec(spec)
    loader.exec_module(m)
    return m


def trimmed_mean(xs: list[float], cut: float = 0.1) -> float:
    s = sorted(xs)
    k = int(len(s) * cut)
    return statistics.fmean(s[k:len(s) - k] or s)


def run(args) -> dict:
    import numpy as np

    from bench_footprint import proc_cpu_s

    evict = np.zeros(args.evict_mib << 17, np.int64)
    res: dict = {"load_before": os.getloadavg(), "n": args.n, "rounds": args.rounds, "python": args.python,
                 "evict_mib": args.evict_mib}
    dumpers = {py: netlink_module(py, i == 0).NetlinkDumper() for i, py in enumerate(args.python)}
    us: dict[str, list[float]] = {py: [] for py in dumpers}
    floor_us: list[float] = []
    with bs.Connections(args.n) as conns:
        res["rows_expected"] = conns.rows
        floor = bs.Floor()
        try:
            for d in dumpers.values():
                for _ in range(3):
                    n = d.dump()            # warm: the row array grown, the dedupe primed
            res["rows"] = n
            order = list(dumpers)
            for r in range(args.rounds):
                for py in (order if r % 2 == 0 else order[::-1]):
                    evict[::8] += 1
                    d = dumpers[py]
                    t0 = time.thread_time_ns()
                    d.dump()
                    us[py].append((time.thread_time_ns() - t0) / 1e3)
                evict[::8] += 1
                c = proc_cpu_s(floor.proc.pid)
                floor.dumps(1)
                floor_us.append((proc_cpu_s(floor.proc.pid) - c) * 1e6)
        finally:
            floor.close()
    base = args.python[-1]
    res["samples_us"] = us
    res["floor_us"] = floor_us
    res["floor_median_us"] = statistics.median(floor_us)
    res["builds"] = {}
    for py, v in us.items():
        diff = [a - b for a, b in zip(v, us[base], strict=True)]
        se = statistics.stdev(diff) / len(diff) ** 0.5 if py != base else 0.0
        res["builds"][py] = {
            "median_us": statistics.median(v), "trimmed_mean_us": trimmed_mean(v),
            "x_floor": statistics.median(v) / res["floor_median_us"],
            "diff_median_us": statistics.median(diff), "diff_trimmed_mean_us": trimmed_mean(diff),
            "diff_mean_us": statistics.fmean(diff), "diff_mean_ci95_us": 1.96 * se,
        }
    res["load_after"] = os.getloadavg()
    return res


def markdown(res: dict) -> str:
    base = res["python"][-1]
    lines = [f"{res['rows']} rows, {res['rounds']} rounds, {res['evict_mib']} MiB evicted before each dump; "
             f"floor's dump {res['floor_median_us']:,.0f} µs (median); load {res['load_before'][0]:.1f} -> "
             f"{res['load_after'][0]:.1f}", "",
             f"| python | dump() µs (median) | x floor | paired - `{base}`: median | trimmed mean | mean +- 95% |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for py, b in res["builds"].items():
        lines.append(f"| `{py}` | {b['median_us']:,.0f} | {b['x_floor']:.3f} | {b['diff_median_us']:+.0f} "
                     f"| {b['diff_trimmed_mean_us']:+.0f} | {b['diff_mean_us']:+.0f} +- {b['diff_mean_ci95_us']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", required=True,
                    help="a python with tcpsnap installed (twice or more; the last is the base)")
    ap.add_argument("--n", type=int, default=10000, help="loopback connections (2n + 1 rows)")
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--evict-mib", type=int, default=64)
    ap.add_argument("--no-netns", action="store_true")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    if os.path.abspath(sys.executable) != os.path.abspath(args.python[0]) and not os.environ.get(bs.NETNS_ENV):
        # the first python runs the script (its tcpsnap is the one imported)
        os.execv(args.python[0], [args.python[0], str(Path(__file__).resolve()), *argv])
    return bs.run_and_report("bench_parse", argv, str(Path(__file__).resolve()), args, run, markdown,
                             allow=not args.no_netns)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
