"""Compiled modules. Metadata lives in pyproject.toml."""

import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

ext = [Extension("tcpsnap._mib", ["src/tcpsnap/_mib.pyx"], include_dirs=["src/tcpsnap"]),
       # changes mode: the diff of consecutive snapshots
       Extension("tcpsnap._diff", ["src/tcpsnap/_diff.pyx"], include_dirs=["src/tcpsnap"]),
       # TCP internals: the tcp_info row checked against _schema, its parsers on any bytes
       Extension("tcpsnap._tcp_info", ["src/tcpsnap/_tcp_info.pyx"], include_dirs=["src/tcpsnap"],
                 depends=["src/tcpsnap/_tcp_info.h", "src/tcpsnap/_win/estats_plan.h"]),
       # the writer: rows into columns in one pass
       Extension("tcpsnap._encode", ["src/tcpsnap/_encode.pyx"], include_dirs=["src/tcpsnap"]),
       # the writer: Parquet footers' Thrift, decoded and encoded for every row group
       Extension("tcpsnap._thrift", ["src/tcpsnap/_thrift.pyx"], include_dirs=["src/tcpsnap"]),
       # the writer: a batch's columns into the row group being formed, a marker's row repeated
       Extension("tcpsnap._rowstore", ["src/tcpsnap/_rowstore.pyx"], include_dirs=["src/tcpsnap"])]
if sys.platform.startswith("linux"):
    ext.append(Extension("tcpsnap._netlink", ["src/tcpsnap/_netlink.pyx"], include_dirs=["src/tcpsnap"]))
    # the same parser on recorded bytes (tests, tools)
    ext.append(Extension("tcpsnap._nlparse", ["src/tcpsnap/_nlparse.pyx"], include_dirs=["src/tcpsnap"]))
    # owning processes: /proc/<pid>/fd walks on worker threads
    ext.append(Extension("tcpsnap._procfs", ["src/tcpsnap/_procfs.pyx"], include_dirs=["src/tcpsnap"],
                         extra_compile_args=["-pthread"], extra_link_args=["-pthread"]))
    # all network namespaces: a sock_diag socket made inside each (setns)
    ext.append(Extension("tcpsnap._netns", ["src/tcpsnap/_netns.pyx"], include_dirs=["src/tcpsnap"]))
    # changes mode: socket-destroy notifications (ss -E)
    ext.append(Extension("tcpsnap._destroy", ["src/tcpsnap/_destroy.pyx"], include_dirs=["src/tcpsnap"]))
    # the writer: changes mode's lone marker at a slow interval, stored and journaled in one call
    ext.append(Extension("tcpsnap._quiet", ["src/tcpsnap/_quiet.pyx"], include_dirs=["src/tcpsnap"]))
elif sys.platform == "win32":
    # GetTcpTable2 / GetTcp6Table2 through the plain-C fetch layer; iphlpapi.lib has the calls,
    # ws2_32.lib what the Winsock headers pull in.
    ext.append(Extension("tcpsnap._windows", ["src/tcpsnap/_windows.pyx", "src/tcpsnap/_win/tcpfetch.c",
                                              "src/tcpsnap/_win/estats.c"],
                         include_dirs=["src/tcpsnap", "src/tcpsnap/_win"],
                         depends=["src/tcpsnap/_win/tcpfetch.h", "src/tcpsnap/_win/estats.h",
                                  "src/tcpsnap/_win/estats_plan.h"],
                         libraries=["iphlpapi", "ws2_32", "advapi32"]))

setup(
    ext_modules=cythonize(
        ext,
        include_path=["src"],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )
)
