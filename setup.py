"""Compiled modules. Metadata lives in pyproject.toml."""

import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

ext = [Extension("tcpsnap._mib", ["src/tcpsnap/_mib.pyx"], include_dirs=["src/tcpsnap"])]
if sys.platform.startswith("linux"):
    ext.append(Extension("tcpsnap._netlink", ["src/tcpsnap/_netlink.pyx"], include_dirs=["src/tcpsnap"]))
    # owning processes: /proc/<pid>/fd walks on worker threads
    ext.append(Extension("tcpsnap._procfs", ["src/tcpsnap/_procfs.pyx"], include_dirs=["src/tcpsnap"],
                         extra_compile_args=["-pthread"], extra_link_args=["-pthread"]))

setup(
    ext_modules=cythonize(
        ext,
        include_path=["src"],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )
)
