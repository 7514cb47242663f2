"""Per-snapshot state counts and the snapshot list of a one-host, one-boot full recording,
counted in numpy from the few columns pyarrow decodes: what ``aggregate.summary`` answers
with, before it asks DuckDB.

Why not DuckDB here: its hash aggregate over (seq, state, kind) with the snapshot's clocks
costs ~1.4 s of CPU on the benchmarks' 76M-row hour, most of it hashing rows into 113k
groups. Within a row group a row's group is ``(seq - least seq) * states + state`` (the
state's dictionary index), a ``bincount`` away, and a snapshot's clocks are any of its
rows' (the recorder writes them on each): ~0.9-1.0 s of CPU there, on two threads (pyarrow
decodes and the numpy passes run without the GIL), half of it decoding the five columns.
Page CRCs are verified by pyarrow as it reads (``page_checksum_verification``), as the
piece-by-piece path does.

:func:`tally` returns None where it does not answer exactly (a null in a column it reads,
a timestamp not in ns, seqs spread too thin, an unreadable file): the caller then asks
DuckDB, whose own checks name a bad file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._schema import STATE_NAMES
from .dataset import Recording

__all__ = ["Tally", "tally", "THREADS", "StateBins", "state_bins"]

#: Threads decoding row groups (each holds one row group's five to eight columns).
THREADS = max(1, min(2, os.cpu_count() or 1))
_CODE = {name: i for i, name in enumerate(STATE_NAMES)}
#: Row groups per job (a job opens its file once).
GROUPS_PER_JOB = 8
# the widest (seq span x states) table one row group may count into; beyond it, DuckDB
_MAX_CELLS = 1 << 24


@dataclass
class Tally:
    """The snapshots (``seq`` ascending, each once: ``ts`` wall ns UTC, ``mono``, ``cap``,
    ``rows``: its connections, a family-0 row counting its ``inode``) and the
    ``kind`` "connection" rows per (``c_seq``, ``c_state``: a name, ``c_code``: its
    place in ``STATE_NAMES``): ``c_n``."""

    seq: np.ndarray
    ts: np.ndarray
    mono: np.ndarray
    cap: np.ndarray
    rows: np.ndarray
    c_seq: np.ndarray
    c_state: np.ndarray
    c_n: np.ndarray
    c_code: np.ndarray


class _Unfit(Exception):
    """This recording is not one :func:`tally` answers exactly."""


def _stat_one(md, col: str, value: Any) -> bool:
    """Whether every row group's statistics show ``col`` as only ``value``, never null."""
    names = [md.schema.column(k).path for k in range(md.num_columns)]
    if col not in names:
        return False
    k = names.index(col)
    for r in range(md.num_row_groups):
        st = md.row_group(r).column(k).statistics
        if st is None or not st.has_min_max or st.null_count != 0 or st.min != st.max:
            return False
        v = st.min.decode() if isinstance(st.min, bytes) else st.min
        if v != value:
            return False
    return True


def _no_zero(md, col: str, r: int) -> bool:
    """Whether row group ``r``'s statistics show ``col`` never 0 (nor null)."""
    names = [md.schema.column(k).path for k in range(md.num_columns)]
    st = md.row_group(r).column(names.index(col)).statistics
    return st is not None and st.has_min_max and st.null_count == 0 and st.min > 0


def _np(col) -> np.ndarray:
    """A chunked Arrow integer column without nulls as numpy, a view of its buffers where
    it has one chunk: pyarrow's ``to_numpy`` and ``pa.array`` import pandas (~0.2 s of
    CPU), which the states plot never needs."""
    import pyarrow as pa

    chunks = []
    for c in col.chunks:
        if not pa.types.is_integer(c.type):
            raise _Unfit(f"a {c.type} column")
        dt = np.dtype(f"{'i' if pa.types.is_signed_integer(c.type) else 'u'}{c.type.bit_width // 8}")
        chunks.append(np.frombuffer(c.buffers()[1], dt, len(c), c.offset * dt.itemsize))
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def _stats(md, r: int, k: int) -> tuple[int, int] | None:
    """(min, max) of the integer column at ``k`` in row group ``r`` from its statistics
    (None where they are missing or count nulls)."""
    st = md.row_group(r).column(k).statistics
    if st is None or not st.has_min_max or st.null_count != 0:
        return None
    return int(st.min), int(st.max)


