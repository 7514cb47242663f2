#!/usr/bin/env python3
"""A warm Snapshotter.take() allocates nothing that outlives the call.

Holds 1,000 loopback connections (2,001 rows; in a private network namespace when
run as root, like bench_snapshot.py) and makes 10,000 warm take() calls three ways:

  RSS        VmRSS before and after, no tracing
  blocks     sys.getallocatedblocks() before and after (pymalloc blocks alive)
  tracemalloc  a snapshot diff across the calls (Python-level allocations), plus the
             peak, which shows the one transient object each call makes: the
             ndarray view that take() returns (freed when the caller drops it)

It also checks that the row buffer never moves or grows.

    python3 benchmarks/bench_alloc.py [--calls 10000] [--conns 1000]
    python3 benchmarks/bench_alloc.py --calls 200 --conns 100     # a quick try

bench_snapshot.py runs the same check at the end of its run (unless --no-alloc). The
numbers go to a JSON file (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc

import _results


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def check(n: int, calls: int, log=print) -> dict:
    import tcpsnap

    def loop(take, k):
        for _ in range(k):
            rows = take()
        return len(rows) if k else 0

    def blocks(take, k):
        gc.collect()
        b0 = sys.getallocatedblocks()
        loop(take, k)
        return sys.getallocatedblocks() - b0

    ours = [tracemalloc.Filter(True, "*/tcpsnap/*")]

    def traced(take, k):
        """(size diff, block diff, size diff in tcpsnap's own code, peak above start)"""
        gc.collect()
        s0 = tracemalloc.take_snapshot()
        cur = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        loop(take, k)
        peak = tracemalloc.get_traced_memory()[1]
        s1 = tracemalloc.take_snapshot()
        diff = s1.compare_to(s0, "filename")
        mine = s1.filter_traces(ours).compare_to(s0.filter_traces(ours), "filename")
        return (sum(d.size_diff for d in diff), sum(d.count_diff for d in diff),
                sum(d.size_diff for d in mine), peak - cur)

    with tcpsnap.Snapshotter() as snap:
        take = snap.take
        # warm: grow the array to the table, touch every page, run the loop code once
        nrows = loop(take, 200)
        buf0 = snap._impl.rows.ctypes.data
        cap0 = snap.capacity
        grows0 = snap.stats["grows"]

        # 1. RSS and live pymalloc blocks, untraced; a 0-call run measures what the
        # measuring itself leaves behind (the int holding the first count, ...)
        blocks(take, 0)
        rss0 = rss_kib()
        blocks_ctl = blocks(take, 0)
        blocks_run = blocks(take, calls)
        rss1 = rss_kib()

        # 2. tracemalloc snapshot diffs, same loop, same 0-call control; the first
        # control run warms tracemalloc's own code paths
        tracemalloc.start(1)
        traced(take, 0)
        ctl = traced(take, 0)
        run = traced(take, calls)
        tracemalloc.stop()
        size_diff = run[0] - ctl[0]
        count_diff = run[1] - ctl[1]

        buf1 = snap._impl.rows.ctypes.data
        stats = snap.stats

    res = {
        "n": n, "rows": nrows, "calls": calls,
        "rss_before_kib": rss0, "rss_after_kib": rss1, "rss_diff_kib": rss1 - rss0,
        "blocks_diff": blocks_run - blocks_ctl,
        "tm_size_diff": size_diff, "tm_count_diff": count_diff, "tm_tcpsnap_size_diff": run[2],
        "tm_raw": {"control": ctl, "run": run},
        "tm_peak_over_start": run[3],
        "buffer_moved": buf0 != buf1, "capacity": (cap0, snap.capacity),
        "grows_during": stats["grows"] - grows0,
    }
    # Allocation per call would show as thousands of blocks over `calls` calls; a block
    # or two either way is the interpreter's own bookkeeping (free lists, the int a
    # counter lands in), which the 0-call control cannot cancel exactly.
    res["zero_growth"] = (size_diff <= 1024 and count_diff <= 2 and run[2] <= 256
                          and res["rss_diff_kib"] <= 0 and res["blocks_diff"] <= 2
                          and not res["buffer_moved"] and res["grows_during"] == 0)
    log(f"  rows per take(): {nrows}; {calls:,} warm calls (each compared with a 0-call control run)")
    log(f"  RSS: {rss0} KiB -> {rss1} KiB ({rss1 - rss0:+d} KiB)")
    log(f"  sys.getallocatedblocks(): {blocks_run - blocks_ctl:+d} "
        f"(run {blocks_run:+d}, control {blocks_ctl:+d})")
    log(f"  tracemalloc snapshot diff: {size_diff:+d} B in {count_diff:+d} blocks "
        f"(run {run[0]:+d} B / {run[1]:+d}, control {ctl[0]:+d} B / {ctl[1]:+d}); "
        f"in tcpsnap's code {run[2]:+d} B")
    log(f"  tracemalloc peak above start during the calls: {run[3]} B "
        f"(control {ctl[3]} B): the ndarray view one take() returns, freed by the next")
    log(f"  row buffer moved: {res['buffer_moved']}; capacity {cap0} -> {snap.capacity}; "
        f"grows during the calls: {res['grows_during']}")
    log(f"  zero growth (<= 2 blocks and 1 KiB over all {calls:,} calls, RSS flat, buffer "
        f"never moved): {'yes' if res['zero_growth'] else 'NO'}")
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--no-netns", action="store_true")
    ap.add_argument("--shared-ehash", action="store_true")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    import bench_snapshot as bs

    where = bs.ensure_netns(argv, __file__, allow=not args.no_netns,
                            own_ehash=not args.shared_ehash)
    run = _results.Run("bench_alloc", args.json, argv)
    print(f"allocation check: {where}", flush=True)
    with bs.Connections(args.conns):
        res = check(args.conns, args.calls)
    run.write({"where": where, **res})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
