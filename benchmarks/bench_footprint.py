"""Footprint benchmark: the recorder's memory (peak RSS, drift) as a separate process.

  rss     peak RSS (VmHWM) of ``tcpsnap record`` at N loopback connections, for each
          ``--python`` given (e.g. this tree's venv and main's at 71289e7, side by side,
          alternating; ``PATH::OPTIONS`` adds record options, e.g. ``::--no-page-out``),
          mode and interval; also RssFile/RssAnon at the end, major faults, the first
          second's lateness and (``--cgroup``) its own memory cgroup's current and peak.
  stall   the pid-walk stall: a helper holding --fds descriptors, --n connections and
          --rate new connections/s (each living 0.2-3 s, both ends in two processes of
          ours), ``Recorder(interval=10ms, pids=True)`` for --seconds: the share of
          snapshot slots taken (on time), and of the sockets living >= 1 s the share
          that carry their own pid in every snapshot from age 1 s on (wrong pids counted).
          Run it with another interpreter (``--python`` is not used) to measure that
          interpreter's tcpsnap: e.g. main's at 71289e7.
  cpu     CPU seconds of ``tcpsnap record --interval 1s --mode changes`` (pids on) for
          --seconds at --n connections, from 5 s (--warm) in to 2 s before its end (start-up
          and stop apart; the window rounded up to whole keyframe intervals, 60 s: a
          keyframe costs ~20x a quiet snapshot, so a window must hold its share), against
          benchmarks/floor.c doing one dump a second for as long (its own CPU, from
          /proc/<pid>/stat), alternating, --rounds times; each ``--python`` given (e.g.
          this tree's venv and main's) in every round; CPU per snapshot split by thread
          (capture, the other live threads, short-lived threads). ``--together``: the
          floor dumps during each recorder's run instead (half a second after its
          snapshots), each ratio against the floor's CPU of the same seconds.
          ``--phases``: instead, the capture thread's work by phase (``run_phases``): the
          dump, the pid lookup, ``ChangeTracker.step``, each --python in its own process,
          one snapshot a second, beside the floor's dump in the same seconds.
  writer  the writer thread's own CPU per snapshot (``Recorder.stats["writer_cpu_s"]``) of
          ``Recorder(interval=--interval, mode=--mode)`` at --n connections, each --python.
  drift   RSS every --every seconds of one long ``tcpsnap record`` under churn
          (connections opened and closed all the time): first/last/peak and the drift
          (median of the last tenth minus median of the second tenth of the samples), also
          of RssAnon and RssFile alone (each sample: seconds, RSS, RssAnon, RssFile KiB).

    python3 benchmarks/bench_footprint.py rss --sizes 1000 10000 \
        --python /work/venv-footprint/bin/python --python /work/venv-old/bin/python
    python3 benchmarks/bench_footprint.py drift --minutes 60 --n 1000 --out drift.jsonl
    python3 benchmarks/bench_footprint.py stall --fds 100000 --n 1000 --rate 200 --seconds 60
    python3 benchmarks/bench_footprint.py cpu --n 10000 --seconds 30 --rounds 3 \
        --python /work/venv-cpu1s/bin/python --python /work/venv/bin/python

Runs (as root) in a private network namespace (bench_snapshot.ensure_netns), so the
table holds exactly our connections. Each run writes its raw results to a JSON file
(benchmarks/_results.py; ``--json PATH``) and prints a markdown summary.
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
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _results  # noqa: E402
import bench_snapshot as bs  # noqa: E402


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_faults(pid: int) -> int:
    """Major page faults of a process so far (/proc/PID/stat field 12)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[9])
    except (OSError, ValueError, IndexError):
        return 0


class MemCgroup:
    """A memory cgroup of our own for one child: cgroup v2 (``memory.current``,
    ``memory.peak``) where the v2 mount has the memory controller, else v1's
    (``memory.usage_in_bytes``, ``memory.max_usage_in_bytes``) under this process's own
    v1 memory cgroup. ``path`` is None where neither can be made (not root...)."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = None
        self.v2 = False
        cands = []
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                hid, ctrls, where = line.split(":", 2)
                if hid == "0":
                    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                        ctl = Path(root, "cgroup.controllers")
                        if ctl.exists() and "memory" in ctl.read_text().split():
                            cands.append((Path(root) / where.lstrip("/"), True))
                elif "memory" in ctrls.split(","):
                    cands.append((Path("/sys/fs/cgroup/memory") / where.lstrip("/"), False))
        except (OSError, ValueError):
            return
        for parent, v2 in cands:
            try:
                (parent / name).mkdir()
            except OSError:
                continue
            self.path, self.v2 = parent / name, v2
            return

    def join(self) -> None:
        """preexec_fn: the child moves itself in before it execs."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def read(self) -> dict:
        if self.path is None:
            return {}
        cur, peak = (("memory.current", "memory.peak") if self.v2 else
                     ("memory.usage_in_bytes", "memory.max_usage_in_bytes"))
        out = {"cgroup": "v2" if self.v2 else "v1"}
        for key, f in (("cg_current_mib", cur), ("cg_peak_mib", peak)):
            try:
                out[key] = int((self.path / f).read_text()) / 2**20
            except (OSError, ValueError):
                pass
        return out

    def remove(self) -> None:
        if self.path is not None:
            for _ in range(50):
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


