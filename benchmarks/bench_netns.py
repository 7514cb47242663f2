#!/usr/bin/env python3
"""Namespaces and containers: what ``netns=`` and the attribution columns cost.

``namespaces`` (root): per-namespace cost of ``Snapshotter(netns=[...]).take()`` against
``benchmarks/floor.c netns-serve`` (the same dumps in C, one socket kept per namespace,
rows only counted), with 1, 20 and 100 empty namespaces (``unshare -n sleep``), each on
the shared TCP hash (``net.ipv4.tcp_child_ehash_entries=0``, the default) and on a private
one (``=1024``, set before they are made). The script re-executes itself under
``unshare -n`` so that the sysctl it sets is its own namespace's (the children inherit it
from there), never the host's. Rounds interleave the two methods; the ratio is
median(take) / median(floor).

``rate`` (root): ``Recorder`` of 100 (``--counts``' last) empty namespaces on the shared hash
every ``--interval-ms`` (10), every namespace every snapshot against each at its own rate
(``tcpsnap.netns.Rate``): the share of snapshot slots taken (the rest are overruns) and the
longest a namespace went undumped, in snapshots.

``attribution`` (root): ``take()`` and bytes per row on disk for a steady table of
``--rows`` loopback rows (in a private namespace of its own, with a private TCP hash of
65,536 buckets), this tree against another
tcpsnap (``--main-python``: a python whose tcpsnap is main's, before the attribution
columns), side by side, interleaved: ``take()`` time ratio, and ``Recorder`` bytes per row
of ``--snapshots`` snapshots of that table.

    python3 benchmarks/bench_netns.py namespaces
    python3 benchmarks/bench_netns.py rate --seconds 10
    python3 benchmarks/bench_netns.py attribution --main-python /path/to/main-venv/bin/python

Every run writes a JSON file (benchmarks/_results.py; ``--json PATH``) and prints the
load average (``/proc/loadavg``) with each figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results

HERE = Path(__file__).resolve().parent
NETNS_ENV = "TCPSNAP_BENCH_NETNS"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def sysctl(name: str, value: int) -> None:
    Path("/proc/sys", *name.split(".")).write_text(f"{value}\n")


# ------------------------------------------------------------------ namespaces

class Floor:
    def __init__(self, paths: list[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="tcpsnap-floor-")
        exe = os.path.join(self.dir, "floor")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, str(HERE / "floor.c")], check=True)
        self.p = subprocess.Popen([exe, "netns-serve", *paths], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def dumps(self, k: int) -> list[tuple[int, int]]:
        self.p.stdin.write(f"{k}\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("floor exited")
            if line.strip() == ".":
                return out
            ns, rows, _ = line.split()
            out.append((int(ns), int(rows)))

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _namespaces(n: int) -> tuple[list[subprocess.Popen], list[str]]:
    mine = os.stat("/proc/self/ns/net").st_ino
    kids = [subprocess.Popen(["unshare", "-n", "sleep", "3600"]) for _ in range(n)]
    paths = [f"/proc/{k.pid}/ns/net" for k in kids]
    deadline = time.monotonic() + 30
    for p in paths:
        while os.stat(p).st_ino == mine:      # not unshared yet
            if time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not start")
            time.sleep(0.005)
    return kids, paths


def run_namespaces(counts: list[int], rounds: int) -> dict:
    import tcpsnap

    res: dict = {}
    for hashmode, entries in (("shared", 0), ("private", 1024)):
        sysctl("net.ipv4.tcp_child_ehash_entries", entries)
        for n in counts:
            kids, paths = _namespaces(n)
            floor = Floor(paths)
            snap = tcpsnap.Snapshotter(netns=paths)
            try:
                k = 3 if n >= 20 else 20
                take_ns: list[float] = []
                floor_ns: list[float] = []
                rows_t = rows_f = 0
                for _ in range(3):      # warm
                    snap.take()
                floor.dumps(2)
                for _ in range(rounds):
                    for ns, rows in floor.dumps(k):
                        floor_ns.append(ns / n)
                        rows_f = rows
                    for _ in range(k):
                        t0 = time.perf_counter_ns()
                        rows_t = len(snap.take())
                        take_ns.append((time.perf_counter_ns() - t0) / n)
                got = {"namespaces": n, "hash": hashmode, "take_per_ns_us": statistics.median(take_ns) / 1e3,
                       "floor_per_ns_us": statistics.median(floor_ns) / 1e3,
                       "ratio": statistics.median(take_ns) / statistics.median(floor_ns),
                       "rows_take": rows_t, "rows_floor": rows_f, "samples": len(take_ns),
                       "loadavg": loadavg()}
                res[f"{hashmode}-{n}"] = got
                print(f"{hashmode:8} {n:4} namespaces: take() {got['take_per_ns_us']:9.1f} us/ns, floor "
                      f"{got['floor_per_ns_us']:9.1f} us/ns, ratio {got['ratio']:.3f} (rows {rows_t}/{rows_f}; "
                      f"load {got['loadavg']})", flush=True)
            finally:
                snap.close()
                floor.close()
                for kid in kids:
                    kid.kill()
                for kid in kids:
                    kid.wait()
    sysctl("net.ipv4.tcp_child_ehash_entries", 0)
    return res


# ------------------------------------------------------------------ rate

class _Logged:
    """A Snapshotter noting which namespaces each take() dumped."""

    def __init__(self, snap) -> None:
        self.snap, self.pids, self.namespaces = snap, False, snap.namespaces
        self.dumped: list[set[int]] = []

    def take(self):
        rows = self.snap.take()
        self.dumped.append(set(self.namespaces.rate.dumped))
        return rows

    def process_names(self, pids):
        return self.snap.process_names(pids)


def run_rate(n: int, interval_ms: int, seconds: float) -> dict:
    """``Recorder`` of n empty namespaces on the shared hash plus our own, every
    ``interval_ms``: every namespace every snapshot (the budget made infinite) against each
    at its own rate (the default: half the interval), side by side, interleaved."""
    import tcpsnap

    sysctl("net.ipv4.tcp_child_ehash_entries", 0)
    kids, paths = _namespaces(n)
    res: dict = {"namespaces": n, "interval_ms": interval_ms, "seconds": seconds}
    try:
        for rnd in range(2):
            for how in ("all", "own-rate"):
                with tempfile.TemporaryDirectory(prefix="tcpsnap-bench-rate-") as d, \
                        tcpsnap.Snapshotter(netns=[*paths, "/proc/self/ns/net"]) as snap:
                    src = _Logged(snap)
                    if how == "all":
                        snap.namespaces.rate.budget_ns = 1 << 62
                    c0 = time.process_time_ns()
                    with tcpsnap.Recorder(d + "/rec", snapshotter=src, interval=f"{interval_ms}ms") as rec:
                        rec.run(duration=seconds)
                        st = rec.stats
                    cpu = time.process_time_ns() - c0
                    gaps = []
                    for ino in {i for d_ in src.dumped for i in d_}:
                        at = [k for k, d_ in enumerate(src.dumped) if ino in d_]
                        gaps.append(max(b - a for a, b in zip([0, *at], [*at, len(src.dumped)], strict=True)))
                    slots = st["snapshots"] + st["overruns"]
                    got = {"snapshots": st["snapshots"], "overruns": st["overruns"],
                           "on_time": st["snapshots"] / slots if slots else 0.0,
                           "partial": st.get("netns_partial", 0),
                           "max_gap_snapshots": max(gaps) if gaps else 0,
                           "cpu_s": cpu / 1e9, "loadavg": loadavg()}
                    res[f"{how}-{rnd}"] = got
                    print(f"{how:9} round {rnd}: {got['snapshots']} snapshots, {got['overruns']} overruns "
                          f"({got['on_time']:.1%} of slots taken), partial {got['partial']}, each namespace "
                          f"dumped at least every {got['max_gap_snapshots']} snapshots, CPU {got['cpu_s']:.2f} s; "
                          f"load {got['loadavg']}", flush=True)
    finally:
        for kid in kids:
            kid.kill()
        for kid in kids:
            kid.wait()
    on = {h: statistics.mean(res[f"{h}-{r}"]["on_time"] for r in range(2)) for h in ("all", "own-rate")}
    res["on_time_ratio"] = on["own-rate"] / on["all"] if on["all"] else float("inf")
    print(f"slots taken: all {on['all']:.1%}, own rate {on['own-rate']:.1%} "
          f"(ratio {res['on_time_ratio']:.2f})", flush=True)
    return res


# ------------------------------------------------------------------ attribution

WORKER = r"""
import json, os, statistics, sys, tempfile, time
import tcpsnap
snap = tcpsnap.Snapshotter(capacity=1 << 15)
for _ in range(5):
    snap.take()
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "take":
        out, cpu = [], []
        for _ in range(int(cmd[1])):
            c0 = time.process_time_ns()
            t0 = time.perf_counter_ns()
            snap.take()
            out.append(time.perf_counter_ns() - t0)
            cpu.append(time.process_time_ns() - c0)
        print(json.dumps({"take_ns": out, "cpu_ns": cpu, "rows": len(snap.take())}), flush=True)
    elif cmd[0] == "record":
        d = tempfile.mkdtemp(prefix="tcpsnap-bench-attr-")
        with tcpsnap.Recorder(d + "/rec", interval=0, pids=False) as rec:
            rec.run(duration=float(cmd[1]))
        import pyarrow.parquet as pq
        files = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.endswith(".parquet")]
        rows = sum(pq.read_metadata(f).num_rows for f in files)
        size = sum(os.path.getsize(f) for f in files)
        cols = {}
        for f in files:           # column chunks: the data, without the footer
            md = pq.read_metadata(f)
            for g in range(md.num_row_groups):
                rg = md.row_group(g)
                for c in range(rg.num_columns):
                    cc = rg.column(c)
                    cols[cc.path_in_schema] = cols.get(cc.path_in_schema, 0) + cc.total_compressed_size
        data = sum(cols.values())
        new = sum(cols.get(c, 0) for c in ("cgroup_id", "cgroup", "container", "pod_uid", "netns"))
        print(json.dumps({"rows": rows, "bytes": size, "bytes_per_row": size / rows,
                          "data_bytes_per_row": data / rows, "new_columns_bytes_per_row": new / rows,
                          "columns": cols}), flush=True)
        import shutil; shutil.rmtree(d)
