"""Recorder benchmark: the recorder's rate, timing, CPU, bytes per row and memory.

  rate     (a) at --interval 0, the recorder's snapshots/s against the floor's
           dumps/s (benchmarks/floor.c), with 1k and 10k loopback connections, in
           interleaved blocks; checks that every snapshot was written (read back);
           (c) bytes per row on disk for that steady table.
  dumps    NetlinkDumper.dump() and Snapshotter(pids=True).take() in a loop, their
           thread CPU per call against the floor's CPU per dump, in turn.
  phases   at --interval 0, the capture thread's CPU and wall time per snapshot by phase
           (dump, pids, names, into the batch, changes mode's step), its context
           switches, and the writer thread's CPU: load-robust where rates are not.
  ontime   (b) at 10 ms with 1k connections: share of snapshot slots taken on
           time, start lateness, the recorder's CPU per snapshot against a loop of
           take() alone at the same rate; (d) RSS every 10 s of a 10-minute run.

    python3 benchmarks/bench_recorder.py rate
    python3 benchmarks/bench_recorder.py phases --sizes 1000,10000 --rounds 3 --seconds 4
    python3 benchmarks/bench_recorder.py ontime --minutes 10      # ~11 minutes
    python3 benchmarks/bench_recorder.py rate --sizes 100 --rounds 1 --seconds 1 --pids off   # quick
    python3 benchmarks/bench_recorder.py rate --pids off --metrics both   # the cost of --metrics
    python3 benchmarks/bench_recorder.py ontime --n 100 --minutes 0.2 --take-seconds 2        # quick

Runs (as root) in a private network namespace with its own TCP hash, so the table
holds exactly our connections (bench_snapshot.ensure_netns / Connections / Floor).
Each prints a markdown section and writes the raw results, with the medians the
section shows, to a JSON file (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _results  # noqa: E402
import bench_snapshot as bs  # noqa: E402  (netns, connection helpers, the floor)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def files_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("date=*/*.parquet"))


def read_back(d: Path) -> tuple[int, int]:
    """(distinct seq, rows) of a finished recording."""
    import pyarrow.dataset as ds

    t = ds.dataset(str(d), format="parquet", partitioning="hive").to_table(columns=["seq"])
    import pyarrow.compute as pc

    return len(pc.unique(t.column("seq"))), t.num_rows


def machine() -> dict:
    import platform

    import numpy
    import pyarrow

    try:
        load = os.getloadavg()
    except OSError:
        load = (0, 0, 0)
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "numpy": numpy.__version__, "pyarrow": pyarrow.__version__,
            "loadavg": [round(x, 2) for x in load]}


# ---------------------------------------------------------------- (a) + (c)

def floor_block(floor: bs.Floor, seconds: float, chunk: int) -> dict:
    t0 = time.perf_counter()
    n = 0
    ns = []
    while time.perf_counter() - t0 < seconds:
        got = floor.dumps(chunk)
        n += len(got)
        ns += [g[0] for g in got]
    wall = time.perf_counter() - t0
    return {"rate": n / wall, "dumps": n, "mean_ms": statistics.mean(ns) / 1e6}


#: --metrics: another process scrapes http://.../metrics every --scrape-every seconds
SCRAPER = """
import select, sys, urllib.request
url, every, ok = sys.argv[1], float(sys.argv[2]), 0
print("ready", flush=True)
sys.stdin.readline()
while not select.select([sys.stdin], [], [], every)[0]:  # until told to stop
    with urllib.request.urlopen(url, timeout=10) as r:
        ok += b"tcpsnap_snapshots_total" in r.read()
