"""Shipping: upload throughput and CPU of ``tcpsnap.ship`` against plain boto3.

Ships the same files to a moto S3 server on 127.0.0.1 (started and stopped here, by pid)
with (a) ``tcpsnap.ship.Shipper`` (SHA-256 of each file, checksummed PUT or parts, HEAD
to confirm, a receipt fsynced) and (b) boto3's ``upload_file`` (s3transfer, what
``aws s3 cp`` does: no whole-file checksum, no confirmation), interleaved, each round
into a fresh prefix. Reports MiB/s and CPU seconds per MiB of this process (the server's
CPU is not counted; it is the same for both), their ratios, and what fraction of one
core shipping would take for a recording writing ``--record-rate`` bytes per second.

    python3 benchmarks/bench_ship.py                  # 6 files of 16 MiB, 3 rounds
    python3 benchmarks/bench_ship.py --files 4 --mib 32 --rounds 5

``--live`` (root: it runs in a network namespace of its own, ``unshare -n``) measures
``tcpsnap record --ship`` directly: 5,000 loopback pairs (10,000 connections and their
listener; ``--churn`` of them closed and reopened per second, so files are not all alike)
recorded every 100 ms for ``--seconds`` with ``--rotate`` (a new file to ship every
10 s by default: more uploads than the 15 min default would give), shipping to moto on
127.0.0.1 in that namespace. Sampled every 0.5 s from /proc: the CPU (utime + stime) of
the recorder's shipping thread (named ``tcpsnap-ship``, /proc/PID/task/TID/comm) and of
the whole process, and the backlog (finished files without a receipt). The recorder's own
count (``tcpsnap_upload_cpu_seconds_total``, ``time.thread_time`` in the shipper, its
final pass after the recording included) is read from its metrics textfile.

    python3 benchmarks/bench_ship.py --live --seconds 120

Results: a JSON file per run (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import _results
from _s3 import CREDS, Moto


def make_files(root: Path, n: int, mib: int) -> list[Path]:
    part = root / "date=2026-11-18"
    part.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = pa.table({"x": rng.integers(0, 2**63, (mib << 20) // 8, dtype=np.int64)})
        p = part / f"tcpsnap-20261118T1100{i:02d}.000Z.parquet"
        pq.write_table(t.replace_schema_metadata({"tcpsnap.host": "bench-1"}), p, compression="none")
        out.append(p)
    return out


def _ticks(stat_path: str) -> int:
    """utime + stime (clock ticks) of a /proc stat file; 0 if gone."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _ship_thread(pid: int) -> str | None:
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == "tcpsnap-ship":
                    return f"/proc/{pid}/task/{tid}/stat"
    except OSError:
        pass
    return None


def _backlog(rec: Path) -> tuple[int, int]:
    """(finished files, of which without a receipt)."""
    files = {f"{p.parent.name}__{p.name}.json" for p in rec.glob("date=*/*.parquet")}
    shipped = rec / "_tcpsnap_shipped"
    receipts = {p.name for p in shipped.glob("*.json")} if shipped.exists() else set()
    return len(files), len(files - receipts)


