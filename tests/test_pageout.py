"""The recorder's start-up page-out (``footprint.page_out``) and heap trim
(``footprint.heap_trimmer``), each in a child process of its own so that what it gives
back is measured from ``/proc/self/status`` by the test, not by the function."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux madvise/glibc")

TCPSNAP = [sys.executable, "-m", "tcpsnap"]

CHILD = textwrap.dedent("""
    import hashlib, json, mmap, os, sys
    from tcpsnap.record.footprint import lean_process, page_out
    lean_process()
    import numpy, pyarrow, pyarrow.parquet  # what the recorder loads
    from tcpsnap.record import recorder  # noqa: F401

    path = sys.argv[1]  # a file of ours: no other process maps its pages (a library may
    with open(path, "wb") as f:  # be mapped by the test runner too: those pages stay)
        f.write(os.urandom(32 << 20))
        f.flush()
        os.fsync(f.fileno())  # clean pages, as a library's: reclaimed, not written back
    fd = os.open(path, os.O_RDONLY)
    ro = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    digest = hashlib.sha256(ro).hexdigest()  # touches every page
    rw = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    rw[:1 << 20] = b"x" * (1 << 20)  # a written private copy: anonymous pages, never paged out

    def rss_of(p):
        out, cur = [], None
        for line in open("/proc/self/smaps"):
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                cur = line.split()
            elif line.startswith("Rss:") and cur is not None and cur[-1] == p:
                out.append((cur[1], int(line.split()[1])))
        return out

    def majflt():
        return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[9])

    before = rss_of(path)
    got = page_out()
    after = rss_of(path)
    m0 = majflt()
    again = hashlib.sha256(ro).hexdigest()
    faults = majflt() - m0
    import io  # the libraries still work after: a Parquet round trip
    t = pyarrow.table({"x": numpy.arange(100_000), "s": ["a", "b"] * 50_000})
    buf = io.BytesIO()
    pyarrow.parquet.write_table(t, buf, compression="zstd")
    # on the calling thread: a thread of pyarrow's pool still winding down when the
    # interpreter exits can abort the process after the work is done ("terminate called
    # without an active exception", apache/arrow#34314; once in CI, in this child)
    back = pyarrow.parquet.read_table(io.BytesIO(buf.getvalue()), use_threads=False)
    print(json.dumps({"got": got, "before": before, "after": after, "faults": faults,
                      "same": again == digest, "equal": back.equals(t)}))
""")


def _child(tmp_path, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "pages")], capture_output=True,
                         text=True, timeout=120, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pageout_works() -> bool:
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 4)


@pytest.mark.skipif(not _pageout_works(), reason="MADV_PAGEOUT needs Linux 5.4")
def test_page_out_gives_back_read_only_file_pages_and_they_read_back(tmp_path):
    r = _child(tmp_path)
    got = r["got"]
    assert got is not None and got["mappings"] > 50 and got["failed"] == 0
    before, after = dict(r["before"]), dict(r["after"])
    assert before == {"r--s": 32 << 10, "rw-p": 1 << 10}  # kB: all read; 1 MiB written
    assert after["r--s"] < 1024  # read-only: its 32 MiB left
    assert after["rw-p"] == 1 << 10  # the written private copy's pages stayed
    assert r["same"] is True and r["faults"] > 0  # the same bytes, read back from the file
    assert r["equal"] is True  # and the libraries paged out still work


def test_page_out_is_off_with_the_environment_variable(tmp_path):
    r = _child(tmp_path, {"TCPSNAP_NO_PAGE_OUT": "1"})
    assert r["got"] is None
    assert dict(r["after"]) == dict(r["before"])  # nothing was paged out


@pytest.mark.skipif(not _pageout_works(), reason="MADV_PAGEOUT needs Linux 5.4")
@pytest.mark.parametrize("how", ["default", "--no-page-out", "config", "env"])
def test_record_pages_out_at_start_unless_told_not_to(tmp_path, how):
    args = [*TCPSNAP, "record", str(tmp_path / "rec"), "--duration", "0.3s", "--interval", "50ms", "-v"]
    env = dict(os.environ)
    if how == "--no-page-out":
        args.append("--no-page-out")
    elif how == "config":
        (tmp_path / "c.toml").write_text("no-page-out = true\n")
        args += ["--config", str(tmp_path / "c.toml")]
    elif how == "env":
        env["TCPSNAP_NO_PAGE_OUT"] = "1"
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    said = [ln for ln in out.stderr.splitlines() if "paged out" in ln]
    if how == "default":
        assert len(said) == 1 and "MiB of library pages" in said[0], out.stderr
    else:
        assert said == [], out.stderr
    import pyarrow.dataset as ds

    t = ds.dataset(str(tmp_path / "rec"), format="parquet", partitioning="hive").to_table(columns=["seq"])
    assert t.num_rows > 0  # recorded as ever


HEAP = textwrap.dedent("""
    import ctypes, json
    from tcpsnap.record.footprint import heap_trimmer
    libc = ctypes.CDLL(None)
    libc.mallopt(-3, 256 * 1024)  # as lean_process: blocks under 256 KiB come from the heap
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

    blocks = [libc.malloc(100_000) for _ in range(2000)]  # ~190 MiB in 100 kB pieces
    for b in blocks:
        libc.memset(b, 1, 100_000)
    for b in blocks[:-1]:  # the last one pins the heap's top: no automatic trim
        libc.free(b)
    a0 = anon()
    heap_trimmer()()
    print(json.dumps([a0, anon()]))