#: Run by the recorder's own interpreter once it has exited, so that this harness never
#: loads pyarrow: a process of ours mapping the same library files would keep the pages
#: it shares with the recorder resident in both (MADV_PAGEOUT skips shared pages).
ANALYSE = """
import json, sys
from pathlib import Path
import numpy as np
import pyarrow.parquet as pq
files = sorted(Path(sys.argv[1]).glob("date=*/*.parquet"))
ns = {"10ms": 10_000_000, "100ms": 100_000_000, "1s": 1_000_000_000}.get(sys.argv[2])
out = {"bytes": sum(f.stat().st_size for f in files),
       "rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files)}
if files and ns:
    # the first second's snapshots (monotonic_ns, one per seq) against the schedule the
    # first one set: max lateness and slots missed
    t = pq.read_table(files[0], columns=["seq", "monotonic_ns"])
    _, first = np.unique(t.column("seq").to_numpy(), return_index=True)
    m = t.column("monotonic_ns").to_numpy()[first].astype(np.int64)
    m = m[m - m[0] < 1_000_000_000]
    slot = np.round((m - m[0]) / ns).astype(np.int64)
    out["first_s_late_max_ms"] = float(((m - m[0]) - slot * ns).max()) / 1e6
    out["first_s_missed"] = int(slot[-1] + 1 - len(m))
print(json.dumps(out))
"""


def evict_libraries(python: str) -> int:
    """``posix_fadvise(DONTNEED)`` every shared library under the interpreter's prefix
    (its venv: pyarrow, numpy...): their pages leave the page cache, but for those some
    process maps (the system's libpython, libc...). Returns the files advised."""
    prefix = subprocess.run([python.partition("::")[0], "-c", "import sys; print(sys.prefix)"],
                            capture_output=True, text=True).stdout.strip()
    n = 0
    for f in Path(prefix).rglob("*.so*"):
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def record(python: str, out: Path, seconds: float, interval: str, mode: str, pids: bool,
           every: float = 0.5, samples: list | None = None, extra: list[str] | None = None,
           cgroup: bool = False, cold: bool = False) -> dict:
    """Run ``tcpsnap record`` for ``seconds``; its peak RSS (VmHWM), last RSS, RssFile
    and RssAnon at the last sample (MiB), major faults, the first second's lateness and,
    with ``cgroup``, its own memory cgroup's current and peak charge. ``python`` may
    carry more record options after ``::`` (``/venv/bin/python::--no-page-out``). ``cold``:
    the interpreter's libraries are evicted from the page cache first (``evict_libraries``),
    so that the recorder's cgroup is charged for the library pages it loads, as a service's
    is when it starts first."""
    shutil.rmtree(out, ignore_errors=True)
    python, _, more = python.partition("::")
    cmd = [python, "-m", "tcpsnap", "record", str(out), "--interval", interval,
           "--duration", f"{seconds}s", "--mode", mode, "-q", *(extra or []), *more.split()]
    if not pids:
        cmd.append("--no-pids")
    if cold:
        evict_libraries(python)
    cg = MemCgroup(f"tcpsnap-bench-{os.getpid()}-{time.monotonic_ns()}") if cgroup else None
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=cg.join if cg else None)
    hwm = rss = rfile = ranon = faults = 0
    while p.poll() is None:
        time.sleep(every)
        h = status_kb(p.pid, "VmHWM")
        r = status_kb(p.pid, "VmRSS")
        if h:
            hwm, rss = max(hwm, h), r
            rfile, ranon = status_kb(p.pid, "RssFile"), status_kb(p.pid, "RssAnon")
            faults = max(faults, proc_faults(p.pid))
            if samples is not None:
                # (seconds, RSS, RssAnon, RssFile) KiB: a drift is told apart as the
                # heap's and threads' (anon) or library pages faulting back in (file)
                samples.append((round(time.monotonic() - t0, 1), r, ranon, rfile))
    err = p.stderr.read() if p.stderr else ""
    got: dict = cg.read() if cg else {}
    if cg:
        cg.remove()
    a = subprocess.run([python, "-c", ANALYSE, str(out), interval], capture_output=True, text=True)
    res = json.loads(a.stdout) if a.returncode == 0 else {"bytes": 0, "rows": 0}
    nbytes, nrows = res.pop("bytes"), res.pop("rows")
    got.update(res)
    shutil.rmtree(out, ignore_errors=True)
    got.update({"rc": p.returncode, "peak_mib": hwm / 1024, "last_mib": rss / 1024,
                "last_file_mib": rfile / 1024, "last_anon_mib": ranon / 1024, "major_faults": faults,
                "bytes_per_row": nbytes / max(nrows, 1), "rows_written": nrows,
                "stderr": err.strip()[-300:]})
    return got


