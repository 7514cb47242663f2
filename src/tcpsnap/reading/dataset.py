"""Finding a recording's files and checking them: every reader opens a recording through
:class:`Recording`, which lists the folder's files, keeps those a time range needs (by the
times in their names) and reads each kept file's footer once to sort out the files it
cannot trust:

- a footer that cannot be read (a truncated or corrupt file, or not Parquet at all);
- a foreign file: no ``tcpsnap.version`` in its key-value metadata, or columns that are not
  those of a recording of its mode (``tcpsnap._arrow.build_schema`` for full mode,
  ``tcpsnap.record.changes.build_schema`` for changes mode) and schema version
  (``tcpsnap.schema_version``; a file without it is of version 1, made before the key, the
  ``kind``, ``monotonic_ns``, ``host`` and ``boot_id`` columns existed);
- a file of a newer schema version than this tcpsnap reads;
- a copy: a ``seq`` range (footer keys ``tcpsnap.first_seq``/``last_seq``, else the
  row-group statistics) that overlaps another file's. The first by name is kept (the
  recorder's own names first);
- a file of the other mode in a folder of one mode, or recorded with another filter set
  (``tcpsnap.filters``: ``record --state/--port/--family``): another recording in the same
  folder. The mode, then the filter set, most files have is kept.

Files of schema versions 1, 2 and 3 in one folder are one recording (upgraded midway), read
into the newest schema: what an older file lacks is null, but ``kind`` is "connection".

Each is a :class:`~tcpsnap.BadRecording` naming the file(s), unless ``skip_bad=True``: then
the bad files are left out and ``report()`` logs what was skipped (logger
``tcpsnap.reading``, one warning). A file that sits in another ``date=`` folder than the date
in its name (moved out of its partition) is read all the same, by its contents, with a
warning: time ranges select files by the times in their names and the changes rebuild by
their ``seq`` ranges, never by the ``date=`` folder.

Every scan verifies the pages' CRC checksums. A corrupt page is found while scanning, where
pyarrow does not say in which file: only then are the files scanned one by one to name it.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import BadRecording
from ..record.layout import NAME_RE, PARTITION_RE
from .live import recorder_state
from .query import filter_expression, in_seq_order, time_filter
from .timeforms import TIME_FORMS, one_line, to_utc, utc_range

__all__ = ["IGNORE_PREFIXES", "SKIP_HINT", "TIME_FORMS", "FileInfo", "Recording", "open_recording", "to_utc",
           "utc_range", "open_dataset", "time_filter", "filter_expression", "in_seq_order", "list_files",
           "select_files"]

log = logging.getLogger("tcpsnap.reading")

#: File names a recording's readers skip: in-progress journals, temporaries, the lock.
IGNORE_PREFIXES = [".", "_"]

#: How every BadRecording message ends.
SKIP_HINT = "skip_bad=True or --skip-bad reads the other files"

# the recorder's file names (tcpsnap.record.layout.file_names), and a name taken: "-N"
_NAME_TIME = "%Y%m%dT%H%M%S.%f"          # as in a name, but with microseconds: cut to ms
_MODES = ("full", "changes")

#: the columns schema versions 2 and 3 added (older files have none of them)
_V2_COLUMNS = ("kind", "monotonic_ns", "host", "boot_id")
_V3_COLUMNS = ("cgroup_id", "cgroup", "container", "pod_uid", "netns")


def _expected_schema(mode: str, version: int | None = None, tcp_info: bool = False):
    """The columns of a file of ``mode``, schema ``version`` (None: the newest), ``tcp_info``."""
    if mode == "changes":
        from ..record.changes import build_schema as changes_schema

        s = changes_schema(tcp_info=tcp_info)
    else:
        from .._arrow import build_schema

        s = build_schema(tcp_info=tcp_info)
    if version is not None and version < 3:
        from pyarrow import schema
        return schema([f for f in s if f.name not in _V3_COLUMNS + (_V2_COLUMNS if version == 1 else ())])
    return s


def _format():
    import pyarrow.dataset as ds

    opts = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
    return ds.ParquetFileFormat(default_fragment_scan_options=opts)


@dataclass
class FileInfo:
    """One file of a recording, as its path and footer tell."""

    path: str
    #: the date of its ``date=`` folder (YYYY-MM-DD), if any
    partition: str | None
    #: the time in its name (``20261125T101500.123``: its first snapshot), if the recorder's
    at: str | None
    size: int = 0
    rows: int = 0
    mode: str = "full"
    #: its ``tcpsnap.schema_version`` (1 when it has none: files made before version 2)
    version: int = 0
    #: its ``tcpsnap.filters``, in one spelling (``record.config.canonical_filters``)
    filters: str = "{}"
    #: first and last ``seq`` (None: not known)
    seq: tuple[int, int] | None = None
    #: the date its snapshots are of, when that is not its ``date=`` folder's (moved)
    moved: str | None = None
    #: its footer's key-value metadata (raw)
    raw: dict | None = None
    #: the other hive partitions of its path (``host=web-1/``...), as (key, value) pairs
    keys: tuple[tuple[str, str], ...] = ()

    @property
    def named(self) -> str | None:
        """The date in its name (YYYY-MM-DD)."""
        return None if self.at is None else f"{self.at[:4]}-{self.at[4:6]}-{self.at[6:8]}"

    @property
    def kv(self) -> dict[str, str]:
        """The ``tcpsnap.*`` key-value metadata, without the prefix."""
        return {k.decode(errors="replace").removeprefix("tcpsnap."): v.decode(errors="replace")
                for k, v in (self.raw or {}).items() if k.startswith(b"tcpsnap.")}

    def key(self) -> tuple:
        """Name order: the recorder's names first (in time order), then the others."""
        name = os.path.basename(self.path)
        return (self.at is None, name.removesuffix(".parquet"), self.path)


