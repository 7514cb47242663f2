"""Footprint benchmark: the recorder's memory (peak RSS, drift) as a separate process.

  rss     peak RSS (VmHWM) of ``tcpsnap record`` at N loopback connections, for each
          ``--python`` given (e.g. this tree's venv and main's at 71289e7, side by side,
          alternating), mode and interval.
  drift   RSS every --every seconds of one long ``tcpsnap record`` under churn
          (connections opened and closed all the time): first/last/peak and the drift
          (median of the last tenth minus median of the second tenth of the samples).

    python3 benchmarks/bench_footprint.py rss --sizes 1000 10000 \
        --python /work/venv-footprint/bin/python --python /work/venv-old/bin/python
    python3 benchmarks/bench_footprint.py drift --minutes 60 --n 1000 --out drift.jsonl

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


def record(python: str, out: Path, seconds: float, interval: str, mode: str, pids: bool,
           every: float = 0.5, samples: list | None = None, extra: list[str] | None = None) -> dict:
    """Run ``tcpsnap record`` for ``seconds``; its peak RSS (VmHWM) and last RSS, in MiB."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [python, "-m", "tcpsnap", "record", str(out), "--interval", interval,
           "--duration", f"{seconds}s", "--mode", mode, "-q", *(extra or [])]
    if not pids:
        cmd.append("--no-pids")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    hwm = rss = 0
    while p.poll() is None:
        time.sleep(every)
        h = status_kb(p.pid, "VmHWM")
        r = status_kb(p.pid, "VmRSS")
        if h:
            hwm, rss = max(hwm, h), r
            if samples is not None:
                samples.append((round(time.monotonic() - t0, 1), r))
    err = p.stderr.read() if p.stderr else ""
    shutil.rmtree(out, ignore_errors=True)
    return {"rc": p.returncode, "peak_mib": hwm / 1024, "last_mib": rss / 1024,
            "stderr": err.strip()[-300:]}


def run_rss(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-footprint-"))
    res: dict = {"load_before": os.getloadavg(), "cases": []}
    try:
        for n in args.sizes:
            with bs.Connections(n) as conns:
                for mode, interval in args.cases:
                    for r in range(args.rounds):
                        pys = args.python if r % 2 == 0 else list(reversed(args.python))
                        for py in pys:
                            got = record(py, tmp / "rec", args.seconds, interval, mode, not args.no_pids)
                            got.update({"n": n, "rows": conns.rows, "mode": mode, "interval": interval,
                                        "python": py, "round": r, "load": os.getloadavg()[0]})
                            print(json.dumps(got), file=sys.stderr, flush=True)
                            res["cases"].append(got)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def rss_markdown(res: dict) -> str:
    lines = ["| connections | mode | interval | python | peak RSS MiB (median) | runs | load |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    keys: dict = {}
    for c in res["cases"]:
        keys.setdefault((c["n"], c["mode"], c["interval"], c["python"]), []).append(c)
    for (n, mode, interval, py), cs in keys.items():
        lines.append(f"| {n:,} | {mode} | {interval} | `{py}` | "
                     f"{statistics.median(c['peak_mib'] for c in cs):.1f} | {len(cs)} | "
                     f"{statistics.median(c['load'] for c in cs):.2f} |")
    return "\n".join(lines)


def churn(stop: threading.Event, rate: float, host: str = "127.3.0.1") -> None:
    """Open ``rate`` connections a second to a listener of ours, each closed after ~1 s."""
    lst = socket.socket()
    lst.bind((host, 0))
    lst.listen(4096)
    port = lst.getsockname()[1]
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
        time.sleep(0.005)
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
                         extra=["--rotate", args.rotate])
            stop.set()
            t.join()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = [r for _, r in samples]
    k = max(1, len(rss) // 10)
    res.update(got)
    res.update({"samples": list(samples), "first_mib": rss[0] / 1024 if rss else 0,
                "early_mib": statistics.median(rss[k:2 * k]) / 1024 if rss else 0,
                "late_mib": statistics.median(rss[-k:]) / 1024 if rss else 0,
                "max_mib": max(rss) / 1024 if rss else 0, "load_after": os.getloadavg(),
                "n": args.n, "rate": args.rate, "minutes": args.minutes, "mode": args.mode,
                "interval": args.interval, "rotate": args.rotate})
    res["drift_mib"] = res["late_mib"] - res["early_mib"]
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("rss", "drift"))
    ap.add_argument("--python", action="append", default=[],
                    help="interpreter whose tcpsnap to run (repeatable; default: this one)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--cases", default="full:10ms,full:100ms,changes:100ms",
                    help="mode:interval,... (rss)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--no-pids", action="store_true")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=50.0, help="drift: new connections/s")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--interval", default="100ms")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--rotate", default="15m", help="drift: the recorder's --rotate")
    ap.add_argument("--out", help="drift: also append each sample to this JSON-lines file")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    args.python = args.python or [sys.executable]
    args.cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    where = bs.ensure_netns(argv, __file__)
    run = _results.Run(f"bench_footprint-{args.what}", getattr(args, "json", None))
    res = run_rss(args) if args.what == "rss" else run_drift(args)
    res["where"] = where
    run.write(res)
    if args.what == "rss":
        print(rss_markdown(res))
    else:
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