def live(args: argparse.Namespace, argv: list[str]) -> int:
    import resource
    import shutil
    import socket
    import subprocess
    import threading

    if os.environ.get("TCPSNAP_BENCH_NETNS") != "1":
        if os.geteuid() != 0 or not shutil.which("unshare"):
            print("bench_ship --live: needs root (unshare -n)", file=sys.stderr)
            return 2
        return subprocess.call(["unshare", "-n", sys.executable, *sys.argv],
                               env=dict(os.environ, TCPSNAP_BENCH_NETNS="1"))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    run = _results.Run("bench_ship-live", args.json, argv)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.update(CREDS)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    port = lst.getsockname()[1]

    def one_pair() -> tuple[socket.socket, socket.socket]:
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = lst.accept()
        return c, s

    pairs = [one_pair() for _ in range(args.connections // 2)]
    stop = threading.Event()

    def churn() -> None:   # close the oldest pair, open a new one: TIME_WAITs and new rows
        i = 0
        while not stop.wait(1 / args.churn if args.churn else 3600):
            c, s = pairs[i % len(pairs)]
            c.close()
            s.close()
            pairs[i % len(pairs)] = one_pair()
            i += 1

    moto = Moto()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ship-live-"))
    try:
        moto.client().create_bucket(Bucket="bench")
        threading.Thread(target=churn, daemon=True).start()
        rec, prom = tmp / "rec", tmp / "m.prom"
        ship = [] if args.no_ship else ["--ship", "s3://bench/live", "--endpoint-url", moto.url]
        p = subprocess.Popen([sys.executable, "-m", "tcpsnap", "record", str(rec), "--interval", "100ms",
                              "--duration", f"{args.seconds}s", "--rotate", args.rotate, *ship,
                              "--metrics-textfile", str(prom)], stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        thread_stat, ship_ticks, backlog_max = None, 0, 0
        while p.poll() is None:
            time.sleep(0.5)
            thread_stat = thread_stat or _ship_thread(p.pid)
            if thread_stat:   # the thread's last sample: it ends when the recording does
                ship_ticks = max(ship_ticks, _ticks(thread_stat))
            backlog_max = max(backlog_max, _backlog(rec)[1] if rec.exists() else 0)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)    # the recorder, reaped: all its CPU
        proc_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        err = p.stderr.read() if p.stderr else ""
        if p.returncode != 0:
            raise SystemExit(f"record --ship failed: {err}")
        stop.set()
        prom_v = dict(x.rsplit(" ", 1) for x in prom.read_text().splitlines() if x and not x.startswith("#"))
        files, left = _backlog(rec)
        hz = os.sysconf("SC_CLK_TCK")
        ship_cpu = ship_ticks / hz
        res = {"connections": len(pairs) * 2, "churn_per_s": args.churn, "seconds": args.seconds,
               "rotate": args.rotate, "wall_s": round(wall, 1),
               "snapshots": int(float(prom_v["tcpsnap_snapshots_total"])),
               "overruns": int(float(prom_v["tcpsnap_overruns_total"])),
               "rows_per_snapshot": round(float(prom_v["tcpsnap_rows_total"])
                                          / max(1.0, float(prom_v["tcpsnap_snapshots_total"]))),
               "written_bytes_per_s": round(float(prom_v["tcpsnap_written_bytes_total"]) / wall),
               "shipping": not args.no_ship,
               "files": files, "files_shipped": int(float(prom_v.get("tcpsnap_uploaded_files_total", 0))),
               "pending_at_end": left, "backlog_max_sampled": backlog_max,
               "ship_thread_cpu_s_proc": round(ship_cpu, 3),
               "ship_cpu_s_thread_time_metric": round(float(prom_v.get("tcpsnap_upload_cpu_seconds_total", 0)), 3),
               "process_cpu_s": round(proc_cpu, 2),
               "ship_thread_core_fraction": round(ship_cpu / wall, 5),
               "ship_core_fraction_metric": round(float(prom_v.get("tcpsnap_upload_cpu_seconds_total", 0)) / wall, 5),
               "process_core_fraction": round(proc_cpu / wall, 4),
               "closing_lines": [x for x in err.splitlines() if "shipped" in x or "recorded" in x],
               "loadavg": [round(x, 2) for x in os.getloadavg()]}
        res["keeps_up"] = not args.no_ship and res["pending_at_end"] == 0 and res["files_shipped"] == res["files"]
        for k, v in res.items():
            print(f"{k}: {v}")
        run.write(res)
        return 0
    finally:
        stop.set()
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live", action="store_true", help="record --ship beside a live recording (root)")
    ap.add_argument("--connections", type=int, default=10_000, help="--live: loopback connections")
    ap.add_argument("--churn", type=float, default=20.0, help="--live: pairs closed and reopened per second")
    ap.add_argument("--seconds", type=int, default=120, help="--live: how long to record")
    ap.add_argument("--rotate", default="10s", help="--live: record --rotate")
    ap.add_argument("--no-ship", action="store_true", help="--live: the same recording without --ship")
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--mib", type=int, default=16, help="size of each file (MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record-rate", type=float, default=400e3,
                    help="bytes/s a recording writes (default 400 kB/s: 10,000 connections "
                         "every 100 ms at 4 bytes per row)")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    if args.live:
        return live(args, argv)
    run = _results.Run("bench_ship", args.json, argv)
    os.environ.update(CREDS)
    from tcpsnap.ship import RECEIPTS, Shipper, Target

    moto = Moto()
    try:
        c = moto.client()
        c.create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            files = make_files(Path(tmp) / "rec", args.files, args.mib)
            total = sum(f.stat().st_size for f in files)
            mib = total / (1 << 20)

            def tcpsnap_ship(r: int) -> None:
                receipts = Path(tmp) / "rec" / RECEIPTS
                for p in receipts.glob("*") if receipts.exists() else []:
                    p.unlink()
                sh = Shipper(Path(tmp) / "rec", Target(f"s3://bench/t{r}", endpoint_url=moto.url))
                assert sh.ship_all(give_up=60) == 0 and sh.stats.shipped_files == len(files)

            def boto3_cp(r: int) -> None:
                for f in files:
                    c.upload_file(str(f), "bench", f"b{r}/date=2026-11-18/host=bench-1/{f.name}")

            series: dict[str, dict[str, list[float]]] = {"tcpsnap": {"s": [], "cpu": []},
                                                         "boto3": {"s": [], "cpu": []}}
            fns = {"tcpsnap": tcpsnap_ship, "boto3": boto3_cp}
            for r in range(args.rounds):
                order = list(fns) if r % 2 == 0 else list(fns)[::-1]
                for name in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    fns[name](r)
                    series[name]["s"].append(time.perf_counter() - t0)
                    series[name]["cpu"].append(time.process_time() - c0)
    finally:
        moto.stop()
    res: dict = {"files": args.files, "mib_each": args.mib, "mib_total": round(mib, 1),
                 "rounds": args.rounds, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    for name, s in series.items():
        res[name] = {"mib_per_s": round(mib / statistics.median(s["s"]), 1),
                     "cpu_s_per_mib": round(statistics.median(s["cpu"]) / mib, 4),
                     "seconds": [round(x, 2) for x in s["s"]]}
    res["ratio_throughput_tcpsnap_over_boto3"] = round(res["tcpsnap"]["mib_per_s"] / res["boto3"]["mib_per_s"], 2)
    res["ratio_cpu_tcpsnap_over_boto3"] = round(res["tcpsnap"]["cpu_s_per_mib"] / res["boto3"]["cpu_s_per_mib"], 2)
    res["record_rate_bytes_per_s"] = args.record_rate
    res["core_fraction_at_record_rate"] = round(res["tcpsnap"]["cpu_s_per_mib"] * args.record_rate / (1 << 20), 5)
    res["keeps_up"] = res["tcpsnap"]["mib_per_s"] * (1 << 20) > args.record_rate
    for k, v in res.items():
        print(f"{k}: {v}")
    run.write(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