def list_files(path: str | os.PathLike) -> list[str]:
    """The files a reader of the recording folder ``path`` looks at (finished files: no
    hidden or in-progress ones), in name order."""
    return _list_files(Path(path))


def _list_files(root: Path) -> list[str]:
    """Every file under ``root`` a ``pyarrow`` dataset would read: names starting with
    ``.`` or ``_`` (in-progress files, the lock) left out, folders too."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(tuple(IGNORE_PREFIXES)))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                   if not f.startswith(tuple(IGNORE_PREFIXES)))
    return out


def _entry(path: str, in_folder: bool) -> FileInfo:
    folder, name = os.path.split(path)
    partition = None
    if in_folder:
        m = PARTITION_RE.match(os.path.basename(folder))
        partition = m.group(1) if m else None
    m = NAME_RE.match(name)
    return FileInfo(path=path, partition=partition, at=m.group(1) if m else None)


def _int_range(md, col: int) -> tuple[int, int] | None:
    """(min, max) of integer column ``col`` over every row group's statistics."""
    if col < 0 or md.num_row_groups == 0:
        return None
    ranges = []
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(col).statistics
        if st is None or not st.has_min_max:
            return None
        ranges.append((int(st.min_raw), int(st.max_raw)))
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _day(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns // 10**9, _dt.UTC).strftime("%Y-%m-%d")


class _SchemaCheck:
    """Whether a footer's columns are a recording's: its ``ARROW:schema`` bytes, converted
    and compared once per distinct value (every file of a recording has the same)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, bytes | None], str | None] = {}
        self._expected: dict[tuple[str, int, bool], list] = {}

    def problem(self, md, kv: dict, mode: str, version: int) -> str | None:
        k = (mode, version, kv.get(b"ARROW:schema"))
        if k not in self._seen:
            e = (mode, version, kv.get(b"tcpsnap.tcp_info") == b"true")   # with internals columns?
            want = self._expected[e] = self._expected.get(e) or [(f.name, f.type) for f in _expected_schema(*e)]
            got = [(f.name, f.type) for f in md.schema.to_arrow_schema()]
            self._seen[k] = None if got == want else _difference(got, want, mode, version)
        return self._seen[k]


def _difference(got: list, want: list, mode: str, version: int) -> str:
    g, w = dict(got), dict(want)
    missing = [n for n in w if n not in g]
    extra = [n for n in g if n not in w]
    if missing:
        what = f"no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} column"
    elif extra:
        what = f"a column {extra[0]!r} a recording has not"
    else:
        n = next((n for n in w if g[n] != w[n]), None)
        what = f"column {n!r} is {g[n]}, not {w[n]}" if n else "its columns in another order"
    return (f"not a tcpsnap recording file (its columns are not a {mode}-mode recording's of schema "
            f"version {version}: {what})")


def _read_footer(info: FileInfo, schemas: _SchemaCheck) -> str | None:
    """Fill ``info`` from its footer; what is wrong with the file, or None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        info.size = os.stat(info.path).st_size
        md = pq.read_metadata(info.path)
        raw = md.metadata or {}
    except (OSError, pa.ArrowException) as e:
        return f"not a readable recording file: unreadable Parquet footer ({one_line(e)})"
    info.raw, info.rows = raw, md.num_rows
    if b"tcpsnap.version" not in raw:
        return "not a tcpsnap recording file (no tcpsnap.version in its metadata)"
    info.mode = raw.get(b"tcpsnap.mode", b"full").decode(errors="replace")
    if info.mode not in _MODES:
        return f"not a tcpsnap recording file (tcpsnap.mode {info.mode!r})"
    from .._arrow import SCHEMA_VERSION
    from ..record.config import canonical_filters

    version = raw.get(b"tcpsnap.schema_version", b"1")
    try:
        info.version = int(version)
    except ValueError:
        return f"not a tcpsnap recording file (tcpsnap.schema_version {version.decode(errors='replace')!r})"
    if info.version > SCHEMA_VERSION:
        return (f"written by a newer tcpsnap (schema version {info.version}; this one reads 1 to "
                f"{SCHEMA_VERSION}): upgrade tcpsnap to read it")
    if info.version < 1:
        return f"not a tcpsnap recording file (tcpsnap.schema_version {info.version})"
    info.filters = canonical_filters(raw.get(b"tcpsnap.filters"))
    try:
        problem = schemas.problem(md, raw, info.mode, info.version)
    except (OSError, pa.ArrowException) as e:
        return f"not a readable recording file: unreadable schema ({one_line(e)})"
    if problem:
        return problem
    try:
        info.seq = int(raw[b"tcpsnap.first_seq"]), int(raw[b"tcpsnap.last_seq"])
    except (KeyError, ValueError):
        info.seq = _int_range(md, md.schema.to_arrow_schema().get_field_index("seq"))
    if info.partition is not None:
        if info.named is not None:
            info.moved = info.named if info.named != info.partition else None
        else:
            ts = _int_range(md, 0)                  # timestamp, the first column
            if ts is not None and not _day(ts[0]) <= info.partition <= _day(ts[1]):
                info.moved = _day(ts[0])
    return None


class Recording:
    """A recording folder (or one of its files), its files' footers checked once.

    ``start``/``end`` (as ``tcpsnap.read`` takes them) keep only the files that may hold
    snapshots in that range, by the times in the recorder's file names (``select_files``);
    files with other names are always kept. ``hosts`` (names) leaves out the files under
    other hosts' ``host=NAME/`` folders (a fleet's layout). Raises ``FileNotFoundError`` when
    there is nothing to read, ``BadRecording`` for bad files unless ``skip_bad`` (see above).

    ``to_table`` and ``to_batches`` scan the good files, verifying page checksums.
    """

    def __init__(self, path: str | os.PathLike, *, skip_bad: bool = False, start: Any = None,
                 end: Any = None, hosts: list[str] | None = None) -> None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"no recording at {p}")
        self.path = p
        self.skip_bad = skip_bad
        self.folder = not p.is_file()
        #: a recorder's trace in the folder (``recorder_state``): running now, or stopped
        #: without finishing a file; None if none
        self.recorder = recorder_state(p) if not p.is_file() else None
        if self.folder:
            found = _list_files(p)
            if not found:
                if self.recorder is not None:
                    raise FileNotFoundError(f"no finished file in {p} yet: {self.recorder.describe(p)}")
                raise FileNotFoundError(f"no Parquet files in {p}")
        else:
            found = [str(p)]
        entries = sorted((_entry(f, self.folder) for f in found), key=FileInfo.key)
        for e in entries:
            e.keys = _hive_keys(p, e.path) if self.folder else ()
        entries = [f for g in _groups(entries) for f in select_files(g, start, end)
                   if hosts is None or dict(f.keys).get("host", hosts[0]) in hosts]
        #: the files left out, path -> what is wrong, in the order found
        self.skipped: dict[str, str] = {}
        self._reported = 0
        bad: dict[str, str] = {}
        schemas = _SchemaCheck()
        good = []
        for info in entries:
            problem = _read_footer(info, schemas)
            if problem:
                bad[info.path] = problem
            else:
                good.append(info)
        good = self._one_mode(good, bad)
        good = self._one_filter_set(good, bad)
        good = [f for g in _groups(good) for f in _no_copies(g, bad)]
        good.sort(key=FileInfo.key)
        self._skip(bad)
        moved = [f for f in good if f.moved]
        if moved:
            log.warning("%s: %s, outside %s date= folder; read all the same",
                        p, _listed([f"{f.path} holds {f.moved}" for f in moved]),
                        "its" if len(moved) == 1 else "their")
        if not good:
            raise BadRecording(f"{p}: no readable recording file left: {_problems(self.skipped)}")
        if self.recorder is not None and not self.recorder.running and self.recorder.unfinished:
            log.warning("%s: %s", p, self.recorder.describe(p))
        #: the good files, in name order
        self.files: list[FileInfo] = good
        #: the schema versions of its files (1 and 2 both: a recording upgraded midway)
        self.versions = sorted({f.version for f in good})
        self.schema = self._schema()
        self._all = None

    def _one_mode(self, good: list[FileInfo], bad: dict[str, str]) -> list[FileInfo]:
        modes = [f.mode for f in good]
        self.mode = max(_MODES, key=lambda m: (modes.count(m), m == (modes[0] if modes else "full")))
        if len(set(modes)) > 1:
            for f in good:
                if f.mode != self.mode:
                    bad[f.path] = (f"a {f.mode}-mode file in a {self.mode}-mode recording (one folder "
                                   "holds one recording: mixed modes)")
            good = [f for f in good if f.mode == self.mode]
        return good

    def _one_filter_set(self, good: list[FileInfo], bad: dict[str, str]) -> list[FileInfo]:
        """One filter set (``tcpsnap.filters``: what ``record --state/--port/--family``
        kept): a file recorded with another holds other rows, a different recording. The
        set most files have is kept."""
        from ..record.config import describe_filters

        sets = [f.filters for f in good]
        if len(set(sets)) <= 1:
            return good
        keep = max(sets, key=lambda x: (sets.count(x), x == sets[0]))
        for f in good:
            if f.filters != keep:
                bad[f.path] = (f"recorded with {describe_filters(f.filters)} in a recording made with "
                               f"{describe_filters(keep)} (one folder holds one recording: mixed filters)")
        return [f for f in good if f.filters == keep]

    def _schema(self):
        """The newest schema of the mode (files of schema version 1 are read into it, the
        columns they lack null; see ``dataset``), plus ``date`` for a folder."""
        import pyarrow as pa

        s = _expected_schema(self.mode, tcp_info=any((f.raw or {}).get(b"tcpsnap.tcp_info") == b"true"
                                                     for f in self.files))     # files without: null
        if not self.folder:
            return s
        for name, f in _partition_fields(self.files, s).items():
            s = s.set(s.get_field_index(name), f) if name in s.names else s.append(f)
        return s.append(pa.field("date", pa.string()))

    def _skip(self, bad: dict[str, str]) -> None:
        if not bad:
            return
        if not self.skip_bad:
            raise BadRecording(f"{_problems(bad)}; {SKIP_HINT}")
        self.skipped.update(bad)

    def report(self) -> None:
        """Log (logger ``tcpsnap.reading``, one warning) the files skipped since the last
        report."""
        new = list(self.skipped.items())[self._reported:]
        if new:
            self._reported = len(self.skipped)
            n = len(new)
            log.warning("skipped %d bad file%s of %s: %s", n, "" if n == 1 else "s", self.path,
                        _problems(dict(new), limit=10))

    # ------------------------------------------------------------------ scans

    def dataset(self, files: list[FileInfo] | None = None):
        """A ``pyarrow.dataset`` over ``files`` (default: every good file), with page
        checksum verification; the ``date`` column from the ``date=`` folders."""
        import pyarrow.dataset as ds

        if files is None:
            if self._all is None:
                self._all = self.dataset(self.files)
            return self._all
        import pyarrow as pa
        import pyarrow.fs as pafs

        from .._arrow import KIND_TYPE

        files = [f for f in files if f.path not in self.skipped]
        fields = _partition_fields(self.files, self.schema) if self.folder else {}
        parts = []
        for f in files:
            # what is known of every row of the file from outside it: its date= folder,
            # and that a full-mode file of schema version 1 holds connections only (it
            # has no kind column: its rows read as kind "connection", its other new
            # columns null)
            e = ds.scalar(True)
            if self.folder and f.partition is not None:
                e = ds.field("date") == f.partition
            if f.version == 1 and self.mode == "full":
                e = e & (ds.field("kind") == pa.scalar("connection", KIND_TYPE))
            for k, v in f.keys:  # host=web-1/...: the folder names the host of its rows
                if k in fields:
                    e = e & (ds.field(k) == pa.scalar(v, fields[k].type))
            parts.append(e)
        return ds.FileSystemDataset.from_paths([f.path for f in files], schema=self.schema, format=_format(),
                                               filesystem=pafs.LocalFileSystem(), partitions=parts)

    def files_for(self, seq: tuple[int, int] | None = None) -> list[FileInfo]:
        """The good files (not skipped since), those whose ``seq`` range meets ``seq``
        (lo, hi inclusive) if given."""
        fs = [f for f in self.files if f.path not in self.skipped]
        if seq is not None:
            lo, hi = seq
            fs = [f for f in fs if f.seq is None or (f.seq[0] <= hi and f.seq[1] >= lo)]
        return fs

    def to_table(self, columns: list[str] | None = None, filter: Any = None, *,
                 seq: tuple[int, int] | None = None):
        """``Dataset.to_table`` over the good files (with ``seq``: only those whose seq
        range meets it). A file that fails to scan (a corrupt page): BadRecording naming
        it, or (``skip_bad``) the scan again without it."""
        import pyarrow as pa

        while True:
            files = self.files_for(seq)
            d = self.dataset(files) if seq is not None or len(files) != len(self.files) else self.dataset()
            try:
                return d.to_table(columns=columns, filter=filter)
            except (OSError, pa.ArrowInvalid) as e:
                found = self._culprits(files, e, columns, filter)
                self._skip(found)

    def _culprits(self, files: list[FileInfo], err: BaseException, columns, filter) -> dict[str, str]:
        """The files that fail on their own, scanned one by one (only after a failure);
        none: ``err`` was not a file's fault and is raised again."""
        import pyarrow as pa

        found: dict[str, str] = {}
        for f in files:
            try:
                self.dataset([f]).to_table(columns=columns, filter=filter)
            except (OSError, pa.ArrowInvalid) as e:
                if isinstance(e, OSError) or not isinstance(err, OSError):
                    found[f.path] = _scan_problem(e)
        # a failure every file shares that is not an I/O error is the query's, not theirs
        if not found or (not isinstance(err, OSError) and len(found) == len(files)):
            raise err
        return found

    def to_batches(self, columns: list[str] | None = None, filter: Any = None) -> Iterator:
        """Record batches, file after file. A corrupt page: BadRecording naming the file
        (after the batches before it). With ``skip_bad`` such a file is
        skipped whole: each file is read to its end before any of its batches is given,
        so memory is bounded by one file, not by the batch."""
        import pyarrow as pa

        if not self.skip_bad:
            files = self.files_for()
            try:
                yield from self.dataset(files).to_batches(columns=columns, filter=filter)
            except (OSError, pa.ArrowInvalid) as e:
                self._skip(self._culprits(files, e, columns, filter))   # raises BadRecording
                raise                                                    # pragma: no cover
            return
        for f in self.files_for():
            try:
                table = self.dataset([f]).to_table(columns=columns, filter=filter)
            except (OSError, pa.ArrowInvalid) as e:
                self._skip({f.path: _scan_problem(e)})
                continue
            yield from table.to_batches()


