#!/usr/bin/env python3
"""Kernel-side filtering: a `record --port 443` snapshot against an unfiltered one.

Holds N loopback connections (``--size``, default 10,000; bench_snapshot's helpers), five of
them to a port-443 listener that is then closed, so that 10 rows of the table's 2N + helpers
match ``port = :443``. Times, alternated round by round in the same run (each sample the
median of ``--per-slot`` calls):

  unfiltered   Snapshotter().take(): the whole table
  kernel       Snapshotter(filter="port = :443").take(): what `record --port 443` takes --
               the kernel runs the inet_diag bytecode and sends only matching sockets,
               the numpy mask then checks them
  mask only    Snapshotter().take() then the same Filter's numpy mask (no bytecode): what
               the filter would cost without the kernel's help
  ... +pids    unfiltered and kernel again with owning pids (``pids=True``, what `record`
               does by default; its steady state: the inode -> owner cache is warm)

Ratios are each round's filtered time over that round's unfiltered time (paired, so the
machine's load moves both); the target is kernel / unfiltered <= 0.5. As root the script
runs under ``unshare -n`` with a TCP hash of its own (bench_snapshot.ensure_netns).

    python3 benchmarks/bench_filter.py                       # 10,000 connections, 40 rounds
    python3 benchmarks/bench_filter.py --size 1000 --rounds 5  # a quick try

Results: a JSON file per run (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import _results
import bench_snapshot as bs
import tcpsnap


def hold_443(n: int) -> list[socket.socket]:
    """n connections to a listener on 127.0.0.1:443, the listener closed again: 2n rows."""
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 443))
    lst.listen(n)
    out = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", 443))
        s, _ = lst.accept()
        out += [c, s]
    lst.close()
    return out


def timed(fn, per_slot: int) -> float:
    ts = []
    for _ in range(per_slot):
        t0 = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e6


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10000, help="connections in the table (default 10,000)")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--per-slot", type=int, default=5)
    ap.add_argument("--no-netns", action="store_true")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    where = bs.ensure_netns(argv, __file__, allow=not args.no_netns)
    run = _results.Run("bench_filter", args.json, argv)
    print(f"# {where}", flush=True)
    f = tcpsnap.parse_filter("port = :443")
    keep = hold_443(5)
    with bs.Connections(args.size - 5) as conns:
        plain_snap = tcpsnap.Snapshotter()
        kern_snap = tcpsnap.Snapshotter(filter=f)
        plain_pids = tcpsnap.Snapshotter(pids=True)
        kern_pids = tcpsnap.Snapshotter(pids=True, filter=f)
        all_rows = len(plain_snap.take())
        matched = len(kern_snap.take())
        assert matched == 10, f"{matched} rows match port 443, expected 10"
        assert all_rows >= 2 * args.size, all_rows

        def masked():
            rows = plain_snap.take()
            return rows[f.mask(rows)]

        fns = {"unfiltered": plain_snap.take, "kernel": kern_snap.take, "mask only": masked,
               "unfiltered+pids": plain_pids.take, "kernel+pids": kern_pids.take}
        for fn in fns.values():                                        # warm (pid caches too)
            fn()
            fn()
        series: dict[str, list[float]] = {name: [] for name in fns}
        order = list(fns)
        for r in range(args.rounds):
            k = r % len(order)
            for name in order[k:] + order[:k]:                         # rotate who goes first
                series[name].append(timed(fns[name], args.per_slot))
        conns_n = conns.n + 5
    for s in keep:
        s.close()
    uptime = os.getloadavg()
    res: dict = {"connections": conns_n, "table_rows": all_rows, "matching_rows": matched,
                 "rounds": args.rounds, "per_slot": args.per_slot, "where": where,
                 "loadavg": [round(x, 2) for x in uptime], "ms": {}, "ratio": {}}
    print(f"# {conns_n:,} connections, {all_rows:,} rows, {matched} match 'port = :443'; "
          f"load average {uptime[0]:.2f} {uptime[1]:.2f} {uptime[2]:.2f}")
    print(f"{'method':<16} {'median ms':>10} {'min ms':>8} {'ratio (paired median)':>22}")
    for name, ts in series.items():
        base = series["unfiltered+pids" if name.endswith("+pids") else "unfiltered"]
        ratios = [t / u for t, u in zip(ts, base, strict=True)]
        res["ms"][name] = {"median": statistics.median(ts), "min": min(ts)}
        res["ratio"][name] = {"median": statistics.median(ratios), "max": max(ratios)}
        print(f"{name:<16} {statistics.median(ts):>10.3f} {min(ts):>8.3f} {statistics.median(ratios):>22.3f}")
    res["target"] = {"kernel_over_unfiltered_max": 0.5,
                     "met": max(res["ratio"]["kernel"]["median"], res["ratio"]["kernel+pids"]["median"]) <= 0.5}
    print("(+pids ratios are over unfiltered+pids)")
    print(f"target kernel/unfiltered <= 0.5: {'met' if res['target']['met'] else 'NOT met'}")
    path = run.write(res)
    print(f"# results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
