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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--mib", type=int, default=16, help="size of each file (MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record-rate", type=float, default=400e3,
                    help="bytes/s a recording writes (default 400 kB/s: 10,000 connections "
                         "every 100 ms at 4 bytes per row)")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
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
