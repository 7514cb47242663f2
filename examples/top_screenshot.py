"""Make docs/top.svg, the README's picture of ``tcpsnap top``: the real view, headless
(Textual's ``App.run_test`` and ``save_screenshot``), over two scripted snapshots at 80x24.

    python examples/top_screenshot.py
"""

import asyncio
import ipaddress
from pathlib import Path

import numpy as np

from tcpsnap import ROW_DTYPE
from tcpsnap import TcpState as S
from tcpsnap.top.app import TopApp
from tcpsnap.top.model import Frame

OUT = Path(__file__).resolve().parent.parent / "docs" / "top.svg"
NAMES = {612: "sshd", 4711: "sshd", 903: "nginx", 2210: "python3", 3300: "curl", 3301: "git"}


def row(state, la, lp, ra, rp, cookie, pid=0, rxq=0, txq=0):
    r = np.zeros(1, ROW_DTYPE)[0]
    fam = ipaddress.ip_address(la).version
    r["family"] = fam
    r["state"] = state
    n = 4 if fam == 4 else 16
    r["local_addr"][:n] = list(ipaddress.ip_address(la).packed)
    r["remote_addr"][:n] = list(ipaddress.ip_address(ra).packed)
    r["local_port"], r["remote_port"], r["cookie"], r["pid"] = lp, rp, cookie, pid
    r["rx_queue"], r["tx_queue"] = rxq, txq
    return r


BASE = [row(S.LISTEN, "0.0.0.0", 22, "0.0.0.0", 0, 1, 612), row(S.LISTEN, "0.0.0.0", 443, "0.0.0.0", 0, 2, 903),
        row(S.LISTEN, "::", 443, "::", 0, 3, 903),
        row(S.ESTABLISHED, "10.0.0.5", 22, "10.0.0.9", 51234, 4, 4711),
        row(S.ESTABLISHED, "10.0.0.5", 443, "198.51.100.7", 40110, 5, 903),
        row(S.ESTABLISHED, "10.0.0.5", 443, "203.0.113.20", 52000, 6, 903),
        row(S.ESTABLISHED, "10.0.0.5", 48812, "192.0.2.44", 5432, 7, 2210),
        row(S.ESTABLISHED, "10.0.0.5", 39120, "140.82.121.4", 443, 9, 3301)]


async def main():
    class Src:
        recording = error = None

        def start(self, deliver):
            self.deliver = deliver

        def stop(self):
            pass

    src = Src()
    app = TopApp(src)
    async with app.run_test(size=(80, 24)) as pilot:
        t1 = np.array(BASE, ROW_DTYPE)
        src.deliver(Frame.of(t1, NAMES, wall_ns=1_795_000_000 * 10**9, capture_ns=400_000))
        await pilot.pause()
        t2 = list(BASE[:6]) + [row(S.ESTABLISHED, "10.0.0.5", 48812, "192.0.2.44", 5432, 7, 2210, txq=3400),
                               row(S.SYN_SENT, "10.0.0.5", 41002, "93.184.216.34", 443, 8, 3300),
                               row(S.TIME_WAIT, "10.0.0.5", 39120, "140.82.121.4", 443, 9)]
        t2 = [r for r in t2 if r["cookie"] != 6]
        src.deliver(Frame.of(np.array(t2, ROW_DTYPE), NAMES, wall_ns=1_795_000_001 * 10**9, capture_ns=380_000))
        await pilot.pause()
        app.model.refresh_ns = 300_000
        app._draw_head()
        await pilot.pause()
        app.save_screenshot(OUT.name, str(OUT.parent))
    print(OUT)


if __name__ == "__main__":
    asyncio.run(main())
