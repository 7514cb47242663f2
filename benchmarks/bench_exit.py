"""How often a process aborts or hangs at exit while pyarrow's IO threads are still busy
(apache/arrow#34314), ended by the interpreter's own exit or by ``tcpsnap.cli.exit_process``.

The child scans a folder of 32 Parquet files through a Python filesystem (each file opened
by Python code on one of Arrow's IO threads, as a ``PyFileSystem`` or a Python file object
makes it), takes the first batch and exits with the scan's readahead still running. Both
ways alternate, the order swapped every round; ``--busy N`` runs N busy loops beside them
(started here, killed by pid). Outcomes: ``ok`` (status 0, nothing on stderr), ``abort``
(SIGABRT: "terminate called without an active exception" or "Fatal Python error"),
``hang`` (still running after ``--timeout`` seconds: killed), ``other``.

    python3 benchmarks/bench_exit.py --rounds 10 --busy 2
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results

CHILD = r"""
import sys, time
import fsspec, pyarrow.dataset as ds, pyarrow.fs as pfs

class Slow(pfs.FSSpecHandler):
    def open_input_file(self, path):
        time.sleep(0.05)
        return super().open_input_file(path)

fs = pfs.PyFileSystem(Slow(fsspec.filesystem("file")))
it = ds.dataset(sys.argv[1], format="parquet", filesystem=fs).to_batches(batch_size=1000)
next(it)
if sys.argv[2] == "exit_process":
    from tcpsnap.cli import exit_process
    exit_process(0)
sys.exit(0)
"""


def _files(d: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    for i in range(32):
        pq.write_table(pa.table({"a": rng.integers(0, 1 << 40, 100_000), "b": rng.random(100_000)}),
                       d / f"f{i:02d}.parquet", row_group_size=10_000)


def _one(python: str, d: Path, how: str, timeout: float) -> str:
    p = subprocess.Popen([python, "-c", CHILD, str(d), how], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return "hang"
    if p.returncode == 0 and not err:
        return "ok"
    if p.returncode == -signal.SIGABRT:
        return "abort"
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--busy", type=int, default=0, help="busy loops beside the runs")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a run counts as hung")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the children (its tcpsnap)")
    ap.add_argument("--ways", default="interpreter,exit_process")
    _results.add_json_argument(ap)
    args = ap.parse_args(argv)
    run = _results.Run("bench_exit", args.json, argv)
    ways = args.ways.split(",")
    busy = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(args.busy)]
    got: dict[str, Counter] = {w: Counter() for w in ways}
    load = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _files(Path(tmp))
            for r in range(args.rounds):
                for w in (ways if r % 2 == 0 else ways[::-1]):
                    got[w][_one(args.python, Path(tmp), w, args.timeout)] += 1
                load.append(os.getloadavg()[0])
    finally:
        for b in busy:
            b.kill()
            b.wait()
    res = {w: dict(c) for w, c in got.items()}
    run.write({"rounds": args.rounds, "busy": args.busy, "python": args.python, "outcomes": res,
               "load_1min": [min(load), max(load)], "at": time.strftime("%H:%M:%S", time.gmtime())})
    print(f"Command: `{run.command}` (load {min(load):.1f}-{max(load):.1f})")
    for w, c in res.items():
        print(f"{w:14} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