print(ok)
"""


def recorder_block(seconds: float, pids: bool, workdir: Path, metrics: bool = False,
                   scrape_every: float = 1.0, mode: str = "full") -> dict:
    import subprocess

    from tcpsnap import Recorder

    out = workdir / "rec"
    shutil.rmtree(out, ignore_errors=True)
    c0 = cpu_s()
    scrapes = 0
    with Recorder(out, interval=0, pids=pids, rotate="1h", mode=mode) as rec:
        exp = scraper = None
        if metrics:  # served by this process, scraped by another (its CPU is not ours)
            from tcpsnap.record.metrics import MetricsExporter

            exp = MetricsExporter(rec, listen="127.0.0.1:0").start()
            scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, str(exp.url), str(scrape_every)],
                                       stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
            assert scraper.stdout is not None and scraper.stdin is not None
            scraper.stdout.readline()  # started (its start-up is not in the timed run)
            scraper.stdin.write("go\n")
            scraper.stdin.flush()
        t0 = time.perf_counter()
        rec.run(duration=seconds)
        wall = time.perf_counter() - t0
        if scraper is not None and exp is not None:
            scrapes = int(scraper.communicate("stop\n", timeout=60)[0].strip() or 0)
            exp.close()
    close_s = time.perf_counter() - t0 - wall
    cpu = cpu_s() - c0
    snaps, rows = read_back(out)
    nbytes = files_bytes(out)
    res = {"rate": rec.snapshots / wall, "snapshots": rec.snapshots, "rows": rec.rows,
           "written_snapshots": snaps, "written_rows": rows, "everything_written":
           snaps == rec.snapshots and rows == rec.rows, "bytes": nbytes,
           "bytes_per_row": nbytes / max(rows, 1), "writer_waits": rec.writer_waits,
           "cpu_cores": cpu / (wall + close_s), "cpu_ms_per_snapshot": cpu / max(rec.snapshots, 1) * 1e3,
           "close_s": close_s, "pids": rec.pids_enabled, "metrics": metrics, "scrapes": scrapes}
    shutil.rmtree(out, ignore_errors=True)
    return res


def run_rate(sizes: list[int], rounds: int, seconds: float, pids_modes: list[bool],
             metrics_modes: tuple[bool, ...] = (False,), scrape_every: float = 1.0,
             mode: str = "full") -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="tcpsnap-benchrec-"))
    floor = bs.Floor()
    out = {"machine": machine(), "sizes": {}}
    try:
        for n in sizes:
            with bs.Connections(n) as conns:
                chunk = 50 if n <= 2000 else 8
                floor.dumps(5)
                res = {"rows": conns.rows, "rounds": []}
                for r in range(rounds):
                    rnd = {}
                    order = ["floor"] + [f"rec_pids_{'on' if p else 'off'}{'_metrics' if m else ''}"
                                         for p in pids_modes for m in metrics_modes]
                    if r % 2:
                        order.reverse()
                    for what in order:
                        if what == "floor":
                            rnd["floor"] = floor_block(floor, seconds, chunk)
                        else:
                            rnd[what] = recorder_block(seconds, "pids_on" in what, workdir,
                                                       what.endswith("_metrics"), scrape_every, mode)
                    for k in rnd:
                        if k.startswith("rec_"):
                            rnd[k]["x_floor"] = rnd[k]["rate"] / rnd["floor"]["rate"]
                    res["rounds"].append(rnd)
                    print(json.dumps({"n": n, "round": r, **{k: round(v["rate"], 1) for k, v in rnd.items()}}),
                          file=sys.stderr, flush=True)
                out["sizes"][n] = res
    finally:
        floor.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def rate_summary(res: dict) -> list[dict]:
    """One row per size and pids mode: medians over the rounds."""
    out = []
    for n, r in res["sizes"].items():
        modes = [k for k in r["rounds"][0] if k.startswith("rec_")]
        for m in modes:
            out.append({
                "n": int(n), "rows": r["rows"], "mode": m.replace("rec_", ""),
                "floor_rate": statistics.median(x["floor"]["rate"] for x in r["rounds"]),
                "recorder_rate": statistics.median(x[m]["rate"] for x in r["rounds"]),
                "x_floor": statistics.median(x[m]["x_floor"] for x in r["rounds"]),
                "x_floor_rounds": [x[m]["x_floor"] for x in r["rounds"]],
                "everything_written": all(x[m]["everything_written"] for x in r["rounds"]),
                "bytes_per_row": statistics.median(x[m]["bytes_per_row"] for x in r["rounds"]),
                "cpu_cores": statistics.median(x[m]["cpu_cores"] for x in r["rounds"]),
                "writer_waits": sum(x[m]["writer_waits"] for x in r["rounds"]),
                "scrapes": sum(x[m].get("scrapes", 0) for x in r["rounds"]),
            })
    return out


def rate_markdown(res: dict, argv: str) -> str:
    lines = [f"Command: `python3 benchmarks/bench_recorder.py {argv}`  ",
             f"Machine: {res['machine']}", ""]
    lines.append("| connections (rows) | floor dumps/s | recorder snapshots/s | x floor (median of rounds) | "
                 "all rounds x floor | everything written | bytes/row | recorder CPU (cores) | writer waits |")
    lines.append("|---|---:|---:|---:|---|---|---:|---:|---:|")
    for s in rate_summary(res):
        lines.append(f"| {s['n']:,} ({s['rows']:,}) {s['mode']} | {s['floor_rate']:,.0f} | "
                     f"{s['recorder_rate']:,.0f} | **{s['x_floor']:.2f}** | "
                     f"{' '.join(f'{x:.2f}' for x in s['x_floor_rounds'])} | "
                     f"{'yes' if s['everything_written'] else 'NO'} | {s['bytes_per_row']:.3f} | "
                     f"{s['cpu_cores']:.2f} | {s['writer_waits']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- phases

class _Timed:
    """Forwards every attribute to ``obj``; the methods named in ``timed`` are timed into
    ``acc[name]`` = [wall ns, thread CPU ns, calls] (a Cython object takes no attribute,
    so it is wrapped rather than patched)."""

    def __init__(self, obj, acc: dict, timed: tuple[str, ...]) -> None:
        object.__setattr__(self, "_obj", obj)
        for name in timed:
            object.__setattr__(self, name, _timer(getattr(obj, name), acc, name))

    def __getattr__(self, name):
        return getattr(self._obj, name)

    def __setattr__(self, name, value):
        setattr(self._obj, name, value)


def _timer(fn, acc: dict, name: str):
    slot = acc.setdefault(name, [0, 0, 0])
    wall, cpu = time.perf_counter_ns, time.thread_time_ns

    def timed(*a, **kw):
        w0, c0 = wall(), cpu()
        try:
            return fn(*a, **kw)
        finally:
            slot[0] += wall() - w0
            slot[1] += cpu() - c0
            slot[2] += 1
    return timed


def _ctx_switches() -> tuple[int, int]:
    """This thread's (voluntary, involuntary) context switches: a voluntary one is mostly a
    wait for the GIL (netlink dumps are made in recv itself, and nothing else blocks)."""
    v = i = 0
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                v = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                i = int(line.split()[1])
    return v, i


def _schedstat() -> tuple[int, int]:
    """This thread's (CPU ns, ns waiting on a run queue) from /proc/self/task/TID/schedstat:
    wall minus both is the time it was blocked (on a busy 2-core machine, mostly waits for
    the GIL: a dump is made inside recv itself, and nothing else of capture blocks)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        cpu, wait, _ = f.read().split()
    return int(cpu), int(wait)


