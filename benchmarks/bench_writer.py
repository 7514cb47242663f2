"""The writer thread alone: CPU seconds per million full-mode rows, and bytes per row.

One live snapshot of ``--sizes`` loopback connections (pids on, taken once in a private
network namespace, bench_snapshot) is repeated as a recording at ``--interval 0``
would repeat it, in the recorder's batches (its default ``batch_rows``; each
snapshot's clocks advancing at ``--rate`` rows a second: 2M, 1k connections at about
the floor's rate, with jitter; 2% of the queues moving each snapshot), and handed to a real
``tcpsnap.record.writer.Writer`` thread (zstd, 1 s flush, row groups of the recorder's
size: ``footprint.ROW_GROUP_CAP``, 128Ki rows) on a clock that follows the batches, so
that its journal appends and row groups come as in such a recording. Each ``--python``
(a venv's interpreter; default this one) encodes the same rows (saved once, loaded by
each) in its own process, in turn (the order swapped every round): the writer thread's
CPU (``time.thread_time`` of the thread, start to finish, the last row group and
footer included) per million rows, its share in Parquet encoding (``encode_row_group``)
when the build has it, and the finished file's bytes per row; paired ratios per round
against the first ``--python``.

    python3 benchmarks/bench_writer.py --sizes 1000,10000 --rounds 3 \
        --python /work/venv/bin/python --python .venv/bin/python

``--columns``: instead, each integer column of one such row group encoded alone with
each encoding (dictionary, PLAIN, BYTE_STREAM_SPLIT, DELTA_BINARY_PACKED): CPU and bytes a
row, what the encodings in ``record.parquet`` were chosen by.

    python3 benchmarks/bench_writer.py --columns --sizes 1000,10000

Runs as root in a private network namespace (for the snapshot; the writing needs none).
Writes its JSON with benchmarks/_results.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

#: Rows each child encodes at each size (about 4 row groups at 1k connections).
ROWS = 4_000_000


def _snapshot(n: int, out: Path) -> int:
    """One live snapshot of ``n`` loopback connections with pids, saved as ``out``
    (rows, process codes, names). Its row count."""
    import numpy as np

    import bench_snapshot as bs
    from tcpsnap import Snapshotter

    with bs.Connections(n), Snapshotter(pids=True) as snap:
        snap.take()
        rows = snap.take().copy()
    pids = sorted(set(rows["pid"].tolist()) - {0})
    code = {p: i for i, p in enumerate(pids)}
    proc = np.array([code.get(int(p), -1) for p in rows["pid"]], np.int32)
    names = []
    for p in pids:
        try:
            names.append(Path(f"/proc/{p}/comm").read_text().strip())
        except OSError:
            names.append("?")
    np.savez(out, rows=rows, proc=proc, names=np.array(names or ["?"]))
    return len(rows)


class _Clock:
    """The recorder's clocks as the batches say: the last batch handed over."""

    def __init__(self) -> None:
        self.mono = self.wall = 0

    def monotonic_ns(self) -> int:
        return self.mono

    def time_ns(self) -> int:
        return self.wall


