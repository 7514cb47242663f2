"""The row group store's compiled copies (``tcpsnap._rowstore``, used by
``record.rowgroup.RowGroupStore.append`` and ``repeat_row``): the rows they leave are the
rows the encoders encode, also over a row group whose columns held other values before
(a zero is written where the column was written, and only there), and bad arguments are
errors, not stray writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tcpsnap._events import EV_OPENED, EV_SNAPSHOT
from tcpsnap._rowstore import Columns, put_columns, repeat_row, spread
from tcpsnap.record.changes import ChangesEncoder, build_schema
from tcpsnap.record.markers import PER_SNAPSHOT
from tcpsnap.record.rowgroup import RowGroupStore
from test_rowgroup import rows_of


def test_put_columns_writes_zeros_only_where_the_column_was_written():
    dst = [np.zeros(8, np.uint32), np.zeros(8, np.uint16)]
    dirty = [0, 0]
    put_columns(dst, dirty, [0, 1], [np.array([1, 2, 3], np.uint32), np.zeros(3, np.uint16)], 2)
    assert dst[0].tolist() == [0, 0, 1, 2, 3, 0, 0, 0] and dst[1].tolist() == [0] * 8
    assert dirty == [5, 0]                    # the zeros of column 1 were not written
    put_columns(dst, dirty, [0], [np.zeros(4, np.uint32)], 3)   # over rows 3, 4 (written) and 5, 6
    assert dst[0].tolist() == [0, 0, 1, 0, 0, 0, 0, 0] and dirty == [5, 0]
    put_columns(dst, dirty, [1, 0], [np.array([0, 7], np.uint16), np.array([9, 9], np.uint32)], 6)
    assert dst[1].tolist() == [0] * 7 + [7] and dst[0].tolist() == [0, 0, 1, 0, 0, 0, 9, 9]
    assert dirty == [8, 8]


@pytest.mark.parametrize("bad", [
    ([np.zeros(3, np.uint32)], [0], "values for"),                  # another length than the first
    ([np.zeros(2, np.uint64)], [0], "itemsize"),                    # another width
    ([np.zeros(9, np.uint32)], [0], "outside"),                     # past the column's end
    ([np.zeros((2, 2), np.uint32)], [0], "shape"),
])
def test_put_columns_refuses_what_does_not_fit(bad):
    src, index, says = bad
    dst = [np.zeros(8, np.uint32), np.zeros(8, np.uint32)]
    dirty = [0, 0]
    srcs = [np.ones(2, np.uint32), *src] if says == "values for" else src
    idx = [1, *index] if says == "values for" else index
    with pytest.raises(ValueError, match=says):
        put_columns(dst, dirty, idx, srcs, 0)
    assert not dst[0].any() and not dst[1].any() and dirty == [0, 0]


def _marker(enc: ChangesEncoder, pid: int, seq: int, t: int) -> tuple:
    rows = rows_of(1, 5, pid=pid)  # the same marker each time but for its clocks and seq
    rows["family"] = 0
    a = (rows, np.array([1]), np.array([t]), np.array([seq]), np.array([seq * 3]),
         np.array([0 if pid else -1], np.int32), ["p"] if pid else [])
    return a, (np.array([EV_SNAPSHOT], np.uint8), np.array([False]), np.array([t], np.int64))


def test_repeated_markers_are_the_rows_append_would_give_over_an_earlier_row_group():
    schema = build_schema()
    enc = ChangesEncoder(schema, "h", "b")
    per_snapshot = tuple(c for c in PER_SNAPSHOT if c != "timestamp")
    st = RowGroupStore(schema, 64, per_snapshot)
    # a row group of other rows first: every column written with values that are not 0
    rows = rows_of(40, 3, pid=7)
    ev = np.full(40, EV_OPENED, np.uint8)
    a = (rows, np.array([40]), np.array([5]), np.array([1]), np.array([2]), np.zeros(40, np.int32), ["x"])
    st.append(enc.parts(*a, ev, np.ones(40, bool), np.arange(40, dtype=np.int64) + 9), 40, a[1], a[3])
    st.reset()
    enc.reset()
    for pid in (0, 42):                         # a marker of zeros (and no process), then not
        ref = ChangesEncoder(schema, "h", "b")
        want = []
        first, extra = _marker(enc, pid, 100, 1_700_000_000_000_000_000)
        st.append(enc.parts(*first, *extra), 1, first[1], first[3])
        want.append(ref.encode(*first, *extra))
        row = st.rows - 1
        for k in range(1, 6):
            seq, t = 100 + k, 1_700_000_000_000_000_000 + k * 10**9
            st.repeat_row(row, {"timestamp": t, "seq": seq, "capture_ns": seq * 3,
                                "monotonic_ns": 0}, seq)
            a, x = _marker(ref, pid, seq, t)
            want.append(ref.encode(*a, *x))
        got = pa.Table.from_batches([st.batch(row, st.rows)])
        expect = pa.Table.from_batches(want)
        assert got.to_pylist() == expect.to_pylist()
        assert got.column("pid").to_pylist() == [pid] * 6
        assert got.column("process").null_count == (6 if pid == 0 else 0)
        st.reset()
        enc.reset()


def test_repeat_row_refuses_rows_outside_and_given_values_of_another_width():
    def run(cols, dirty, given, row, r, valid=(None, None)):
        repeat_row(Columns(cols), dirty, Columns(list(valid)), [0, 0], given, row, r)

    cols = [np.arange(4, dtype=np.int64), np.arange(4, dtype=np.uint16)]
    with pytest.raises(ValueError, match="outside"):
        run(cols, [4, 4], [None, None], 4, 1)
    with pytest.raises(ValueError, match="8-byte"):
        run(cols, [4, 4], [None, 5], 0, 1)
    with pytest.raises(ValueError, match="outside"):
        run(cols, [4, 4], [None, None], 0, 2, (None, np.ones(2, bool)))
    assert cols[0].tolist() == [0, 1, 2, 3] and cols[1].tolist() == [0, 1, 2, 3]  # checked first
    run(cols, [3, 3], [0, None], 3, 2)
    # a given 0 where the column was written; row 3's value copied (not 0)
    assert cols[0].tolist() == [0, 1, 0, 3] and cols[1].tolist() == [0, 1, 3, 3]
    dirty = [0, 0]
    z = [np.zeros(4, np.int64), np.zeros(4, np.uint16)]
    run(z, dirty, [0, None], 0, 3)
    assert dirty == [0, 0]                      # zeros over zeros: nothing written
    with pytest.raises(ValueError):
        Columns([np.zeros((2, 2))])


def test_spread_is_the_repeat_of_each_snapshots_value_over_its_rows():
    rng = np.random.default_rng(3)
    for _ in range(300):
        k = int(rng.integers(1, 12))
        counts = rng.integers(0, 5, k)               # empty snapshots too
        counts[-1] = max(counts[-1], 1)
        ends = np.cumsum(counts).astype(np.int64)
        values = rng.integers(-2**62, 2**62, k + 3)  # room past the snapshots held, as the store's
        every = np.repeat(values[:k], counts)
        start = int(rng.integers(0, ends[-1] + 1))
        stop = int(rng.integers(start, ends[-1] + 1))
        out = np.full(stop - start, 7, np.int64)
        spread(values, np.concatenate([ends, [0, 0]]), k, start, stop, out)
        assert out.tolist() == every[start:stop].tolist()
    with pytest.raises(ValueError, match="past the last"):
        spread(np.zeros(2, np.int64), np.array([2, 4]), 2, 3, 5, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="into"):
        spread(np.zeros(2, np.int64), np.array([2, 4]), 2, 0, 3, np.zeros(2, np.int64))