def _scan_problem(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return f"gone while reading ({one_line(e)})"
    return f"not a readable recording file: corrupt data ({one_line(e)})"


def _listed(paths: list[str], limit: int = 3) -> str:
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def _problems(bad: dict[str, str], limit: int = 5) -> str:
    items = list(bad.items())
    text = "; ".join(f"{p}: {why}" for p, why in items[:limit])
    if len(items) > limit:
        text += f"; and {len(items) - limit} more"
    return text


def select_files(entries: list[FileInfo], start: Any, end: Any) -> list[FileInfo]:
    """The files that may hold snapshots in [start, end), by the times in their names (the
    time of their first snapshot): from the last one that starts at or before ``start``
    (it holds ``start``, or the keyframe before it) to the last one that starts before
    ``end``. Files with other names are kept."""
    if start is None and end is None:
        return entries
    lo = hi = None
    if start is not None:
        s = to_utc(start).strftime(_NAME_TIME)[:-3]
        lo = max((f.at for f in entries if f.at is not None and f.at <= s), default=None)
    if end is not None:
        hi = to_utc(end).strftime(_NAME_TIME)[:-3]
    keep = [f for f in entries
            if f.at is None or ((lo is None or f.at >= lo) and (hi is None or f.at <= hi))]
    return keep or entries[:1]


def _hive_keys(root: Path, path: str) -> tuple[tuple[str, str], ...]:
    """The ``key=value`` folders between ``root`` and ``path``, but ``date``: the recorder
    makes those; others (``host=web-1``) are the user's, who put recordings of several
    hosts (or runs) side by side."""
    out = []
    for part in Path(os.path.relpath(os.path.dirname(path), root)).parts:
        k, eq, v = part.partition("=")
        if eq and k and k != "date" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            out.append((k, v))
    return tuple(out)


def _groups(files: list[FileInfo]) -> list[list[FileInfo]]:
    """``files`` by their non-date partitions (each group: one recording), in order."""
    by: dict[tuple, list[FileInfo]] = {}
    for f in files:
        by.setdefault(f.keys, []).append(f)
    return list(by.values())


def _partition_fields(files: list[FileInfo], schema) -> dict:
    """The non-date hive partitions of ``files`` as dictionary string fields. A partition
    named as a string column of the files (``host``, ``boot_id``) replaces that column's
    values for the files under it; one named as another column is ignored."""
    import pyarrow as pa

    from .._arrow import STRING_DICT

    names = sorted({k for f in files for k, _ in f.keys})
    return {n: pa.field(n, STRING_DICT) for n in names
            if n not in schema.names or schema.field(n).type == STRING_DICT}


def _no_copies(good: list[FileInfo], bad: dict[str, str]) -> list[FileInfo]:
    """``good`` without the files whose seq range overlaps one earlier by name (a copy);
    those go to ``bad``."""
    starts: list[int] = []                   # the kept ranges, disjoint, by first seq
    kept: list[tuple[int, int, str]] = []    # (first, last, path), in that order
    out = []
    for f in good:
        if f.seq is None:
            out.append(f)
            continue
        a, b = f.seq
        i = bisect.bisect_right(starts, b)   # kept ranges starting at or before b
        if i and kept[i - 1][1] >= a:
            c, d, other = kept[i - 1]
            what = (f"duplicate seq range {a}..{b}" if (a, b) == (c, d)
                    else f"seq range {a}..{b} overlaps {c}..{d}")
            bad[f.path] = f"{what} of {other} (a copy?)"
            continue
        starts.insert(i, a)
        kept.insert(i, (a, b, f.path))
        out.append(f)
    return out


def open_recording(path: str | os.PathLike, *, skip_bad: bool = False, start: Any = None,
                   end: Any = None, hosts: list[str] | None = None) -> Recording:
    """A :class:`Recording`: the folder's (or file's) files, footers checked."""
    return Recording(path, skip_bad=skip_bad, start=start, end=end, hosts=hosts)


def open_dataset(path: str | os.PathLike, *, skip_bad: bool = False, start: Any = None, end: Any = None):
    """A ``pyarrow.dataset.Dataset`` over a recording folder (hive ``date=`` partitions)
    or a single Parquet file: its good files (footers checked as ``Recording`` does,
    skipped ones logged), page checksums verified when it is scanned."""
    rec = Recording(path, skip_bad=skip_bad, start=start, end=end)
    rec.report()
    return rec.dataset()
