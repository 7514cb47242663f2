"""The recorder's threads besides capture, at ``--interval 1s --mode changes`` (pids on)
with N loopback connections (default 10,000): which thread spends what.

For each ``--python`` (alternating order each round), ``tcpsnap record`` runs in a cgroup
(v1 cpuacct) of its own for WARM + ``--seconds`` + 2 s; over the ``--seconds`` window:

- each live thread's CPU, by name (``comm``; the main thread runs ``Recorder.run``, the
  capture), from ``/proc/PID/task/TID/schedstat`` (nanoseconds, not 10 ms ticks), and its
  wake-ups (voluntary + involuntary context switches, ``/proc/PID/task/TID/status``);
- the threads that exited during the window: the cgroup's ``cpuacct.usage`` (every
  thread, exited ones too, in ns) minus the live threads';
- with ``--strace``, one more run per python under ``strace -f`` (slower: counts only):
  system calls per second by thread name and the threads created (``clone3``).

Reported per second (= per snapshot at 1 s): ``other`` = every thread but capture, live
and exited. Run: ``python3 benchmarks/bench_bgthreads.py --python NEW --python MAIN``.
Needs root (cgroup; strace).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results
import bench_snapshot as bs

WARM = 5.0
INTERVAL = "1s"

#: --churn: a process that opens (and accepts) a loopback connection and closes it, RATE
#: times a second: new sockets, so walks
CHURN = r"""
import socket, sys, time
rate = float(sys.argv[1])
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(64)
t0, k = time.monotonic(), 0
while True:
    c = socket.create_connection(lst.getsockname()); a, _ = lst.accept()
    time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
    k += 1
    c.close(); a.close()