def _ints(col) -> np.ndarray:
    """A chunked int or timestamp[ns] column without nulls as int64."""
    import pyarrow as pa

    if col.null_count:
        raise _Unfit("a null")
    if pa.types.is_timestamp(col.type):
        if col.type.unit != "ns":
            raise _Unfit("a timestamp not in ns")
        # the same 8 bytes a value: a view, not a cast (a copy, 0.06 s of CPU an hour)
        col = pa.chunked_array([c.view(pa.int64()) for c in col.chunks], pa.int64())
    a = _np(col)
    return a if a.dtype == np.int64 else a.astype(np.int64)


def _codes(col) -> tuple[np.ndarray, np.ndarray]:
    """A chunked string or dictionary column without nulls as (codes, their names)."""
    import pyarrow as pa

    if col.null_count:
        raise _Unfit("a null")
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    if col.num_chunks == 1:         # a row group's one dictionary: its indices are the codes
        ch = col.chunks[0]
        return _np(pa.chunked_array([ch.indices])), np.asarray(ch.dictionary.to_pylist(), object)
    names: dict[str, int] = {}
    out = []
    for ch in col.chunks:
        lut = np.array([names.setdefault(str(v), len(names)) for v in ch.dictionary.to_pylist()] or [0], np.int64)
        out.append(lut[_np(pa.chunked_array([ch.indices]))])
    return (np.concatenate(out) if out else np.zeros(0, np.int64)), np.asarray(list(names), object)