"""


def _hold(rows: int) -> list[socket.socket]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, rows + 1000)), hard))
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    keep = [lst]
    for _ in range(rows // 2):
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        keep += [c, s]
    return keep


def run_attribution(main_python: str, rows: int, rounds: int, seconds: float) -> dict:
    keep = _hold(rows)
    env = dict(os.environ, PYTHONPATH="")
    workers = {"this": subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True),
               "main": subprocess.Popen([main_python, "-c", WORKER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd="/")}

    def ask(w: str, cmd: str) -> dict:
        workers[w].stdin.write(cmd + "\n")
        workers[w].stdin.flush()
        return json.loads(workers[w].stdout.readline())

    try:
        take: dict[str, list] = {"this": [], "main": []}
        cpu: dict[str, list] = {"this": [], "main": []}
        got_rows = {}
        for _ in range(rounds):
            for w in ("main", "this"):
                r = ask(w, "take 20")
                take[w] += r["take_ns"]
                cpu[w] += r["cpu_ns"]
                got_rows[w] = r["rows"]
        med = {w: statistics.median(v) for w, v in take.items()}
        cmed = {w: statistics.median(v) for w, v in cpu.items()}
        pairs = [a / b for a, b in zip(take["this"], take["main"], strict=False)]
        disk = {w: ask(w, f"record {seconds}") for w in ("main", "this")}
    finally:
        for p in workers.values():
            p.stdin.close()
            p.wait(60)
        for s in keep:
            s.close()
    res = {"rows": got_rows, "take_median_us": {w: v / 1e3 for w, v in med.items()},
           "take_ratio": med["this"] / med["main"], "take_ratio_of_pairs": statistics.median(pairs),
           "take_cpu_median_us": {w: v / 1e3 for w, v in cmed.items()}, "take_cpu_ratio": cmed["this"] / cmed["main"],
           "disk": disk, "extra_bytes_per_row": disk["this"]["bytes_per_row"] - disk["main"]["bytes_per_row"],
           "extra_data_bytes_per_row": disk["this"]["data_bytes_per_row"] - disk["main"]["data_bytes_per_row"],
           "loadavg": loadavg()}
    print(f"take(): this {res['take_median_us']['this']:.0f} us, main {res['take_median_us']['main']:.0f} us, "
          f"ratio {res['take_ratio']:.3f} (paired {res['take_ratio_of_pairs']:.3f}); CPU time: this "
          f"{res['take_cpu_median_us']['this']:.0f} us, main {res['take_cpu_median_us']['main']:.0f} us, ratio "
          f"{res['take_cpu_ratio']:.3f}; rows {got_rows}; "
          f"load {res['loadavg']}", flush=True)
    print(f"disk: this {disk['this']['bytes_per_row']:.4f} B/row, main {disk['main']['bytes_per_row']:.4f} B/row "
          f"({disk['this']['rows']} / {disk['main']['rows']} rows): {res['extra_bytes_per_row']:+.4f} B/row; "
          f"column data only: {res['extra_data_bytes_per_row']:+.4f} B/row; the new columns' own data: "
          f"{disk['this']['new_columns_bytes_per_row']:.4f} B/row; load {loadavg()}", flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("namespaces", "rate", "attribution"))
    ap.add_argument("--counts", default="1,20,100", help="namespace counts (default: 1,20,100)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=10000, help="attribution: rows in the table")
    ap.add_argument("--seconds", type=float, default=10.0, help="attribution, rate: seconds of recording")
    ap.add_argument("--interval-ms", type=int, default=10, help="rate: the snapshot interval")
    ap.add_argument("--main-python", default=None, help="attribution: a python with main's tcpsnap")
    _results.add_json_argument(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_netns: needs root (unshare -n, setns)", file=sys.stderr)
        return 2
    stage = os.environ.get(NETNS_ENV)
    if stage is None or (stage == "1" and args.part == "attribution"):
        # our own namespace: the sysctl is set there, the table is only ours. The attribution
        # part goes one namespace deeper, with a private hash (as bench_snapshot): only its
        # own sockets are walked, so what tcpsnap adds per row is not lost in other sockets
        if stage == "1":
            sysctl("net.ipv4.tcp_child_ehash_entries", 65536)
        env = dict(os.environ, **{NETNS_ENV: "2" if stage == "1" else "1"})
        return subprocess.call(["unshare", "-n", sys.executable, *sys.argv], env=env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    run = _results.Run("bench_netns", args.json)
    print(f"load {loadavg()}", flush=True)
    if args.part == "namespaces":
        res = run_namespaces([int(c) for c in args.counts.split(",")], args.rounds)
    elif args.part == "rate":
        res = run_rate(int(args.counts.split(",")[-1]), args.interval_ms, args.seconds)
    else:
        if not args.main_python:
            print("bench_netns: attribution needs --main-python", file=sys.stderr)
            return 2
        res = run_attribution(args.main_python, args.rows, args.rounds, args.seconds)
    run.write({"part": args.part, **res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
