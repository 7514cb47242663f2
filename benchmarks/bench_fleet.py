#!/usr/bin/env python3
"""Fleet analysis benchmark: lifetimes and state counts over H hosts shipped to S3 (a moto
server on 127.0.0.1, started and killed by pid), in pandas (one process reads the whole
fleet with ``tcpsnap.read(URL)``) and on Dask (``LocalCluster`` of 2 worker processes,
``tcpsnap.ship.fleet.per_host``: one task per host). Checks that both give the same answer
and reports each process's peak RSS (VmHWM) and the ratio Dask worker / pandas.

``--columns analysis`` makes both sides read only ``tcpsnap.analysis.COLUMNS`` (what the
two functions use; the documented way to read for them), ``all`` (default) every column.
The pandas process is watched: over ``--max-rss`` GiB it is killed and reported as "did
not fit" (the machine is shared; an OOM kill would hit other people's processes).

Partition pruning, counted in the server's request log: ``tcpsnap.read(URL,
hosts=["host-3"], start=T0, end=T0 + 1 h)`` against the objects in the bucket: the LIST
prefixes, the objects fetched and their bytes.

Each host's recording is made by the real ``tcpsnap.Recorder`` fed by
``bench_analysis.World`` (its own seed, host name and boot id), then shipped with
``tcpsnap ship``. The issue's scale is ``--hosts 8 --minutes 10 --pairs 5000
--interval-ms 1000`` (10k connections at 1 Hz).

    python3 benchmarks/bench_fleet.py --hosts 8 --minutes 10 --pairs 5000 --columns analysis --data /tmp/fleet-bench-5k
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _results import Run, add_json_argument
from _s3 import CREDS, Moto

BUCKET = "fleet"


def peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def read_columns(which: str) -> list[str] | None:
    from tcpsnap.analysis import COLUMNS

    return list(COLUMNS) if which == "analysis" else None


def analyse(df):
    from tcpsnap.analysis import lifetimes, state_counts

    return lifetimes(df), state_counts(df, freq="1s")


def child_pandas(url: str, endpoint: str, out: str, which: str) -> None:
    import tcpsnap

    t0 = time.perf_counter()
    life, counts = analyse(tcpsnap.read(url, endpoint_url=endpoint, columns=read_columns(which)))
    secs = time.perf_counter() - t0
    with open(out, "wb") as f:
        pickle.dump({"life": life, "counts": counts, "peak_mib": peak_mib(), "seconds": secs}, f)


def run_pandas(url: str, endpoint: str, out: Path, which: str, max_mib: float) -> dict | None:
    """The pandas side in its own process, killed if its RSS goes over ``max_mib``; None
    then."""
    out.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, __file__, "--child", url, endpoint, str(out), which])
    top = 0.0
    while p.poll() is None:
        top = max(top, rss_mib(p.pid))
        if top > max_mib:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            print(f"pandas: over {max_mib:.0f} MiB of RSS, killed (did not fit)", file=sys.stderr)
            return None
        time.sleep(0.1)
    if p.returncode != 0:
        raise SystemExit(f"pandas child failed ({p.returncode})")
    return pickle.loads(out.read_bytes())


def _life(df):
    from tcpsnap.analysis import lifetimes

    return lifetimes(df)


def _counts(df):
    from tcpsnap.analysis import state_counts

    return state_counts(df, freq="1s")


def run_dask(url: str, endpoint: str, which: str) -> dict:
    from dask.distributed import Client, LocalCluster

    from tcpsnap.ship.fleet import per_host, sum_bins

    cols = read_columns(which)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        t0 = time.perf_counter()
        life = per_host(url, _life, client=client, endpoint_url=endpoint, columns=cols)
        counts = per_host(url, _counts, client=client, endpoint_url=endpoint, combine=sum_bins, columns=cols)
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


def pruning(moto: Moto, url: str, t0_iso: str) -> dict:
    """Requests and bytes of one host's hour out of the fleet, from the server's log."""
    import pandas as pd

    import tcpsnap

    objects = {o["Key"]: o["Size"] for page in moto.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
               for o in page.get("Contents", [])}
    since = moto.log_size()
    start = pd.Timestamp(t0_iso)
    df = tcpsnap.read(url, hosts=["host-3"], start=start, end=start + pd.Timedelta(hours=1),
                      endpoint_url=moto.url, columns=["host", "seq"])
    text = Path(moto.log).read_bytes()[since:].decode(errors="replace")
    lists = [re.sub("%3D", "=", m) for m in re.findall(r"list-type=2[^ ]*prefix=([^ &]*)", text)]
    gets = [p.removeprefix(f"/{BUCKET}/") for meth, p in moto.requests(since) if meth in ("GET", "HEAD")]
    fetched = sorted({g for g in gets if g in objects})
    other = sorted({k for k in fetched if "/host=host-3/" not in k})
    return {"objects_in_bucket": len(objects), "bytes_in_bucket": sum(objects.values()),
            "requests": len(moto.requests(since)), "list_prefixes": lists,
            "object_requests": len([g for g in gets if g in objects]), "objects_fetched": fetched,
            "bytes_fetched": sum(objects[k] for k in fetched), "other_hosts_objects_fetched": other,
            "rows_read": len(df), "hosts_read": sorted(set(df["host"].astype(str)))}


def _growing_world(ba) -> None:
    """``bench_analysis.World`` keeps its sockets in a table of 2 * pairs + 4096 slots;
    at 1 Hz and 5,000 pairs its TIME_WAITs outgrow it: double the table when it is full
    (new slots are not alive, so the snapshots are unchanged)."""
    import numpy as np

    if getattr(ba.World, "_grows", False):
        return
    sock = ba.World._sock

    def _sock(self, *a, **kw):
        if not self.free:
            n = len(self.tab)
            self.tab = np.concatenate([self.tab, np.zeros(n, self.tab.dtype)])
            self.alive = np.concatenate([self.alive, np.zeros(n, bool)])
            self.free = list(range(2 * n - 1, n - 1, -1))
            self.idx = None
        return sock(self, *a, **kw)

    ba.World._sock = _sock
    ba.World._grows = True


def generate(data: Path, args) -> None:
    import bench_analysis as ba
    import tcpsnap._host

    _growing_world(ba)
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
        child_pandas(*argv[1:5])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=8)
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--columns", choices=("all", "analysis"), default="all",
                   help="what both sides read: every column, or tcpsnap.analysis.COLUMNS")
    p.add_argument("--max-rss", type=float, default=16.0, help="GiB: the pandas process is killed over this")
    p.add_argument("--no-pandas", action="store_true", help="Dask only (when pandas cannot fit)")
    p.add_argument("--data", type=Path, default=Path("/tmp/tcpsnap-bench-fleet"))
    add_json_argument(p)
    args = p.parse_args(argv)
    run = Run("bench_fleet", path=args.json, argv=argv)
    os.environ.update(CREDS)
    import bench_analysis as ba

    generate(args.data, args)
    log = args.data / "moto.log"
    log.unlink(missing_ok=True)
    moto = Moto(log=log)
    try:
        moto.client().create_bucket(Bucket=BUCKET)
        from tcpsnap.cli import main as cli

        url = f"s3://{BUCKET}/tcpsnap"
        for i in range(args.hosts):
            if cli(["ship", str(args.data / f"host-{i}" / "recording"), url, "--endpoint-url", moto.url, "-q"]):
                raise SystemExit("ship failed")
        prune = pruning(moto, url, ba.T0_ISO) if args.hosts > 3 else None
        pd_res = None if args.no_pandas else run_pandas(url, moto.url, args.data / "pandas.pkl", args.columns,
                                                         args.max_rss * 1024)
        dk = run_dask(url, moto.url, args.columns)
    finally:
        moto.stop()
    res: dict = {"hosts": args.hosts, "minutes": args.minutes, "pairs": args.pairs,
                 "interval_ms": args.interval_ms, "columns": args.columns,
                 "rows": int(dk["life"]["snapshots"].sum()),
                 "rows_per_snapshot_per_host": round(int(dk["life"]["snapshots"].sum()) / args.hosts
                                                     / (args.minutes * 60_000 / args.interval_ms)),
                 "dask_worker_peak_mib": [round(x, 1) for x in dk["worker_peak_mib"]],
                 "dask_s": round(dk["seconds"], 2), "pandas_fit": pd_res is not None,
                 "pandas_max_rss_mib": args.max_rss * 1024}
    if pd_res is not None:
        res.update({"same_lifetimes": same(pd_res["life"], dk["life"], ["host", "cookie", "first_seen"]),
                    "same_state_counts": same(pd_res["counts"], dk["counts"], None),
                    "pandas_peak_mib": round(pd_res["peak_mib"], 1), "pandas_s": round(pd_res["seconds"], 2)})
        res["peak_ratio_dask_over_pandas"] = round(max(dk["worker_peak_mib"]) / pd_res["peak_mib"], 3)
    if prune is not None:
        res["pruning_one_host_hour"] = prune
    res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    for k, v in res.items():
        print(f"{k:28} {v}")
    run.write(res)
    return 0 if pd_res is None or (res["same_lifetimes"] and res["same_state_counts"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
