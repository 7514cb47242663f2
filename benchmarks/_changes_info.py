"""TCP internals in changes mode (bench_changes.py ``info`` and ``totals``).

info: bytes on disk, ``--mode full --tcp-info`` vs ``--mode changes --tcp-info``, written by
the real Recorder fed by a scripted table with internals on simulated clocks (10 snapshots a
second), as bench_changes' ``size``: 10,000 ESTABLISHED connections, each with a 280-byte
struct tcp_info's worth of fields; the timers (``last_data_sent``, ``last_data_recv``,
``last_ack_recv``) move on every snapshot for every connection, as the kernel's do. Scenarios:

* steady: nothing else moves (bytes per row per snapshot: the target is under 1 byte);
* traffic: 10% of the connections (a fixed 1,000) carry traffic: every snapshot their byte
  and segment counters, rtt, rttvar, delivery and pacing rates, unacked and not-sent bytes
  and queues move.

live (``info``, unless ``--live-seconds 0``): the same comparison on a real kernel table, in a
private network namespace (``unshare -n``, as root): 10,000 loopback sockets (5,000 pairs),
1,000 of them (500 pairs) carrying steady traffic from another process (20 rounds a second: the
client side sends 1,000 bytes, the server side answers 100; both drain), so counters grow by
deltas and the estimators move as the kernel moves them. ``Recorder(tcp_info=True)`` full and
``mode="changes"`` (destroy feed on, 1-minute keyframes) record side by side, each every 100 ms,
for the same ``--live-seconds`` (default 60); bytes per snapshot taken are compared (a loaded
machine makes both skip snapshots, counted as overruns). Every run also lists each column's
compressed bytes (the Parquet footers). ``TCPSNAP_BENCH_KEEP=DIR`` keeps the live recordings.

totals: tests/_closetotals_child.py ``burst`` in a private network namespace: 1,000
connections opened and closed at 1,000/s (each moves 100 + i bytes out and 3 x that back)
while changes mode records with the destroy feed at a 1 s interval; every side of every
connection must have a closed event with its exact byte counts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INTERVAL_NS = 100_000_000
WALL0 = 1_795_000_000 * 10**9


class SimClock:
    """Every ``time_ns()`` (one per snapshot, just before ``take()``) starts the next
    100 ms slot; ``monotonic_ns()`` is that slot's start plus a 3 ms capture (also
    bench_changes.py's clock)."""

    def __init__(self) -> None:
        self.k = -1

    def time_ns(self) -> int:
        self.k += 1
        return WALL0 + self.k * INTERVAL_NS

    def monotonic_ns(self) -> int:
        return 10**12 + self.k * INTERVAL_NS + 3_000_000