def run_rss(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-footprint-"))
    res: dict = {"load_before": os.getloadavg(), "cases": []}
    try:
        for n in args.sizes:
            with bs.Connections(n) as conns:
                for (mode, interval), rg in ((c, g) for c in args.cases for g in args.row_group_rows):
                    for r in range(args.rounds):
                        pys = args.python if r % 2 == 0 else list(reversed(args.python))
                        for py in pys:
                            got = record(py, tmp / "rec", args.seconds, interval, mode, not args.no_pids,
                                         extra=["--row-group-rows", str(rg)] if rg else None,
                                         cgroup=args.cgroup, cold=args.cold)
                            got.update({"n": n, "rows": conns.rows, "mode": mode, "interval": interval,
                                        "python": py, "round": r, "load": os.getloadavg()[0],
                                        "row_group_rows": rg or "default"})
                            print(json.dumps(got), file=sys.stderr, flush=True)
                            res["cases"].append(got)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def rss_markdown(res: dict) -> str:
    lines = ["| connections | mode | interval | row groups | python | peak RSS MiB (median) | MB | RssFile "
             "/ RssAnon at end | major faults | cgroup now / peak MiB | first 1 s: late max ms, missed "
             "| bytes/row | runs | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    keys: dict = {}
    for c in res["cases"]:
        keys.setdefault((c["n"], c["mode"], c["interval"], c.get("row_group_rows"), c["python"]), []).append(c)
    for (n, mode, interval, rg, py), cs in keys.items():
        def med(key: str, cs: list = cs) -> float:
            v = [c[key] for c in cs if key in c]
            return statistics.median(v) if v else float("nan")

        lines.append(f"| {n:,} | {mode} | {interval} | {rg} | `{py}` | "
                     f"{med('peak_mib'):.1f} | {med('peak_mib') * 1.048576:.1f} | "
                     f"{med('last_file_mib'):.1f} / {med('last_anon_mib'):.1f} | {med('major_faults'):.0f} | "
                     f"{med('cg_current_mib'):.1f} / {med('cg_peak_mib'):.1f} | "
                     f"{med('first_s_late_max_ms'):.2f}, {med('first_s_missed'):.0f} | "
                     f"{statistics.median(c.get('bytes_per_row', 0) for c in cs):.3f} | {len(cs)} | "
                     f"{statistics.median(c['load'] for c in cs):.2f} |")
    return "\n".join(lines)


def churn(stop: threading.Event, rate: float, host: str = "127.3.0.1", tick: float = 0.005,
          ready=None) -> None:
    """Open ``rate`` connections a second to a listener of ours, each closed after ~1 s,
    looking every ``tick`` seconds; ``ready()`` is called once the listener listens."""
    lst = socket.socket()
    lst.bind((host, 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
    if ready is not None:
        ready()
    live: list = []
    nxt = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        while nxt <= now:
            c = socket.create_connection((host, port))
            a, _ = lst.accept()
            live.append((now + 1.0, c, a))
            nxt += 1.0 / rate
        while live and live[0][0] <= now:
            _, c, a = live.pop(0)
            c.close()
            a.close()
        time.sleep(tick)
    for _, c, a in live:
        c.close()
        a.close()
    lst.close()


def run_drift(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-drift-"))
    samples: list = []
    stop = threading.Event()
    res: dict = {"load_before": os.getloadavg()}
    try:
        with bs.Connections(args.n):
            t = threading.Thread(target=churn, args=(stop, args.rate), daemon=True)
            t.start()
            log = open(args.out, "w") if args.out else None

            class Tee(list):
                def append(self, x):
                    super().append(x)
                    if log:
                        log.write(json.dumps(x) + "\n")
                        log.flush()

            samples = Tee()
            got = record(args.python[0], tmp / "rec", args.minutes * 60, args.interval, args.mode,
                         not args.no_pids, every=args.every, samples=samples,
                         extra=["--rotate", args.rotate], cgroup=args.cgroup)
            stop.set()
            t.join()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = [x[1] for x in samples]
    k = max(1, len(rss) // 10)
    res.update(got)
    for i, part in ((2, "anon"), (3, "file")):  # the same tenths of RssAnon and RssFile
        col = [x[i] for x in samples]
        res[f"drift_{part}_mib"] = ((statistics.median(col[-k:]) - statistics.median(col[k:2 * k])) / 1024
                                    if col else 0)
    res.update({"samples": list(samples), "first_mib": rss[0] / 1024 if rss else 0,
                "early_mib": statistics.median(rss[k:2 * k]) / 1024 if rss else 0,
                "late_mib": statistics.median(rss[-k:]) / 1024 if rss else 0,
                "max_mib": max(rss) / 1024 if rss else 0, "load_after": os.getloadavg(),
                "n": args.n, "rate": args.rate, "minutes": args.minutes, "mode": args.mode,
                "interval": args.interval, "rotate": args.rotate})
    res["drift_mib"] = res["late_mib"] - res["early_mib"]
    return res


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its exited threads included: its CPU-time clock
    (``clock_getcpuclockid``'s, in ns), else utime + stime (in ticks of 10 ms, which over a
    20 s run is +-0.8 ms a snapshot)."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)     # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
    except OSError:
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _task_cpu_s(pid: int, tid: str, fields: list[str], tick: int) -> float:
    """A thread's CPU seconds: its ``schedstat`` run time (ns), else utime + stime (ticks)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return (int(fields[11]) + int(fields[12])) / tick


def threads_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of a process (``_task_cpu_s``), by thread id; its name
    (``comm``: the resolver's workers are ``tcpsnap-check`` and ``tcpsnap-names``) in
    ``THREAD_NAMES``."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                comm, rest = f.read().split(" (", 1)[1].rsplit(")", 1)
                fields = rest.split()
        except (OSError, ValueError, IndexError):
            continue
        out[int(t)] = _task_cpu_s(pid, t, fields, tick)
        THREAD_NAMES[int(t)] = comm
    return out


#: threads_cpu_s: each thread id's name, as last seen
THREAD_NAMES: dict[int, str] = {}


def split_cpu(pid: int, t0: dict, t1: dict, total: float) -> dict:
    """A recorder's CPU between two samples, by thread: ``capture`` (the main thread, which
    runs ``Recorder.run``), ``other_threads`` (those alive at the end: the writer, the
    status thread...), ``exited_threads`` (short-lived: the resolver's check rounds, name
    re-reads and walks; their time is only in the process total); ``live`` each live
    thread's own, by thread id, largest first (the writer is the largest but capture)."""
    cap = t1.get(pid, 0.0) - t0.get(pid, 0.0)
    live = sorted(((k, v - t0.get(k, 0.0)) for k, v in t1.items() if k != pid), key=lambda kv: -kv[1])
    other = sum(v for _, v in live)
    return {"capture": cap, "other_threads": other, "exited_threads": max(0.0, total - cap - other),
            "live": {f"{k} {THREAD_NAMES.get(k, '?')}": v for k, v in live}}


#: cpu: seconds of the recorder's run left out at the start (start-up) and at the end (its
#: stop: the last file's row group and footer); the floor runs for what is left
WARM = 5.0
TAIL = 2.0
#: cpu: changes mode writes a keyframe (every row, ~20 ms of CPU at 10k connections against
#: ~1 ms for a quiet snapshot) every this many seconds: the measured window is a whole
#: number of them (session 10: a 23 s window between two keyframes saw none, ~1.5% low)
KEYFRAME = 60.0


def keyframe_window(seconds: float) -> float:
    """The window to measure for ``seconds`` asked: rounded up to a whole number of
    keyframe intervals (``KEYFRAME`` s), so that each window holds as many keyframes as a
    long recording's seconds do on average (one: a recorder snapshots once a second, and
    every 60th snapshot is a keyframe)."""
    k = max(1, -int(-(seconds - 1e-6) // KEYFRAME))
    return k * KEYFRAME


def cpu_floor(floor, seconds: float) -> tuple[float, int]:
    """The floor's CPU seconds for one dump a second for ``seconds``, and its dumps."""
    c0 = proc_cpu_s(floor.proc.pid)
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < seconds:
        floor.dumps(1)
        k += 1
        time.sleep(max(0.0, t0 + k - time.monotonic()))
    return proc_cpu_s(floor.proc.pid) - c0, k


def cpu_recorder(python: str, out: Path, seconds: float) -> dict:
    """CPU of ``tcpsnap record --interval 1s --mode changes`` (pids on) run by ``python``
    for ``seconds`` + WARM + TAIL: from WARM s in (start-up apart) for ``seconds`` (its
    stop and last file apart), in all and by thread (``split_cpu``)."""
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen([python, "-m", "tcpsnap", "record", str(out), "--interval", "1s",
                          "--mode", "changes", "--keyframe", f"{KEYFRAME:g}s",
                          "--duration", f"{seconds + WARM + TAIL}s", "-q"])
    t0 = time.monotonic()
    samples = []
    for at in (WARM, WARM + seconds):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        samples.append((proc_cpu_s(p.pid), threads_cpu_s(p.pid)))
    p.wait()
    shutil.rmtree(out, ignore_errors=True)
    cpu = samples[1][0] - samples[0][0]
    return {"rc": p.returncode, "startup_cpu_s": samples[0][0], "cpu_s": cpu,
            "threads_s": split_cpu(p.pid, samples[0][1], samples[1][1], cpu)}


def cpu_together(python: str, out: Path, seconds: float, floor) -> dict:
    """As ``cpu_recorder``, with the floor dumping once a second at the same time, half a
    second after each of the recorder's snapshots would start (about: its phase is only
    known to within its start-up): both are measured over the same seconds, so that each
    round's ratio sees the same kernel state (the floor's dump alone varied +-10% between
    rounds). The floor's CPU and dumps of that window are returned beside."""
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen([python, "-m", "tcpsnap", "record", str(out), "--interval", "1s",
                          "--mode", "changes", "--keyframe", f"{KEYFRAME:g}s",
                          "--duration", f"{seconds + WARM + TAIL}s", "-q"])
    t0 = time.monotonic()
    stop = threading.Event()
    starts: list[float] = []

    def dumps() -> None:
        k = 0
        while not stop.is_set():
            stop.wait(max(0.0, t0 + 0.5 + k - time.monotonic()))
            if stop.is_set():
                break
            starts.append(time.monotonic() - t0)
            floor.dumps(1)
            k += 1

    th = threading.Thread(target=dumps, daemon=True)
    th.start()
    samples = []
    for at in (WARM, WARM + seconds):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        samples.append((proc_cpu_s(p.pid), threads_cpu_s(p.pid), proc_cpu_s(floor.proc.pid)))
    stop.set()
    th.join()
    p.wait()
    shutil.rmtree(out, ignore_errors=True)
    cpu = samples[1][0] - samples[0][0]
    return {"rc": p.returncode, "startup_cpu_s": samples[0][0], "cpu_s": cpu,
            "threads_s": split_cpu(p.pid, samples[0][1], samples[1][1], cpu),
            "floor_cpu_s": samples[1][2] - samples[0][2],
            "floor_dumps": sum(1 for t in starts if WARM <= t < WARM + seconds)}


def _round_together(pythons: list[str], floor, out: Path, secs: float) -> dict:
    """``--together``: each recorder beside the floor, each ratio against the floor's dumps
    of the same window."""
    rnd: dict = {"recorders": {}}
    for py in pythons:
        got = cpu_together(py, out, secs, floor)
        k = max(got["floor_dumps"], 1)
        got["floor_ms_per_dump"] = got["floor_cpu_s"] / k * 1e3
        got["ratio"] = got["cpu_s"] / max(got["floor_cpu_s"], 1e-9) * k / secs
        got["ms_per_snapshot"] = got["cpu_s"] / secs * 1e3
        got["ms_per_snapshot_by_thread"] = {t: v / secs * 1e3 for t, v in got["threads_s"].items()
                                            if t != "live"}
        # the capture thread against the floor's dump alone (what the thread adds to it)
        got["capture_x_floor"] = got["ms_per_snapshot_by_thread"]["capture"] / max(got["floor_ms_per_dump"], 1e-9)
        got["load"] = os.getloadavg()[0]
        rnd["recorders"][py] = got
    return rnd


def _round_apart(order: list[str], floor, out: Path, secs: float) -> dict:
    """The floor alone and each recorder one after the other, in ``order`` ("floor" or a
    python); each recorder's ratio to that floor."""
    rnd: dict = {"recorders": {}}
    for what in order:
        if what == "floor":
            rnd["floor_cpu_s"], rnd["floor_dumps"] = cpu_floor(floor, secs)
        else:
            rnd["recorders"][what] = cpu_recorder(what, out, secs)
    k = max(rnd["floor_dumps"], 1)
    rnd["floor_ms_per_dump"] = rnd["floor_cpu_s"] / k * 1e3
    for got in rnd["recorders"].values():
        got["ratio"] = got["cpu_s"] / max(rnd["floor_cpu_s"], 1e-9)
        # one snapshot a second for as long as the floor dumps
        got["ms_per_snapshot"] = got["cpu_s"] / k * 1e3
        got["ms_per_snapshot_by_thread"] = {t: v / k * 1e3 for t, v in got["threads_s"].items()
                                            if t != "live"}
    return rnd


#: cpu --phases: a changes-mode capture thread's work, one phase at a time, on stdin's cue
PHASES = r"""
import sys, time, json
import tcpsnap
from tcpsnap.record.changes import ChangeTracker
snap = tcpsnap.Snapshotter(pids=True)
snap.take()                                   # the first walk, in place (as the recorder's warm-up)
res = snap.resolver
res.background = True
dumper = snap._impl
tr = ChangeTracker(int(sys.argv[1]) * 10**9)
tr.names_into = res.names_into                # as record.capture sets it
# session 9: step looks owners up itself, only for rows it cannot carry over (as
# record.capture sets it where the build has it); the lookup is then inside `step`
deferred = hasattr(tr, "defer_pids") and tr.defer_pids(snap)
names = snap.process_names
print("ready", flush=True)
for line in sys.stdin:
    k0 = tr.keyframes
    c0 = time.thread_time_ns()
    res.begin()
    n = dumper.dump()
    c1 = time.thread_time_ns()
    if not deferred:
        res.resolve(dumper.rows, n)
    c2 = time.thread_time_ns()
    tr.step(dumper.rows[:n], names, time.time_ns(), time.monotonic_ns(), 0)
    c3 = time.thread_time_ns()
    print(json.dumps([(c1 - c0) / 1e3, (c2 - c1) / 1e3, (c3 - c2) / 1e3, tr.keyframes - k0]), flush=True)
"""


def run_phases(args) -> dict:
    """``cpu --phases``: each ``--python`` runs what a changes-mode recorder's capture thread
    runs per snapshot (``PHASES``: the dump -- kernel, parse, dedupe --, the pid lookup,
    ``ChangeTracker.step`` with process names), one snapshot a second (caches as cold as in
    a 1 s recording), timed by the thread's own CPU clock; the floor dumps once in each
    second too, its CPU from its process clock. Medians per phase of the quiet snapshots
    (the first two snapshots and the keyframes left out), in microseconds; beside them the
    keyframes' (one every ``KEYFRAME`` s: --seconds >= 62 sees one after the first) and
    ``step`` averaged over a keyframe interval (59 quiet snapshots and one keyframe)."""
    res: dict = {"load_before": os.getloadavg(), "n": args.n, "python": args.python, "phases": True}
    floor = bs.Floor()
    count = int(args.seconds)
    try:
        with bs.Connections(args.n) as conns:
            res["rows"] = conns.rows
            kids = {}
            for py in args.python:
                p = subprocess.Popen([py, "-c", PHASES, f"{KEYFRAME:g}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
                kids[py] = p
            got: dict = {py: [] for py in kids}
            fl = []
            for _ in range(count):
                gap = 1.0 / (len(kids) + 1)
                time.sleep(gap)
                c = proc_cpu_s(floor.proc.pid)
                floor.dumps(1)
                fl.append((proc_cpu_s(floor.proc.pid) - c) * 1e6)
                for py, p in kids.items():
                    time.sleep(gap)
                    assert p.stdin is not None and p.stdout is not None
                    p.stdin.write("x\n")
                    p.stdin.flush()
                    got[py].append(json.loads(p.stdout.readline()))
            for p in kids.values():
                assert p.stdin is not None
                p.stdin.close()
                p.wait(10)
    finally:
        floor.close()
    res["floor_dump_us"] = statistics.median(fl[2:])
    res["samples"] = {"floor": fl, **got}
    per = KEYFRAME  # snapshots a keyframe interval
    res["median_us"] = {}
    for py, v in got.items():
        quiet = [x for x in v[2:] if len(x) < 4 or not x[3]]
        kfs = [x for x in v[2:] if len(x) >= 4 and x[3]]
        m = dict(zip(("dump", "resolve", "step"),
                     (statistics.median(x[i] for x in quiet) for i in range(3)), strict=True))
        m["sum"] = sum(m.values())
        m["x_floor_dump"] = m["sum"] / res["floor_dump_us"]
        if kfs:
            m["keyframe_step"] = statistics.median(x[2] for x in kfs)
            m["step_per_interval"] = (m["step"] * (per - 1) + m["keyframe_step"]) / per
        res["median_us"][py] = m
        print(py, json.dumps({k: round(v, 3) for k, v in m.items()}), file=sys.stderr, flush=True)
    res["load_after"] = os.getloadavg()
    return res


def phases_markdown(res: dict) -> str:
    lines = [f"floor's dump: {res['floor_dump_us']:.0f} µs (median)", "",
             "| python | dump | pid lookup | step | sum | x floor's dump | keyframe's step | step a minute's average |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for py, m in res["median_us"].items():
        kf = (f"{m['keyframe_step']:.0f} | {m['step_per_interval']:.0f}" if "keyframe_step" in m
              else "(none: --seconds >= 62) | ")
        lines.append(f"| `{py}` | {m['dump']:.0f} | {m['resolve']:.0f} | {m['step']:.0f} | {m['sum']:.0f} "
                     f"| {m['x_floor_dump']:.3f} | {kf} |")
    return "\n".join(lines)


def run_cpu(args) -> dict:
    """Per round: the floor, then each ``--python``'s recorder, each recorder's ratio to
    that round's floor; with ``--together`` each recorder beside the floor instead
    (``cpu_together``). The order is reversed every other round. ``--phases``: ``run_phases``."""
    if args.phases:
        return run_phases(args)
    tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-cpu-"))
    res: dict = {"load_before": os.getloadavg(), "n": args.n, "seconds": args.seconds,
                 "python": args.python, "rounds": []}
    if args.together:
        res["together"] = True
    if args.warm is not None:
        global WARM
        WARM = args.warm
        res["warm"] = WARM
    floor = bs.Floor()
    # a whole number of keyframe intervals (``keyframe_window``): --seconds is a floor
    secs = keyframe_window(args.seconds - WARM - TAIL)
    if secs != args.seconds - WARM - TAIL:
        print(f"cpu: measuring {secs:g} s from {WARM:g} s in (whole keyframe intervals of {KEYFRAME:g} s; "
              f"each run {secs + WARM + TAIL:g} s)", file=sys.stderr, flush=True)
    res["window_s"] = secs
    try:
        with bs.Connections(args.n) as conns:
            res["rows"] = conns.rows
            for r in range(args.rounds):
                if args.together:
                    rnd = _round_together(args.python if r % 2 == 0 else args.python[::-1], floor,
                                          tmp / "rec", secs)
                else:
                    order = ["floor", *args.python]
                    rnd = _round_apart(order if r % 2 == 0 else order[::-1], floor, tmp / "rec", secs)
                first = rnd["recorders"][args.python[0]]
                if args.together:
                    rnd["floor_ms_per_dump"] = first["floor_ms_per_dump"]
                else:
                    rnd["recorder_cpu_s"], rnd["ratio"] = first["cpu_s"], first["ratio"]
                rnd["load"] = os.getloadavg()[0]
                print(json.dumps(rnd), file=sys.stderr, flush=True)
                res["rounds"].append(rnd)
    finally:
        floor.close()
        shutil.rmtree(tmp, ignore_errors=True)
    res["ratio_median"] = {py: statistics.median(r["recorders"][py]["ratio"] for r in res["rounds"])
                           for py in args.python}
    if args.together:
        res["capture_x_floor_median"] = {
            py: statistics.median(r["recorders"][py]["capture_x_floor"] for r in res["rounds"]) for py in args.python}
    return res


def cpu_markdown(res: dict) -> str:
    lines = ["| round | load | floor ms/dump | python | ms/snapshot (capture + other + exited threads) | x floor "
             "| capture x floor's dump |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: |"]
    for i, r in enumerate(res["rounds"]):
        for py, g in r["recorders"].items():
            t = g["ms_per_snapshot_by_thread"]
            fl = g.get("floor_ms_per_dump", r["floor_ms_per_dump"])
            cx = f"{g['capture_x_floor']:.3f}" if "capture_x_floor" in g else ""
            lines.append(f"| {i} | {g.get('load', r['load']):.2f} | {fl:.1f} | `{py}` "
                         f"| {g['ms_per_snapshot']:.1f} "
                         f"({t['capture']:.1f} + {t['other_threads']:.1f} + {t['exited_threads']:.1f}) "
                         f"| {g['ratio']:.2f} | {cx} |")
    lines.append("")
    lines.append("median x floor: " + ", ".join(f"`{py}` {v:.2f}" for py, v in res["ratio_median"].items()))
    if "capture_x_floor_median" in res:
        lines.append("median capture thread x floor's dump: "
                     + ", ".join(f"`{py}` {v:.3f}" for py, v in res["capture_x_floor_median"].items()))
    return "\n".join(lines)


FD_HOLDER = """
import os, resource, sys
n = int(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
fd = os.open("/dev/null", os.O_RDONLY)
held = [os.dup(fd) for _ in range(n)]
print("ready", flush=True)
sys.stdin.read()
"""


def run_stall(args) -> dict:
    import pyarrow.dataset as ds

    from tcpsnap import Recorder

    tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-stall-"))
    res: dict = {"load_before": os.getloadavg(), "fds": args.fds, "n": args.n, "rate": args.rate,
                 "seconds": args.seconds, "interval": args.interval}
    # one process holds them all where RLIMIT_NOFILE's hard limit allows (raising it needs
    # CAP_SYS_RESOURCE); else as few processes as it takes
    import resource

    per = max(1000, min(args.fds, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64))
    counts = [min(per, args.fds - k) for k in range(0, args.fds, per)]
    holders = [subprocess.Popen([sys.executable, "-c", FD_HOLDER, str(c)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for c in counts]
    for h in holders:
        assert h.stdout is not None and h.stdout.readline().strip() == "ready"
    res["fd_holders"] = counts
    script = str(HERE / "bench_pids.py")
    try:
        with bs.Connections(args.n):
            srv = subprocess.Popen([sys.executable, script, "--churn-server", str(tmp / "port"),
                                    str(tmp / "srv.json")], stdin=subprocess.PIPE)
            while not (tmp / "port").exists() or not (tmp / "port").read_text():
                time.sleep(0.01)
            port = int((tmp / "port").read_text())
            with Recorder(tmp / "rec", interval=args.interval, pids=True, rotate="1h") as rec:
                res["background"] = bool(getattr(getattr(rec._snap, "resolver", None), "background", False))
                cli = subprocess.Popen([sys.executable, script, "--churn-client", str(port), str(args.rate),
                                        str(args.seconds), "0.2", "3.0", str(tmp / "cli.json")],
                                       stdout=subprocess.PIPE, text=True)
                assert cli.stdout is not None
                cli.stdout.readline()
                c0 = time.process_time()
                rec.run(duration=args.seconds + 3.5)  # until every churned connection closed
                cpu = time.process_time() - c0
                pid_stats = rec._snap.pid_stats
                res.update({"snapshots": rec.snapshots, "overruns": rec.overruns,
                            "late_max_ms": rec.late_max_ns / 1e6, "cpu_s": cpu,
                            "walks": pid_stats.get("walks"), "walk_s": pid_stats.get("walk_seconds"),
                            "last_walk_s": pid_stats.get("last_walk_seconds"),
                            "last_walk_fds": pid_stats.get("last_walk_fds")})
            cli.wait(60)
            assert srv.stdin is not None
            srv.stdin.close()
            srv.wait(30)
        truth = {}
        for ino, t_open, t_close in json.loads((tmp / "cli.json").read_text()):
            truth[ino] = (cli.pid, t_open, t_close)
        for ino, t_open, t_close in json.loads((tmp / "srv.json").read_text()):
            truth[ino] = (srv.pid, t_open, t_close if t_close is not None else float("inf"))
        t = ds.dataset(str(tmp / "rec"), format="parquet", partitioning="hive").to_table(
            columns=["inode", "pid", "monotonic_ns"])
        import numpy as np

        ino = t.column("inode").to_numpy()
        pid = t.column("pid").to_numpy()
        mono = t.column("monotonic_ns").to_numpy() / 1e9
        want = np.isin(ino, np.fromiter(truth.keys(), np.uint64))
        order = np.argsort(ino[want], kind="stable")
        ino, pid, mono = ino[want][order], pid[want][order], mono[want][order]
        bounds = np.searchsorted(ino, np.fromiter(truth.keys(), np.uint64), side="left")
        ends = np.searchsorted(ino, np.fromiter(truth.keys(), np.uint64), side="right")
        long_lived = ok = wrong = 0
        delays = []
        for (p, t_open, t_close), a, b in zip(truth.values(), bounds, ends, strict=True):
            ps, ts = pid[a:b], mono[a:b]
            wrong += bool(((ps != 0) & (ps != p)).any())
            if t_close - t_open < 1.0:
                continue
            long_lived += 1
            judged = ps[ts >= t_open + 1.0]
            if len(judged) == 0:
                judged = ps[-1:]
            right = ts[ps == p]
            if len(right):
                delays.append(right[0] - t_open)
            ok += bool(len(judged) and (judged == p).all())
        slots = res["snapshots"] + res["overruns"]
        res.update({"slots": slots, "on_time_share": res["snapshots"] / slots if slots else 0.0,
                    "long_lived": long_lived, "with_pid": ok,
                    "pid_share": ok / long_lived if long_lived else float("nan"), "wrong": wrong,
                    "delay_median_ms": statistics.median(delays) * 1e3 if delays else float("nan"),
                    "delay_max_ms": max(delays) * 1e3 if delays else float("nan"),
                    "load_after": os.getloadavg()})
    finally:
        for h in holders:
            if h.stdin is not None:
                h.stdin.close()
            h.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    return res


#: writer: run by each --python in the private namespace; prints the writer thread's own CPU
#: (thread_time_ns, not /proc ticks: ~1 ms a snapshot is a tenth of a tick) per snapshot
WRITER = """
import json, sys, tempfile
from tcpsnap import Recorder
from tcpsnap.record.footprint import lean_process
lean_process()
with Recorder(tempfile.mkdtemp(prefix="tcpsnap-writer-"), interval=sys.argv[1], mode=sys.argv[2]) as rec:
    rec.run(duration=float(sys.argv[3]))
    st = rec.stats
print(json.dumps({"writer_cpu_s": st["writer_cpu_s"], "snapshots": st["snapshots"], "rows": rec.rows}))
"""


def run_writer(args) -> dict:
    """The writer thread's CPU per snapshot of ``Recorder(interval, mode)`` at --n connections
    for --seconds, each --python in turn (order reversed every other round), --rounds times."""
    res: dict = {"load_before": os.getloadavg(), "runs": []}
    with bs.Connections(args.n):
        for r in range(args.rounds):
            for py in (args.python if r % 2 == 0 else list(reversed(args.python))):
                p = subprocess.run([py, "-c", WRITER, args.interval, args.mode, str(args.seconds)],
                                   capture_output=True, text=True)
                got = json.loads(p.stdout) if p.returncode == 0 else {"error": p.stderr.strip()[-300:]}
                got.update({"python": py, "round": r, "load": os.getloadavg()[0]})
                if "snapshots" in got:
                    got["writer_ms_per_snapshot"] = got["writer_cpu_s"] * 1e3 / max(got["snapshots"], 1)
                print(json.dumps(got), file=sys.stderr, flush=True)
                res["runs"].append(got)
    res.update({"n": args.n, "interval": args.interval, "mode": args.mode, "seconds": args.seconds})
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("rss", "drift", "stall", "cpu", "writer"))
    ap.add_argument("--python", action="append", default=[],
                    help="interpreter whose tcpsnap to run (repeatable; default: this one)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--cases", default="full:10ms,full:100ms,changes:100ms",
                    help="mode:interval,... (rss)")
    ap.add_argument("--row-group-rows", default="0",
                    help="rss: comma-separated --row-group-rows values to record with (0: the default)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=None, help="default 20 (stall, cpu: 60)")
    ap.add_argument("--warm", type=float, default=None,
                    help="cpu: seconds of each run left out at its start (default 5; at 10k "
                         "connections the resolver's first look at quiet owners' links takes ~20 s)")
    ap.add_argument("--no-pids", action="store_true")
    ap.add_argument("--together", action="store_true",
                    help="cpu: run the floor (one dump a second, half a second after the recorder's) "
                         "while each recorder runs, and compare each with the floor of the same seconds")
    ap.add_argument("--phases", action="store_true",
                    help="cpu: the capture thread's work by phase in one process per --python, one snapshot "
                         "a second for --seconds, beside the floor's dump of the same seconds (µs, medians)")
    ap.add_argument("--cgroup", action="store_true",
                    help="rss, drift: run each recorder in a memory cgroup of its own and report its "
                         "current and peak charge")
    ap.add_argument("--cold", action="store_true",
                    help="rss: evict the interpreter's libraries from the page cache before each run "
                         "(with --cgroup: its cgroup is charged for the library pages it loads)")
    ap.add_argument("--n", type=int, default=None, help="connections (default 1000; cpu: 10000)")
    ap.add_argument("--rate", type=float, default=None, help="drift, stall: new connections/s (default 50; stall: 200)")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--interval", default=None, help="the recorder's --interval (default 100ms; stall: 10ms)")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--fds", type=int, default=100_000, help="stall: descriptors the helper holds")
    ap.add_argument("--rotate", default="15m", help="drift: the recorder's --rotate")
    ap.add_argument("--out", help="drift: also append each sample to this JSON-lines file")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    args.python = args.python or [sys.executable]
    args.cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    args.row_group_rows = [int(x) for x in args.row_group_rows.split(",")]
    where = bs.ensure_netns(argv, __file__)
    run = _results.Run(f"bench_footprint-{args.what}", getattr(args, "json", None))
    # per-command defaults, applied only where the option was not given (an explicit
    # ``--seconds 20`` is 20, not the default's stand-in)
    stall, cpu = args.what == "stall", args.what == "cpu"
    if args.interval is None:
        args.interval = "10ms" if stall else "100ms"
    if args.rate is None:
        args.rate = 200.0 if stall else 50.0
    if args.seconds is None:
        args.seconds = 60.0 if stall or cpu else 20.0
    if args.n is None:
        args.n = 10000 if cpu else 1000
    res = {"rss": run_rss, "drift": run_drift, "stall": run_stall, "cpu": run_cpu,
           "writer": run_writer}[args.what](args)
    res["where"] = where
    run.write(res)
    if args.what == "rss":
        print(rss_markdown(res))
    elif args.what == "cpu":
        print(phases_markdown(res) if args.phases else cpu_markdown(res))
    elif args.what == "stall":
        print(json.dumps(res, indent=1))
    else:
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
