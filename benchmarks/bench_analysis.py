#!/usr/bin/env python3
"""Analysis benchmark: read a minute out of an hour, and lifetimes() over the hour.

1. Generate (or reuse) a recording of 1 hour at 100 ms of ~1,000 loopback connections
   (1,000 client/server pairs + a listener + TIME_WAIT: ~2,120 rows per snapshot,
   36,000 snapshots, ~76M rows), made by the real ``tcpsnap.Recorder`` code path
   (capture thread, batches, writer thread, journals, row groups, 15-minute rotation)
   fed by a scripted snapshotter, ``World``:

   * a listener 127.0.0.1:8080 (nginx), 1,000 pairs client <-> server on 127.0.0.x
     (8 "loadgen" workers on 32 client addresses, one "poller"; 2 nginx workers own
     the server sides);
   * 900 pairs are stable (open for the whole hour), 100 churn: each lives an
     exponential 50 s (~2 closes + 2 opens per second), new cookies and ports;
   * a close: the client's socket goes TIME_WAIT (no owner, 60 s), the server's goes
     away (now and then a snapshot of FIN_WAIT2 / CLOSE_WAIT / LAST_ACK first); a new
     connection is sometimes caught in SYN_SENT, and its owner pid is sometimes only
     known from the next snapshot (as the pid resolver does);
   * at 40 minutes the server times out the poller's 60 idle connections and the
     poller does not close them: 60 CLOSE_WAIT sockets for 150 s (the server sides sit
     in FIN_WAIT2 for 60 s), then it closes and reconnects;
   * small send/receive queues come and go on a few rows per snapshot.

   The wall clock and the monotonic clock the recorder sees are simulated
   (the Recorder is given a simulated clock), so
   snapshot k is stamped start + k * 100 ms, capture times look real (~1.2 ms) and
   files rotate every 15 simulated minutes, while the recorder runs at
   ``interval=0``: the hour is written much faster than real time. It is cached in ``--data DIR``
   (``DIR/recording`` + ``DIR/manifest.json``) and reused when the manifest matches.

2. Each measurement runs in a child process of its own (so peak RSS is its own):

   * minute: ``tcpsnap.read(path, start=t, end=t + 1 min)`` for a minute in the middle
     vs ``pandas.read_parquet(path)`` of the whole folder then filtering that minute;
     same rows (row count and seqs asserted equal); interleaved repetitions, medians.
   * lifetimes: ``tcpsnap.read(path, columns=<what lifetimes needs>)`` of the hour,
     then ``analysis.lifetimes(df)`` a few times; median, peak RSS of the call (VmHWM
     reset through /proc/self/clear_refs) and of the whole process; the number of
     connections found is checked against the generator's ground truth.

    python3 benchmarks/bench_analysis.py --data /tmp/tcpsnap-bench-hour
    python3 benchmarks/bench_analysis.py --data DIR --results benchmarks/RESULTS.md
    python3 benchmarks/bench_analysis.py --minutes 5 --pairs 200     # a quick try
    python3 benchmarks/bench_analysis.py --minutes 1 --pairs 50 --reps 1 --full-reps 1   # quicker

The numbers go to a JSON file (benchmarks/_results.py; ``--json PATH``): the recording's
manifest, every timing of both measurements, and the medians and speed-up the report shows.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _results

HERE = Path(__file__).resolve().parent
GEN_VERSION = 5            # bump when World changes: cached recordings are regenerated
T0_ISO = "2026-03-10T10:00:00Z"
LIFE_COLUMNS = ["timestamp", "seq", "family", "state", "local_addr", "local_port", "remote_addr",
                "remote_port", "pid", "process", "cookie"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- simulated clocks

class SimClock:
    """``time.time_ns`` / ``time.monotonic_ns`` as the recorder sees them: every
    ``time_ns()`` call (the recorder makes one per snapshot, just before ``take()``)
    starts the next slot; ``monotonic_ns()`` is the slot's start plus the capture time
    ``take()`` sets (so capture_ns = t1 - t0 looks real). Before the first slot (while
    the recorder opens: its untimed warm-up take) the clock reads one interval before
    slot 0, so rotation (15 min from the open) falls on slot boundaries."""

    def __init__(self, wall0_ns: int, interval_ns: int, mono0_ns: int = 10**12) -> None:
        self.wall0, self.mono0, self.interval = wall0_ns, mono0_ns, interval_ns
        self.k = -1
        self.extra = 0

    def time_ns(self) -> int:
        self.k += 1
        self.extra = 0
        return self.wall0 + self.k * self.interval

    def monotonic_ns(self) -> int:
        return self.mono0 + self.k * self.interval + self.extra


# --------------------------------------------------------------------------- the scripted table

class World:
    """The scripted snapshotter: the protocol ``Recorder(snapshotter=...)`` uses
    (``pids``, ``take()``, ``process_names(pids)``, ``close()``)."""

    pids = True
    STATE = {n: i + 1 for i, n in enumerate(
        ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2",
         "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT", "DELETE_TCB"))}
    NAMES = ["nginx", "loadgen", "poller"]
    NGINX = (1001, 1002)
    LOADGEN = tuple(range(2001, 2009))
    POLLER = 3000

    def __init__(self, snapshots: int, interval_s: float = 0.1, pairs: int = 1000,
                 churning: int = 100, mean_life_s: float = 50.0, poller: int = 60,
                 seed: int = 5, clock: SimClock | None = None) -> None:
        from tcpsnap import ROW_DTYPE

        self.n = snapshots
        self.dt = interval_s
        self.rng = np.random.default_rng(seed)
        self.clock = clock
        self.rec = None
        self.k = 0
        cap = 2 * pairs + 4096
        self.tab = np.zeros(cap, ROW_DTYPE)
        self.alive = np.zeros(cap, bool)
        self.free = list(range(cap - 1, -1, -1))
        self.idx: np.ndarray | None = None
        self.events: list = []
        self._eid = 0
        self.cookie = 1000
        self.inode = 50_000
        self.used_ports: set[int] = set()
        self.next_port = 32768
        self.sockets = 0                       # distinct cookies ever shown (ground truth)
        self.qrows = np.zeros(0, np.int64)
        self.cw_max = 0
        self.cw_max_k = -1
        lut = np.full(4096, -1, np.int32)
        lut[list(self.NGINX)] = 0
        lut[list(self.LOADGEN)] = 1
        lut[self.POLLER] = 2
        self.pid_lut = lut
        self.addr_srv = self._v4("127.0.0.1")
        self.client_addrs = [self._v4(f"127.0.0.{i}") for i in range(2, 34)]
        self.poller_addr = self._v4("127.0.0.40")
        self.mean_life_k = mean_life_s / interval_s
        # the listener
        self._sock("LISTEN", self.addr_srv, 8080, self._v4("0.0.0.0"), 0, self.NGINX[0], 33)
        # pairs: poller's first, then stable loadgen, then churning loadgen
        self.poller_pairs = [self._open_pair(self.POLLER, self.poller_addr, first=True)
                             for _ in range(poller)]
        for _ in range(pairs - churning - poller):
            self._open_pair(self.LOADGEN[self.rng.integers(8)], None, first=True)
        for _ in range(churning):
            self._churn_pair(first=True)
        if poller:
            self._at(int(round(40 * 60 / interval_s)), self._poller_timeout)

    # -- building blocks
    @staticmethod
    def _v4(text: str) -> np.ndarray:
        a = np.zeros(16, np.uint8)
        a[:4] = [int(x) for x in text.split(".")]
        return a

    def _at(self, k: int, fn, *args) -> None:
        self._eid += 1
        heapq.heappush(self.events, (k, self._eid, fn, args))

    def _port(self) -> int:
        while True:
            p = self.next_port
            self.next_port = 32768 if p >= 60999 else p + 1
            if p not in self.used_ports:
                self.used_ports.add(p)
                return p

    def _sock(self, state: str, la, lp, ra, rp, pid: int, uid: int, late_pid: bool = False) -> int:
        s = self.free.pop()
        r = self.tab[s:s + 1]
        r["family"] = 4
        r["state"] = self.STATE[state]
        r["local_addr"] = la
        r["remote_addr"] = ra
        r["local_port"] = lp
        r["remote_port"] = rp
        r["pid"] = 0 if late_pid else pid
        r["uid"] = uid
        r["inode"] = self.inode
        r["cookie"] = self.cookie
        r["rx_queue"] = r["tx_queue"] = 0
        self.inode += 1
        self.cookie += self.rng.integers(1, 40)      # other sockets of the machine in between
        self.alive[s] = True
        self.idx = None
        self.sockets += 1
        if late_pid:
            self._at(self.k + 1, self._set_pid, s, pid)
        return s

    def _set_pid(self, s: int, pid: int) -> None:
        self.tab["pid"][s] = pid

    def _state(self, s: int, state: str, owner: bool = True) -> None:
        self.tab["state"][s] = self.STATE[state]
        if not owner:
            self.tab["pid"][s] = 0
            self.tab["inode"][s] = 0

    def _drop(self, s: int, port: int | None = None) -> None:
        self.alive[s] = False
        self.idx = None
        self.free.append(s)
        if port is not None:
            self.used_ports.discard(port)

    def _open_pair(self, pid: int, addr, first: bool = False) -> tuple[int, int, int]:
        if addr is None:
            w = self.LOADGEN.index(pid)
            addr = self.client_addrs[4 * w + int(self.rng.integers(4))]
        port = self._port()
        syn = not first and self.rng.random() < 0.05
        late = not first and self.rng.random() < 0.3
        c = self._sock("SYN_SENT" if syn else "ESTABLISHED", addr, port, self.addr_srv, 8080, pid, 1000, late)
        srv = self.NGINX[int(self.rng.integers(2))]
        s = -1
        if syn:
            self._at(self.k + 1, self._syn_done, c, addr, port, srv)
        else:
            s = self._sock("ESTABLISHED", self.addr_srv, 8080, addr, port, srv, 33, late)
        return c, s, port

    def _syn_done(self, c: int, addr, port: int, srv: int) -> None:
        self._state(c, "ESTABLISHED")
        self._sock("ESTABLISHED", self.addr_srv, 8080, addr, port, srv, 33)

    def _churn_pair(self, first: bool = False) -> None:
        pid = self.LOADGEN[int(self.rng.integers(8))]
        pair = self._open_pair(pid, None, first=first)
        life = max(2, int(self.rng.exponential(self.mean_life_k)))   # >= 2: a SYN_SENT pair shows its server side
        self._at(self.k + life, self._close_pair, pair)

    def _server_of(self, c: int) -> int:
        # the server side of client socket c (for a pair opened through SYN_SENT)
        t = self.tab
        lp = t["local_port"][c]
        cand = np.flatnonzero(self.alive & (t["remote_port"] == lp) & (t["local_port"] == 8080)
                              & (t["state"] != self.STATE["LISTEN"]))
        return int(cand[0]) if len(cand) else -1

    def _close_pair(self, pair) -> None:
        c, s, port = pair
        if s < 0:
            s = self._server_of(c)
        r = self.rng.random()
        if r < 0.1:          # caught half-way: client FIN_WAIT2, server CLOSE_WAIT then LAST_ACK
            self._state(c, "FIN_WAIT2")
            if s >= 0:
                self._state(s, "CLOSE_WAIT")
                self._at(self.k + 1, self._state, s, "LAST_ACK")
                self._at(self.k + 2, self._drop, s)
            self._at(self.k + 2, self._state, c, "TIME_WAIT", False)
            tw_end = self.k + 2 + 600
        else:
            self._state(c, "TIME_WAIT", False)
            if s >= 0:
                self._drop(s)
            tw_end = self.k + 600
        self._at(tw_end, self._drop, c, port)
        self._churn_pair()

    def _poller_timeout(self) -> None:
        # nginx times out the poller's idle connections; the poller never closes them
        for c, s, port in self.poller_pairs:
            self._state(c, "CLOSE_WAIT")
            self._state(s, "FIN_WAIT2", False)
            self._at(self.k + 600, self._drop, s)
            self._at(self.k + 1500, self._poller_close, c, port)

    def _poller_close(self, c: int, port: int) -> None:
        self._state(c, "LAST_ACK")
        self._at(self.k + 1, self._drop, c, port)
        self._at(self.k + 1, self._open_pair, self.POLLER, self.poller_addr)

    def _queues(self) -> None:
        t = self.tab
        if len(self.qrows):
            t["tx_queue"][self.qrows] = 0
            t["rx_queue"][self.qrows] = 0
        idx = self.idx
        q = idx[self.rng.integers(0, len(idx), 24)]
        q = q[t["state"][q] == self.STATE["ESTABLISHED"]]
        half = len(q) // 2
        t["tx_queue"][q[:half]] = self.rng.integers(1, 65536, half)
        t["rx_queue"][q[half:]] = self.rng.integers(1, 4096, len(q) - half)
        self.qrows = q

    # -- the protocol
    def take(self) -> np.ndarray:
        warmup = self.clock is not None and self.clock.k < 0   # Recorder.open's untimed take
        ev = self.events
        while ev and ev[0][0] <= self.k:
            _, _, fn, args = heapq.heappop(ev)
            fn(*args)
        if self.idx is None:
            self.idx = np.flatnonzero(self.alive)
        self._queues()
        rows = self.tab[self.idx]
        if self.clock is not None:
            self.clock.extra = int(1_000_000 + self.rng.lognormal(12.0, 0.5))
        if warmup:
            return rows
        cw = int(np.count_nonzero(rows["state"] == self.STATE["CLOSE_WAIT"]))
        if cw > self.cw_max:
            self.cw_max, self.cw_max_k = cw, self.k
        self.k += 1
        if self.k >= self.n and self.rec is not None:
            self.rec.stop()
        return rows

    def process_names(self, pids: np.ndarray):
        p = np.asarray(pids, dtype=np.int64)
        codes = np.where((p > 0) & (p < len(self.pid_lut)), self.pid_lut[np.clip(p, 0, len(self.pid_lut) - 1)], -1)
        return codes.astype(np.int32), list(self.NAMES)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- generation

def gen_params(args) -> dict:
    return {"version": GEN_VERSION, "minutes": args.minutes, "interval_ms": args.interval_ms,
            "pairs": args.pairs, "seed": args.seed, "start": T0_ISO}


def generate(data: Path, params: dict) -> dict:
    import pandas as pd

    from tcpsnap import Recorder

    rec_dir = data / "recording"
    if rec_dir.exists():
        shutil.rmtree(rec_dir)
    (data / "manifest.json").unlink(missing_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    interval_ns = params["interval_ms"] * 1_000_000
    snapshots = params["minutes"] * 60_000 // params["interval_ms"]
    wall0 = pd.Timestamp(params["start"]).value
    clock = SimClock(wall0, interval_ns)
    world = World(snapshots, interval_ns / 1e9, pairs=params["pairs"],
                  churning=max(1, params["pairs"] // 10), poller=min(60, params["pairs"] // 10),
                  seed=params["seed"], clock=clock)
    logging.getLogger("tcpsnap.recorder").setLevel(logging.ERROR)   # "writer behind" at interval 0
    t0 = time.perf_counter()
    with Recorder(rec_dir, interval=0, rotate="15m", snapshotter=world, clock=clock) as rec:
        world.rec = rec
        rec.run()
        stats = dict(rec.stats)
    secs = time.perf_counter() - t0
    files = sorted(rec_dir.rglob("*.parquet"))
    import pyarrow.parquet as pq

    row_groups = sum(pq.read_metadata(f).num_row_groups for f in files)
    man = dict(params, snapshots=stats["snapshots"], rows=stats["rows"], sockets=world.sockets,
               close_wait_max=world.cw_max,
               close_wait_max_at=str(pd.Timestamp(wall0 + world.cw_max_k * interval_ns, unit="ns", tz="UTC")),
               files=[str(f.relative_to(rec_dir)) for f in files],
               bytes=sum(f.stat().st_size for f in files), generate_s=round(secs, 1), row_groups=row_groups,
               writer_waits=stats["writer_waits"])
    if man["snapshots"] != snapshots:
        raise SystemExit(f"generation: {man['snapshots']} snapshots, expected {snapshots}")
    (data / "manifest.json").write_text(json.dumps(man, indent=1))
    return man


def ensure_recording(data: Path, params: dict, regen: bool) -> dict:
    mf = data / "manifest.json"
    if not regen and mf.exists():
        man = json.loads(mf.read_text())
        rec_dir = data / "recording"
        if all(man.get(k) == v for k, v in params.items()) and man.get("files") and \
                all((rec_dir / f).is_file() for f in man["files"]) and \
                not any(p.name.startswith(".") for p in rec_dir.rglob("*") if p.is_file()):
            log(f"reusing the recording in {rec_dir} ({man['rows']:,} rows)")
            if "row_groups" not in man:
                import pyarrow.parquet as pq

                man["row_groups"] = sum(pq.read_metadata(rec_dir / f).num_row_groups for f in man["files"])
            return man
    free = shutil.disk_usage(data if data.exists() else data.parent).free
    log(f"generating {params['minutes']} min at {params['interval_ms']} ms into {data}/recording "
        f"({free / 2**30:.0f} GiB free there)")
    man = generate(data, params)
    log(f"generated {man['snapshots']:,} snapshots, {man['rows']:,} rows, {len(man['files'])} files, "
        f"{man['bytes'] / 2**20:.0f} MiB in {man['generate_s']:.0f} s")
    return man


# --------------------------------------------------------------------------- measurements (children)

def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_minute(rec: Path, man: dict, reps: int, full_reps: int) -> dict:
    import pandas as pd

    import tcpsnap

    t0 = pd.Timestamp(man["start"])
    mid = t0 + pd.Timedelta(minutes=man["minutes"] / 2) - pd.Timedelta(seconds=30)
    start, end = mid, mid + pd.Timedelta(minutes=1)
    fast, slow = [], []
    want = None
    for i in range(max(reps, full_reps)):
        if i < reps:
            t = time.perf_counter()
            part = tcpsnap.read(rec, start=start, end=end)
            fast.append(time.perf_counter() - t)
            got = (len(part), part["seq"].to_numpy().copy())
            del part
            if want is not None:
                assert got[0] == want[0] and np.array_equal(got[1], want[1])
            want = got
        if i < full_reps:
            t = time.perf_counter()
            full = pd.read_parquet(rec)
            sel = full[(full["timestamp"] >= start) & (full["timestamp"] < end)]
            slow.append(time.perf_counter() - t)
            rows_full = len(full)
            seqs = np.sort(sel["seq"].to_numpy(), kind="stable")
            del full, sel
            assert len(seqs) == want[0], (len(seqs), want[0])
            assert np.array_equal(seqs, np.sort(want[1], kind="stable"))
            assert np.array_equal(want[1], np.sort(want[1], kind="stable"))   # read() is in time order
    alone = []
    for _ in range(reps):      # and on their own (not right after a 14 GiB read was freed)
        t = time.perf_counter()
        part = tcpsnap.read(rec, start=start, end=end)
        alone.append(time.perf_counter() - t)
        assert len(part) == want[0]
        del part
    return {"read_alone_s": alone, "start": str(start), "end": str(end), "rows": want[0],
            "snapshots": int(len(np.unique(want[1]))), "rows_whole": rows_full,
            "read_s": fast, "pandas_s": slow, "peak_rss_mib": rss_mib("VmHWM")}


def child_lifetimes(rec: Path, man: dict, reps: int) -> dict:
    import tcpsnap
    from tcpsnap import analysis

    base = rss_mib()
    t = time.perf_counter()
    df = tcpsnap.read(rec, columns=LIFE_COLUMNS)
    read_s = time.perf_counter() - t
    df_mib = float(df.memory_usage(deep=False).sum()) / 2**20
    after_read = rss_mib()
    peak_read = rss_mib("VmHWM")
    times, peaks = [], []
    life = None
    can_reset = True
    for _ in range(reps):
        life = None
        before = rss_mib()
        can_reset = reset_peak() and can_reset
        t = time.perf_counter()
        life = analysis.lifetimes(df)
        times.append(time.perf_counter() - t)
        peaks.append(rss_mib("VmHWM") - before)
    assert len(life) == man["sockets"], (len(life), man["sockets"])
    assert int(life["snapshots"].sum()) == len(df) == man["rows"]
    longest = life.sort_values("duration").iloc[-1]
    return {"rows": len(df), "connections": len(life), "read_s": read_s, "df_mib": df_mib,
            "rss_base_mib": base, "rss_after_read_mib": after_read, "peak_rss_read_mib": peak_read,
            "lifetimes_s": times, "lifetimes_peak_extra_mib": peaks, "peak_reset": can_reset,
            "peak_rss_mib": rss_mib("VmHWM") if not can_reset else None,
            "states_seen": sorted(set(life["states"].astype(str)))[:12],
            "longest": str(longest["duration"])}


def run_child(kind: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(args.data), "--reps", str(args.reps),
           "--full-reps", str(args.full_reps), "--minutes", str(args.minutes),
           "--interval-ms", str(args.interval_ms), "--pairs", str(args.pairs), "--seed", str(args.seed)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"child {kind} failed ({p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report

def machine() -> str:
    import pandas as pd
    import pyarrow as pa

    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    return (f"nproc {os.cpu_count()}, kernel {platform.release()}, Python {platform.python_version()}, "
            f"numpy {np.__version__}, pandas {pd.__version__}, pyarrow {pa.__version__}; "
            f"load average at the end {load}")


def med(xs) -> float:
    return statistics.median(xs)


def report(man: dict, mres: dict, lres: dict, cmd: str) -> str:
    fast, slow = med(mres["read_s"]), med(mres["pandas_s"])
    speed = slow / fast
    lt = med(lres["lifetimes_s"])
    L = []
    w = L.append
    w("## Analysis: reading a minute, lifetimes over an hour")
    w("")
    w(f"**Command** (generates the recording the first time, {man['generate_s']:.0f} s here, then reuses it; "
      "about a minute in all):")
    w("")
    w(f"    {cmd}")
    w("")
    w(f"**Machine**: {machine()}. Shared with other jobs: timings are medians of interleaved "
      "repetitions, each measurement in a child process of its own.")
    w("")
    w(f"**Recording**: {man['minutes']} min at {man['interval_ms']} ms made through the real "
      f"`Recorder` (capture + writer threads, journals, 15 min rotation: {len(man['files'])} files, "
      f"{man.get('row_groups', '?')} row groups) "
      f"fed by a scripted table (`World` in the benchmark) with simulated clocks: "
      f"{man['snapshots']:,} snapshots, {man['rows']:,} rows ({man['rows'] / man['snapshots']:,.0f} "
      f"per snapshot: a listener, {man['pairs']:,} loopback pairs -- 90% stable, 10% churning "
      f"at ~2 closes/s with new cookies and ports -- and their TIME_WAIT rows, plus a "
      f"{man['close_wait_max']}-socket CLOSE_WAIT pile-up), {man['sockets']:,} distinct sockets, "
      f"{man['bytes'] / 2**20:,.0f} MiB zstd "
      f"({man['bytes'] / man['rows']:.2f} bytes/row).")
    w("")
    w("| measurement | result | target | |")
    w("|---|---:|---:|---|")
    w(f"| `tcpsnap.read(path, start=t, end=t+1min)`, {mres['rows']:,} rows ({mres['snapshots']} snapshots) "
      f"| {fast:.3f} s | | |")
    w(f"| `pandas.read_parquet(path)` + filter to the same minute ({mres['rows_whole']:,} rows read) "
      f"| {slow:.2f} s | | |")
    w(f"| speed-up, one minute (medians of the interleaved runs) | **{speed:.0f}x** | >= 20x | "
      f"{'met' if speed >= 20 else 'MISSED'} |")
    w(f"| `analysis.lifetimes(df)`, {lres['rows']:,} rows -> {lres['connections']:,} connections "
      f"| **{lt:.1f} s** | < 60 s | {'met' if lt < 60 else 'MISSED'} |")
    peak_extra = max(lres["lifetimes_peak_extra_mib"])
    w(f"| peak RSS added by `lifetimes` (over the process holding the DataFrame) | {peak_extra / 1024:.2f} GiB | | |")
    w(f"| peak RSS of the lifetimes process: reading the hour / during `lifetimes` "
      f"| {lres['peak_rss_read_mib'] / 1024:.1f} / {(lres['rss_after_read_mib'] + peak_extra) / 1024:.1f} GiB | | |")
    w(f"| `tcpsnap.read(path, columns=analysis.COLUMNS)`, the whole recording (DataFrame of "
      f"{lres['df_mib'] / 1024:.2f} GiB) | {lres['read_s']:.1f} s | | |")
    w(f"| peak RSS of the minute process (pandas' whole-folder read) | {mres['peak_rss_mib'] / 1024:.1f} GiB | | |")
    w("")
    w(f"Every run, in seconds: `read` of the minute, interleaved with pandas "
      f"{', '.join(f'{x:.3f}' for x in mres['read_s'])}; on its own afterwards "
      f"{', '.join(f'{x:.3f}' for x in mres['read_alone_s'])} (median {med(mres['read_alone_s']):.3f}, "
      f"{slow / med(mres['read_alone_s']):.0f}x); pandas {', '.join(f'{x:.1f}' for x in mres['pandas_s'])} "
      f"(the first in a fresh process, which pays for faulting in its memory); "
      f"`lifetimes` {', '.join(f'{x:.2f}' for x in lres['lifetimes_s'])}.")
    w("")
    w(f"Checked in the run: both ways of reading the minute give the same {mres['rows']:,} rows and seqs; "
      f"`lifetimes` finds exactly the generator's {man['sockets']:,} sockets, and their `snapshots` add up "
      f"to every row.")
    return "\n".join(L)


def write_section(path: Path, body: str, name: str = "analysis") -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    old = path.read_text() if path.exists() else "# tcpsnap benchmark results\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


# --------------------------------------------------------------------------- bounded memory
# Each answer in its own child: tcpsnap's (the analysis functions on the recording's path,
# the CLI's info / plot / export) and DuckDB's (or polars') to the same question, side by
# side; the child's peak RSS (VmHWM) covers its imports too.

# each next to what it is compared with (the load of a shared machine drifts)
BOUNDED = ("info", "duckdb-info", "plot", "duckdb-plot", "state-counts", "export-jsonl", "duckdb-export-jsonl",
           "polars-export-jsonl", "lifetimes", "duckdb-lifetimes", "export-parquet", "duckdb-export-parquet")
EXPORT_MINUTES = 2          # jsonl: a range of the hour (the whole would be ~34 GB of text)


def _range(man: dict) -> tuple:
    import pandas as pd

    t0 = pd.Timestamp(man["start"])
    mid = t0 + pd.Timedelta(minutes=man["minutes"] / 2)
    return mid, mid + pd.Timedelta(minutes=min(EXPORT_MINUTES, man["minutes"]))


def _duck():
    import duckdb

    return duckdb.connect(config={"threads": 2, "memory_limit": "1GB",
                                  "temp_directory": tempfile.mkdtemp(prefix="bench-duckdb-")})


def _glob(rec: Path) -> str:
    return f"read_parquet('{rec}/**/*.parquet', hive_partitioning=true)"


# ``plot``, ``state_counts`` and DuckDB's answer to the plot's question run as the
# commands a user runs (``python -m tcpsnap plot ...``, ``python -c ...``), timed by the
# parent from their start to their exit, peak RSS from wait4: every import counted on
# both sides (the in-child timer imported numpy and pandas before it started)
DUCKDB_PLOT_SQL = """SELECT time_bucket(INTERVAL '10 seconds', ts) AS b, state, avg(n) FROM
    (SELECT seq, any_value(timestamp) AS ts, state, count(*) AS n FROM {src}
     WHERE kind = 'connection' GROUP BY seq, state) GROUP BY ALL ORDER BY b"""
COMMANDS = ("plot", "duckdb-plot", "state-counts")


def command(kind: str, rec: Path, out_dir: Path) -> list[str]:
    """The command line of a ``COMMANDS`` kind."""
    if kind == "plot":
        return [sys.executable, "-m", "tcpsnap", "plot", str(rec), "-o", str(out_dir / "states.png"),
                "--kind", "states", "--utc"]
    if kind == "state-counts":
        return [sys.executable, "-c", "import sys\nfrom tcpsnap import analysis\n"
                f"sc = analysis.state_counts({str(rec)!r}, freq='10s')\nprint(len(sc), list(sc.columns))"]
    sql = DUCKDB_PLOT_SQL.format(src=_glob(rec))
    return [sys.executable, "-c", "import tempfile\nimport duckdb\n"
            "con = duckdb.connect(config={'threads': 2, 'memory_limit': '1GB', "
            "'temp_directory': tempfile.mkdtemp(prefix='bench-duckdb-')})\n"
            f"print(len(con.execute({sql!r}).fetchall()))"]


def child_bounded(kind: str, rec: Path, man: dict, out_dir: Path) -> dict:
    start, end = _range(man) if "export" in kind else (None, None)
    res: dict = {}
    t = time.perf_counter()
    if kind == "info":
        from tcpsnap._cmd_analyse import summarize

        s = summarize(str(rec))
        res = {"connections": s["connections"], "rows": s["rows"], "snapshots": s["snapshots"],
               "top_remote": s["top_remotes"][0]}
        assert s["connections"] == man["sockets"] and s["rows"] == man["rows"], res
    elif kind.startswith("export-"):
        from tcpsnap.cli import main as cli

        to = kind.split("-")[1]
        out = out_dir / f"x.{to}"
        argv = ["export", str(rec), "--format", to, "-o", str(out), "--force"]
        if to == "jsonl":
            argv += ["--start", start.isoformat(), "--end", end.isoformat()]
        assert cli(argv) == 0
        res = {"bytes": out.stat().st_size}
    elif kind == "lifetimes":
        from tcpsnap import analysis

        life = analysis.lifetimes(rec)
        assert len(life) == man["sockets"] and int(life["snapshots"].sum()) == man["rows"]
        res = {"connections": len(life)}
    elif kind == "duckdb-info" or kind == "duckdb-lifetimes":
        con = _duck()
        con.execute(f"""CREATE TEMP TABLE life AS SELECT host, boot_id, cookie,
            arg_max(pid, seq) FILTER (WHERE pid > 0) AS pid, arg_max(process, seq) FILTER (WHERE pid > 0) AS process,
            arg_min(family, seq) AS family, arg_min(local_addr, seq) AS local_addr, arg_min(local_port, seq) AS lport,
            arg_min(remote_addr, seq) AS remote_addr, arg_min(remote_port, seq) AS rport,
            min(timestamp) AS first_seen, max(timestamp) AS last_seen, max(monotonic_ns) - min(monotonic_ns) AS dur,
            count(*) AS snapshots, arg_min(state, seq) AS first_state, arg_max(state, seq) AS last_state
            FROM {_glob(rec)} WHERE kind = 'connection' GROUP BY ALL""")
        n, rows = con.execute("SELECT count(*), sum(snapshots) FROM life").fetchone()
        res = {"connections": n, "rows": int(rows)}
        if kind == "duckdb-info":
            res["snapshots"] = con.execute(f"SELECT count(DISTINCT seq) FROM {_glob(rec)}").fetchone()[0]
            res["top_processes"] = con.execute("SELECT pid, process, count(*) c FROM life WHERE first_state <> "
                                               "'LISTEN' GROUP BY ALL ORDER BY c DESC LIMIT 5").fetchall()
            res["top_remote"] = con.execute("SELECT remote_addr, count(*) c, sum(dur) / 1e9 FROM life WHERE "
                                            "remote_addr NOT IN ('0.0.0.0', '::', '') GROUP BY 1 ORDER BY c DESC, "
                                            "3 DESC LIMIT 5").fetchall()[0]
    elif kind.startswith("duckdb-export-"):
        con = _duck()
        to = kind.rsplit("-", 1)[1]
        out = out_dir / f"d.{to}"
        where = (f"WHERE timestamp >= '{start.isoformat()}'::TIMESTAMPTZ AND timestamp < '{end.isoformat()}'"
                 "::TIMESTAMPTZ") if to == "jsonl" else ""
        fmt = "FORMAT JSON" if to == "jsonl" else "FORMAT PARQUET, COMPRESSION zstd"
        con.execute(f"COPY (SELECT * EXCLUDE (date) FROM {_glob(rec)} {where}) TO '{out}' ({fmt})")
        res = {"bytes": out.stat().st_size}
    elif kind == "polars-export-jsonl":
        import polars as pl

        out = out_dir / "p.jsonl"
        lf = pl.scan_parquet(f"{rec}/**/*.parquet", hive_partitioning=True)
        lf.filter((pl.col("timestamp") >= start) & (pl.col("timestamp") < end)).sink_ndjson(out)
        res = {"bytes": out.stat().st_size}
    res["seconds"] = time.perf_counter() - t
    res["peak_rss_mib"] = rss_mib("VmHWM")
    return res


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


BALLAST_MIB = 1600          # a little more than the jsonl export's 1.2-1.4 GB


def _ballast(tmp: str) -> None:
    """Write and remove BALLAST_MIB of page cache. On this VM, the first write into guest
    pages the host has taken back costs ~4x the write into pages just freed (1.3 GB: 4.8 s
    of system time after 30 s idle, 0.4-1.1 s right after another such file was removed):
    whichever jsonl export runs second would inherit the first's freed pages. Done before
    each export, so both sides start from pages just freed."""
    buf = os.urandom(8 << 20)
    path = Path(tmp) / ".ballast"
    with open(path, "wb") as f:
        for _ in range(BALLAST_MIB // 8):
            f.write(buf)
    path.unlink()


def run_bounded(args, man: dict) -> dict:
    """Each kind in a child of its own, ``--rounds`` times, interleaved (every kind once per
    round, each next to what it is compared with; every other round in the reverse order,
    so neither side of a pair always goes first): per kind the runs (wall and the child's
    CPU seconds, user + system), the median time and the highest peak; the load average
    before each run."""
    kinds = [k for k in BOUNDED if not args.only or k in args.only.split(",")]
    runs: dict = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-bounded-") as tmp:
        for rnd in range(args.rounds):
            for kind in (kinds if rnd % 2 == 0 else kinds[::-1]):
                whole = kind in COMMANDS
                cmd = command(kind, args.data / "recording", Path(tmp)) if whole else \
                    [sys.executable, __file__, "--child", "bounded", "--kind", kind, "--data", str(args.data),
                     "--out", tmp]
                if "export-jsonl" in kind:
                    _ballast(tmp)
                load = _load()
                t0 = time.perf_counter()
                with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as p:
                    stdout = p.stdout.read() if p.stdout else ""
                    _, status, usage = os.wait4(p.pid, 0)
                    p.returncode = os.waitstatus_to_exitcode(status)
                wall = time.perf_counter() - t0
                if p.returncode != 0:
                    runs[kind].append({"failed": p.returncode, "load": load})
                    log(f"  round {rnd + 1} {kind}: failed ({p.returncode})")
                    continue
                if whole:
                    r = {"seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "out": stdout.strip()[-200:],
                         "command": True}
                else:
                    r = json.loads(stdout.strip().splitlines()[-1])
                r["load"] = load
                r["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
                r["user_seconds"], r["system_seconds"] = round(usage.ru_utime, 3), round(usage.ru_stime, 3)
                runs[kind].append(r)
                log(f"  round {rnd + 1} {kind}: {r['seconds']:.1f} s (cpu {r['cpu_seconds']:.1f} s: user "
                    f"{r['user_seconds']:.1f}, sys {r['system_seconds']:.1f}), peak {r['peak_rss_mib']:.0f} MiB, "
                    f"load {load[0]}")
                for f in Path(tmp).iterdir():
                    f.unlink()
    out: dict = {}
    for kind, rs in runs.items():
        ok = [r for r in rs if "seconds" in r]
        out[kind] = {"runs": rs}
        if ok:
            out[kind].update(seconds=statistics.median(r["seconds"] for r in ok),
                             peak_rss_mib=max(r["peak_rss_mib"] for r in ok))
    return out


def paired(res: dict, a: str, b: str, what: str = "seconds") -> float | None:
    """The median over rounds of a's time / b's (run back to back in each round); ``what``:
    "seconds" (wall, from the call) or "cpu_seconds" (the whole child's user + system)."""
    ra, rb = res.get(a, {}).get("runs", []), res.get(b, {}).get("runs", [])
    xs = [x[what] / y[what] for x, y in zip(ra, rb, strict=False) if what in x and what in y]
    return statistics.median(xs) if xs else None


def report_bounded(man: dict, res: dict, cmd: str) -> str:
    def cell(k):
        r = res.get(k, {})
        return "failed" if "seconds" not in r else f"{r['seconds']:.1f} s, {r['peak_rss_mib']:.0f} MiB"

    def ratio(a, b, what="seconds"):
        x = paired(res, a, b, what)
        return "-" if x is None else f"{x:.2f}x"

    gib = 1024
    # (name, ours, DuckDB's, peak target MiB, time target: at most this ratio to DuckDB, or None)
    rows = [("info", "info", "duckdb-info", gib, 1.5),
            ("plot --kind states (data + drawing)", "plot", "duckdb-plot", gib, 1.5),
            (f"export --to jsonl ({EXPORT_MINUTES} min)", "export-jsonl", "duckdb-export-jsonl", gib, 1.5),
            (f"export --to jsonl vs polars `sink_ndjson` ({EXPORT_MINUTES} min)", "export-jsonl",
             "polars-export-jsonl", gib, 1.5),
            ("export --to parquet (the hour)", "export-parquet", "duckdb-export-parquet", gib, 1.5),
            ("analysis.lifetimes(path)", "lifetimes", "duckdb-lifetimes", 2 * gib, None),
            ("analysis.state_counts(path, '10s')", "state-counts", "duckdb-plot", 2 * gib, None)]
    nr = max((len(r.get("runs", [])) for r in res.values()), default=0)
    loads = [x["load"][0] for r in res.values() for x in r.get("runs", []) if "load" in x]
    L = ["## Analysis in bounded memory", "",
         f"The one-hour recording ({man['rows']:,} rows, {man['snapshots']:,} snapshots, {man['sockets']:,} "
         "connections, made by the Recorder of this tree); each answer in a child process of its own "
         "(time from the call, peak RSS = the child's VmHWM, imports included; `plot`, `state_counts` "
         "and DuckDB's answer to the plot's question are the whole commands, `python -m tcpsnap plot ...` "
         "and `python -c ...`, timed from their start to their exit, peak RSS from `wait4`). DuckDB: 2 threads, "
         f"memory_limit 1GB. {nr} interleaved round(s): each round runs every question once, each next "
         "to what it is compared with; times are medians, the ratio is the median of the rounds' "
         "ratios (the two runs of a round back to back; every other round in the reverse order), the "
         "CPU ratio the same of the children's user + system seconds (imports included), the peak the "
         "highest of the rounds. Before each jsonl export, 1.6 GB is written and removed (`_ballast`: "
         "on this VM a write into guest pages the host took back costs ~4x one into pages just freed, "
         "which the second of two back-to-back exports inherits from the first). "
         f"Load average (1 min) before the runs: {min(loads, default=0):.1f} to {max(loads, default=0):.1f}.", "",
         "| question | tcpsnap | reference | ratio | CPU ratio | peak target | peak met | time target | time met |",
         "|---|---|---|---|---|---|---|---|---|"]
    for name, ours, theirs, cap, most in rows:
        r = res.get(ours, {})
        if ours not in res or theirs not in res:
            continue                  # not run (--only)
        met = "seconds" in r and r["peak_rss_mib"] <= cap
        x = paired(res, ours, theirs)
        fast = "-" if most is None or x is None else ("yes" if x <= most else "NO")
        who = "polars" if theirs.startswith("polars") else "DuckDB"
        L.append(f"| {name} | {cell(ours)} | {who} {cell(theirs)} | {ratio(ours, theirs)} | "
                 f"{ratio(ours, theirs, 'cpu_seconds')} | {cap // gib} GiB | "
                 f"{'yes' if met else 'NO'} | {'-' if most is None else f'{most}x'} | {fast} |")
    L += ["", f"Machine: {machine()}; `uptime` at the end: {os.popen('uptime').read().strip()}.", "",
          "    " + cmd, "",
          "How (a full recording of schema 2 or later, no `where`): the snapshot list and the "
          "per-snapshot state counts of a one-host, one-boot recording (the row groups' statistics "
          "say so) are counted in numpy from the five columns pyarrow decodes, row group by row group "
          "on two threads, page CRCs verified as read (`reading.tally`: a row's group is a "
          "`bincount` key, since a snapshot's rows are consecutive; ~0.9 s of CPU where DuckDB's "
          "hash aggregate took ~1.45); else from one DuckDB query over the projected columns, an "
          "empty snapshot's count from a second query that decodes only its rows; the connections "
          "(`lifetimes`, `info`, `top_remotes`, `by_process`) from one query grouped by connection, "
          "state, 4-tuple and owner, a few rows per connection merged in numpy "
          "(`reading.aggregate.connections`); `plot --kind states` counts (seq, state and timestamp "
          "only) while a forked child imports matplotlib, bins in numpy and has the child draw on a "
          "plain Figure (no pyplot, no pandas; Linux); jsonl export is polars' lazy "
          "NDJSON sink with the time range pushed down, "
          "the same bytes as before. Page CRCs: DuckDB and polars do not verify them, so the pages of "
          "the columns (and, for the export, row groups) a question reads are CRC-checked as stored "
          "(a fraction of a second here; for the export on a thread while polars writes a temporary "
          "file that is published only when they match); a mismatch sends the question to the "
          "piece-by-piece path, which names the file. Where the rows' order decides (rows without a "
          "cookie, two rows of a connection in one snapshot at its ends, a state revisited), with a "
          "`where`, in changes mode and on schema-1 files the rows are still read piece by piece "
          "through pyarrow (tests/test_bounded.py compares every path with the in-memory answers). "
          "DuckDB's own queries answer the same questions more loosely (lifetimes without state "
          "paths or open ends). The machine is shared with other engineers' builds: absolute times "
          "are inflated by the load given above; the paired ratios are the figures to read.",
          "",
          "Before (issue 13's figures on this recording): main at 71289e7 `info` 8.8 GB, `plot` 14 GB, "
          "`analysis.lifetimes` 8.8 GB; at dfd5d6e (16:48 UTC, load 2.9-4.0, one round): `info` 12.7 s "
          "(1.78x DuckDB), 993 MiB; `plot` 2.3 s (2.35x); jsonl export 8.3 s (3.83x polars); `lifetimes` "
          "10.7 s (1.53x), 986 MiB; `state_counts` 2.2 s (2.26x)."]
    return "\n".join(L)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="cache folder for the recording (default: a temporary one, removed)")
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the cheap measurements")
    ap.add_argument("--full-reps", type=int, default=3, help="repetitions of pandas' whole-folder read")
    ap.add_argument("--regen", action="store_true", help="generate the recording even if cached")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--results", type=Path, help="rewrite the analysis section of this RESULTS.md")
    _results.add_json_argument(ap)
    ap.add_argument("--bounded", action="store_true",
                    help="the bounded-memory measurements (info, plot, export, lifetimes, state_counts vs DuckDB)")
    ap.add_argument("--rounds", type=int, default=1, help="--bounded: interleaved rounds (medians, paired ratios)")
    ap.add_argument("--only", help="--bounded: these kinds only, comma-separated (of: " + ", ".join(BOUNDED) + ")")
    ap.add_argument("--child", choices=("minute", "lifetimes", "bounded"), help=argparse.SUPPRESS)
    ap.add_argument("--kind", choices=BOUNDED, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    params = gen_params(args)

    if args.child:
        man = json.loads((args.data / "manifest.json").read_text())
        rec = args.data / "recording"
        if args.child == "bounded":
            out = child_bounded(args.kind, rec, man, args.out)
        elif args.child == "minute":
            out = child_minute(rec, man, args.reps, args.full_reps)
        else:
            out = child_lifetimes(rec, man, max(1, min(args.reps, 3)))
        print(json.dumps(out))
        return 0

    run = _results.Run("bench_analysis", args.json, argv)
    tmp = None
    if args.data is None:
        tmp = tempfile.mkdtemp(prefix="tcpsnap-bench-analysis-")
        args.data = Path(tmp)
    args.data = args.data.resolve()
    try:
        man = ensure_recording(args.data, params, args.regen)
        if args.generate_only:
            return 0
        if args.bounded:
            log("bounded memory: tcpsnap vs DuckDB / polars, each in a child")
            bres = run_bounded(args, man)
            shown = [a for a in argv if a not in ("--regen",)]
            if "--results" in shown:
                i = shown.index("--results")
                shown = shown[:i] + shown[i + 2:]
            text = report_bounded(man, bres, ("python3 benchmarks/bench_analysis.py " + " ".join(shown)).strip())
            print(text)
            run.write({"manifest": {k: v for k, v in man.items() if k != "files"}, "bounded": bres})
            if args.results:
                write_section(args.results, text, "bounded")
            return 0
        log("minute: tcpsnap.read(start, end) vs pandas.read_parquet(whole) + filter")
        mres = run_child("minute", args)
        log(f"  read {med(mres['read_s']):.3f} s, pandas {med(mres['pandas_s']):.2f} s")
        log("lifetimes over the whole recording")
        lres = run_child("lifetimes", args)
        log(f"  read {lres['read_s']:.1f} s, lifetimes {med(lres['lifetimes_s']):.1f} s")
        shown = [a for a in argv if a != "--regen"]
        for opt in ("--results", "--json"):
            if opt in shown:
                i = shown.index(opt)
                shown = shown[:i] + shown[i + 2:]
        cmd = "python3 benchmarks/bench_analysis.py " + " ".join(shown)
        text = report(man, mres, lres, cmd.strip())
        print(text)
        speed = med(mres["pandas_s"]) / med(mres["read_s"])
        lt = med(lres["lifetimes_s"])
        run.write({"manifest": {k: v for k, v in man.items() if k != "files"},
                   "minute": mres, "lifetimes": lres,
                   "summary": {"read_minute_s": med(mres["read_s"]), "read_minute_alone_s": med(mres["read_alone_s"]),
                               "pandas_whole_s": med(mres["pandas_s"]), "speedup": speed, "speedup_met": speed >= 20,
                               "lifetimes_s": lt, "lifetimes_met": lt < 60,
                               "lifetimes_peak_extra_mib": max(lres["lifetimes_peak_extra_mib"])}})
        if args.results:
            write_section(args.results, text)
            log(f"wrote the analysis section of {args.results}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