def phases_block(seconds: float, workdir: Path, mode: str, batch_rows: int | None = None,
                 stub_writer: bool = False) -> dict:
    """One recording at --interval 0 with pids, the capture thread's time split by phase:
    ``dump`` (the netlink dump and parse, Snapshotter's backend), ``resolve`` (pids),
    ``names`` (process-name codes), ``step`` (changes mode: diff and events), ``add``
    (into the batch, names and step included), ``take`` (dump + resolve + filter);
    ``other`` = the capture thread's total minus take and add (the schedule loop, hand-offs,
    waits for a free batch). Wall and thread-CPU ms per snapshot (the wrappers cost ~1 us
    a call, the same for every build). ``blocked``: wall minus CPU minus run-queue wait
    (/proc schedstat), the capture thread's waits for the GIL. ``stub_writer``: batches go
    straight back to the pool, unwritten (what the writer thread costs capture)."""
    from tcpsnap import Recorder

    out = workdir / "rec"
    shutil.rmtree(out, ignore_errors=True)
    acc: dict = {}
    kw = {"batch_rows": batch_rows} if batch_rows else {}
    with Recorder(out, interval=0, pids=True, rotate="1h", mode=mode, **kw) as rec:
        snap = rec._snap
        impl = snap._impl
        snap._impl = _Timed(impl, acc, ("dump",))
        if hasattr(impl, "dump_into"):        # full mode dumps into the batch: timed as "dump"
            object.__setattr__(snap._impl, "dump_into", _timer(impl.dump_into, acc, "dump"))
        if snap._resolver is not None:
            snap._resolver = _Timed(snap._resolver, acc, ("resolve", "process_names"))
        cap = rec._capture
        snap.take = _timer(snap.take, acc, "take")
        if getattr(cap, "_take_into", None) is not None:    # ... and takes into it: "take"
            cap._take_into = _timer(snap.take_into, acc, "take")
        cap.add = _timer(cap.add, acc, "add")
        if rec._tracker is not None:
            rec._tracker.step = _timer(rec._tracker.step, acc, "step")
        if stub_writer:
            cap._writer = _Stub(cap._pool)
        res0 = dict(snap.pid_stats.get("phase_seconds", {}))
        wcpu0 = rec._writer.cpu_ns
        x0 = _ctx_switches()
        s0 = _schedstat()
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        rec.run(duration=seconds)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        s1 = _schedstat()
        x1 = _ctx_switches()
        n = rec.snapshots
        wcpu = rec._writer.cpu_ns - wcpu0
        res1 = dict(snap.pid_stats.get("phase_seconds", {}))
    shutil.rmtree(out, ignore_errors=True)
    ms = {k: {"wall": v[0] / n / 1e6, "cpu": v[1] / n / 1e6, "calls": v[2]} for k, v in acc.items()}
    ms["capture_thread"] = {"wall": (w1 - w0) / n / 1e6, "cpu": (c1 - c0) / n / 1e6, "calls": n}
    ms["other"] = {x: ms["capture_thread"][x] - ms["take"][x] - ms["add"][x] for x in ("wall", "cpu")}
    ms["writer_thread"] = {"cpu": wcpu / n / 1e6}
    ms["run_queue"] = {"wall": (s1[1] - s0[1]) / n / 1e6}
    ms["blocked"] = {"wall": ((w1 - w0) - (s1[0] - s0[0]) - (s1[1] - s0[1])) / n / 1e6}
    ms["resolver_phases"] = {k: (res1.get(k, 0) - res0.get(k, 0)) / n * 1e3 for k in res1}
    return {"snapshots": n, "rate": n / ((w1 - w0) / 1e9), "ms_per_snapshot": ms,
            "voluntary_switches_per_snapshot": (x1[0] - x0[0]) / n,
            "involuntary_switches_per_snapshot": (x1[1] - x0[1]) / n}


