"""Reading a shipped fleet: three simulated hosts (cookies colliding on purpose) shipped to a
real moto server on 127.0.0.1, read back from S3 with pyarrow, DuckDB, polars and dask,
and from a local copy of the layout with tcpsnap.read and Spark: the same rows per host,
and the same connections and lifetimes as each host's own recording gives."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

import tcpsnap
import tcpsnap._host
from _recordings import record_at, v1_tables
from _s3 import BUCKET, CREDS, Moto
from tcpsnap.analysis import lifetimes
from tcpsnap.cli import main
from tcpsnap.ship.fleet import dataset, partition_filter, s3_filesystem
from tcpsnap.ship.fleet import read as fleet_read

HOSTS = ("web-1", "web-2", "db-1")
URL = f"s3://{BUCKET}/tcpsnap"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """(moto, {host: local recording}): each host recorded the same scripted tables (so
    the same cookies), web-2 from one boot, db-1 with a CLOSE_WAIT more, all shipped."""
    mp = pytest.MonkeyPatch()
    for k, v in CREDS.items():
        mp.setenv(k, v)
    tmp = tmp_path_factory.mktemp("fleet")
    m = Moto(log=tmp / "moto.log")
    try:
        m.client().create_bucket(Bucket=BUCKET)
        recs = {}
        for i, h in enumerate(HOSTS):
            with pytest.MonkeyPatch.context() as p:
                p.setattr(socket, "gethostname", lambda h=h: h)
                p.setattr(tcpsnap._host, "boot_id", lambda h=h: f"boot-{h}")
                tables = v1_tables()
                if h == "db-1":   # its CLOSE_WAIT stays, snapshot after snapshot
                    tables = tables + [tables[-1]] * 4
                record_at(tmp / h, tables, first_slot=i, rotate="0.3s")
            recs[h] = tmp / h
            assert main(["ship", str(tmp / h), URL, "--endpoint-url", m.url, "-q"]) == 0
        yield m, recs, tmp
    finally:
        m.stop()
        mp.undo()


def _per_host(df, key="host"):
    return {h: sorted(zip(g["seq"].tolist(), g["cookie"].tolist())) for h, g in df.groupby(key)}


@pytest.fixture(scope="module")
def expected(fleet):
    _, recs, _ = fleet
    out = {}
    for h, path in recs.items():
        df = tcpsnap.read(path)
        conns = df[df["kind"] == "connection"] if "kind" in df else df
        out[h] = sorted(zip(conns["seq"].tolist(), conns["cookie"].tolist()))
    return out


def _conn_rows(table):
    import pyarrow.compute as pc

    return table.filter(pc.equal(table["kind"].cast("string"), "connection"))


def test_pyarrow_dataset_from_s3(fleet, expected):
    m, _, _ = fleet
    t = _conn_rows(dataset(URL, endpoint_url=m.url).to_table(columns=["host", "seq", "cookie", "kind"]))
    assert _per_host(t.to_pandas()) == expected


def test_partition_pruning_opens_only_one_hosts_objects(fleet, expected):
    m, _, _ = fleet
    d = dataset(URL, endpoint_url=m.url)
    f = partition_filter(hosts=["web-2"], start="2026-11-18T00:00:00Z", end="2026-11-18")
    frags = [fr.path for fr in d.get_fragments(filter=f)]
    assert frags and all("/host=web-2/" in p for p in frags)
    assert len(frags) == len([p for p in d.files if "/host=web-2/" in p])
    t = _conn_rows(d.to_table(filter=f, columns=["host", "seq", "cookie", "kind"]))
    assert _per_host(t.to_pandas()) == {"web-2": expected["web-2"]}
    assert list(d.get_fragments(filter=partition_filter(start="2026-11-19"))) == []


def test_duckdb_on_the_s3_dataset_which_hosts_leak_close_wait(fleet):
    """The README's fleet question, in DuckDB SQL over the S3 dataset."""
    duckdb = pytest.importorskip("duckdb")
    m, _, _ = fleet
    fleet_ds = dataset(URL, endpoint_url=m.url)  # noqa: F841 - DuckDB finds it by name
    con = duckdb.connect()
    rows = con.sql("""
        SELECT host, count(DISTINCT cookie) AS close_wait_conns,
               max(seq) - min(seq) + 1 AS snapshots_seen
        FROM fleet_ds
        WHERE kind = 'connection' AND state = 'CLOSE_WAIT'
        GROUP BY host HAVING count(*) >= 3
        ORDER BY close_wait_conns DESC, host
    """).fetchall()
    assert rows == [("db-1", 1, 5)]
    counts = dict(con.sql("SELECT host, count(*) FROM fleet_ds WHERE kind = 'connection' "
                          "GROUP BY host").fetchall())
    assert counts == {"web-1": 18, "web-2": 18, "db-1": 18 + 4 * 2}


