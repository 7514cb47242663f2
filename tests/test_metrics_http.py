"""The metrics endpoint as Prometheus uses it: one kept-alive connection for every scrape
(so a scrape adds no connection to the table the recorder records, checked with ``ss``),
prometheus_client's content negotiation and gzip, exact values per scrape."""

from __future__ import annotations

import gzip
import http.client
import shutil
import socket
import subprocess
import sys
import time

import pytest

prom_parser = pytest.importorskip("prometheus_client.parser")
om_parser = pytest.importorskip("prometheus_client.openmetrics.parser")

from _changes_util import Scripted, SimClock  # noqa: E402
from tcpsnap import Recorder  # noqa: E402
from tcpsnap.record.metrics import MetricsExporter  # noqa: E402
from test_metrics import rows_of, scripted, tables, values  # noqa: E402

LINUX = sys.platform.startswith("linux")

#: what Prometheus 2.x sends with a scrape (OpenMetrics first, gzip)
PROM_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
              "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}


def get(conn: http.client.HTTPConnection, path: str = "/metrics", method: str = "GET",
        headers: dict | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    return r, r.read()


def test_scrapes_share_one_connection_and_are_exact(tmp_path):
    """Five scrapes during a recording on one connection, as Prometheus keeps it: each
    answer is exact, has a Content-Length, and no scrape opened another connection."""
    ts = tables(30)
    seen: dict[int, dict] = {}
    socks: set[int] = set()

    def on_take(i, rec):
        if i in (1, 5, 10, 20, 29):
            r, body = get(conn, headers=PROM_HEADERS)
            assert r.status == 200 and r.getheader("Content-Encoding") == "gzip"
            assert int(r.getheader("Content-Length")) == len(body)
            assert r.getheader("Content-Type").startswith("application/openmetrics-text; version=1.0.0")
            assert not r.will_close  # HTTP/1.1, kept open
            seen[i] = values(gzip.decompress(body).decode(), om_parser)
            assert conn.sock is not None
            socks.add(id(conn.sock))

    rec = scripted(tmp_path / "rec", ts, on_take)
    with MetricsExporter(rec, listen="127.0.0.1:0") as exp:
        assert exp.port is not None
        conn = http.client.HTTPConnection("127.0.0.1", exp.port, timeout=10)
        with rec:
            rec.run()
        assert exp._server is not None and len(exp._server.conns) == 1
        r, body = get(conn)  # no Accept: the classic text format, not compressed
        assert r.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        after = values(body.decode())
    assert len(socks) == 1 and sorted(seen) == [1, 5, 10, 20, 29]
    for i, v in seen.items():  # snapshots 0 .. i-2 were taken
        assert v["tcpsnap_snapshots_total"] == i - 1
        assert v["tcpsnap_rows_total"] == rows_of(ts[:i - 1])
        assert v["tcpsnap_capture_seconds_count"] == i - 1
    assert after["tcpsnap_snapshots_total"] == 30 and after["tcpsnap_rows_total"] == rows_of(ts)
    # the kept connection was ended by close(): the next request finds it closed
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        get(conn)
    conn.close()


def test_methods_and_paths(tmp_path):
    rec = scripted(tmp_path / "rec", tables(3))
    with MetricsExporter(rec, listen="127.0.0.1:0") as exp, rec:
        rec.run()
        conn = http.client.HTTPConnection("127.0.0.1", exp.port or 0, timeout=10)
        r, body = get(conn, method="OPTIONS")
        assert r.status == 200 and r.getheader("Allow") == "OPTIONS,GET" and body == b""
        r, body = get(conn, "/favicon.ico")
        assert r.status == 200 and body == b""
        r, body = get(conn, "/anything")  # prometheus_client answers any path
        assert values(body.decode())["tcpsnap_snapshots_total"] == 3
        for method in ("POST", "PUT", "DELETE"):  # prometheus_client's 405, connection kept
            r, body = get(conn, method=method)
            assert r.status == 405 and r.getheader("Allow") == "OPTIONS,GET", method
            assert r.will_close  # its body unread: the server closes, the client reconnects
        r, body = get(conn)
        assert r.status == 200 and values(body.decode())["tcpsnap_snapshots_total"] == 3
        conn.close()


def test_ipv6_loopback(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    rec = scripted(tmp_path / "rec", tables(2))
    try:
        exp = MetricsExporter(rec, listen="[::1]:0").start()
    except OSError as e:
        pytest.skip(f"no ::1 here: {e}")
    try:
        with rec:
            rec.run()
        assert exp.url == f"http://[::1]:{exp.port}/metrics"
        conn = http.client.HTTPConnection("::1", exp.port or 0, timeout=10)
        assert values(get(conn)[1].decode())["tcpsnap_snapshots_total"] == 2
        conn.close()
    finally:
        exp.close()


def test_idle_connection_ends_at_the_timeout(tmp_path, monkeypatch):
    from tcpsnap.record import metrics

    monkeypatch.setattr(metrics, "HTTP_IDLE_TIMEOUT_S", 0.3)
    rec = scripted(tmp_path / "rec", tables(2))
    with MetricsExporter(rec, listen="127.0.0.1:0") as exp:
        conn = http.client.HTTPConnection("127.0.0.1", exp.port or 0, timeout=10)
        assert get(conn)[0].status == 200
        assert exp._server is not None
        deadline = time.monotonic() + 30
        while exp._server.conns and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not exp._server.conns  # the server closed it: no thread kept for it
        conn.close()


def _ss_port(port: int) -> list[tuple[str, str, str]]:
    """(state, local, peer) of the sockets on 127.0.0.1:``port``, local or remote, as
    ``ss -tanH`` shows them."""
    r = subprocess.run(["ss", "-tanH", f"( src 127.0.0.1:{port} or dst 127.0.0.1:{port} )"],
                       capture_output=True, text=True, timeout=30, check=True)
    return [(f[0], f[3], f[4]) for f in map(str.split, r.stdout.splitlines()) if f]


@pytest.mark.skipif(not LINUX or shutil.which("ss") is None, reason="needs ss (Linux)")
def test_scrapes_add_no_connection_to_the_table(tmp_path):
    """The reason for keep-alive: 20 scrapes, and ``ss`` sees one connection (both ends
    ESTABLISHED, no TIME-WAIT) besides the listener. With one connection per scrape (what
    prometheus_client's own server does) there were 20, each a new socket the recorder
    has to find the owner of."""
    snap = Scripted(tables(2), pids=False)
    rec = Recorder(tmp_path / "rec", interval=0, snapshotter=snap, clock=SimClock(), nice=None)
    with MetricsExporter(rec, listen="127.0.0.1:0") as exp:
        # a TIME_WAIT an earlier test left may have the listener's port number as its
        # remote port (its listener gone, the number given to ours): not ours
        before = {x for x in _ss_port(exp.port or 0) if x[0] == "TIME-WAIT"}
        conn = http.client.HTTPConnection("127.0.0.1", exp.port or 0, timeout=10)
        for _ in range(20):
            r, body = get(conn, headers=PROM_HEADERS)
            assert r.status == 200 and len(body) > 100
        states = [x[0] for x in _ss_port(exp.port or 0) if x not in before]
        conn.close()
    assert sorted(states) == ["ESTAB", "ESTAB", "LISTEN"], states
