#!/usr/bin/env python3
"""Fleet analysis benchmark: lifetimes and state counts over H hosts shipped to S3 (a moto
server on 127.0.0.1, started and killed by pid), in pandas (one process reads the whole
fleet with ``tcpsnap.ship.fleet.read``) and on Dask (``LocalCluster`` of 2 worker
processes, ``tcpsnap.ship.fleet.per_host``: one task per host). Checks that both give the
same answer and reports each process's peak RSS (VmHWM) and the ratio dask/pandas.

Each host's recording is made by the real ``tcpsnap.Recorder`` fed by
``bench_analysis.World`` (its own seed, host name and boot id), then shipped with
``tcpsnap ship``. The issue's scale is ``--hosts 8 --minutes 10 --pairs 5000
--interval-ms 1000`` (10k connections at 1 Hz).

    python3 benchmarks/bench_fleet.py --hosts 8 --minutes 10 --pairs 5000 --data /tmp/fleet-bench
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import Run, add_json_argument

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
BUCKET = "fleet"


def peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def analyse(df):
    from tcpsnap.analysis import lifetimes, state_counts

    return lifetimes(df), state_counts(df, freq="1s")


def child_pandas(url: str, endpoint: str, out: str) -> None:
    from tcpsnap.ship.fleet import read

    t0 = time.perf_counter()
    life, counts = analyse(read(url, endpoint_url=endpoint))
    secs = time.perf_counter() - t0
    with open(out, "wb") as f:
        pickle.dump({"life": life, "counts": counts, "peak_mib": peak_mib(), "seconds": secs}, f)


def _life(df):
    from tcpsnap.analysis import lifetimes

    return lifetimes(df)


def _counts(df):
    from tcpsnap.analysis import state_counts

    return state_counts(df, freq="1s")


def run_dask(url: str, endpoint: str) -> dict:
    from dask.distributed import Client, LocalCluster

    from tcpsnap.ship.fleet import per_host, sum_bins

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        life = per_host(url, _life, client=client, endpoint_url=endpoint)
        counts = per_host(url, _counts, client=client, endpoint_url=endpoint, combine=sum_bins)
        secs = time.perf_counter() - t0
        peaks = client.run(peak_mib)
    return {"life": life, "counts": counts, "worker_peak_mib": sorted(peaks.values()), "seconds": secs}


def same(a, b, keys) -> bool:
    def norm(df):
        df = df.astype({c: str for c in df.columns if hasattr(df[c], "cat")})
        return df.sort_values(keys).reset_index(drop=True) if keys else df[sorted(df.columns)]
    try:
        import pandas.testing as pdt

        pdt.assert_frame_equal(norm(a), norm(b), check_freq=False, check_names=False)
        return True
    except AssertionError as e:
        print(f"DIFFERENT: {e}", file=sys.stderr)
        return False


def generate(data: Path, args) -> None:
    import bench_analysis as ba
    import tcpsnap._host

    for i in range(args.hosts):
        h = f"host-{i}"
        if (data / h / "manifest.json").exists():
            continue
        # the name and boot the recorder writes in every row: each host its own
        setattr(socket, "gethostname", lambda h=h: h)  # noqa: B010
        setattr(tcpsnap._host, "boot_id", lambda h=h: f"boot-{h}")  # noqa: B010
        ba.generate(data / h, {"version": ba.GEN_VERSION, "minutes": args.minutes,
                               "interval_ms": args.interval_ms, "pairs": args.pairs, "seed": 5 + i,
                               "start": ba.T0_ISO})


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child_pandas(*argv[1:4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--data", type=Path, default=Path("/tmp/tcpsnap-bench-fleet"))
    add_json_argument(p)
    args = p.parse_args(argv)
    run = Run("bench_fleet", path=args.json, argv=argv)
    os.environ.update(CREDS)
    generate(args.data, args)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        from tcpsnap.cli import main as cli

        url = f"s3://{BUCKET}/tcpsnap"
        for i in range(args.hosts):
            if cli(["ship", str(args.data / f"host-{i}" / "recording"), url, "--endpoint-url", endpoint, "-q"]):
                raise SystemExit("ship failed")
        out = args.data / "pandas.pkl"
        subprocess.run([sys.executable, __file__, "--child", url, endpoint, str(out)], check=True)
        pd_res = pickle.loads(out.read_bytes())
        dk = run_dask(url, endpoint)
    finally:
        os.kill(moto.pid, signal.SIGKILL)
        moto.wait()
    res = {"hosts": args.hosts, "minutes": args.minutes, "pairs": args.pairs, "interval_ms": args.interval_ms,
           "rows": int(pd_res["life"]["snapshots"].sum()),
           "same_lifetimes": same(pd_res["life"], dk["life"], ["host", "cookie", "first_seen"]),
           "same_state_counts": same(pd_res["counts"], dk["counts"], None),
           "pandas_peak_mib": round(pd_res["peak_mib"], 1), "pandas_s": round(pd_res["seconds"], 2),
           "dask_worker_peak_mib": [round(x, 1) for x in dk["worker_peak_mib"]],
           "dask_s": round(dk["seconds"], 2)}
    res["peak_ratio_dask_over_pandas"] = round(max(dk["worker_peak_mib"]) / pd_res["peak_mib"], 3)
    for k, v in res.items():
        print(f"{k:28} {v}")
    run.write(res)
    return 0 if res["same_lifetimes"] and res["same_state_counts"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