def child(data: Path, rows_total: int, workdir: Path, rate: float = 2e6) -> dict:
    """Encode ``rows_total`` rows of the saved snapshot in a Writer thread: its CPU."""
    import logging

    import numpy as np

    from tcpsnap._arrow import BatchEncoder, build_schema
    from tcpsnap.record import rowgroup
    from tcpsnap.record.batch import STOP, BatchPool
    from tcpsnap.record.safedir import SafeDir
    from tcpsnap.record.writer import FileOptions, Rules, Writer

    logging.getLogger("tcpsnap").setLevel(logging.ERROR)  # "writer behind": by design here
    z = np.load(data)
    snap, proc, names = z["rows"], z["proc"], [str(x) for x in z["names"]]
    n = len(snap)
    batch_rows = 1 << 14
    per_batch = max(1, batch_rows // n)
    step = int(n / rate * 1e9)  # ns per snapshot at ``rate`` rows/s (jittered)
    clock = _Clock()
    t0 = 1_764_460_800_000_000_000  # 2025-11-30 00:00 UTC
    try:  # the recorder's row groups: its default 1 MiRow, capped by its memory plan
        from tcpsnap.record.footprint import ROW_GROUP_CAP
    except ImportError:  # pragma: no cover - a build before the cap
        ROW_GROUP_CAP = 1 << 20
    rg_rows = min(1 << 20, ROW_GROUP_CAP)
    rules = Rules(0, 3600 * 10**9, 10**9, 0, rg_rows)
    schema = build_schema({"tcpsnap.mode": "full"})
    enc = BatchEncoder(schema, "benchhost", "00000000-0000-0000-0000-000000000000")
    pool = BatchPool(2, batch_rows, 4096, False, lambda: None)
    out = workdir / "rec"
    shutil.rmtree(out, ignore_errors=True)
    root = SafeDir.open(out, create=True)
    w = Writer(root, schema, enc, rules, FileOptions("zstd", None, rg_rows, False, False), pool, clock,
               on_error=lambda: None)
    encode_ns = [0]
    real = rowgroup.encode_row_group

    def timed(*a, **kw):  # the Parquet encoding's share (same thread)
        c = time.thread_time_ns()
        try:
            return real(*a, **kw)
        finally:
            encode_ns[0] += time.thread_time_ns() - c

    import tcpsnap.record.writer as wmod

    wmod.encode_row_group = timed
    cpu = [0]
    main = w._main

    def run() -> None:
        c = time.thread_time_ns()
        main()
        cpu[0] = time.thread_time_ns() - c

    w._thread = threading.Thread(target=run, name="tcpsnap-writer", daemon=True)
    w.start()
    rng = np.random.default_rng(18)
    seq = rows = mono = 0
    while rows < rows_total:
        b = pool.get()
        k = per_batch
        if not b.fits(n):
            b.grow(n)
        for _ in range(k):
            cap = int(rng.integers(step * 8 // 10, step * 11 // 10))
            mono += cap + int(rng.integers(1_000, 50_000))
            here = b.rows[b.n:b.n + n]
            here[:] = snap
            moved = np.flatnonzero(rng.random(n) < 0.02)  # 2% of the queues move
            here["rx_queue"][moved] = rng.integers(0, 3000, len(moved))
            here["tx_queue"][moved] = rng.integers(0, 3000, len(moved))
            b.proc[b.n:b.n + n] = proc
            s = b.s
            b.ts[s], b.seq[s], b.cap[s] = t0 + mono, seq, cap
            b.mono[s], b.counts[s], b.empty[s] = mono, n, False
            if s == 0:
                b.t_first, b.file_key = mono, (0, 0)
            b.n += n
            b.s += 1
            seq += 1
        b.names[:] = names
        b.has_proc = True
        clock.mono, clock.wall = mono, t0 + mono
        w.put(b)
        rows += n * k
    w.put(STOP)
    w.join()
    if w.error is not None:
        raise w.error
    files = sorted(out.glob("date=*/*.parquet"))
    nbytes = sum(p.stat().st_size for p in files)
    import pyarrow.parquet as pq

    written = sum(pq.read_metadata(p).num_rows for p in files)
    shutil.rmtree(out, ignore_errors=True)
    return {"rows": rows, "written_rows": written, "snapshot_rows": n, "cpu_s": cpu[0] / 1e9,
            "cpu_s_per_mrow": cpu[0] / 1e9 / rows * 1e6, "encode_s_per_mrow": encode_ns[0] / 1e9 / rows * 1e6,
            "bytes_per_row": nbytes / max(written, 1), "files": len(files), "row_group_rows": rg_rows}


def columns(data: Path, rounds: int = 3) -> dict:
    """Each integer column of one row group of the saved snapshot (128Ki rows, queues and
    clocks moving as in ``child``) encoded alone with each encoding: thread CPU ns a row
    (best of ``rounds``) and bytes a row (zstd, the recorder's page settings)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tcpsnap._arrow import BatchEncoder, build_schema

    z = np.load(data)
    snap, proc, names = z["rows"], z["proc"], [str(x) for x in z["names"]]
    n = len(snap)
    rng = np.random.default_rng(18)
    k = max(1, (1 << 17) // n)
    rows = np.tile(snap, k)
    moved = np.flatnonzero(rng.random(len(rows)) < 0.02)
    rows["rx_queue"][moved] = rng.integers(0, 3000, len(moved))
    rows["tx_queue"][moved] = rng.integers(0, 3000, len(moved))
    cap = rng.integers(800_000, 1_100_000, k)
    mono = np.cumsum(cap + rng.integers(1_000, 50_000, k))
    schema = build_schema({"tcpsnap.mode": "full"})
    t = pa.Table.from_batches([BatchEncoder(schema).encode(rows, np.full(k, n), 1_764_460_800_000_000_000 + mono,
                                                           np.arange(k), cap, np.tile(proc, k), names,
                                                           monotonic=mono)])
    out: dict = {"rows": t.num_rows}
    for f in schema:
        if pa.types.is_dictionary(f.type):
            continue
        col = pa.table({f.name: t.column(f.name)})
        res = {}
        for enc in ("dictionary", "PLAIN", "BYTE_STREAM_SPLIT", "DELTA_BINARY_PACKED"):
            kw = dict(compression="zstd", write_statistics=False, data_page_size=8 << 20,
                      max_rows_per_page=1 << 20, use_dictionary=enc == "dictionary")
            if enc != "dictionary":
                kw["column_encoding"] = {f.name: enc}
            best, size = float("inf"), 0
            for _ in range(rounds):
                sink = pa.BufferOutputStream()
                c = time.thread_time_ns()
                with pq.ParquetWriter(sink, col.schema, **kw) as w:
                    w.write_table(col, row_group_size=col.num_rows)
                best = min(best, time.thread_time_ns() - c)
                size = sink.getvalue().size
            res[enc] = {"ns_per_row": best / col.num_rows, "bytes_per_row": size / col.num_rows}
        out[f.name] = res
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=ROWS, help="rows each child encodes")
    ap.add_argument("--python", action="append", default=None, help="an interpreter (repeat: compared)")
    ap.add_argument("--rate", type=float, default=2e6,
                    help="rows a second the clocks say (default 2e6: 1k connections at ~1,000 snapshots/s)")
    ap.add_argument("--child", nargs=2, metavar=("DATA", "ROWS"), help=argparse.SUPPRESS)
    ap.add_argument("--columns", action="store_true",
                    help="instead: each integer column encoded alone with each encoding (this python)")
    ap.add_argument("--no-netns", action="store_true")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    if args.child:
        work = Path(tempfile.mkdtemp(prefix="tcpsnap-benchwriter-"))
        try:
            print(json.dumps(child(Path(args.child[0]), int(args.child[1]), work, args.rate)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    import bench_snapshot as bs

    where = bs.ensure_netns(argv, str(Path(__file__).resolve()), allow=not args.no_netns)
    if args.columns:
        run = _results.Run("bench_writer-columns", args.json, argv)
        tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-benchwriter-"))
        res = {"sizes": {}}
        try:
            for n in [int(x) for x in args.sizes.split(",")]:
                _snapshot(n, tmp / "snap.npz")
                res["sizes"][n] = got = columns(tmp / "snap.npz")
                print(f"{n} connections, {got['rows']} rows: ns/row, bytes/row (zstd)")
                for name, r in got.items():
                    if name != "rows":
                        print(f"  {name:16s} " + " | ".join(f"{e[:6]} {v['ns_per_row']:5.2f} {v['bytes_per_row']:.4f}"
                                                           for e, v in r.items()))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        run.write(res)
        return 0
    pythons = args.python or [sys.executable]
    run = _results.Run("bench_writer", args.json, argv)
    tmp = Path(tempfile.mkdtemp(prefix="tcpsnap-benchwriter-"))
    res: dict = {"pythons": pythons, "rows": args.rows, "rate": args.rate, "sizes": {}, "loadavg": [os.getloadavg()[0]]}
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            data = tmp / f"snap-{n}.npz"
            rows = _snapshot(n, data)
            rounds = []
            for r in range(args.rounds):
                order = list(range(len(pythons)))
                if r % 2:
                    order.reverse()
                got: dict[int, dict] = {}
                for i in order:
                    p = subprocess.run([pythons[i], str(Path(__file__).resolve()), "--child", str(data),
                                        str(args.rows), "--rate", str(args.rate)],
                                       capture_output=True, text=True, check=True)
                    got[i] = json.loads(p.stdout.strip().splitlines()[-1])
                rnd = {"loadavg": os.getloadavg()[0], "by_python": [got[i] for i in range(len(pythons))]}
                base = got[0]["cpu_s_per_mrow"]
                rnd["cpu_x_first"] = [got[i]["cpu_s_per_mrow"] / base for i in range(len(pythons))]
                rounds.append(rnd)
                print(json.dumps({"n": n, "round": r, "cpu_s_per_mrow": [round(g["cpu_s_per_mrow"], 3)
                                                                         for g in rnd["by_python"]],
                                  "x_first": [round(x, 3) for x in rnd["cpu_x_first"]]}), file=sys.stderr, flush=True)
            res["sizes"][n] = {"snapshot_rows": rows, "rounds": rounds}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["loadavg"].append(os.getloadavg()[0])
    lines = [f"Command: `python3 benchmarks/bench_writer.py {' '.join(argv)}`  ", f"where: {where}", "",
             "| connections (rows) | python | writer CPU s / M rows (rounds) | of it Parquet encoding | bytes/row "
             "| x first (paired, median) |",
             "|---|---|---|---|---|---|"]
    for n, s in res["sizes"].items():
        for i, p in enumerate(pythons):
            cpus = [r["by_python"][i]["cpu_s_per_mrow"] for r in s["rounds"]]
            enc = [r["by_python"][i]["encode_s_per_mrow"] for r in s["rounds"]]
            bpr = s["rounds"][-1]["by_python"][i]["bytes_per_row"]
            x = statistics.median(r["cpu_x_first"][i] for r in s["rounds"])
            lines.append(f"| {n} ({s['snapshot_rows']}) | {p} | {statistics.median(cpus):.3f} "
                         f"({' '.join(f'{c:.3f}' for c in cpus)}) | {statistics.median(enc):.3f} "
                         f"| {bpr:.4f} | {x:.3f} |")
    print("\n".join(lines))
    run.write(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
