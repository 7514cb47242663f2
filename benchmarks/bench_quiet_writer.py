"""The writer thread's cost of one quiet snapshot (changes mode, 1 s interval: a lone
marker like the last), cold: what ``Writer._main`` does with such a batch, in a loop on
this thread, a 32 MiB memset before each call so that it finds nothing in the caches (as
between two snapshots a second apart). Thread CPU per call, median and quartiles; the
python given decides the build measured (run builds alternately, ABAB...).

    /work/venv-lean/bin/python benchmarks/bench_quiet_writer.py --calls 400

The writer is driven without its thread (no queue, no wake-up): the per-snapshot work
alone. A real journal on the filesystem of --dir (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tcpsnap._events import EV_SNAPSHOT
from tcpsnap._schema import ROW_DTYPE
from tcpsnap.record.batch import BatchPool
from tcpsnap.record.changes import ChangesEncoder, build_schema
from tcpsnap.record.safedir import SafeDir
from tcpsnap.record.writer import FileOptions, Rules, Writer

T0 = 1_764_460_800_000_000_000
SEC = 10**9


class Clock:
    mono = 0

    def monotonic_ns(self) -> int:
        return self.mono

    def time_ns(self) -> int:
        return T0 + self.mono


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--evict-mb", type=int, default=32)
    args = ap.parse_args()
    schema = build_schema({"tcpsnap.mode": "changes"})
    rules = Rules(SEC, 3600 * SEC, SEC, 0, 1 << 17)
    pool = BatchPool(4, 20_000, 4096, True, lambda: None)
    d = Path(tempfile.mkdtemp(prefix="bench-quiet-", dir=args.dir))
    root = SafeDir.open(d, create=True)
    w = Writer(root, schema, ChangesEncoder(schema, "h1", "boot-1"), rules,
               FileOptions("zstd", None, 1 << 17, False, False), pool, Clock(), on_error=lambda: None)
    mark = np.zeros(1, ROW_DTYPE)
    mark["state"], mark["inode"] = 7, 10_000
    ballast = np.empty(args.evict_mb << 20, np.uint8)
    cpu = time.thread_time_ns
    times = []
    for seq in range(args.calls + 20):
        b = pool.get()
        b.rows[0] = mark[0]
        b.extra[0][0], b.extra[1][0], b.extra[2][0] = EV_SNAPSHOT, True, T0 + seq * SEC + 17
        b.proc[0] = -1
        b.has_proc = True
        b.ts[0], b.seq[0], b.cap[0], b.mono[0], b.counts[0] = T0 + seq * SEC, seq, 700_000 + seq, seq * SEC, 1
        b.empty[0] = False
        b.t_first, b.file_key = seq * SEC, (0, 0)
        b.n, b.s = 1, 1
        ballast.fill(seq & 0xFF)  # evict: the capture thread's dump comes between two
        t = cpu()
        # what Writer._main does with one batch when nothing else waits
        try:
            w._write(b)
        finally:
            pool.put(b)
        w._after_write()
        if w._oldest is not None and rules.alone:
            w._make_durable()
        if seq >= 20:   # the first ones encode and open the journal
            times.append(cpu() - t)
    w._finish_file(clean=True)
    w._close_part()
    root.close()
    q = statistics.quantiles(times, n=4)
    taken = getattr(getattr(w, "_quiet", None), "taken", None)
    print(f"quiet snapshot, writer per call (thread CPU, cold): median {statistics.median(times) / 1e3:.1f} µs, "
          f"quartiles {q[0] / 1e3:.1f} / {q[2] / 1e3:.1f}, {len(times)} calls; compiled case taken: {taken}")


if __name__ == "__main__":
    main()
