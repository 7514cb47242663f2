"""The capture thread of changes mode, by phase, with the dump's change hints on and off.

In one process, in a private network namespace holding --n loopback connections, what a
changes-mode recorder's capture thread does per snapshot (``Snapshotter(pids=True)``, its
resolver in the background as the recorder's, ``ChangeTracker.step`` with process names),
every --interval (1 s: caches as cold as in a 1 s recording), in blocks of --block snapshots
with ``set_change_hints`` on, then off, alternating (the first snapshot of each block, whose
hints cannot hold, left out). Each phase's CPU is the thread's own (``time.thread_time_ns``):

  take   the dump (kernel walk, recv, parse -- with hints: each row compared with the one it
         replaces --, cookie dedupe) and the pid lookup
  step   ``ChangeTracker.step``: process-name codes, the diff (with hints: the previous table
         read only where a row is not vouched for), the marker

A --python without ``set_change_hints`` (main) runs every block "off". Raw results: JSON
per run (benchmarks/_results.py).

    python3 benchmarks/bench_hints.py --n 10000 --snapshots 60 --python /work/venv-cold/bin/python --python /work/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _results  # noqa: E402
import bench_snapshot as bs  # noqa: E402

CHILD = r"""
import json, sys, time
import tcpsnap
from tcpsnap.record.changes import ChangeTracker
interval, count, block = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
snap = tcpsnap.Snapshotter(pids=True)
snap.take()                                   # the first walk, in place
snap.resolver.background = True
can = hasattr(snap, "set_change_hints")
tr = ChangeTracker(60 * 10**9)
names = snap.process_names
out = []
t_next = time.monotonic() + interval
for k in range(count):
    on = can and (k // block) % 2 == 0
    if can and k % block == 0:
        snap.set_change_hints(on)
    time.sleep(max(0.0, t_next - time.monotonic()))
    t_next += interval
    c0 = time.thread_time_ns()
    rows = snap.take()
    c1 = time.thread_time_ns()
    hints = snap.change_hints if on else None
    tr.step(rows, names, time.time_ns(), time.monotonic_ns(), 0, **({"hints": hints} if can else {}))
    c2 = time.thread_time_ns()
    if k % block:
        out.append({"on": on, "hinted": hints is not None, "take_us": (c1 - c0) / 1e3, "step_us": (c2 - c1) / 1e3,
                    "rows": len(rows)})
print(json.dumps(out))
"""


def summary(samples: list[dict]) -> dict:
    res = {}
    for on in (True, False):
        s = [x for x in samples if x["on"] == on]
        if not s:
            continue
        take = statistics.median(x["take_us"] for x in s)
        step = statistics.median(x["step_us"] for x in s)
        res["on" if on else "off"] = {"snapshots": len(s), "hinted": sum(x["hinted"] for x in s),
                                      "take_us": take, "step_us": step, "sum_us": take + step,
                                      "sum_us_mean": statistics.mean(x["take_us"] + x["step_us"] for x in s)}
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", action="append", default=[])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--snapshots", type=int, default=60)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0)
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    run = _results.Run("bench_hints", args.json)
    where = bs.ensure_netns(argv, __file__)
    pythons = args.python or [sys.executable]
    res: dict = {"where": where, "n": args.n, "load_before": os.getloadavg(), "runs": {}}
    with bs.Connections(args.n):
        for py in pythons:
            p = subprocess.run([py, "-c", CHILD, str(args.interval), str(args.snapshots), str(args.block)],
                               capture_output=True, text=True)
            if p.returncode:
                print(p.stderr[-2000:], file=sys.stderr)
                return 1
            samples = json.loads(p.stdout)
            res["runs"][py] = {"samples": samples, "summary": summary(samples), "load": os.getloadavg()[0]}
            print(py, json.dumps(res["runs"][py]["summary"]), f"load {os.getloadavg()[0]:.2f}", flush=True)
    run.write(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