def _job(path: str, md, groups: list[int], lo_ns: int | None, hi_ns: int | None, all_conn: bool,
         clocks: bool = True):
    """The row groups ``groups`` of one file: per group, its snapshots' (seq, ts, mono,
    cap, rows) and its connection rows per (seq, state). Without ``clocks``, mono, cap
    and rows are 0 and their columns (and ``family``, ``inode``) are not read."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, metadata=md, page_checksum_verification=True)
    out = []
    # one key buffer for the job's row groups: a fresh 2 MB temporary per group costs a
    # page fault per 4 KiB (glibc hands such blocks back to the kernel when freed), which
    # was a quarter of this function's CPU
    buf = np.empty(0, np.int64)
    seq_at = [md.schema.column(i).path for i in range(md.num_columns)].index("seq")
    for r in groups:
        fam = clocks and not _no_zero(md, "family", r)
        cols = ["seq", "state", "timestamp"] + (["monotonic_ns", "capture_ns"] if clocks else []) \
            + ([] if all_conn else ["kind"]) + (["family", "inode"] if fam else [])
        t = pf.read_row_group(r, columns=cols, use_threads=False)
        if t.num_rows == 0:
            continue
        # numpy views of the decoded columns (the codes of the dictionary ones)
        ts = _ints(t.column("timestamp"))
        seq = _ints(t.column("seq"))
        state, labels = _codes(t.column("state"))
        conn = None if all_conn else _codes(t.column("kind"))
        if lo_ns is not None or hi_ns is not None:
            keep = np.ones(len(ts), bool)
            if lo_ns is not None:
                keep &= ts >= lo_ns
            if hi_ns is not None:
                keep &= ts < hi_ns
            if not keep.any():
                continue
        else:
            keep = None

        def kept(a: np.ndarray, keep=keep) -> np.ndarray:
            return a if keep is None or keep.all() else a[keep]

        ts, seq, state = kept(ts), kept(seq), kept(state)
        if conn is not None:
            conn = (kept(conn[0]), conn[1])
        # the seq range from the row group's statistics where every row counts (a pass
        # less over the rows each); the bincount below checks them
        st = _stats(md, r, seq_at) if keep is None else None
        lo, hi = st if st is not None else (int(seq.min()), int(seq.max()))
        span = hi - lo + 1
        k = max(1, len(labels))
        if span * k > _MAX_CELLS:
            raise _Unfit("seqs spread too thin")
        if len(buf) < len(seq):
            buf = np.empty(len(seq), np.int64)
        key = np.subtract(seq, lo, out=buf[:len(seq)])
        np.multiply(key, k, out=key)
        np.add(key, state, out=key)
        if conn is None:
            cnt = np.bincount(key, minlength=span * k)
            per = cnt.reshape(span, k).sum(axis=1)
        else:
            is_conn = conn[1] == "connection"
            cnt = np.bincount(key[is_conn[conn[0]]], minlength=span * k)
            per = np.bincount(seq - lo, minlength=span)
        del key
        if len(cnt) != span * k or len(per) != span:
            raise _Unfit("a seq outside its row group's statistics")
        present = np.flatnonzero(per)
        rows = per[present].astype(np.int64)
        # a row of each snapshot, for its clocks (the same on each of its rows): where it
        # starts if the rows are in seq order (checked), else its first row
        at = np.cumsum(per)[present] - rows
        if not (seq[at] == lo + present).all():
            at = np.unique(seq, return_index=True)[1]
        if fam:
            f = kept(_ints(t.column("family"))) == 0
            if f.any():
                ino = t.column("inode")
                if ino.null_count and kept(np.asarray(ino.is_null().to_pylist(), bool))[f].any():
                    raise _Unfit("an empty snapshot's row without its count")
                fix = np.zeros(span, np.int64)
                np.add.at(fix, seq[f] - lo, kept(_np(ino.fill_null(0))).astype(np.int64)[f] - 1)
                rows += fix[present]            # a family-0 row counts its inode, not 1
        nz = np.flatnonzero(cnt)
        # the states as their place in STATE_NAMES (a dozen labels a row group): no string
        # per (snapshot, state) pair is sorted or looked up
        code = np.array([_CODE.get(str(x), -1) for x in labels] or [-1], np.int64)[nz % k]
        if (code < 0).any():
            raise _Unfit("a state tcpsnap does not name")
        if clocks:
            mono, cap = kept(_ints(t.column("monotonic_ns")))[at], kept(_ints(t.column("capture_ns")))[at]
        else:
            mono = cap = rows = np.zeros(len(present), np.int64)
        out.append((lo + present, ts[at], mono, cap, rows, lo + nz // k, code, cnt[nz].astype(np.int64)))
    return out


def _pooled(run, jobs: list, wait: Any) -> list:
    """``[run(j) for j in jobs]`` on ``THREADS`` threads taking the next job as they
    finish one, all but the first from when ``wait`` (if given) is set; the first error
    stops them all and is raised."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    out: list = [None] * len(jobs)
    lock = threading.Lock()
    left = list(range(len(jobs) - 1, -1, -1))
    failed = threading.Event()

    def take() -> int | None:
        with lock:
            return None if failed.is_set() or not left else left.pop()

    def worker(first: bool) -> None:
        if not first and wait is not None:
            while not wait.wait(0.005):         # never set (the caller failed): done with the jobs
                with lock:
                    if not left or failed.is_set():
                        return
        while (i := take()) is not None:
            try:
                out[i] = run(jobs[i])
            except BaseException:
                failed.set()
                raise

    with ThreadPoolExecutor(THREADS, thread_name_prefix="tcpsnap-tally") as pool:
        for f in [pool.submit(worker, n == 0) for n in range(THREADS)]:
            f.result()
    return out