def test_polars_from_s3(fleet, expected):
    pl = pytest.importorskip("polars")
    m, _, _ = fleet
    df = (pl.scan_parquet(f"{URL}/**/*.parquet", hive_partitioning=True,
                          storage_options={"aws_endpoint_url": m.url, "aws_region": "us-east-1",
                                           "aws_allow_http": "true", **{k.lower(): v for k, v in CREDS.items()
                                                                         if k.endswith("KEY_ID") or k.endswith("KEY")}})
          .filter(pl.col("kind") == "connection").select("host", "seq", "cookie").collect())
    assert _per_host(df.to_pandas()) == expected


def test_dask_from_s3_gives_the_same_lifetimes(fleet, expected):
    dd = pytest.importorskip("dask.dataframe")
    m, recs, _ = fleet
    ddf = dd.read_parquet(f"{BUCKET}/tcpsnap", filesystem=s3_filesystem(m.url),
                          dataset={"partitioning": {"flavor": "hive", "schema": None}},
                          columns=["host", "seq", "cookie", "kind"])
    df = ddf[ddf["kind"] == "connection"].compute()
    assert _per_host(df) == expected


def test_tcpsnap_read_on_a_local_copy_gives_each_hosts_lifetimes(fleet):
    """``aws s3 sync`` of the layout, then tcpsnap.read: the lifetimes of each host are
    exactly those of its own recording."""
    m, recs, tmp = fleet
    c = m.client()
    local = tmp / "copy"
    for o in c.list_objects_v2(Bucket=BUCKET, Prefix="tcpsnap/")["Contents"]:
        dst = local / o["Key"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        c.download_file(BUCKET, o["Key"], str(dst))
    df = tcpsnap.read(local / "tcpsnap")
    life = lifetimes(df).sort_values(["host", "cookie"]).reset_index(drop=True)
    for h, path in recs.items():
        mine = lifetimes(tcpsnap.read(path)).sort_values("cookie").reset_index(drop=True)
        theirs = life[life["host"] == h].reset_index(drop=True)
        cols = ["cookie", "first_seen", "last_seen", "duration", "snapshots", "states"]
        assert theirs[cols].to_dict("list") == mine[cols].to_dict("list")
    shutil.rmtree(local)


def test_spark_reads_a_local_copy_and_counts_the_same(fleet, expected):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no Java for Spark")
    m, _, tmp = fleet
    c = m.client()
    local = tmp / "spark-copy"
    for o in c.list_objects_v2(Bucket=BUCKET, Prefix="tcpsnap/")["Contents"]:
        dst = local / o["Key"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        c.download_file(BUCKET, o["Key"], str(dst))
    script = Path(__file__).with_name("_spark_fleet.py")
    r = subprocess.run([sys.executable, str(script), str(local / "tcpsnap")], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {}
    for line in r.stdout.splitlines():
        h, n, d = line.split()
        got[h] = (int(n), int(d))
    assert got == {h: (len(v), len({c for _, c in v})) for h, v in expected.items()}


def _copy(m, dst, host=None):
    """Download the shipped layout (only ``host``'s objects if given) under ``dst``."""
    c = m.client()
    for o in c.list_objects_v2(Bucket=BUCKET, Prefix="tcpsnap/")["Contents"]:
        if host is None or f"/host={host}/" in o["Key"]:
            d = dst / o["Key"]
            d.parent.mkdir(parents=True, exist_ok=True)
            c.download_file(BUCKET, o["Key"], str(d))
    return dst / "tcpsnap"


def test_fleet_read_is_tcpsnap_read_of_a_local_copy(fleet):
    import pandas.testing as pdt

    m, _, tmp = fleet
    local = _copy(m, tmp / "read-all")
    pdt.assert_frame_equal(fleet_read(URL, endpoint_url=m.url), tcpsnap.read(local))
    pdt.assert_frame_equal(fleet_read(str(local)), tcpsnap.read(local))   # the local layout too
    one = fleet_read(str(local), hosts="db-1")
    assert set(one["host"].unique()) == {"db-1"} and len(one) == 18 + 4 * 2
    shutil.rmtree(tmp / "read-all")


def test_fleet_read_of_one_hosts_hour_fetches_only_that_hosts_objects(fleet):
    """Counted on the server (moto's request log): reading web-2's hour out of the fleet
    GETs web-2's objects and no other host's, and gives the frame tcpsnap.read gives for
    a local copy of web-2's part of the layout."""
    import pandas as pd
    import pandas.testing as pdt

    m, recs, tmp = fleet
    ts = tcpsnap.read(recs["web-2"])["timestamp"]
    start = ts.min().floor("h")
    end = start + pd.Timedelta(hours=1)
    keys = {o["Key"] for o in m.client().list_objects_v2(Bucket=BUCKET, Prefix="tcpsnap/")["Contents"]}
    web2 = {k for k in keys if "/host=web-2/" in k}
    assert web2 and len(web2) < len(keys)
    since = m.log_size()
    got = fleet_read(URL, hosts=["web-2"], start=start, end=end, endpoint_url=m.url)
    reqs = [(meth, p.removeprefix(f"/{BUCKET}/")) for meth, p in m.requests(since)]
    touched = {p for _, p in reqs if p in keys}     # HEAD or GET of an object
    assert touched == {p for meth, p in reqs if meth == "GET" and p in keys} == web2
    local = _copy(m, tmp / "read-web2", host="web-2")
    pdt.assert_frame_equal(got, tcpsnap.read(local, start=start, end=end))
    assert set(got["host"].unique()) == {"web-2"}
    shutil.rmtree(tmp / "read-web2")


def test_fleet_read_with_no_matching_file_is_a_usage_error(fleet):
    m, _, _ = fleet
    with pytest.raises(ValueError, match="no shipped file"):
        fleet_read(URL, hosts=["nobody"], endpoint_url=m.url)


def test_lifetimes_and_state_counts_on_a_dask_local_cluster_equal_pandas(fleet):
    """The analysis functions, one task per host on a LocalCluster of 2 worker processes,
    give exactly what they give on the whole fleet's frame in pandas."""
    distributed = pytest.importorskip("dask.distributed")
    from functools import partial

    import pandas as pd

    from tcpsnap.analysis import state_counts
    from tcpsnap.ship.fleet import host_names, per_host, sum_bins

    m, _, tmp = fleet
    assert host_names(URL, endpoint_url=m.url) == sorted(HOSTS)
    whole = fleet_read(URL, endpoint_url=m.url)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        life = per_host(URL, lifetimes, client=client, endpoint_url=m.url)
        counts = per_host(URL, partial(state_counts, freq="100ms"), client=client, endpoint_url=m.url,
                          combine=sum_bins)

    def norm(df, keys):
        df = df.astype({c: str for c in df.columns if hasattr(df[c], "cat")})
        return df.sort_values(keys).reset_index(drop=True).to_dict("list")

    want_life = lifetimes(whole)
    assert len(life) == len(want_life) == sum(len(lifetimes(tcpsnap.read(p))) for p in fleet[1].values())
    assert norm(life, ["host", "cookie", "first_seen"]) == norm(want_life, ["host", "cookie", "first_seen"])
    want_counts = state_counts(whole, freq="100ms")
    assert len(want_counts) > 3
    pd.testing.assert_frame_equal(counts[sorted(counts.columns)], want_counts[sorted(want_counts.columns)],
                                  check_freq=False, check_names=False)