"""
CG_ROOT = Path("/sys/fs/cgroup/cpuacct")


def threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (comm, CPU ns, context switches) of each live thread."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{t}"
        try:
            comm = Path(base, "comm").read_text().strip()
            ns = int(Path(base, "schedstat").read_text().split()[0])
            st = Path(base, "status").read_text()
        except (OSError, ValueError):
            continue
        cs = sum(int(m) for m in re.findall(r"_ctxt_switches:\s+(\d+)", st))
        out[int(t)] = (comm, ns, cs)
    return out


def record_cmd(python: str, out: Path, seconds: float) -> list[str]:
    return [python, "-m", "tcpsnap", "record", str(out), "--interval", INTERVAL, "--mode", "changes",
            "--duration", f"{seconds + WARM + 2}s", "-q"]


def run_one(python: str, out: Path, seconds: float) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cg = CG_ROOT / f"tcpsnap-bg-{os.getpid()}-{time.monotonic_ns()}"
    cg.mkdir()
    try:
        p = subprocess.Popen(record_cmd(python, out, seconds),
                             preexec_fn=lambda: (cg / "cgroup.procs").write_text(str(os.getpid())))
        t0 = time.monotonic()
        time.sleep(WARM)
        a, cga = threads(p.pid), int((cg / "cpuacct.usage").read_text())
        time.sleep(max(0.0, t0 + WARM + seconds - time.monotonic()))
        b, cgb = threads(p.pid), int((cg / "cpuacct.usage").read_text())
        p.wait()
    finally:
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    shutil.rmtree(out, ignore_errors=True)
    per: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    live_ns = 0
    for tid, (comm, ns, cs) in b.items():
        ns0, cs0 = (a[tid][1], a[tid][2]) if tid in a else (0, 0)
        name = "capture (main)" if tid == p.pid else comm
        per[name][0] += (ns - ns0) / 1e6 / seconds
        per[name][1] += (cs - cs0) / seconds
        live_ns += ns - ns0
    total = (cgb - cga) / 1e6 / seconds
    exited = max(0.0, (cgb - cga - live_ns) / 1e6 / seconds)
    cap = per.get("capture (main)", [0.0, 0.0])[0]
    return {"rc": p.returncode, "ms_per_s": total, "capture_ms_per_s": cap,
            "other_ms_per_s": total - cap, "exited_ms_per_s": exited,
            "threads": {k: {"ms_per_s": v[0], "wakeups_per_s": v[1]} for k, v in
                        sorted(per.items(), key=lambda kv: -kv[1][0])},
            "threads_created": len([t for t in b if t not in a])}


def run_strace(python: str, out: Path, seconds: float, tmp: Path) -> dict:
    """Syscalls per second by thread name under strace -f over the whole run (start-up
    apart: the first WARM seconds' lines are dropped by their timestamps)."""
    shutil.rmtree(out, ignore_errors=True)
    log = tmp / "strace.log"
    p = subprocess.Popen(["strace", "-f", "-qq", "-ttt", "-o", str(log), *record_cmd(python, out, seconds)])
    names: dict[int, str] = {}
    child = None
    while p.poll() is None:
        # the recorder is strace's child: its threads' names, sampled as they come
        if child is None:
            try:
                kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            except FileNotFoundError:
                kids = []
            child = int(kids[0]) if kids else None
        if child is not None:
            try:
                for tid, (comm, _, _) in threads(child).items():
                    names[tid] = "capture (main)" if tid == child else comm
            except FileNotFoundError:
                pass  # it has just ended
        time.sleep(0.05)
    shutil.rmtree(out, ignore_errors=True)
    counts: collections.Counter = collections.Counter()
    clones = 0
    first = None
    for line in log.read_text().splitlines():
        m = re.match(r"(\d+)\s+(\d+\.\d+)\s+(\w+)\(", line)
        if not m:
            continue
        tid, ts, call = int(m[1]), float(m[2]), m[3]
        if first is None:
            first = ts
        if not (first + WARM <= ts < first + WARM + seconds):
            continue
        counts[(names.get(tid, "unnamed (exited)"), call)] += 1
        clones += call in ("clone", "clone3")
    by_thread: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for (name, call), n in counts.most_common():
        by_thread[name][call] = n / seconds
    log.unlink()
    return {"syscalls_per_s": {k: dict(v) for k, v in by_thread.items()},
            "total_per_s": {k: sum(v.values()) for k, v in by_thread.items()},
            "clones_per_s": clones / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", default=[])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--warm", type=float, default=30.0,
                    help="seconds left out at the start (default 30: start-up, and the resolver's "
                         "one catch-up read of quiet owners' links, 1024 a round)")
    ap.add_argument("--interval", default="1s", help="the recorder's --interval (default 1s)")
    ap.add_argument("--churn", type=float, default=0.0,
                    help="new loopback connections a second (each lives 1/RATE s): walks")
    _results.add_json_argument(ap)
    args = ap.parse_args()
    pythons = args.python or [sys.executable]
    where = bs.ensure_netns(sys.argv[1:], __file__)
    global INTERVAL, WARM
    INTERVAL, WARM = args.interval, args.warm
    run = _results.Run("bench_bgthreads", args.json)
    tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-bg-"))
    res: dict = {"n": args.n, "seconds": args.seconds, "python": pythons, "rounds": [],
                 "load_before": os.getloadavg(), "where": where, "interval": args.interval,
                 "churn": args.churn, "warm": args.warm}
    churn = (subprocess.Popen([sys.executable, "-c", CHURN, str(args.churn)])
             if args.churn > 0 else None)
    try:
        with bs.Connections(args.n) as conns:
            res["rows"] = conns.rows
            for r in range(args.rounds):
                rnd = {}
                for py in (pythons if r % 2 == 0 else pythons[::-1]):
                    rnd[py] = run_one(py, tmp / "rec", args.seconds)
                    rnd[py]["load"] = os.getloadavg()[0]
                    print(json.dumps({py: rnd[py]}), file=sys.stderr, flush=True)
                res["rounds"].append(rnd)
            if args.strace:
                res["strace"] = {py: run_strace(py, tmp / "rec", args.seconds, tmp) for py in pythons}
                print(json.dumps(res["strace"]), file=sys.stderr, flush=True)
    finally:
        if churn is not None:
            churn.kill()  # ours, by pid
            churn.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    for py in pythons:
        rows = [r[py] for r in res["rounds"]]
        print(f"{py}: other threads (live + exited) ms/s per round: "
              + ", ".join(f"{g['other_ms_per_s']:.2f} ({g['other_ms_per_s'] - g['exited_ms_per_s']:.2f} + "
                          f"{g['exited_ms_per_s']:.2f})" for g in rows)
              + "; capture " + ", ".join(f"{g['capture_ms_per_s']:.1f}" for g in rows))
        for name in rows[-1]["threads"]:
            print(f"    {name:>16}: " + ", ".join(
                f"{g['threads'].get(name, {}).get('ms_per_s', 0):.3f} ms/s "
                f"{g['threads'].get(name, {}).get('wakeups_per_s', 0):.1f} wake/s" for g in rows))
    run.write(res)


if __name__ == "__main__":
    main()
