#!/usr/bin/env python3
"""Changes-mode benchmark: bytes per hour, the diff's cost, the destroy feed.

1. size: bytes on disk per hour, ``--mode full`` vs ``--mode changes``, 10 snapshots a
   second, written by the real ``tcpsnap.Recorder`` (capture thread, batches, writer,
   journals, row groups, rotation, zstd) fed by a scripted table on simulated clocks
   (the Recorder is given a simulated clock, as in bench_analysis), so
   ``--minutes`` simulated minutes take seconds; bytes are scaled to an hour. Scenarios:

   * stable: 10,000 ESTABLISHED connections, nothing changes (listed in a random but
     fixed order, as the kernel's hash buckets list them);
   * busy: the same, and 10% of them (1,000 rows) have new rx/tx queue sizes in every
     snapshot -- each such row is a ``changed`` event;
   * churn: the stable 10,000 plus 100 opens a second: each new connection is SYN_SENT
     for one snapshot, ESTABLISHED for 0.1-5 s, FIN_WAIT2 for one snapshot, TIME_WAIT
     for 60 s, then gone (~6,300 churning rows in the table at any time).

   The two recordings are then read back and compared (changes rebuilt == full, every
   column; ``--no-verify`` skips it).

2. read: ``tcpsnap.read`` of a minute and ``tcpsnap.table_at`` of one snapshot, from the
   churn scenario recorded both ways (``--read-minutes``, default 3).

3. diff: the cost of the diff per snapshot against ``take()`` alone, on the live kernel
   table of a private network namespace (``unshare -n``) holding 10,000 sockets (5,000
   loopback pairs): medians of ``Snapshotter.take()`` and of ``ChangeTracker.step()``
   (diff, destroy-feed bookkeeping, event rows) over the same snapshots, with 1% of the
   connections moving bytes between snapshots so there are events.

4. feed: how many short connections the destroy feed catches at 1,000 connections a
   second, in a private network namespace: a load process opens, accepts and closes
   connections at that rate (each lives well under the interval) while
   ``Recorder(mode="changes", interval=100ms)`` records; every connection's two socket
   cookies (SO_COOKIE) are the ground truth. The client closes first, so the server's
   socket (passive close) is freed at once and only the destroy feed can see it; the
   client's lingers as TIME_WAIT and snapshots see it too. Caught = the server socket's
   cookie has a ``closed`` event.

5. info and totals: TCP internals in changes mode (``--tcp-info``): sizes against full mode, on
   scripted tables and on a live table in a private namespace (``--live-seconds``), and the
   destroy feed's final totals at 1,000 connections/s (``benchmarks/_changes_info.py`` has the
   method).

    python3 benchmarks/bench_changes.py all --results benchmarks/RESULTS.md
    python3 benchmarks/bench_changes.py info --info-minutes 1 --results benchmarks/RESULTS.md
    python3 benchmarks/bench_changes.py totals --results benchmarks/RESULTS.md
    python3 benchmarks/bench_changes.py size --minutes 2
    python3 benchmarks/bench_changes.py read
    python3 benchmarks/bench_changes.py diff
    python3 benchmarks/bench_changes.py feed --rate 1000 --seconds 5
    python3 benchmarks/bench_changes.py all --minutes 0.2 --scenarios stable --verify-minutes 0 \\
        --read-minutes 1.1 --sockets 200 --reps 10 --rate 100 --seconds 1      # a quick try

Every run writes what it measured to a JSON file (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _changes_info import INTERVAL_NS, SimClock  # the one simulated clock

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- 1. size

class World:
    """The scripted table: ``stable`` ESTABLISHED rows, optionally ``busy`` of them with
    new queue sizes every snapshot, and ``opens`` new connections a second."""

    def __init__(self, snapshots: int, stable: int = 10_000, busy: int = 0, opens: int = 0,
                 seed: int = 1) -> None:
        from tcpsnap import ROW_DTYPE, TcpState

        self.S = TcpState
        self.snapshots, self.k, self.rec = snapshots, -1, None
        self.rng = np.random.default_rng(seed)
        self.busy = busy
        t = np.zeros(stable, ROW_DTYPE)
        t["family"] = 4
        t["state"] = TcpState.ESTABLISHED
        t["local_addr"][:, :4] = [10, 0, 0, 1]
        t["remote_addr"][:, 0] = 10
        t["remote_addr"][:, 1] = 1
        t["remote_addr"][:, 2] = (np.arange(stable) // 250) % 256
        t["remote_addr"][:, 3] = np.arange(stable) % 250 + 1
        t["local_port"] = 20_000 + np.arange(stable) % 40_000
        t["remote_port"] = np.where(np.arange(stable) % 3 == 0, 443, 5432)
        t["uid"] = 1000
        t["inode"] = 5_000_000 + np.arange(stable)
        t["cookie"] = 1 + np.arange(stable)
        # the kernel lists sockets in hash-bucket order, which has nothing to do with cookies
        self.stable = t[self.rng.permutation(stable)]
        # churn: a ring of connections, each with its birth snapshot and ESTABLISHED span
        self.per_snap = opens * INTERVAL_NS // 10**9
        est = np.maximum(1, self.rng.integers(1, 51, size=max(1, self.per_snap) * 2000))
        self.est = est
        self.life = 1 + est + 1 + 600           # SYN_SENT, ESTABLISHED, FIN_WAIT2, TIME_WAIT
        self.ring = max(1, self.per_snap) * (int(self.life.max()) + 2)
        c = np.zeros(self.ring, ROW_DTYPE)
        c["family"] = 4
        c["local_addr"][:, :4] = [10, 0, 0, 1]
        c["remote_addr"][:, :4] = [10, 2, 0, 1]
        c["remote_addr"][:, 3] = 1 + np.arange(self.ring) % 200
        c["remote_port"] = 443
        c["uid"] = 1000
        self.churn = c
        self.born = np.full(self.ring, -10**9, np.int64)
        self.span = np.zeros(self.ring, np.int64)
        self.next_cookie = 10**6
        self.sockets = stable

    def take(self) -> np.ndarray:
        warmup = self.k < 0          # Recorder.open's untimed take: the clock does not move
        k = max(self.k, 0)
        if self.busy:
            i = self.rng.choice(len(self.stable), self.busy, replace=False)
            self.stable["rx_queue"][i] = self.rng.integers(0, 65536, self.busy)
            self.stable["tx_queue"][i] = self.rng.integers(0, 65536, self.busy)
        out = self.stable
        if self.per_snap:
            if not warmup:
                for j in range(self.per_snap):
                    slot = (k * self.per_snap + j) % self.ring
                    self.born[slot] = k
                    self.span[slot] = self.est[(k * self.per_snap + j) % len(self.est)]
                    self.churn[slot]["cookie"] = self.next_cookie
                    self.churn[slot]["local_port"] = 32768 + self.next_cookie % 28000
                    self.churn[slot]["inode"] = self.next_cookie
                    self.next_cookie += 1
                    self.sockets += 1
            age = k - self.born
            sp = self.span
            live = (age >= 0) & (age < sp + 602)
            st = np.where(age == 0, int(self.S.SYN_SENT),
                 np.where(age <= sp, int(self.S.ESTABLISHED),
                 np.where(age == sp + 1, int(self.S.FIN_WAIT2), int(self.S.TIME_WAIT))))
            self.churn["state"] = st
            self.churn["inode"] = np.where(st == int(self.S.TIME_WAIT), 0, self.churn["cookie"])
            out = np.concatenate([self.stable, self.churn[live]])
        if not warmup:
            self.k += 1
            if self.k >= self.snapshots:
                self.rec.stop()
        return out

    def process_names(self, pids):
        return np.full(len(pids), -1, np.int32), []

    def close(self) -> None:
        pass


def record_world(folder: Path, mode: str, minutes: float, **world) -> dict:
    from tcpsnap import Recorder

    snapshots = int(minutes * 60 * 10)
    w = World(snapshots, **world)
    w.pids = False
    clock = SimClock()
    logging.getLogger("tcpsnap.recorder").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    kw = {"mode": "changes", "keyframe": "1m", "destroy": False} if mode == "changes" else {}
    with Recorder(folder, interval=0, rotate="15m", snapshotter=w, clock=clock, nice=None, **kw) as rec:
        w.rec = rec
        w.k = 0
        rec.run()
        stats = dict(rec.stats)
    files = sorted(folder.rglob("*.parquet"))
    size = sum(f.stat().st_size for f in files)
    return {"mode": mode, "snapshots": stats["snapshots"], "rows": stats["rows"], "bytes": size,
            "bytes_per_hour": size * 60 / minutes, "seconds": time.perf_counter() - t0,
            "files": len(files)}


def verify(full: Path, chg: Path) -> bool:
    import pandas as pd

    import tcpsnap

    a, b = tcpsnap.read(full), tcpsnap.read(chg)
    if len(a) != len(b):
        return False
    for d in (a, b):
        for c in ("state", "local_addr", "remote_addr", "process"):
            d[c] = d[c].astype(object)
    keys = ["seq", "cookie"]
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(a, b)
    except AssertionError as e:
        log(f"MISMATCH: {e}")
        return False
    return True


def run_size(args) -> dict:
    scen = {"stable": dict(stable=10_000), "busy": dict(stable=10_000, busy=1000),
            "churn": dict(stable=10_000, opens=100)}
    out = {}
    base = Path(tempfile.mkdtemp(prefix="tcpsnap-bench-changes-"))
    try:
        for name in args.scenarios.split(","):
            res = {}
            for mode in ("full", "changes"):
                folder = base / f"{name}-{mode}"
                res[mode] = record_world(folder, mode, args.minutes, **scen[name])
                log(f"size {name:6s} {mode:7s}: {res[mode]['bytes'] / 1e6:9.2f} MB in {args.minutes} min "
                    f"-> {res[mode]['bytes_per_hour'] / 1e6:9.2f} MB/h ({res[mode]['rows']:,} rows, "
                    f"{res[mode]['files']} file(s), {res[mode]['seconds']:.1f} s)")
                shutil.rmtree(folder, ignore_errors=True)
            res["ratio"] = res["full"]["bytes"] / res["changes"]["bytes"]
            log(f"size {name}: full/changes = {res['ratio']:.1f}x")
            if args.verify_minutes > 0:
                # the same scenario, shorter (a full read of 15 minutes is ~90M rows in pandas)
                for mode in ("full", "changes"):
                    record_world(base / f"v-{mode}", mode, args.verify_minutes, **scen[name])
                res["verified"] = verify(base / "v-full", base / "v-changes")
                res["verify_minutes"] = args.verify_minutes
                log(f"size {name}: rebuild of {args.verify_minutes} min identical to full: {res['verified']}")
                for mode in ("full", "changes"):
                    shutil.rmtree(base / f"v-{mode}", ignore_errors=True)
            out[name] = res
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def run_read(args) -> dict:
    """Reading back: a minute out of the middle and one snapshot (``table_at``), from the
    churn scenario recorded both ways; medians of 3 after a first call."""
    import tcpsnap

    base = Path(tempfile.mkdtemp(prefix="tcpsnap-bench-read-"))
    out: dict = {"minutes": args.read_minutes}
    try:
        for mode in ("full", "changes"):
            record_world(base / mode, mode, args.read_minutes, stable=10_000, opens=100)
        ev = tcpsnap.read(base / "changes", mode="changes", columns=["seq", "timestamp", "family"])
        mk = ev[ev["family"] == 0].sort_values("seq")
        n = len(mk)
        start = mk["timestamp"].iloc[n // 2 - 300]
        end = mk["timestamp"].iloc[n // 2 + 300]
        when = mk["timestamp"].iloc[n // 2 + 17]
        for mode in ("full", "changes"):
            def minute(mode=mode):
                return tcpsnap.read(base / mode, start=start, end=end)

            def one(mode=mode):
                return tcpsnap.table_at(base / mode, when)

            for name, fn in (("minute", minute), ("table_at", one)):
                rows = len(fn())
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                out[f"{mode}_{name}_s"] = statistics.median(times)
                out[f"{mode}_{name}_rows"] = rows
            log(f"read {mode}: minute {out[f'{mode}_minute_s']:.3f} s ({out[f'{mode}_minute_rows']:,} rows), "
                f"table_at {out[f'{mode}_table_at_s'] * 1e3:.1f} ms ({out[f'{mode}_table_at_rows']:,} rows)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- 2. diff (netns child)

def child_diff(args) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from tcpsnap import Snapshotter
    from tcpsnap.record.changes import ChangeTracker, open_destroy_feed

    pairs = args.sockets // 2
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    addr = lst.getsockname()
    keep = []
    for _ in range(pairs):
        c = socket.create_connection(addr)
        s, _ = lst.accept()
        keep += [c, s]
    rng = np.random.default_rng(1)
    snap = Snapshotter(capacity=args.sockets + 1024)
    feed = open_destroy_feed()
    tracker = ChangeTracker(60 * 10**9, feed)
    take_ns, step_ns = [], []
    n_rows = []
    events = []
    busy = max(1, len(keep) // 100)
    for k in range(args.reps + 5):
        for i in rng.choice(len(keep), busy, replace=False):      # 1% move bytes: queue changes
            keep[i].send(b"x" * 100)
        t0 = time.perf_counter_ns()
        rows = snap.take()
        t1 = time.perf_counter_ns()
        out, _, _ = tracker.step(rows, None, time.time_ns(), time.monotonic_ns(), 0)
        t2 = time.perf_counter_ns()
        if k >= 5:            # the first ones: the keyframe and warm-up
            take_ns.append(t1 - t0)
            step_ns.append(t2 - t1)
            n_rows.append(len(rows))
            events.append(len(out) - 1)
        time.sleep(0.01)
    return {"rows": int(statistics.median(n_rows)), "take_ms": statistics.median(take_ns) / 1e6,
            "step_ms": statistics.median(step_ns) / 1e6,
            "take_ms_p90": float(np.percentile(take_ns, 90)) / 1e6,
            "step_ms_p90": float(np.percentile(step_ns, 90)) / 1e6,
            "events_per_snapshot": statistics.median(events), "reps": len(take_ns),
            "feed": feed is not None}


# --------------------------------------------------------------------------- 3. feed (netns child)

LOAD = r"""
import json, socket, sys, time
rate, seconds, port = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
SO_COOKIE = 57
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", port)); lst.listen(4096)
print("ready", flush=True)
sys.stdin.readline()
out = []
t0 = time.monotonic(); n = 0
life = []
while True:
    now = time.monotonic()
    if now - t0 >= seconds:
        break
    due = t0 + n / rate
    if now < due:
        time.sleep(due - now)
    a = time.monotonic()
    c = socket.create_connection(("127.0.0.1", port))
    s, _ = lst.accept()
    ck = int.from_bytes(c.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
    sk = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
    c.close()            # client closes first: it goes TIME_WAIT, the server's socket dies
    s.close()
    life.append(time.monotonic() - a)
    out.append((ck, sk))
    n += 1
json.dump({"pairs": out, "elapsed": time.monotonic() - t0, "life_max": max(life),
           "life_median": sorted(life)[len(life) // 2]}, sys.stdout)
"""


def child_feed(args) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    import tcpsnap
    from tcpsnap import Recorder

    folder = Path(tempfile.mkdtemp(prefix="tcpsnap-feed-")) / "rec"
    port = 18080
    load = subprocess.Popen([sys.executable, "-c", LOAD, str(args.rate), str(args.seconds), str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert load.stdout.readline().strip() == "ready"
    rec = Recorder(folder, interval=args.interval, mode="changes", pids=False, destroy=True, nice=None)
    rec.open()
    th = threading.Thread(target=rec.run, kwargs={"duration": args.seconds + 1.5})
    th.start()
    time.sleep(0.3)
    load.stdin.write("go\n")
    load.stdin.flush()
    truth = json.loads(load.stdout.read())
    load.wait()
    th.join()
    stats = dict(rec.stats)
    rec.close()
    ev = tcpsnap.read(folder, mode="changes")
    conn = ev[ev["family"] != 0]
    closed = conn[conn["event"] == "closed"]
    closed_ck = set(closed["cookie"].tolist())
    unseen_ck = set(closed[~closed["seen_in_snapshot"]]["cookie"].tolist())
    any_ck = set(conn["cookie"].tolist())
    pairs = truth["pairs"]
    srv = [sk for _, sk in pairs]
    cli = [ck for ck, _ in pairs]
    caught = sum(1 for sk in srv if sk in closed_ck)
    either = sum(1 for ck, sk in pairs if ck in any_ck or sk in any_ck)
    shutil.rmtree(folder.parent, ignore_errors=True)
    return {"connections": len(pairs), "rate_achieved": len(pairs) / truth["elapsed"],
            "life_median_ms": truth["life_median"] * 1e3, "life_max_ms": truth["life_max"] * 1e3,
            "server_caught": caught, "server_unseen": sum(1 for sk in srv if sk in unseen_ck),
            "client_in_recording": sum(1 for ck in cli if ck in any_ck),
            "either_side": either, "drops": stats.get("destroy_drops", 0),
            "destroyed": stats.get("destroyed"), "late": stats.get("destroyed_late"),
            "snapshots": stats["snapshots"], "interval_ms": args.interval * 1e3}


def in_netns(kind: str, args) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), f"_{kind}"]
    for k, v in vars(args).items():
        if k in ("cmd", "results", "func", "json"):
            continue
        if isinstance(v, bool):
            if v:
                argv.append(f"--{k.replace('_', '-')}")
        else:
            argv += [f"--{k.replace('_', '-')}", str(v)]
    p = subprocess.run(["unshare", "-n"] + argv, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{p.stderr}")
    return json.loads(p.stdout)


# --------------------------------------------------------------------------- report

def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"


def report(size: dict | None, diff: dict | None, feed: dict | None, cmd: str,
           read: dict | None = None) -> str:
    L = ["## Changes mode", "",
         f"`{cmd}` on {machine()}. Method: docstring of `benchmarks/bench_changes.py`.", ""]
    if size:
        L += ["### Bytes on disk per hour at 10 snapshots/s (zstd, 1-minute keyframes)", "",
              "| scenario | full mode | changes mode | full / changes | rebuild == full |",
              "|---|---:|---:|---:|:---:|"]
        names = {"stable": "10k stable connections", "busy": "10k stable, 1k queue changes/snapshot",
                 "churn": "10k stable + 100 opens/s"}
        for k, r in size.items():
            digits = 0 if r["ratio"] >= 10 else 1
            L.append(f"| {names[k]} | {r['full']['bytes_per_hour'] / 1e6:,.1f} MB | "
                     f"{r['changes']['bytes_per_hour'] / 1e6:,.2f} MB | **{r['ratio']:.{digits}f}x** | "
                     f"{'yes' if r.get('verified') else ('not checked' if 'verified' not in r else 'NO')} |")
        any_r = next(iter(size.values()))
        vm = any_r.get("verify_minutes")
        L += ["", f"Each run records {any_r['full']['snapshots']:,} snapshots ({any_r['full']['snapshots'] / 600:g} "
              "simulated minutes: one file, as `--rotate 15m` cuts them; each file starts with its own "
              "keyframe and string dictionaries), scaled to an hour."
              + (f" \"rebuild == full\": a {vm:g}-minute recording of the scenario made both ways, "
                 "`tcpsnap.read` of the changes one equal to the full one, every column, every snapshot."
                 if vm else ""),
              "Targets: >= 50x for 10k stable connections; smaller under 100 opens/s churn.", ""]
    if read:
        L += [f"### Reading back ({read['minutes']:g} simulated minutes of the churn scenario, recorded both ways)", "",
              "| | full recording | changes recording (rebuilt) |", "|---|---:|---:|",
              f"| `tcpsnap.read` of one minute in the middle ({read['full_minute_rows']:,} rows) | "
              f"{read['full_minute_s']:.2f} s | {read['changes_minute_s']:.2f} s |",
              f"| `tcpsnap.table_at(path, when)` ({read['full_table_at_rows']:,} rows) | "
              f"{read['full_table_at_s'] * 1e3:.0f} ms | {read['changes_table_at_s'] * 1e3:.0f} ms |", ""]
    if diff:
        pct = 100 * diff["step_ms"] / diff["take_ms"]
        L += ["### The diff's cost per snapshot (live kernel table, private netns)", "",
              f"{diff['rows']:,} rows, 1% of connections moving bytes ({diff['events_per_snapshot']:.0f} "
              f"events per snapshot), {diff['reps']} snapshots:", "",
              "| | median | p90 |", "|---|---:|---:|",
              f"| `Snapshotter.take()` | {diff['take_ms']:.2f} ms | {diff['take_ms_p90']:.2f} ms |",
              f"| `ChangeTracker.step()` (diff + events + destroy-feed bookkeeping) | "
              f"{diff['step_ms']:.3f} ms | {diff['step_ms_p90']:.3f} ms |", "",
              f"The diff adds **{pct:.1f}%** to a snapshot (target: at most 10%).", ""]
    if feed:
        pct = 100 * feed["server_caught"] / max(1, feed["connections"])
        L += ["### Connections between snapshots: the destroy feed at 1,000 connections/s", "",
              f"{feed['connections']:,} loopback connections at {feed['rate_achieved']:,.0f}/s, each "
              f"open for {feed['life_median_ms']:.2f} ms (median; max {feed['life_max_ms']:.1f} ms), "
              f"recorded at a {feed['interval_ms']:.0f} ms interval ({feed['snapshots']} snapshots):", "",
              f"* server sockets (freed at close, never in a snapshot) with a `closed` event: "
              f"**{feed['server_caught']:,} / {feed['connections']:,} = {pct:.2f}%** "
              f"({feed['server_unseen']:,} marked `seen_in_snapshot = false`); target >= 99%",
              f"* client sockets in the recording (TIME_WAIT, seen by snapshots): "
              f"{feed['client_in_recording']:,}; connections with either side recorded: {feed['either_side']:,}",
              f"* destroy reports received {feed['destroyed']:,}, ENOBUFS drops {feed['drops']}, late "
              f"reports {feed['late']}", ""]
    return "\n".join(L)


def write_section(path: Path, body: str, name: str = "changes") -> None:
    text = path.read_text() if path.exists() else ""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str]) -> int:
    import _results  # here, not at the top: that import block holds the clock shim's import

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cmd", choices=["all", "size", "read", "diff", "feed", "info", "totals", "_diff", "_feed"])
    p.add_argument("--info-minutes", type=float, default=1.0, help="info: simulated minutes per run")
    p.add_argument("--live-seconds", type=float, default=60.0, help="info: seconds of the live run (0: none)")
    p.add_argument("--count", type=int, default=1000, help="totals: connections")
    p.add_argument("--read-minutes", type=float, default=3.0, help="read: simulated minutes recorded")
    p.add_argument("--minutes", type=float, default=15.0,
                   help="size: simulated minutes per run (default: one 15-minute file, the "
                        "period of a recording: x4 is an hour)")
    p.add_argument("--scenarios", default="stable,busy,churn")
    p.add_argument("--verify-minutes", type=float, default=2.0,
                   help="size: also record this long both ways and compare (0: no)")
    p.add_argument("--sockets", type=int, default=10_000, help="diff: sockets in the table")
    p.add_argument("--reps", type=int, default=200, help="diff: snapshots measured")
    p.add_argument("--rate", type=float, default=1000.0, help="feed: connections per second")
    p.add_argument("--seconds", type=float, default=5.0, help="feed: seconds of load")
    p.add_argument("--interval", type=float, default=0.1, help="feed: recorder interval (s)")
    p.add_argument("--results", type=Path, default=None, help="write the section into this file")
    _results.add_json_argument(p)
    args = p.parse_args(argv)
    if args.cmd == "_diff":
        json.dump(child_diff(args), sys.stdout)
        return 0
    if args.cmd == "_feed":
        json.dump(child_feed(args), sys.stdout)
        return 0
    run = _results.Run(f"bench_changes-{args.cmd}", args.json, argv)
    if args.cmd in ("info", "totals"):
        import _changes_info

        info = _changes_info.run_info(args.info_minutes, log) if args.cmd == "info" else None
        if info is not None and args.live_seconds:
            info["live"] = _changes_info.run_live(args.live_seconds, log)
        totals = _changes_info.run_totals(args.count, args.rate) if args.cmd == "totals" else None
        cmd = "python3 benchmarks/bench_changes.py " + " ".join(a for a in argv if a != str(args.results)
                                                                 and a != "--results")
        body = _changes_info.report(info, totals, cmd.strip(), machine())
        print(body)
        if args.results:
            write_section(args.results, body, "internals")
        for r in (info or {}).values():
            r["full_over_changes"] = r["ratio"]
        run.write({"info": info, "totals": totals})
        return 0
    size = run_size(args) if args.cmd in ("all", "size") else None
    read = run_read(args) if args.cmd in ("all", "read") else None
    diff = in_netns("diff", args) if args.cmd in ("all", "diff") else None
    if diff:
        log(f"diff: take {diff['take_ms']:.2f} ms, step {diff['step_ms']:.3f} ms "
            f"({100 * diff['step_ms'] / diff['take_ms']:.1f}%) over {diff['rows']} rows")
    feed = in_netns("feed", args) if args.cmd in ("all", "feed") else None
    if feed:
        log(f"feed: {feed['server_caught']}/{feed['connections']} server sockets caught, "
            f"drops {feed['drops']}, rate {feed['rate_achieved']:.0f}/s")
    cmd = "python3 benchmarks/bench_changes.py " + " ".join(a for a in argv if a != str(args.results)
                                                             and a != "--results")
    body = report(size, diff, feed, cmd.strip(), read)
    print(body)
    if args.results:
        write_section(args.results, body)
    if diff:
        diff["step_over_take"] = diff["step_ms"] / diff["take_ms"]
    if feed:
        feed["server_caught_share"] = feed["server_caught"] / max(1, feed["connections"])
    run.write({"size": size, "read": read, "diff": diff, "feed": feed})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