""")


def test_heap_trim_gives_back_free_memory_inside_the_heap():
    out = subprocess.run([sys.executable, "-c", HEAP], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    a0, a1 = json.loads(out.stdout)
    assert a0 > 150 * 1024  # freed, yet resident: holes below a block in use
    assert a0 - a1 > 150 * 1024, (a0, a1)


FOOTER = textwrap.dedent("""
    import json, shutil, sys, time
    import numpy as np
    from tcpsnap.record.footprint import lean_process
    lean_process()  # as the recorder: Arrow allocates with malloc
    import pyarrow as pa
    from tcpsnap._arrow import SCHEMA, BatchEncoder
    from tcpsnap._schema import ROW_DTYPE
    from tcpsnap.record import parquet
    from tcpsnap.record import thrift as th
    from tcpsnap.record.folder import footer_kv
    from tcpsnap.record.layout import file_names
    from tcpsnap.record.retention import Retention
    from tcpsnap.record.safedir import SafeDir

    def anon():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

    rows = np.zeros(4, dtype=ROW_DTYPE)
    rows["family"], rows["state"], rows["cookie"] = 4, 1, np.arange(4) + 1
    seqs = np.arange(2, dtype=np.int64)
    batch = BatchEncoder(SCHEMA).encode(rows, np.array([2, 2]), seqs + 1, seqs, seqs)
    sink = pa.BufferOutputStream()
    w = parquet.pq.ParquetWriter(sink, SCHEMA)
    w.write_table(pa.Table.from_batches([batch]))
    w.close()
    data, footer = parquet.split_parquet(sink.getvalue())
    data = bytes(data)
    root = parquet.Path(sys.argv[1])
    part, name = file_names(time.time_ns())
    (root / part).mkdir(parents=True)
    app = parquet.ParquetAppender(root / part / name, SCHEMA)
    for _ in range(int(sys.argv[2])):  # a long file's footer: one row group's entry each
        app.append_encoded(data, th.decode_struct(footer)[4][1][1])
    a = [anon()]
    path = app.finish()  # checks the file reads back: Arrow parses the whole footer
    a.append(anon())
    shutil.copy(path, root / "copy.parquet")
    with SafeDir.open(root / part) as d:
        assert footer_kv(d, path.name)[b"tcpsnap.rows"] == b"%d" % (2 * 4 * int(sys.argv[2]) // 2)
    a.append(anon())
    with SafeDir.open(root) as d:  # ages the file by its footer's newest timestamp
        assert Retention(keep="1d", now_ns=lambda: 1 << 62).run(d) == [f"{part}/{path.name}"]
    a.append(anon())
    md = parquet.pq.read_metadata(root / "copy.parquet")  # what one parse holds
    a.append(anon())
    print(json.dumps([md.num_row_groups] + a))
""")


def test_reading_a_long_footer_gives_back_what_the_parse_took(tmp_path):
    # A recorder's file closes every 15 minutes with ~140 row groups at 1k connections
    # every 100 ms; Arrow's parse of that footer takes 7 MiB of small blocks, which come
    # back as holes between blocks still in use: resident for good (a step in the
    # recorder's RSS at its first rotation) unless the heap is trimmed right after, on
    # the same thread. Finishing a file checks it reads back; retention ages a file by
    # its footer's statistics; the shipper reads its key-value pairs.
    out = subprocess.run([sys.executable, "-c", FOOTER, str(tmp_path / "rec"), "1500"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    groups, *a = json.loads(out.stdout)
    assert groups == 1500
    assert a[4] - a[3] > 16 * 1024, a  # one parse alone: tens of MiB
    for what, before, after in zip(("finish", "footer_kv", "retention"), a, a[1:4]):
        assert after - before < 4 * 1024, (what, a)  # given back
