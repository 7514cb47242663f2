#!/usr/bin/env python3
"""TCP internals: Snapshotter(tcp_info=True).take() against the floor asking for the same.

Holds N loopback TCP connections (``--sizes``, default 1,000 / 10,000 / 50,000; the
helpers and the private namespace of bench_snapshot.py) and times, interleaved in the
same run, blocks of:

  floor+info   benchmarks/floor.c with FLOOR_INFO=1: the same dump asking for
               INET_DIAG_INFO and INET_DIAG_CONG, in C, only counting rows
  take()+info  tcpsnap.Snapshotter(tcp_info=True).take(), warm: rows and internals
  floor        the plain dump (context: what asking for internals costs the kernel)
  take()       tcpsnap.Snapshotter().take()

in rotating order, each block's i-th sample paired with the i-th of the adjacent block
of its partner (take()+info with floor+info, take() with floor). The target is
take()+info <= 1.15x floor+info.

``--storage N`` (default 10,000; 0 skips it) then records the steady table of N idle
connections in full mode for ``--storage-seconds`` at ``--storage-interval``, with and
without ``--tcp-info``, and reports bytes per row of each file and of the internals
columns (Parquet column chunk sizes from the footer).

    python3 benchmarks/bench_tcp_info.py                       # all three sizes, storage at 10k
    python3 benchmarks/bench_tcp_info.py --sizes 1000 --rounds 10 --storage 1000   # a quick try

The results go to a JSON file (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _results
import bench_snapshot as bs

DEFAULT_SIZES = (1000, 10000, 50000)
ROUNDS = {1000: 40, 10000: 24, 50000: 12}
PER_BLOCK = {1000: 16, 10000: 6, 50000: 3}
METHODS = ("floor+info", "take()+info", "floor", "take()")


def run_size(n: int, rounds: int, k: int, per_helper: int, floors: dict, snaps: dict, baseline: int,
             log) -> dict:
    samples: dict[str, list[int]] = {m: [] for m in METHODS}
    rows_seen: dict[str, set[int]] = {m: set() for m in METHODS}
    pairs: dict[str, list[float]] = {"take()+info": [], "take()": []}

    def takes(name: str) -> list[int]:
        snap, out = snaps[name], []
        for _ in range(k):
            t0 = time.perf_counter_ns()
            r = snap.take()
            t1 = time.perf_counter_ns()
            out.append(t1 - t0)
            rows_seen[name].add(len(r))
        return out

    def dumps(name: str) -> list[int]:
        out = []
        for ns, rows, _ in floors[name].dumps(k):
            out.append(ns)
            rows_seen[name].add(rows)
        return out

    def block(rnd: int) -> None:
        # the four blocks in rotating order: each method as often first, after the others
        order = list(METHODS[rnd % 4:] + METHODS[:rnd % 4])
        got = {m: (dumps(m) if m.startswith("floor") else takes(m)) for m in order}
        for m in METHODS:
            samples[m] += got[m]
        for take, floor in (("take()+info", "floor+info"), ("take()", "floor")):
            pairs[take] += [t / f for t, f in zip(got[take], got[floor], strict=True)]

    with bs.Connections(n, per_helper) as conns:
        expected = baseline + conns.rows
        log(f"  {n} connections held by {conns.helpers} helper(s); expected rows {expected}")
        for _ in range(2):
            block(0)                       # warm-up, thrown away
        for m in METHODS:
            samples[m].clear()
            rows_seen[m].clear()
        for v in pairs.values():
            v.clear()
        t0 = time.monotonic()
        for rnd in range(rounds):
            block(rnd)
        run_s = time.monotonic() - t0
        load = os.getloadavg()
    deadline = time.monotonic() + 30
    while len(snaps["take()"].take()) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    med = {m: statistics.median(s) for m, s in samples.items()}
    return {
        "n": n, "expected_rows": expected, "rounds": rounds, "per_block": k, "run_s": run_s,
        "loadavg": load,
        "methods": {m: {"median_ms": med[m] / 1e6, "min_ms": min(samples[m]) / 1e6,
                        "samples": len(samples[m]), "rows": sorted(rows_seen[m]),
                        "rows_ok": sorted(rows_seen[m]) == [expected]} for m in METHODS},
        "take_info_over_floor_info": med["take()+info"] / med["floor+info"],
        "take_info_over_floor_info_paired": statistics.median(pairs["take()+info"]),
        "take_over_floor": med["take()"] / med["floor"],
        "take_over_floor_paired": statistics.median(pairs["take()"]),
        "floor_info_over_floor": med["floor+info"] / med["floor"],
        "take_info_over_take": med["take()+info"] / med["take()"],
    }


def markdown(res: dict) -> str:
    lines = [f"### {res['n']:,} connections ({res['expected_rows']:,} rows)", "",
             "| method | rows seen | samples | median ms | min ms |", "|---|---|---:|---:|---:|"]
    for m, r in res["methods"].items():
        ok = "ok" if r["rows_ok"] else f"{r['rows']} (expected {res['expected_rows']})"
        lines.append(f"| {m} | {ok} | {r['samples']} | {r['median_ms']:.3f} | {r['min_ms']:.3f} |")
    lines += ["", f"take()+info / floor+info: **{res['take_info_over_floor_info']:.3f}x** (medians), "
                  f"{res['take_info_over_floor_info_paired']:.3f}x (paired); take() / floor: "
                  f"{res['take_over_floor']:.3f}x ({res['take_over_floor_paired']:.3f}x paired); "
                  f"asking for internals costs the kernel {res['floor_info_over_floor']:.2f}x "
                  f"(floor+info / floor) and take() {res['take_info_over_take']:.2f}x. "
                  f"Timed run {res['run_s']:.1f} s, load average after {res['loadavg'][0]:.2f}.", ""]
    return "\n".join(lines)


def storage(n: int, seconds: float, interval: str, per_helper: int, log) -> dict:
    """bytes per row of a steady table recorded with and without internals."""
    import pyarrow.parquet as pq

    import tcpsnap
    from tcpsnap._arrow import TCP_INFO_COLUMNS

    out: dict = {"n": n, "seconds": seconds, "interval": interval}
    with bs.Connections(n, per_helper), tempfile.TemporaryDirectory() as tmp:
        time.sleep(1.0)                    # let the handshakes' timers settle
        for name, kw in (("full", {}), ("full+tcp_info", {"tcp_info": True})):
            d = Path(tmp) / name
            with tcpsnap.Recorder(d, interval=interval, pids=False, rotate="1h", **kw) as rec:
                rec.run(duration=seconds)
            files = sorted(d.glob("date=*/*.parquet"))
            rows = sum(pq.read_metadata(f).num_rows for f in files)
            size = sum(f.stat().st_size for f in files)
            cols: dict[str, int] = {}
            for f in files:
                md = pq.read_metadata(f)
                for g in range(md.num_row_groups):
                    rg = md.row_group(g)
                    for c in range(rg.num_columns):
                        cc = rg.column(c)
                        cols[cc.path_in_schema] = cols.get(cc.path_in_schema, 0) + cc.total_compressed_size
            info_bytes = sum(v for k, v in cols.items() if k in TCP_INFO_COLUMNS)
            st = rec.stats
            out[name] = {"rows": rows, "bytes": size, "bytes_per_row": size / rows,
                         "snapshots": st.get("snapshots"), "overruns": st.get("overruns"),
                         "writer_waits": st.get("writer_waits"),
                         "writer_cpu_ns_per_row": st.get("writer_cpu_s", 0) * 1e9 / max(1, rows),
                         "tcp_info_bytes_per_row": info_bytes / rows if kw else 0.0,
                         "top_columns_bytes_per_row": dict(sorted(
                             ((k, v / rows) for k, v in cols.items()), key=lambda kv: -kv[1])[:12])}
            log(f"  {name}: {rows:,} rows, {size:,} bytes, {size / rows:.3f} bytes/row"
                + (f" (internals columns {info_bytes / rows:.3f} bytes/row)" if kw else "")
                + f"; writer CPU {out[name]['writer_cpu_ns_per_row']:.0f} ns/row, "
                  f"{st.get('snapshots')} snapshots, {st.get('overruns')} overruns, "
                  f"{st.get('writer_waits')} waits for the writer")
    return out


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    ap.add_argument("--rounds", type=int, default=None, help="rounds per size (default 40 / 24 / 12)")
    ap.add_argument("--per-block", type=int, default=None, help="samples per block (default 16 / 6 / 3)")
    ap.add_argument("--per-helper", type=int, default=8000)
    ap.add_argument("--storage", type=int, default=10000, help="connections of the storage run (0: none)")
    ap.add_argument("--storage-seconds", type=float, default=10.0)
    ap.add_argument("--storage-interval", default="100ms")
    ap.add_argument("--no-netns", action="store_true", help="run on the host network namespace")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    where = bs.ensure_netns(argv, __file__, allow=not args.no_netns)
    run = _results.Run("bench_tcp_info", args.json, argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)

    import tcpsnap

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"tcpsnap internals benchmark: {where}")
    log(f"machine: {bs.machine()}")
    log(f"command: python3 benchmarks/bench_tcp_info.py {' '.join(argv)}".rstrip())
    results, checks = [], []
    floors = {"floor+info": bs.Floor(info=True), "floor": bs.Floor()}
    with contextlib.ExitStack() as stack:
        for f in floors.values():
            stack.enter_context(contextlib.closing(f))
        snaps = {"take()+info": stack.enter_context(tcpsnap.Snapshotter(tcp_info=True)),
                 "take()": stack.enter_context(tcpsnap.Snapshotter())}
        baseline = len(snaps["take()"].take())
        for n in [int(s) for s in args.sizes.split(",") if s]:
            rounds = args.rounds or ROUNDS.get(n, 10)
            k = args.per_block or PER_BLOCK.get(n, 4)
            log(f"size {n}: {rounds} rounds x 4 blocks of {k}")
            res = run_size(n, rounds, k, args.per_helper, floors, snaps, baseline, log)
            results.append(res)
            log(markdown(res))
            r = res["take_info_over_floor_info"]
            checks.append({"target": f"take(tcp_info) <= 1.15x floor+info at {n}", "value": r, "met": r <= 1.15})
    store = storage(args.storage, args.storage_seconds, args.storage_interval, args.per_helper, log) \
        if args.storage else None
    log("### Targets\n")
    for c in checks:
        log(f"- {c['target']}: **{'MET' if c['met'] else 'NOT MET'}** ({c['value']:.3f}x)")
    run.write({"where": where, "baseline_rows": baseline, "sizes": results, "targets": checks,
               "storage": store})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
