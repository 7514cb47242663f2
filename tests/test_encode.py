"""The writer's transpose (``tcpsnap._encode.split``): every field of every row, exactly
as numpy reads it, into one contiguous array per column."""

from __future__ import annotations

import numpy as np
import pytest

from tcpsnap._arrow import _SPLIT
from tcpsnap._encode import split
from tcpsnap._schema import ROW_DTYPE


def _random_rows(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, ROW_DTYPE)
    rows.view(np.uint8)[:] = rng.integers(0, 256, n * ROW_DTYPE.itemsize, dtype=np.uint8)
    return rows


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 1000, 70_001])
def test_split_equals_numpy_field_by_field(n):
    rows = _random_rows(n)
    got = split(rows, _SPLIT)
    assert list(got) == [f[0] for f in _SPLIT]
    for name, _off, dt in _SPLIT:
        if name.endswith("4"):  # an address's first 4 bytes as one little-endian uint32
            want = rows[name[:-1]][:, :4].copy().view("<u4").reshape(n)
        else:
            want = rows[name]
        a = got[name]
        assert a.flags.c_contiguous and a.dtype == np.dtype(dt).base and a.shape == want.shape
        assert np.array_equal(a, want), name


def test_split_of_a_strided_view_and_a_field_at_the_row_end():
    rows = _random_rows(999)
    view = rows[::3]  # not contiguous: copied first, same values
    got = split(view, [("netns", 88, "<u8"), ("local_addr", 8, ("u1", (16,)))])
    assert np.array_equal(got["netns"], view["netns"])
    assert np.array_equal(got["local_addr"], view["local_addr"])


def test_split_columns_do_not_share_bytes():
    rows = _random_rows(300)
    got = split(rows, _SPLIT)
    got["inode"][:] = 0
    got["pid"][:] = 0
    assert np.array_equal(got["cookie"], rows["cookie"]) and np.array_equal(got["uid"], rows["uid"])


@pytest.mark.parametrize("fields, exc", [
    ([("x", 90, "<u8")], ValueError),            # past the 96-byte row
    ([("x", -1, "u1")], ValueError),
    ([(f"f{i}", 0, "u1") for i in range(65)], ValueError),
])
def test_split_bad_fields(fields, exc):
    with pytest.raises(exc):
        split(_random_rows(4), fields)


def test_split_bad_rows():
    with pytest.raises(TypeError):
        split(np.zeros(4, np.uint64), _SPLIT)
    with pytest.raises(ValueError):
        split(np.zeros((2, 2), ROW_DTYPE), _SPLIT)


@pytest.mark.parametrize("dtype, n, distinct", [(np.uint32, 100_000, 50), (np.uint64, 50_000, 3),
                                                (np.uint32, 200_000, 150_000), (np.uint64, 1, 1)])
def test_dictionary_encode_equals_arrows(dtype, n, distinct):
    import pyarrow as pa
    import pyarrow.compute as pc

    from tcpsnap._encode import dictionary_encode

    keys = np.random.default_rng(3).integers(0, distinct, n).astype(dtype)
    first, codes = dictionary_encode(keys)
    want = pc.dictionary_encode(pa.array(keys))
    assert first.dtype == np.int64 and codes.dtype == np.int32
    assert np.array_equal(keys[first], want.dictionary.to_numpy())  # first-occurrence order
    assert np.array_equal(codes, want.indices.to_numpy())


def test_dictionary_encode_of_byte_keys():
    from tcpsnap._encode import dictionary_encode

    keys = np.zeros((5000, 17), np.uint8)
    keys[:, 0] = 6
    keys[::3, 16] = 1
    keys[::5, 1] = 0xFE
    first, codes = dictionary_encode(keys)
    assert len(first) == 4 and np.array_equal(keys[first][codes], keys)
    assert list(first) == [0, 1, 3, 5]
    assert dictionary_encode(np.zeros(0, np.uint32))[0].size == 0
    with pytest.raises(ValueError):
        dictionary_encode(np.zeros(10, np.uint64)[::2])
