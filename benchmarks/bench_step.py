#!/usr/bin/env python3
"""Changes mode's per-snapshot cost on the capture thread: ``ChangeTracker.step`` by part.

In a private network namespace (as root: ``unshare -n``, bench_snapshot.ensure_netns) the
parent holds ``--sizes`` loopback connections (bench_snapshot.Connections) and, in the
``churn`` scenario, a process that opens ``--churn`` connections a second, each closed
after ~1 s (both ends: destroy reports, TIME_WAIT rows, rows leaving and joining the
table). For each ``--python`` given (e.g. this tree's venv and main's), in every round,
the order reversed every other round, a child process of that interpreter builds what the
recorder's capture thread has in changes mode -- ``Snapshotter(pids=True)``, the
socket-destroy feed, ``ChangeTracker`` with the resolver's ``names_into`` -- and times
``--snapshots`` calls of ``step`` (fewer for larger tables: as long as at 1,000
connections) on consecutive ``take()`` tables (``take`` itself is not timed): thread CPU
and wall per call, medians over the rounds. Then what step adds to the capture thread with
the caches it disturbs: take() alone against take() and step(), alternating, thread CPU
per snapshot (right after a dump whatever runs first pays for cold caches). Then half as
many again with each part of ``step`` wrapped (~1 us a call more, alike for every build):

  drain    the destroy feed read (``feed.drain`` and ``_take_reports``)
  names    ``_global_codes`` (process-name codes of the table, the resolver's C)
  diff     ``Differ.diff`` (Python wrapper and the C diff; rollback and re-diff included)
  refind   ``_refind`` (asking the kernel about sockets a dump missed)
  place    ``place_destroyed`` (destroy reports and mini-sockets)
  rest     step minus the above: events, marker, output arrays, process-name codes

A part a build does not have (merged into another) is absent from its row.

    python3 benchmarks/bench_step.py --sizes 1000,10000 --rounds 2 \\
        --python /work/venv-changes/bin/python --python /work/venv/bin/python

Writes its results to a JSON file (benchmarks/_results.py; ``--json PATH``) and prints a
markdown table: us per snapshot, each python's, per scenario and size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _results
import bench_snapshot as bs

HERE = Path(__file__).resolve().parent
PARTS = ("drain", "names", "diff", "refind", "place")

#: the churn process: bench_footprint's churn, in a process of its own (not a thread of the
#: measuring process, whose GIL it would take); "ready" once it listens; ends when killed
CHURN = f"""
import sys, threading
sys.path.insert(0, {str(HERE)!r})
from bench_footprint import churn
churn(threading.Event(), float(sys.argv[1]), sys.argv[2], tick=0.002,
      ready=lambda: print("ready", flush=True))