class _Stub:
    """A writer that writes nothing: each batch goes straight back to the pool."""

    def __init__(self, pool) -> None:
        self._pool = pool
        self.cpu_ns = 0

    def put(self, b) -> None:
        self._pool.put(b)


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (clock ticks: 10 ms; read over seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def floor_cpu_block(floor: bs.Floor, seconds: float, chunk: int) -> dict:
    """The floor's dumps for ``seconds``: its CPU per dump (the process's own), and its rate."""
    c0 = _proc_cpu_s(floor.proc.pid)
    r = floor_block(floor, seconds, chunk)
    r["cpu_ms_per_dump"] = (_proc_cpu_s(floor.proc.pid) - c0) / max(r["dumps"], 1) * 1e3
    return r


def run_phases(sizes: list[int], rounds: int, seconds: float, mode: str, batch_rows: int | None = None,
               stub_writer: bool = False) -> dict:
    """Per size and round, the floor's dumps then the recorder's phases (the order swapped
    every other round): the capture thread's CPU per snapshot over the floor's CPU per dump
    is the load-robust form of the rate target."""
    workdir = Path(tempfile.mkdtemp(prefix="tcpsnap-benchrec-"))
    floor = bs.Floor()
    out: dict = {"machine": machine(), "mode": mode, "stub_writer": stub_writer, "sizes": {}}
    try:
        for n in sizes:
            with bs.Connections(n) as conns:
                floor.dumps(5)
                rs = []
                for r in range(rounds):
                    fl = None
                    if r % 2 == 0:
                        fl = floor_cpu_block(floor, seconds, 50 if n <= 2000 else 8)
                    ph = phases_block(seconds, workdir, mode, batch_rows, stub_writer)
                    if fl is None:
                        fl = floor_cpu_block(floor, seconds, 50 if n <= 2000 else 8)
                    ph["floor"] = fl
                    ph["cpu_x_floor"] = ph["ms_per_snapshot"]["capture_thread"]["cpu"] / fl["cpu_ms_per_dump"]
                    rs.append(ph)
                    print(json.dumps({"n": n, "round": r, "rate": round(ph["rate"], 1),
                                      "floor_rate": round(fl["rate"], 1),
                                      "capture_cpu_x_floor_cpu": round(ph["cpu_x_floor"], 3),
                                      "loadavg": os.getloadavg()[0]}), file=sys.stderr, flush=True)
                out["sizes"][n] = {"rows": conns.rows, "rounds": rs}
    finally:
        floor.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


PHASE_ORDER = ("capture_thread", "take", "dump", "resolve", "add", "process_names", "step", "other",
               "run_queue", "blocked")


def phases_markdown(res: dict, argv: str) -> str:
    lines = [f"Command: `python3 benchmarks/bench_recorder.py {argv}`  ",
             f"Machine: {res['machine']}", "",
             "Capture thread, ms per snapshot (median of rounds), thread CPU / wall; "
             "writer thread CPU ms per snapshot:", "",
             "| connections | phase | CPU ms | wall ms |", "|---|---|---:|---:|"]
    for n, r in res["sizes"].items():
        rounds = r["rounds"]
        for ph in PHASE_ORDER:
            if ph not in rounds[0]["ms_per_snapshot"]:
                continue
            c = statistics.median(x["ms_per_snapshot"][ph].get("cpu", 0) for x in rounds)
            w = statistics.median(x["ms_per_snapshot"][ph]["wall"] for x in rounds)
            lines.append(f"| {int(n):,} | {ph} | {c:.3f} | {w:.3f} |")
        over = statistics.median(x["ms_per_snapshot"]["capture_thread"]["cpu"] - x["ms_per_snapshot"]["dump"]["cpu"]
                                 for x in rounds)
        lines.append(f"| {int(n):,} | capture thread beyond the dump (pids, names, batch, loop) | {over:.3f} | |")
        c = statistics.median(x["ms_per_snapshot"]["writer_thread"]["cpu"] for x in rounds)
        lines.append(f"| {int(n):,} | writer thread | {c:.3f} | |")
        for k in rounds[0]["ms_per_snapshot"]["resolver_phases"]:
            v = statistics.median(x["ms_per_snapshot"]["resolver_phases"][k] for x in rounds)
            lines.append(f"| {int(n):,} | resolve: {k} (wall) | | {v:.3f} |")
        for k in ("voluntary", "involuntary"):
            v = statistics.median(x[f"{k}_switches_per_snapshot"] for x in rounds)
            lines.append(f"| {int(n):,} | capture thread {k} context switches per snapshot | {v:.2f} | |")
        rate = statistics.median(x["rate"] for x in rounds)
        lines.append(f"| {int(n):,} | snapshots/s | | {rate:,.0f} |")
        fc = statistics.median(x["floor"]["cpu_ms_per_dump"] for x in rounds)
        fr = statistics.median(x["floor"]["rate"] for x in rounds)
        lines.append(f"| {int(n):,} | floor: CPU per dump, dumps/s | {fc:.3f} | {fr:,.0f}/s |")
        xs = " ".join(f"{x['cpu_x_floor']:.3f}" for x in rounds)
        lines.append(f"| {int(n):,} | capture thread CPU / floor CPU (rounds) | "
                     f"{statistics.median(x['cpu_x_floor'] for x in rounds):.3f} ({xs}) | |")
    return "\n".join(lines)


# ---------------------------------------------------------------- dumps

def _loop_cpu(fn, k: int) -> float:
    """This thread's CPU ms per call of fn over k calls (one warm-up call first)."""
    fn()
    c0 = time.thread_time_ns()
    for _ in range(k):
        fn()
    return (time.thread_time_ns() - c0) / k / 1e6


def _sched_ns(pid: int) -> int:
    """CPU time of process ``pid`` in ns (/proc/PID/schedstat: finer than utime's ticks)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


class _Batch:
    """A recorder's batch (128Ki rows) that snapshots fill one after the other, from the
    start again when the next would not fit."""

    def __init__(self, snap, rows: int) -> None:
        import numpy as np

        from tcpsnap import ROW_DTYPE
        from tcpsnap._encode import put_rows

        self.snap, self.rows, self.put = snap, rows, put_rows
        self.batch = np.zeros(1 << 17, ROW_DTYPE)
        self.at = 0

    def slot(self, m: int) -> int:
        i = self.at if self.at + m <= len(self.batch) else 0
        self.at = i + m
        return i

    def take_copy(self) -> None:
        rows = self.snap.take()
        self.put(self.batch, self.slot(len(rows)), rows)

    def take_into(self) -> None:
        i = self.slot(self.rows + 64)
        rows, placed = self.snap.take_into(self.batch, i)
        self.at = i + len(rows)
        if not placed:
            raise AssertionError("the batch had room")


def run_dumps(sizes: list[int], rounds: int, count: int) -> dict:
    """Per size and round, in turn (order rotated each round): the floor's CPU per dump
    (its process, /proc), ``NetlinkDumper.dump()`` (dump, parse, dedupe and cgroups) and
    ``Snapshotter(pids=True).take()`` (plus pids), that take copied into a 128Ki-row
    batch (``take_copy``: what a recorder did) and ``take_into`` that batch (what it does
    now), each ``count`` times per 1,000 connections back to back on this thread: the
    capture path's C cost over the floor without the recorder around it."""
    from tcpsnap import Snapshotter
    from tcpsnap._netlink import NetlinkDumper

    floor = bs.Floor()
    out: dict = {"machine": machine(), "sizes": {}}
    try:
        for n in sizes:
            with bs.Connections(n) as conns, Snapshotter(pids=True) as snap:
                d = NetlinkDumper()
                snap.take()                       # the first walk, in place
                b = _Batch(snap, conns.rows)
                calls = {"dump": d.dump, "take": snap.take, "take_copy": b.take_copy, "take_into": b.take_into}
                floor.dumps(5)
                rs = []
                k = max(30, count * 1000 // n)    # calls per block: about as long at every size
                what = ["floor", "dump", "take", "take_copy", "take_into"][:5 if hasattr(snap, "take_into") else 4]
                for r in range(rounds):
                    res: dict = {}
                    for w in what[r % len(what):] + what[:r % len(what)]:
                        if w == "floor":
                            c0 = _sched_ns(floor.proc.pid)
                            floor.dumps(k)
                            res[w] = (_sched_ns(floor.proc.pid) - c0) / k / 1e6
                        else:
                            res[w] = _loop_cpu(calls[w], k)
                    for w in what[1:]:
                        res[f"{w}_x_floor"] = res[w] / res["floor"]
                    res["loadavg"] = os.getloadavg()[0]
                    rs.append(res)
                    print(json.dumps({"n": n, "round": r, **{k: round(v, 4) for k, v in res.items()}}),
                          file=sys.stderr, flush=True)
                d.close()
                out["sizes"][n] = {"rows": conns.rows, "rounds": rs, "duplicates": d.duplicates}
    finally:
        floor.close()
    return out


def dumps_markdown(res: dict, argv: str) -> str:
    lines = [f"Command: `python3 benchmarks/bench_recorder.py {argv}`  ",
             f"Machine: {res['machine']}", "",
             "CPU ms per call (median of rounds) and x the floor's CPU per dump (each round's ratio):", "",
             "| connections (rows) | what | CPU ms | x floor | rounds |", "|---|---|---:|---:|---|"]
    for n, r in res["sizes"].items():
        rs = r["rounds"]
        for w in ("floor", "dump", "take", "take_copy", "take_into"):
            if w not in rs[0]:
                continue
            c = statistics.median(x[w] for x in rs)
            if w == "floor":
                lines.append(f"| {int(n):,} ({r['rows']:,}) | floor | {c:.3f} | | |")
                continue
            xs = [x[f"{w}_x_floor"] for x in rs]
            lines.append(f"| {int(n):,} | {w} | {c:.3f} | **{statistics.median(xs):.3f}** | "
                         f"{' '.join(f'{x:.3f}' for x in xs)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- (b) + (d)

def take_alone(seconds: float, interval_ns: int, pids: bool) -> dict:
    """take() on the same fixed-rate schedule, nothing else: CPU per snapshot."""
    import tcpsnap

    with tcpsnap.Snapshotter(pids=pids) as s:
        s.take()
        c0 = cpu_s()
        start = time.monotonic_ns()
        k = 0
        end = start + int(seconds * 1e9)
        while True:
            t = start + k * interval_ns
            if t >= end:
                break
            now = time.monotonic_ns()
            if now < t:
                time.sleep((t - now) / 1e9)
            s.take()
            k += 1
        cpu = cpu_s() - c0
    return {"takes": k, "cpu_ms_per_snapshot": cpu / k * 1e3}


def run_ontime(n: int, interval: str, minutes: float, rotate: str, pids: bool | None,
               take_seconds: float) -> dict:
    from tcpsnap import Recorder
    from tcpsnap._units import parse_duration

    interval_ns = int(parse_duration(interval) * 1e9)
    workdir = Path(tempfile.mkdtemp(prefix="tcpsnap-benchrec-"))
    out = workdir / "rec"
    res: dict = {"machine": machine(), "n": n, "interval": interval, "minutes": minutes, "rotate": rotate}
    try:
        with bs.Connections(n) as conns:
            res["rows_per_snapshot"] = conns.rows
            res["take_alone"] = take_alone(take_seconds, interval_ns, bool(pids) if pids is not None else True)
            samples = []
            rec = Recorder(out, interval=interval, rotate=rotate, pids=pids)
            rec.open()
            stop = threading.Event()

            def sampler():
                t0 = time.monotonic()
                while not stop.wait(10.0):
                    samples.append({"t": round(time.monotonic() - t0, 1), "rss_kb": rss_kb(),
                                    "snapshots": rec.snapshots, "overruns": rec.overruns,
                                    "writer_waits": rec.writer_waits, "bytes": rec.bytes_written})

            th = threading.Thread(target=sampler, daemon=True)
            c0 = cpu_s()
            th.start()
            t0 = time.perf_counter()
            rec.run(duration=minutes * 60)
            wall = time.perf_counter() - t0
            rec.close()
            stop.set()
            th.join()
            cpu = cpu_s() - c0
            hist = rec.late_hist
            taken = rec.snapshots
            slots = taken + rec.overruns

            def share_late_below(ns: int) -> float:
                # hist[b] counts lateness with bit_length b, i.e. in [2**(b-1), 2**b)
                ok = sum(c for b, c in enumerate(hist) if (1 << b) <= ns)
                return ok / slots

            snaps, rows = read_back(out)
            res.update({
                "pids": rec.pids_enabled, "wall_s": wall, "slots": slots, "snapshots": taken,
                "overruns": rec.overruns, "writer_waits": rec.writer_waits,
                "on_time_share": taken / slots,
                "started_within_1ms_share": share_late_below(1_000_000),
                "started_within_2ms_share": share_late_below(2_000_000),
                "late_max_ms": rec.late_max_ns / 1e6, "late_hist": hist,
                "cpu_ms_per_snapshot": cpu / taken * 1e3, "cpu_cores": cpu / wall,
                "written_snapshots": snaps, "written_rows": rows, "rows": rec.rows,
                "bytes": files_bytes(out), "bytes_per_row": files_bytes(out) / max(rows, 1),
                "files": len(rec.files), "samples": samples,
            })
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


def _rss_at(samples: list[dict], t: float) -> int:
    return min(samples, key=lambda s: abs(s["t"] - t))["rss_kb"]


def ontime_markdown(r: dict, argv: str) -> str:
    s = r["samples"]
    m1 = _rss_at(s, 60)
    mlast = _rss_at(s, r["minutes"] * 60)
    take_cpu = r["take_alone"]["cpu_ms_per_snapshot"]
    lines = [f"Command: `python3 benchmarks/bench_recorder.py {argv}`  ",
             f"Machine: {r['machine']}", "",
             f"{r['n']:,} connections ({r['rows_per_snapshot']:,} rows per snapshot), interval "
             f"{r['interval']}, rotate {r['rotate']}, pids {'on' if r['pids'] else 'off'}, "
             f"{r['wall_s']:.0f} s.", "",
             "| measure | value |", "|---|---:|",
             f"| snapshot slots | {r['slots']:,} |",
             f"| taken on time (within their slot) | {r['snapshots']:,} = **{r['on_time_share'] * 100:.2f}%** |",
             f"| overruns (slots missed) | {r['overruns']:,} |",
             f"| started within 1 ms / 2 ms of schedule | {r['started_within_1ms_share'] * 100:.2f}% / "
             f"{r['started_within_2ms_share'] * 100:.2f}% |",
             f"| worst start delay of a taken snapshot | {r['late_max_ms']:.1f} ms |",
             f"| writer waits (pool empty) | {r['writer_waits']} |",
             f"| recorder CPU per snapshot | {r['cpu_ms_per_snapshot']:.3f} ms ({r['cpu_cores']:.2f} cores) |",
             f"| take() alone at the same rate, CPU per snapshot | {take_cpu:.3f} ms |",
             f"| recorder / take() alone CPU | {r['cpu_ms_per_snapshot'] / take_cpu:.2f}x |",
             f"| written: snapshots / rows | {r['written_snapshots']:,} / {r['written_rows']:,} "
             f"({'all' if r['written_rows'] == r['rows'] else 'MISSING ROWS'}) |",
             f"| bytes per row on disk | {r['bytes_per_row']:.3f} |",
             f"| RSS at minute 1 / minute {r['minutes']:g} | {m1 / 1024:.1f} MB / {mlast / 1024:.1f} MB "
             f"(**{(mlast - m1) / 1024:+.1f} MB**) |"]
    lines.append("")
    lines.append("RSS by minute (MB): " + ", ".join(
        f"{int(x['t'] // 60)}:{x['rss_kb'] / 1024:.1f}" for x in s if abs(x["t"] % 60) < 5 or x is s[-1]))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("rate")
    a.add_argument("--sizes", default="1000,10000")
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--seconds", type=float, default=4.0)
    a.add_argument("--pids", choices=("off", "on", "both"), default="both")
    a.add_argument("--mode", choices=("full", "changes"), default="full",
                   help="the recorder's --mode (changes: the destroy feed if permitted)")
    a.add_argument("--metrics", choices=("off", "on", "both"), default="off",
                   help="serve --metrics (scraped by another process) in the recorder blocks")
    a.add_argument("--scrape-every", type=float, default=1.0, metavar="S")
    ph = sub.add_parser("phases", help="the capture thread's time per snapshot by phase")
    ph.add_argument("--sizes", default="1000,10000")
    ph.add_argument("--rounds", type=int, default=3)
    ph.add_argument("--seconds", type=float, default=4.0)
    ph.add_argument("--mode", choices=("full", "changes"), default="full")
    ph.add_argument("--batch-rows", type=int, default=None, help="the recorder's batch_rows (default: its own)")
    ph.add_argument("--stub-writer", action="store_true", help="batches go back to the pool unwritten")
    ph.add_argument("--switch-interval", type=float, default=None, metavar="S",
                    help="sys.setswitchinterval(S) for the whole run (default: Python's)")
    du = sub.add_parser("dumps", help="dump() and take(pids) CPU per call against the floor's")
    du.add_argument("--sizes", default="1000,10000")
    du.add_argument("--rounds", type=int, default=6)
    du.add_argument("--count", type=int, default=600, help="calls per block at 1,000 connections (fewer at more)")
    b = sub.add_parser("ontime")
    b.add_argument("--n", type=int, default=1000)
    b.add_argument("--interval", default="10ms")
    b.add_argument("--minutes", type=float, default=10.0)
    b.add_argument("--rotate", default="15m")
    b.add_argument("--pids", choices=("auto", "off", "on"), default="auto")
    b.add_argument("--take-seconds", type=float, default=60.0)
    for p in (a, ph, du, b):
        _results.add_json_argument(p)
        p.add_argument("--no-netns", action="store_true")
    args = ap.parse_args(argv)
    where = bs.ensure_netns(argv, str(Path(__file__).resolve()), allow=not args.no_netns)
    run = _results.Run(f"bench_recorder-{args.cmd}", args.json, argv)
    shown = " ".join(argv)
    if args.cmd == "rate":
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.pids]
        mmodes = {"off": (False,), "on": (True,), "both": (False, True)}[args.metrics]
        res = run_rate([int(x) for x in args.sizes.split(",")], args.rounds, args.seconds, modes,
                       mmodes, args.scrape_every, args.mode)
        res["mode"] = args.mode
        res["summary"] = rate_summary(res)
        md = rate_markdown(res, shown)
    elif args.cmd == "phases":
        if args.switch_interval is not None:
            sys.setswitchinterval(args.switch_interval)
        res = run_phases([int(x) for x in args.sizes.split(",")], args.rounds, args.seconds, args.mode,
                         args.batch_rows, args.stub_writer)
        res["switch_interval"] = sys.getswitchinterval()
        md = phases_markdown(res, shown)
    elif args.cmd == "dumps":
        res = run_dumps([int(x) for x in args.sizes.split(",")], args.rounds, args.count)
        md = dumps_markdown(res, shown)
    else:
        pids = {"auto": None, "off": False, "on": True}[args.pids]
        res = run_ontime(args.n, args.interval, args.minutes, args.rotate, pids, args.take_seconds)
        md = ontime_markdown(res, shown)
    res["where"] = where
    print(where)
    print(md)
    run.write(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
