"""tcpsnap's version, written here and nowhere else: pyproject.toml reads it from this file
(``[tool.setuptools.dynamic]``) and ``tcpsnap.__version__`` imports it."""

__version__ = "0.1.0"
