"""The capture thread's pieces at snapshot speed, in one process (no recorder, no writer):
thread CPU per call, load-robust where rates are not (issue 18, "Capture thread at 1k").

  resolve       PidResolver.resolve() (the pid lookup) and names_into() (the name codes)
                in steady state (every inode known), by table size: "hot", called again
                and again on the rows of one dump; "after a dump", each call on the rows
                of a fresh dump_into() (untimed), as in a recording, where the dump (the
                kernel's walk of its hash) has evicted the resolver's map from the caches.
  interference  NetlinkDumper.dump_into() alone, then while another process spins on
                the other core (ALU only), streams through 64 MiB (memory), or copies 1 MiB
                over and over (cache): how much a busy neighbour's memory traffic (the
                recorder's writer thread) costs the dump itself.

    python3 benchmarks/bench_capture.py resolve --sizes 1000,10000 --rounds 5
    python3 benchmarks/bench_capture.py interference --n 1000 --rounds 3

Runs (as root) in a private network namespace with its own TCP hash, as bench_recorder.py.
Prints a markdown table and writes the raw results to JSON (benchmarks/_results.py).
"""

from __future__ import annotations

import argparse
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

NEIGHBOURS = {
    "alone": None,
    "spin": "x = 0\nwhile True:\n    x += 1\n",
    "stream 64 MiB": ("import numpy as np\na = np.ones(64 << 20, np.uint8); b = np.empty_like(a)\n"
                      "while True:\n    np.copyto(b, a)\n"),
    "copy 1 MiB": ("import numpy as np\na = np.ones(1 << 20, np.uint8); b = np.empty_like(a)\n"
                   "while True:\n    np.copyto(b, a)\n"),
}


def _per_call_us(fn, seconds: float) -> float:
    fn()
    k = 0
    c0 = time.thread_time_ns()
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        for _ in range(50):
            fn()
        k += 50
    return (time.thread_time_ns() - c0) / k / 1e3


def run_resolve(sizes: list[int], rounds: int, seconds: float) -> dict:
    import numpy as np

    from tcpsnap import Snapshotter
    from tcpsnap._schema import ROW_DTYPE

    out: dict = {"sizes": {}}
    for n in sizes:
        with bs.Connections(n), Snapshotter(pids=True) as snap:
            res = snap.resolver
            res.background = True
            snap.take()                      # the first walk, in place: every pid known
            buf = np.zeros(4 * n + 1024, ROW_DTYPE)
            rows, _ = snap.take_into(buf, 0)
            m = len(rows)
            codes = np.zeros(m, np.int32)
            index: dict[str, int] = {}
            names: list[str] = []
            r = {"rows": m, "resolve_us": [], "names_into_us": [], "after_dump_resolve_us": []}

            def resolve(res=res, rows=rows, m=m) -> None:
                res.resolve(rows, m)

            def names_into(res=res, rows=rows, codes=codes, index=index, names=names) -> None:
                res.names_into(rows["pid"], codes, index, names)

            impl = snap._impl

            def after_dump(impl=impl, res=res, buf=buf) -> float:
                cpu = time.thread_time_ns
                k = spent = 0
                t_end = time.monotonic() + seconds
                while time.monotonic() < t_end:
                    got, _ = impl.dump_into(buf, 0)
                    c0 = cpu()
                    res.resolve(buf, got)
                    spent += cpu() - c0
                    k += 1
                return spent / k / 1e3

            for _ in range(rounds):
                r["resolve_us"].append(_per_call_us(resolve, seconds))
                r["names_into_us"].append(_per_call_us(names_into, seconds))
                r["after_dump_resolve_us"].append(after_dump())
            print({"n": n, "resolve_us": [round(x, 2) for x in r["resolve_us"]]}, file=sys.stderr, flush=True)
            out["sizes"][n] = r
    return out


def run_interference(n: int, rounds: int, seconds: float) -> dict:
    import numpy as np

    from tcpsnap import Snapshotter
    from tcpsnap._schema import ROW_DTYPE

    out: dict = {"n": n, "rounds": []}
    with bs.Connections(n), Snapshotter(pids=False) as snap:
        impl = snap._impl
        buf = np.zeros(4 * n + 1024, ROW_DTYPE)
        for _ in range(rounds):
            got = {}
            for what, code in NEIGHBOURS.items():
                p = None
                if code:
                    p = subprocess.Popen([sys.executable, "-c", code])
                    time.sleep(0.5)          # its arrays allocated and touched
                try:
                    got[what] = _per_call_us(lambda: impl.dump_into(buf, 0), seconds)
                finally:
                    if p is not None:
                        p.kill()
                        p.wait()
            got["loadavg"] = os.getloadavg()[0]
            out["rounds"].append(got)
            print({k: round(v, 1) for k, v in got.items()}, file=sys.stderr, flush=True)
    return out


def markdown(cmd: str, res: dict, argv: str) -> str:
    lines = [f"Command: `python3 benchmarks/bench_capture.py {argv}`", ""]
    if cmd == "resolve":
        lines += ["| connections (rows) | resolve() µs per call, hot (median; rounds) | "
                  "resolve() after a dump | names_into() hot |", "|---|---:|---:|---:|"]
        for n, r in res["sizes"].items():
            med = {k: statistics.median(r[k]) for k in ("resolve_us", "after_dump_resolve_us", "names_into_us")}
            lines.append(f"| {int(n):,} ({r['rows']:,}) | {med['resolve_us']:.1f} "
                         f"({' '.join(f'{x:.1f}' for x in r['resolve_us'])}) | "
                         f"{med['after_dump_resolve_us']:.1f} "
                         f"({' '.join(f'{x:.1f}' for x in r['after_dump_resolve_us'])}) | "
                         f"{med['names_into_us']:.1f} |")
    else:
        lines += ["| neighbour on the other core | dump_into() µs per call (median) | x alone (rounds) |",
                  "|---|---:|---|"]
        for what in NEIGHBOURS:
            v = statistics.median(x[what] for x in res["rounds"])
            xs = " ".join(f"{x[what] / x['alone']:.2f}" for x in res["rounds"])
            lines.append(f"| {what} | {v:,.0f} | {xs} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("resolve")
    a.add_argument("--sizes", default="1000,10000")
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--seconds", type=float, default=1.0, help="per round and call")
    b = sub.add_parser("interference")
    b.add_argument("--n", type=int, default=1000)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--seconds", type=float, default=2.0, help="per round and neighbour")
    for p in (a, b):
        _results.add_json_argument(p)
        p.add_argument("--no-netns", action="store_true")
    args = ap.parse_args(argv)
    where = bs.ensure_netns(argv, str(Path(__file__).resolve()), allow=not args.no_netns)
    run = _results.Run(f"bench_capture-{args.cmd}", args.json, argv)
    if args.cmd == "resolve":
        res = run_resolve([int(x) for x in args.sizes.split(",")], args.rounds, args.seconds)
    else:
        res = run_interference(args.n, args.rounds, args.seconds)
    res["where"] = where
    print(where)
    print(markdown(args.cmd, res, " ".join(argv)))
    run.write(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
