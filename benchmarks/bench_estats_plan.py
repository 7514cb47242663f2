"""What the Windows EStats plan costs per snapshot, against parsing the same table.

Each Windows snapshot with ``tcp_info=True`` runs ``_win/estats_plan.h`` over the rows it just
parsed: a key per ESTABLISHED row, a sort, the merge with the previous snapshot's keys (which
connections are new: collection is enabled for them) and the round-robin pick of at most
``cap`` to read. This measures that plan (``tcpsnap._tcp_info.EstatsPlan.step``) against
``parse_tcptable2`` of a MIB_TCPTABLE2 buffer with the same rows (what the backend does for the
table itself), on any platform: synthetic tables, no Windows call. The EStats calls themselves
(one Get per struct per connection read) are Windows' and not measured here.

    python3 benchmarks/bench_estats_plan.py [--sizes 1000,10000,50000] [--churn 0.1]

The results go to a JSON file (benchmarks/_results.py; ``--json PATH``).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time

import numpy as np

import _results

DEFAULT_SIZES = (1000, 10000, 50000)


def mib_table(ports: np.ndarray) -> bytes:
    """A MIB_TCPTABLE2 of ESTABLISHED IPv4 rows 10.0.x.y:port -> 10.1.0.1:443."""
    def port(p: int) -> int:        # the MIB's DWORD: network order in the low 16 bits
        return int.from_bytes(int(p).to_bytes(2, "big"), "little")

    rows = [struct.pack("<I4sI4sIII", 5, bytes((10, 0, (i >> 8) & 255, i & 255)), port(p),
                        bytes((10, 1, 0, 1)), port(443), 4, 0)
            for i, p in enumerate(ports)]
    return struct.pack("<I", len(rows)) + b"".join(rows)


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t)
    return statistics.median(out) / 1e6


def run_size(n: int, churn: float, repeat: int, log) -> dict:
    import tcpsnap
    from tcpsnap._tcp_info import EstatsPlan

    rng = np.random.default_rng(n)
    ports = rng.permutation(np.arange(1024, 1024 + n) % 65536)
    buf = mib_table(ports)
    rows = np.zeros(n, tcpsnap.ROW_DTYPE)
    parse_ms = timed(lambda: tcpsnap.parse_tcptable2(buf, rows), repeat)
    # a second table: `churn` of the connections replaced by new ones (other local addresses)
    moved = rows.copy()
    k = int(n * churn)
    moved["local_addr"][:k, 2] ^= 0x80
    plan = EstatsPlan()
    plan.step(rows)
    steady_ms = timed(lambda: plan.step(rows), repeat)
    tables = [rows, moved]
    flip = iter(range(10**9))
    churn_ms = timed(lambda: plan.step(tables[next(flip) % 2]), repeat)
    fresh, pick = plan.step(rows)
    res = dict(connections=n, cap=plan.cap, parse_ms=parse_ms, plan_steady_ms=steady_ms, plan_churn_ms=churn_ms,
               steady_over_parse=steady_ms / parse_ms, churn_over_parse=churn_ms / parse_ms,
               fresh_after_churn=len(fresh), picked=len(pick), snapshots_to_cover=-(-n // plan.cap))
    log(f"  {n:>7,} rows: parse {parse_ms:.3f} ms, plan {steady_ms:.3f} ms steady "
        f"({res['steady_over_parse']:.2f}x), {churn_ms:.3f} ms with {churn:.0%} churn "
        f"({res['churn_over_parse']:.2f}x); {len(pick)} read, each every {res['snapshots_to_cover']} snapshots")
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    ap.add_argument("--churn", type=float, default=0.1, help="share of connections new in the churn table")
    ap.add_argument("--repeat", type=int, default=31)
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    run = _results.Run("bench_estats_plan", args.json, argv)
    print(f"command: python3 benchmarks/bench_estats_plan.py {' '.join(argv)}".rstrip(), flush=True)
    results = [run_size(int(s), args.churn, args.repeat, lambda m: print(m, flush=True))
               for s in args.sizes.split(",") if s]
    run.write({"sizes": results, "churn": args.churn, "repeat": args.repeat})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
