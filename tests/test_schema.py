"""ROW_DTYPE is the C struct, byte for byte; TcpState has the MIB numbering."""

import numpy as np

import tcpsnap
from tcpsnap import ROW_DTYPE, TcpState
from tcpsnap._mib import row_layout


def test_dtype_matches_compiled_struct():
    layout = row_layout()
    assert ROW_DTYPE.itemsize == layout.pop("itemsize") == 96
    for name, offset in layout.items():
        assert ROW_DTYPE.fields[name][1] == offset, name
    assert set(layout) == set(ROW_DTYPE.names)


def test_dtype_fields_and_sizes():
    f = ROW_DTYPE.fields
    assert f["local_addr"][0].shape == (16,) and f["remote_addr"][0].shape == (16,)
    for name, size in [("family", 1), ("state", 1), ("local_port", 2), ("remote_port", 2),
                       ("pid", 4), ("uid", 4), ("local_scope_id", 4), ("remote_scope_id", 4),
                       ("rx_queue", 4), ("tx_queue", 4), ("inode", 8), ("cookie", 8), ("cgroup_id", 8), ("netns", 8),
                       ("offload_state", 1)]:
        assert f[name][0].itemsize == size, name
        assert f[name][0].kind == "u", name


def test_tcpstate_mib_numbering():
    expected = ["CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "FIN_WAIT1",
                "FIN_WAIT2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT", "DELETE_TCB"]
    assert [(s.name, s.value) for s in TcpState] == list(zip(expected, range(1, 13)))


def test_public_api_is_explicit():
    for name in tcpsnap.__all__:
        assert hasattr(tcpsnap, name), name
    assert "Snapshotter" in tcpsnap.__all__ and "ROW_DTYPE" in tcpsnap.__all__


def test_to_pandas_empty_and_types():
    df = tcpsnap.to_pandas(np.zeros(0, ROW_DTYPE))
    assert len(df) == 0 and "state" in df and "local_addr" in df