class InfoWorld:
    """``stable`` ESTABLISHED connections with internals; ``active`` of them move."""

    tcp_info_enabled = True
    tcp_info_stats = {"tcp_info_len": 280, "tcp_info_longer": 0}
    pids = False

    def __init__(self, snapshots: int, stable: int = 10_000, active: int = 0, seed: int = 1) -> None:
        from tcpsnap import ROW_DTYPE, TcpState
        from tcpsnap._schema import TCP_INFO_DTYPE

        self.snapshots, self.k, self.rec = snapshots, -1, None
        rng = self.rng = np.random.default_rng(seed)
        t = np.zeros(stable, ROW_DTYPE)
        t["family"] = 4
        t["state"] = TcpState.ESTABLISHED
        t["local_addr"][:, :4] = [10, 0, 0, 1]
        t["remote_addr"][:, :2] = [10, 1]
        t["remote_addr"][:, 2] = (np.arange(stable) // 250) % 256
        t["remote_addr"][:, 3] = np.arange(stable) % 250 + 1
        t["local_port"] = 20_000 + np.arange(stable) % 40_000
        t["remote_port"] = np.where(np.arange(stable) % 3 == 0, 443, 5432)
        t["uid"] = 1000
        t["inode"] = 5_000_000 + np.arange(stable)
        t["cookie"] = 1 + np.arange(stable)
        order = rng.permutation(stable)          # the kernel's bucket order
        self.rows = t[order]
        i = np.zeros(stable, TCP_INFO_DTYPE)
        i["tcp_info_len"] = 280
        i["congestion"] = b"cubic"
        i["rtt"] = rng.integers(50, 5000, stable)
        i["rttvar"] = i["rtt"] // 4
        i["min_rtt"] = i["rtt"] * 3 // 4
        i["rto"] = 204_000
        i["snd_mss"] = i["rcv_mss"] = 1448
        i["pmtu"] = 1500
        i["snd_cwnd"] = 10
        i["snd_ssthresh"] = 2**31 - 1
        i["rcv_space"] = 14_480
        i["snd_wnd"] = i["rcv_wnd"] = 65_483
        i["bytes_acked"] = rng.integers(0, 10**9, stable)
        i["bytes_sent"] = i["bytes_acked"]
        i["bytes_received"] = rng.integers(0, 10**9, stable)
        i["segs_out"] = i["bytes_acked"] // 1448 + 3
        i["segs_in"] = i["bytes_received"] // 1448 + 3
        i["data_segs_out"] = i["segs_out"] - 2
        i["data_segs_in"] = i["segs_in"] - 2
        i["delivery_rate"] = rng.integers(10**5, 10**9, stable)
        i["pacing_rate"] = i["delivery_rate"] * 2
        i["busy_time"] = rng.integers(0, 10**7, stable)
        i["delivered"] = i["segs_out"]
        self.info = i[order]
        self.active = rng.choice(stable, active, replace=False) if active else np.zeros(0, np.int64)
        self.tcp_info = self.info

    def take(self) -> np.ndarray:
        warmup = self.k < 0
        i, a, rng = self.info, self.active, self.rng
        # the timers move for everyone, every snapshot (ms since the last data / ack)
        for f in ("last_data_sent", "last_data_recv", "last_ack_recv"):
            i[f] += np.uint32(100)
        if len(a):
            n = len(a)
            sent = rng.integers(1, 200_000, n).astype(np.uint64)
            got = rng.integers(1, 20_000, n).astype(np.uint64)
            i["bytes_acked"][a] += sent
            i["bytes_sent"][a] += sent
            i["bytes_received"][a] += got
            so, si = (sent // 1448 + 1).astype(np.uint32), (got // 1448 + 1).astype(np.uint32)
            i["segs_out"][a] += so
            i["segs_in"][a] += si
            i["data_segs_out"][a] += so
            i["data_segs_in"][a] += si
            i["delivered"][a] += so
            i["rtt"][a] = rng.integers(50, 5000, n)
            i["rttvar"][a] = i["rtt"][a] // 4
            i["delivery_rate"][a] = rng.integers(10**5, 10**9, n)
            i["pacing_rate"][a] = i["delivery_rate"][a] * 2
            i["busy_time"][a] += np.uint64(100_000)
            i["unacked"][a] = rng.integers(0, 100, n)
            i["notsent_bytes"][a] = rng.integers(0, 65536, n)
            i["snd_cwnd"][a] = rng.integers(10, 400, n)
            for f in ("last_data_sent", "last_data_recv", "last_ack_recv"):
                i[f][a] = rng.integers(0, 100, n)
            self.rows["rx_queue"][a] = rng.integers(0, 65536, n)
            self.rows["tx_queue"][a] = rng.integers(0, 65536, n)
        self.tcp_info = i
        if not warmup:
            self.k += 1
            if self.k >= self.snapshots:
                self.rec.stop()
        return self.rows

    def sample_tcp_info_next(self) -> None:
        pass

    def process_names(self, pids):
        return np.full(len(pids), -1, np.int32), []

    def close(self) -> None:
        pass


def record(folder: Path, mode: str, minutes: float, **world) -> dict:
    from tcpsnap import Recorder

    snapshots = int(minutes * 600)
    w = InfoWorld(snapshots, **world)
    logging.getLogger("tcpsnap.recorder").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    kw = {"mode": "changes", "keyframe": "1m", "destroy": False} if mode == "changes" else {}
    with Recorder(folder, interval=0, rotate="15m", snapshotter=w, clock=SimClock(), nice=None, pids=False,
                  tcp_info=True, **kw) as rec:
        w.rec = rec
        w.k = 0
        rec.run()
        stats = dict(rec.stats)
    size = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
    rows = len(w.rows) * stats["snapshots"]
    return {"mode": mode, "snapshots": stats["snapshots"], "table_rows": rows, "bytes": size,
            "bytes_per_hour": size * 60 / minutes, "bytes_per_row": size / rows,
            "events": stats.get("events"), "seconds": time.perf_counter() - t0,
            "columns": column_sizes(folder)}


def run_info(minutes: float, log) -> dict:
    out = {}
    base = Path(tempfile.mkdtemp(prefix="tcpsnap-bench-info-"))
    try:
        for name, world in (("steady", {"active": 0}), ("traffic", {"active": 1000})):
            res = {}
            for mode in ("full", "changes"):
                res[mode] = record(base / f"{name}-{mode}", mode, minutes, **world)
                log(f"info {name:7s} {mode:7s}: {res[mode]['bytes'] / 1e6:8.2f} MB in {minutes} min, "
                    f"{res[mode]['bytes_per_row']:.3f} B/row, {res[mode]['seconds']:.1f} s")
                shutil.rmtree(base / f"{name}-{mode}", ignore_errors=True)
            res["ratio"] = res["full"]["bytes"] / res["changes"]["bytes"]
            out[name] = res
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def run_totals(count: int, rate: float) -> dict:
    child = HERE.parent / "tests" / "_closetotals_child.py"
    p = subprocess.run(["unshare", "-n", sys.executable, str(child), "burst", str(count), str(rate)],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(child.parent)})
    if p.returncode != 0:
        raise SystemExit(f"totals child failed:\n{p.stderr}")
    d = json.loads(p.stdout)
    by: dict = {}
    for e in d["closed"]:
        by.setdefault((e["local_port"], e["remote_port"]), []).append(e)
    exact = {"server": 0, "client": 0}
    for i, (cport, sport) in enumerate(d["ports"]):
        a, b = 100 + i, 3 * (100 + i)
        s, c = by.get((sport, cport), []), by.get((cport, sport), [])
        exact["server"] += len(s) == 1 and (s[0]["bytes_acked"], s[0]["bytes_received"]) == (b + 1, a + 1)
        exact["client"] += len(c) == 1 and (c[0]["bytes_acked"], c[0]["bytes_received"]) == (a + 2, b)
    st = d["stats"]
    return {"connections": count, "rate_achieved": count / d["took"], "errors": len(d["errors"]),
            "server_exact": exact["server"], "client_exact": exact["client"], "closed_events": len(d["closed"]),
            "unseen": sum(not e["seen_in_snapshot"] for e in d["closed"]), "snapshots": st["snapshots"],
            "drops": st["destroy_drops"], "destroyed": st["destroyed"], "final_totals": st["final_totals"]}


def report(info: dict | None, totals: dict | None, cmd: str, machine: str) -> str:
    L = ["## TCP internals in changes mode", "",
         f"`{cmd}` on {machine}. Method: docstring of `benchmarks/_changes_info.py`.", ""]
    if info:
        L += ["| 10k connections with `--tcp-info`, 10 snapshots/s | full mode | changes mode | full / changes "
              "| changes: bytes per row |", "|---|---:|---:|---:|---:|"]
        names = {"steady": "synthetic, steady (only the timers move)",
                 "traffic": "synthetic, 10% carry traffic (random values)",
                 "live": "live (netns, loopback), 10% carry steady traffic"}
        for k, r in info.items():
            L.append(f"| {names[k]} | {r['full']['bytes_per_hour'] / 1e6:,.1f} MB/h | "
                     f"{r['changes']['bytes_per_hour'] / 1e6:,.2f} MB/h | **{r['ratio']:.1f}x** | "
                     f"{r['changes']['bytes_per_row']:.3f} |")
        syn = [r for k, r in info.items() if k != "live"]
        if syn:
            m = syn[0]["full"]["snapshots"]
            L += ["", f"Synthetic runs: {m:,} snapshots ({m / 600:g} simulated minutes), scaled to an hour."]
        if "live" in info:
            lv = info["live"]
            t = lv["traffic"]
            L += [f"Live run: {t['seconds']:g} s, both recorders side by side on the same table "
                  f"({lv['full']['snapshots']} and {lv['changes']['snapshots']} snapshots taken, "
                  f"{lv['full']['overruns']} and {lv['changes']['overruns']} overruns), bytes per snapshot "
                  f"scaled to an hour; {t['busy_sockets']:,} of {t['sockets']:,} sockets moved "
                  f"{t['bytes'] / t['traffic_seconds'] / 1e6:,.1f} MB/s in {t['rounds'] / t['traffic_seconds']:.1f} "
                  "rounds/s."]
        L += ["Targets: changes at least 4x smaller than full with 10% carrying traffic; a steady table under 1 "
              "byte per row.", ""]
        for k, r in info.items():
            if k == "steady":
                continue
            top = list(r["changes"]["columns"].items())[:8]
            tot = r["changes"]["bytes"]
            L.append(f"Largest columns of the changes recording, {names[k]}: "
                     + ", ".join(f"{c} {100 * v / tot:.0f}%" for c, v in top) + ".")
        L.append("")
    if totals:
        t = totals
        L += [f"Final totals: {t['connections']:,} connections at {t['rate_achieved']:,.0f}/s between "
              f"snapshots (1 s interval, {t['snapshots']} snapshots; {t['unseen']:,} of the "
              f"{t['closed_events']:,} closed events are of sockets no snapshot held): closed events with the "
              f"exact byte counts: server sides **{t['server_exact']:,} / {t['connections']:,}**, client "
              f"sides **{t['client_exact']:,} / {t['connections']:,}**; destroy reports {t['destroyed']:,}, "
              f"ENOBUFS drops {t['drops']}, closed events carrying a report's tcp_info {t['final_totals']:,}.",
              ""]
    return "\n".join(L)


# --------------------------------------------------------------------------- live (netns)

def column_sizes(folder: Path) -> dict[str, int]:
    """Compressed bytes per column (the Parquet footers' ``total_compressed_size``, every
    row group of every file), largest first."""
    import pyarrow.parquet as pq

    out: dict[str, int] = {}
    for f in sorted(folder.rglob("*.parquet")):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                out[col.path_in_schema] = out.get(col.path_in_schema, 0) + col.total_compressed_size
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


TRAFFIC = r"""
import os, socket, sys, time
# the busy pairs' fds (inherited), each round: the client side sends CHUNK bytes, the server
# side answers a tenth; both drain what they received. Rounds at a fixed rate.
fds = [int(x) for x in sys.argv[1].split(",")]
rate, seconds, chunk = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
socks = [socket.socket(fileno=fd) for fd in fds]
for s in socks:
    s.setblocking(False)
pairs = list(zip(socks[0::2], socks[1::2]))
out, back = b"x" * chunk, b"y" * max(1, chunk // 10)
t0 = time.monotonic(); n = 0; moved = 0
while time.monotonic() - t0 < seconds:
    for c, s in pairs:
        try:
            moved += c.send(out) + s.send(back)
        except BlockingIOError:
            pass
    for c, s in pairs:
        for x in (c, s):
            try:
                while x.recv(1 << 16):
                    pass
            except BlockingIOError:
                pass
    n += 1
    due = t0 + n / rate
    if due > time.monotonic():
        time.sleep(due - time.monotonic())
print(n, moved, flush=True)
"""


def child_live(sockets: int, busy: int, seconds: float, rate: float, chunk: int) -> dict:
    """In a private network namespace (the caller's ``unshare -n``): ``sockets`` loopback
    sockets (``sockets // 2`` pairs), ``busy`` of them (``busy // 2`` pairs) carrying steady
    traffic from another process (``rate`` rounds a second, ``chunk`` bytes one way and a
    tenth back per pair and round); ``Recorder(tcp_info=True)`` full and changes, both at
    100 ms, side by side over the same ``seconds``."""
    import resource
    import threading

    from tcpsnap import Recorder

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import socket

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    addr = lst.getsockname()
    keep = []
    for _ in range(sockets // 2):
        c = socket.create_connection(addr)
        s, _ = lst.accept()
        keep += [c, s]
    rng = np.random.default_rng(1)
    pick = rng.choice(len(keep) // 2, busy // 2, replace=False)
    fds = [keep[2 * p + j].fileno() for p in pick for j in (0, 1)]
    traffic = subprocess.Popen([sys.executable, "-c", TRAFFIC, ",".join(map(str, fds)), str(rate),
                                str(seconds + 4), str(chunk)], pass_fds=fds, stdout=subprocess.PIPE, text=True)
    time.sleep(2)             # the traffic is steady before the recorders start
    base = Path(tempfile.mkdtemp(prefix="tcpsnap-bench-live-"))
    logging.getLogger("tcpsnap.recorder").setLevel(logging.ERROR)
    res: dict = {}
    try:
        recs = {"full": Recorder(base / "full", interval="100ms", rotate="15m", pids=False, nice=None,
                                 tcp_info=True),
                "changes": Recorder(base / "changes", interval="100ms", rotate="15m", pids=False, nice=None,
                                    tcp_info=True, mode="changes", keyframe="1m")}
        for r in recs.values():
            r.open()
        ths = [threading.Thread(target=r.run, kwargs={"duration": seconds}) for r in recs.values()]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        for mode, r in recs.items():
            stats = dict(r.stats)
            r.close()
            folder = base / mode
            size = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
            snaps = stats["snapshots"]
            res[mode] = {"mode": mode, "snapshots": snaps, "overruns": stats.get("overruns"),
                         "bytes": size, "bytes_per_snapshot": size / max(1, snaps),
                         "bytes_per_hour": size / max(1, snaps) * 36_000,
                         "bytes_per_row": size / max(1, snaps * sockets), "events": stats.get("events"),
                         "columns": column_sizes(folder)}
        out = traffic.communicate(timeout=60)[0].split()
        res["traffic"] = {"rounds": int(out[0]), "bytes": int(out[1]), "busy_sockets": len(fds),
                          "sockets": sockets, "rate": rate, "chunk": chunk, "seconds": seconds,
                          "traffic_seconds": seconds + 4}     # 2 s before the recorders, 2 s after
        res["ratio"] = res["full"]["bytes_per_snapshot"] / res["changes"]["bytes_per_snapshot"]
    finally:
        if traffic.poll() is None:
            traffic.kill()
        if os.environ.get("TCPSNAP_BENCH_KEEP"):        # keep the recordings for a closer look
            shutil.copytree(base, os.environ["TCPSNAP_BENCH_KEEP"], dirs_exist_ok=True)
        shutil.rmtree(base, ignore_errors=True)
    return res


def run_live(seconds: float, log, sockets: int = 10_000, busy: int = 1_000, rate: float = 20.0,
             chunk: int = 1000) -> dict:
    path = os.environ.get("PYTHONPATH")
    p = subprocess.run(["unshare", "-n", sys.executable, str(Path(__file__).resolve()), "live", str(sockets),
                        str(busy), str(seconds), str(rate), str(chunk)],
                       capture_output=True, text=True, timeout=seconds * 10 + 600,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(HERE), path)))})
    if p.returncode != 0:
        raise SystemExit(f"live child failed:\n{p.stderr}")
    d = json.loads(p.stdout)
    for mode in ("full", "changes"):
        log(f"live {mode:7s}: {d[mode]['bytes'] / 1e6:8.2f} MB in {d[mode]['snapshots']} snapshots, "
            f"{d[mode]['bytes_per_row']:.3f} B/row")
    return d


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "live":
    a = sys.argv[2:]
    json.dump(child_live(int(a[0]), int(a[1]), float(a[2]), float(a[3]), int(a[4])), sys.stdout)
