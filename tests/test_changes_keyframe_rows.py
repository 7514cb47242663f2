"""A changes-mode keyframe's event rows are the table's rows byte for byte, in cookie
order (``ChangeTracker.step`` copies them as opaque items: issue 18, session 10)."""

import numpy as np

from tcpsnap import ROW_DTYPE, TcpState
from tcpsnap.record.changes import ChangeTracker


def _table(rng, n):
    t = np.zeros(n, ROW_DTYPE)
    t.view(np.uint8)[:] = rng.integers(0, 256, t.nbytes, dtype=np.uint8)   # every byte set
    t["family"] = rng.choice([2, 10], n)
    t["state"] = rng.choice([int(TcpState.ESTABLISHED), int(TcpState.LISTEN), int(TcpState.TIME_WAIT)], n)
    t["cookie"] = rng.permutation(np.arange(1, n + 1, dtype=np.uint64) * 7919)
    return t


def test_keyframe_rows_are_the_table_in_cookie_order_byte_for_byte():
    rng = np.random.default_rng(18)
    tr = ChangeTracker(0)                   # every snapshot a keyframe
    t0 = _table(rng, 3000)
    t1 = t0.copy()
    t1[:100] = _table(rng, 3000)[:100]      # 100 rows changed in every field but the cookie
    t1["cookie"][:100] = t0["cookie"][:100]
    for k, t in enumerate((t0, t0, t1, t0)):
        out, names, (events, seen, ts) = tr.step(t, None, 10**18 + k, k, 0)
        assert names is None
        # the marker, the rows t1 replaced (when their identity changed: closed), every row
        assert len(t) + 1 <= len(out) <= len(t) + 101 and seen.all()
        body = out[len(out) - len(t):]
        want = t[np.argsort(t["cookie"], kind="stable")]
        assert body.tobytes() == want.tobytes()
        assert out[0]["inode"] == len(t) and out[0]["family"] == 0