"""


# ---------------------------------------------------------------- the child (any build)

class _Proxy:
    """Forwards every attribute to ``obj``; the methods in ``timed`` add their thread CPU
    ns to ``acc[part]`` (compiled classes take no instance attributes, so wrap them)."""

    def __init__(self, obj, timed: dict, acc: dict) -> None:
        object.__setattr__(self, "_obj", obj)
        for name, part in timed.items():
            object.__setattr__(self, name, _wrap(getattr(obj, name), part, acc))

    def __getattr__(self, name):
        return getattr(self._obj, name)


def _wrap(fn, part: str, acc: dict):
    clock = time.thread_time_ns

    def timed(*a, **kw):
        t0 = clock()
        try:
            return fn(*a, **kw)
        finally:
            acc[part] = acc.get(part, 0) + clock() - t0
    return timed


def child(args) -> dict:
    from tcpsnap import Snapshotter
    from tcpsnap.record import changes
    from tcpsnap.record.changes import ChangeTracker, open_destroy_feed

    snap = Snapshotter(pids=True)
    feed = open_destroy_feed()
    tr = ChangeTracker(60 * 10**9, feed=feed)
    res = getattr(snap, "resolver", None)
    if res is not None:                       # as the recorder sets it (record.recorder)
        res.background = True
        res.walk_share = 0.5
        if hasattr(res, "names_into"):
            tr.names_into = res.names_into
    names = snap.process_names
    clock, wall = time.thread_time_ns, time.perf_counter_ns

    def run(k: int) -> tuple[list[int], list[int], list[int]]:
        cpu, wl, nev = [], [], []
        for _ in range(k):
            rows = snap.take()
            w, m = time.time_ns(), time.monotonic_ns()
            c0, w0 = clock(), wall()
            out, _n, _x = tr.step(rows, names, w, m, "key")
            c1, w1 = clock(), wall()
            cpu.append(c1 - c0)
            wl.append(w1 - w0)
            nev.append(len(out) - 1)
        return cpu, wl, nev

    # as many snapshots at 1,000 connections; fewer for a larger table (about as long)
    k_all = max(50, int(args.snapshots * min(1.0, 2001 / max(len(snap.take()), 1))))
    run(20)                                   # the first table (a keyframe), caches warm
    cpu, wl, nev = run(k_all)
    # what step adds to the capture thread, caches included: take() alone against take()
    # and step(), alternating, thread CPU per snapshot
    loops: dict = {"take": [], "take_step": []}
    for r in range(4):
        for what in (("take", "take_step") if r % 2 == 0 else ("take_step", "take")):
            k = k_all // 4
            c0 = clock()
            for _ in range(k):
                rows = snap.take()
                if what == "take_step":
                    tr.step(rows, names, time.time_ns(), time.monotonic_ns(), "key")
            loops[what].append((clock() - c0) / k / 1e3)
    # again with the parts wrapped
    acc: dict = {}
    orig_step = tr.step
    if feed is not None:
        tr.feed = _Proxy(feed, {"drain": "drain"}, acc)
        if hasattr(tr, "_take_reports"):
            tr._take_reports = _wrap(tr._take_reports, "drain", acc)
    if hasattr(tr, "_global_codes"):
        tr._global_codes = _wrap(tr._global_codes, "names", acc)
    tr._differ = _Proxy(tr._differ, {"diff": "diff"}, acc)
    if hasattr(tr, "_refind"):
        tr._refind = _wrap(tr._refind, "refind", acc)
    if hasattr(changes, "place_destroyed"):
        changes.place_destroyed = _wrap(changes.place_destroyed, "place", acc)
    tr.step = _wrap(orig_step, "step", acc)
    k = k_all // 2
    run(k)
    parts = {p: acc[p] / k / 1e3 for p in PARTS if p in acc}
    parts["rest"] = acc["step"] / k / 1e3 - sum(parts.values())
    parts["step_wrapped"] = acc["step"] / k / 1e3
    st = tr.stats
    take_us = statistics.median(loops["take"])
    return {"rows": int(len(snap.take())), "cpu_us": statistics.mean(cpu) / 1e3,
            "take_us": take_us, "added_us": statistics.median(loops["take_step"]) - take_us,
            "cpu_us_median": statistics.median(cpu) / 1e3, "wall_us_median": statistics.median(wl) / 1e3,
            "events_per_snapshot": statistics.mean(nev), "parts_us": parts,
            "destroyed": st.get("destroyed"), "probed": st.get("probed"), "feed": feed is not None}


# ---------------------------------------------------------------- the parent

def run_child(python: str, args) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--child", "--snapshots", str(args.snapshots)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{python}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    out: dict = {"pythons": args.python, "snapshots": args.snapshots, "cases": []}
    for n in [int(x) for x in args.sizes.split(",")]:
        with bs.Connections(n) as conns:
            for scen in args.scenarios.split(","):
                ch = None
                if scen == "churn":
                    ch = subprocess.Popen([sys.executable, "-c", CHURN, str(args.churn), "127.3.0.1"],
                                          stdout=subprocess.PIPE, text=True)
                    assert ch.stdout is not None
                    ch.stdout.readline()
                    time.sleep(1.5)            # its steady state: ~churn connections alive
                try:
                    case: dict = {"n": n, "rows": conns.rows, "scenario": scen, "rounds": []}
                    for r in range(args.rounds):
                        order = args.python if r % 2 == 0 else args.python[::-1]
                        rnd = {py: run_child(py, args) for py in order}
                        rnd["load"] = os.getloadavg()[0]
                        case["rounds"].append(rnd)
                        print(json.dumps({"n": n, "scenario": scen, "round": r,
                                          **{py: round(v["cpu_us"], 1) for py, v in rnd.items() if py != "load"}}),
                              file=sys.stderr, flush=True)
                    case["median"] = {py: summarize([x[py] for x in case["rounds"]]) for py in args.python}
                    out["cases"].append(case)
                finally:
                    if ch is not None:
                        ch.kill()              # by pid: our own churn process
                        ch.wait()
    return out


def summarize(rs: list[dict]) -> dict:
    parts = {p: statistics.median(r["parts_us"].get(p, 0.0) for r in rs) for p in rs[0]["parts_us"]}
    return {"cpu_us": statistics.median(r["cpu_us"] for r in rs),
            "take_us": statistics.median(r["take_us"] for r in rs),
            "added_us": statistics.median(r["added_us"] for r in rs),
            "cpu_us_rounds": [round(r["cpu_us"], 1) for r in rs],
            "wall_us_median": statistics.median(r["wall_us_median"] for r in rs),
            "events_per_snapshot": statistics.median(r["events_per_snapshot"] for r in rs),
            "parts_us": parts}


def markdown(res: dict) -> str:
    pys = res["pythons"]
    lines = ["| scenario | connections (rows) | python | step CPU us (rounds) | "
             + " | ".join(PARTS) + " | rest | events/snapshot | take() us | take()+step() - take() us | load |",
             "| --- | --- | --- | --- | " + " | ".join("---:" for _ in PARTS) + " | ---: | ---: | ---: | ---: | ---: |"]
    for c in res["cases"]:
        load = "-".join(f"{r['load']:.1f}" for r in c["rounds"][:1] + c["rounds"][-1:])
        for py in pys:
            m = c["median"][py]
            p = m["parts_us"]
            cells = " | ".join(f"{p[x]:.1f}" if x in p else "-" for x in PARTS)
            lines.append(f"| {c['scenario']} | {c['n']:,} ({c['rows']:,}) | `{py}` | **{m['cpu_us']:.1f}** "
                         f"({' '.join(str(x) for x in m['cpu_us_rounds'])}) | {cells} | {p['rest']:.1f} "
                         f"| {m['events_per_snapshot']:.1f} | {m['take_us']:.0f} | {m['added_us']:.1f} | {load} |")
        if len(pys) == 2:
            a = [r[pys[0]]["cpu_us"] / r[pys[1]]["cpu_us"] for r in c["rounds"]]
            lines.append(f"| | | paired {pys[0]} / {pys[1]} | {statistics.median(a):.2f} "
                         f"({' '.join(f'{x:.2f}' for x in a)}) | | | | | | | | | | |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--scenarios", default="steady,churn", help="steady, churn (comma-separated)")
    ap.add_argument("--churn", type=float, default=200.0, help="churn: new connections a second")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--snapshots", type=int, default=1000,
                    help="timed step() calls per child at 1,000 connections (fewer at larger sizes)")
    ap.add_argument("--python", action="append", default=None,
                    help="an interpreter whose tcpsnap to measure (repeat; default: this one)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    args.python = args.python or [sys.executable]
    return bs.run_and_report("bench_step", argv, str(Path(__file__).resolve()), args, run, markdown)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
