"""Recordings of schema version 2 (before the attribution and namespace columns) stay
readable, alone and with schema version 3 files recorded after them in the same folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import tcpsnap
from tcpsnap.reading import open_recording

V2 = Path(__file__).resolve().parent / "fixtures" / "v2"
V3_COLUMNS = ["cgroup_id", "cgroup", "container", "pod_uid", "netns"]


@pytest.mark.parametrize("mode", ["full", "changes"])
def test_v2_recordings_read_with_the_new_columns_null(mode):
    df = tcpsnap.read(V2 / mode)
    assert open_recording(V2 / mode).versions == [2]
    assert sorted(df.seq.unique()) == [0, 1, 2, 3, 4]
    assert df.groupby("seq").size().tolist() == [3] * 5          # listener, client, server
    assert sorted(df[df.seq == 0].state.astype(str)) == ["ESTABLISHED", "ESTABLISHED", "LISTEN"]
    for c in V3_COLUMNS:
        assert c in df and df[c].isna().all(), c


@pytest.mark.skipif(not tcpsnap.Snapshotter.backend == "netlink", reason="records on Linux")
def test_recording_goes_on_in_a_v2_folder(tmp_path):
    rec = tmp_path / "full"
    shutil.copytree(V2 / "full", rec)
    with tcpsnap.Recorder(rec, interval="50ms", pids=False) as r:
        r.run(duration=0.2)
    assert open_recording(rec).versions == [2, 3]
    df = tcpsnap.read(rec)
    old, new = df[df.seq <= 4], df[df.seq > 4]
    assert len(old) == 15 and len(new) > 0
    assert old[V3_COLUMNS].isna().all().all()
    assert new.netns.notna().all() and (new.netns != 0).all()