def tally(rec: Recording, start_ns: int | None, end_ns: int | None, clocks: bool = True,
          wait: Any = None) -> Tally | None:
    """The :class:`Tally` of ``rec``'s rows with ``start_ns <= timestamp < end_ns`` (UTC ns;
    None: unbounded). None where it would not be exact (module docstring) or no row is
    in the range. ``rec``: files of one host and boot, full mode, schema 2 or later (the
    caller checks). ``clocks=False``: ``mono``, ``cap`` and ``rows`` are 0, their columns
    not read (what the states plot needs: two of five int64 columns fewer, ~40% of the
    decoding). ``wait``: a ``threading.Event``; until it is set, one thread counts (the
    caller's own thread is busy with Python then, ``plot`` importing matplotlib: a third
    runnable thread on two cores would only fight it for the GIL), then ``THREADS``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        mds = [pq.ParquetFile(f.path).metadata for f in rec.files]
        all_conn = all(_stat_one(md, "kind", "connection") for md in mds)
        jobs = [(f.path, md, list(range(md.num_row_groups))[i:i + GROUPS_PER_JOB])
                for f, md in zip(rec.files, mds, strict=True) for i in range(0, md.num_row_groups, GROUPS_PER_JOB)]

        def run(job):
            return _job(job[0], job[1], job[2], start_ns, end_ns, all_conn, clocks)

        if THREADS > 1 and len(jobs) > 1:
            parts = [p for got in _pooled(run, jobs, wait) for p in got]
        else:
            parts = [p for j in jobs for p in run(j)]
    except (_Unfit, pa.ArrowException, OSError, ValueError):
        return None
    if not parts:
        return None
    cols = list(zip(*parts, strict=True))
    pseq, ts, mono, cap, prow, cseq, cstate, cn = (np.concatenate(c) for c in cols)
    # a snapshot split over two row groups (or files) is one: its first part's clocks
    # (the same on each of its rows), its rows summed
    o = np.argsort(pseq, kind="stable")
    first = np.ones(len(o), bool)
    first[1:] = pseq[o][1:] != pseq[o][:-1]
    seq, ts, mono, cap = pseq[o][first], ts[o][first], mono[o][first], cap[o][first]
    rows = np.zeros(len(seq), np.int64)
    np.add.at(rows, np.searchsorted(seq, pseq), prow)
    # the (seq, state) counts of all row groups, each pair once, by seq
    k = len(STATE_NAMES)
    lo = int(seq[0])
    uk, inv = np.unique((cseq - lo) * k + cstate, return_inverse=True)
    n = np.zeros(len(uk), np.int64)
    np.add.at(n, inv.reshape(-1), cn)
    return Tally(seq, ts, mono, cap, rows, uk // k + lo, np.asarray(STATE_NAMES, object)[uk % k], n, uk % k)


#: UTC days (ns): pandas' ``resample`` cuts bins from the first timestamp's midnight.
_DAY = 86_400 * 10**9


@dataclass
class StateBins:
    """A states plot's data, as ``analysis.state_counts(rec, freq)`` gives it for one
    host, in numpy: ``start`` (int64 UTC ns) the kept bins' starts, ``width`` the bin
    width (ns), ``states`` the states with a connection in some snapshot (in
    ``STATE_NAMES`` order), ``mean`` (float64, bins x states) the mean connections per
    snapshot of each bin, a row of NaN where no snapshot was taken (a gap)."""

    start: np.ndarray
    width: int
    states: list[str]
    mean: np.ndarray


def state_bins(t: Tally, width: int) -> StateBins:
    """``t``'s per-snapshot state counts binned by ``width`` ns: the bins, gaps and kept
    bins of ``_timeline.Timeline.bins`` (one host) and the per-bin means of
    ``_frames.counts_frame`` (integer sums, so the same floats), without pandas: what
    ``tcpsnap plot --kind states`` draws. ``ValueError`` if ``width`` <= 0."""
    if width <= 0:
        raise ValueError(f"bin width must be more than 0 ns, not {width}")
    ts = t.ts
    first, last = int(ts.min()), int(ts.max())
    # pandas' resample (origin "start_day", closed and labelled left) in the recording's
    # zone, UTC: bins from the first timestamp's midnight, every width, the first bin the
    # one holding the first snapshot, the last the one holding the last
    origin = first - first % _DAY
    lo = first - (first - origin) % width
    nb = (last - lo) // width + 1
    sbin = (ts - lo) // width
    # a bin with no snapshot between two consecutive ones (by seq, the wall clock going
    # forward) is a gap; one the clock never went through (stepped back) is left out
    has = np.zeros(nb, bool)
    has[sbin] = True
    fwd = ts[1:] > ts[:-1]
    d = np.bincount(sbin[:-1][fwd], minlength=nb + 1) - np.bincount(sbin[1:][fwd] + 1, minlength=nb + 1)
    covered = (np.cumsum(d)[:nb] > 0) | has
    nan = ~has
    sc = t.c_code
    present = np.flatnonzero(np.bincount(sc, minlength=len(STATE_NAMES)))
    col = np.full(len(STATE_NAMES), -1, np.int64)
    col[present] = np.arange(len(present))
    at = sbin[np.searchsorted(t.seq, t.c_seq)]
    k = max(1, len(present))
    sums = np.bincount(at * k + col[sc], weights=t.c_n.astype(np.float64), minlength=nb * k)
    snaps = np.bincount(sbin, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.reshape(nb, k)[:, :len(present)] / snaps[:, None]
    mean[nan] = np.nan
    keep = np.flatnonzero(covered)
    return StateBins(lo + keep * width, width, [STATE_NAMES[i] for i in present], mean[keep])
