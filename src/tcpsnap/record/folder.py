"""The recording folder: its lock, the files a crash left in it, and their recovery.

See ``tcpsnap.record.layout`` for what the files are and the crash model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .._errors import RecorderError, RecorderLocked
from typing import TYPE_CHECKING

from .layout import JOURNAL_RE, LOCK_NAME, TMP_RE, rglog_path, tmp_path

__all__ = ["lock", "unlock", "recover", "recover_all", "recover_file", "find_leftovers",
           "last_seq", "RecoveryResult"]

if TYPE_CHECKING:  # pragma: no cover
    from .parquet import ParquetAppender

log = logging.getLogger("tcpsnap.recorder")


def lock(path: Path) -> int:
    """flock ``path/.tcpsnap.lock`` (created if missing), or RecorderLocked. The file
    is removed again by ``unlock``, so a finished recording folder holds nothing but
    Parquet files; hence the inode check: a lock taken on a file that was unlinked
    meanwhile is no lock, so try again."""
    lp = path / LOCK_NAME
    for _ in range(100):
        try:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise RecorderError(f"cannot write to {path}: {e.strerror or e}") from e
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover - Windows
                import msvcrt

                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                except OSError:
                    raise BlockingIOError from None
        except BlockingIOError:
            try:
                owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            except (OSError, AttributeError):
                owner = "?"
            os.close(fd)
            raise RecorderLocked(f"{path} is already being recorded (pid {owner}); "
                                 f"one recorder per folder") from None
        except OSError as e:
            os.close(fd)
            raise RecorderError(f"cannot lock {lp}: {e.strerror or e}") from e
        try:
            same = os.fstat(fd).st_ino == os.stat(lp).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed it between our open and flock
            os.close(fd)
            continue
        try:
            if fcntl is not None:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise RecorderError(f"cannot write to {path}: {e.strerror or e}") from e
        return fd
    raise RecorderLocked(f"{path}: could not take the lock")  # pragma: no cover


def recover_all(path: Path, row_group_rows: int, level: int = logging.INFO) -> list[RecoveryResult]:
    out = []
    for final in find_leftovers(path):
        try:
            r = recover_file(final, row_group_rows)
        except OSError as e:
            raise RecorderError(f"recovering {final}: {e.strerror or e}") from e
        except Exception as e:  # noqa: BLE001 - keep the files, go on
            log.error("could not recover %s (its files are kept): %s", final, e)
            continue
        if r.path is not None:
            log.log(level, "recovered %s: %d rows (%d from the journal%s)", r.path, r.rows,
                        r.from_journal, ", torn tail dropped" if r.torn else "")
        out.append(r)
    return out


def recover(path, row_group_rows: int = 1 << 20) -> list[RecoveryResult]:
    """Finish the files a crashed recorder left in folder ``path``: every row the
    crash did not take. Refuses (``RecorderLocked``) while a recorder runs there."""
    path = Path(path)
    if not path.is_dir():
        raise RecorderError(f"no recording folder at {path}")
    fd = lock(path)
    try:
        return recover_all(path, row_group_rows)
    finally:
        unlock(fd, path)


def unlock(fd: int, path: Path | None = None) -> None:
    if path is not None and fcntl is not None:
        with contextlib.suppress(OSError):
            os.unlink(path / LOCK_NAME)  # while still holding it: see _lock
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


class RecoveryResult:
    """What recovery did for one interrupted file."""

    def __init__(self, path: Path | None, rows: int, from_journal: int, torn: bool) -> None:
        self.path = path
        self.rows = rows
        self.from_journal = from_journal
        self.torn = torn

    def __repr__(self) -> str:
        return (f"RecoveryResult(path={str(self.path)!r}, rows={self.rows}, "
                f"from_journal={self.from_journal}, torn={self.torn})")


def find_leftovers(root: Path) -> list[Path]:
    """Final paths of the files left in progress under ``root`` (one level of
    partition folders, plus root itself)."""
    root = Path(root)
    out: set[Path] = set()
    dirs = [root]
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        dirs += [d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))]
    for d in dirs:
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for n in names:
            m = TMP_RE.match(n) or JOURNAL_RE.match(n)
            if m:
                out.add(d / m.group("name"))
    return sorted(out)


def _journals(final: Path) -> list[tuple[int, Path]]:
    out = []
    try:
        names = os.listdir(final.parent)
    except FileNotFoundError:
        return []
    for n in names:
        m = JOURNAL_RE.match(n)
        if m and m.group("name") == final.name:
            out.append((int(m.group("k")), final.parent / n))
    return sorted(out)


def recover_file(final: Path, row_group_rows: int = 1 << 20) -> RecoveryResult:
    """Turn one interrupted file (``.tmp`` + ``.rglog`` + journals) into a finished
    Parquet file, keeping every row the log or a journal vouches for."""
    # pyarrow is imported when a file is recovered, not with the package
    from .journal import read_journal, unify_table
    from .parquet import ParquetAppender, kv_of, read_rglog, schema_from_header

    final = Path(final)
    tmp = tmp_path(final)
    size = tmp.stat().st_size if tmp.exists() else 0
    header, rgs, end, log_end = read_rglog(rglog_path(final), size)
    journals = _journals(final)
    k0 = len(rgs)
    replay = [(k, p) for k, p in journals if k >= k0]
    stale = [p for k, p in journals if k < k0]

    app: ParquetAppender | None = None
    torn = False
    from_journal = 0
    kv = {}
    try:
        if header is not None and tmp.exists():
            schema = schema_from_header(header)
            kv = kv_of(header)
            app = ParquetAppender(final, schema, **_options_from_kv(kv, row_group_rows),
                                  _resume=(header, rgs, end, log_end))
        for _, jp in replay:
            schema, batches, complete = read_journal(jp)
            torn |= not complete
            if not batches:
                continue
            if app is None:
                for p in (tmp, rglog_path(final)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
                kv = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
                app = ParquetAppender(final, schema, **_options_from_kv(kv, row_group_rows))
            table = unify_table(app.schema, batches)
            from_journal += table.num_rows
            for off in range(0, table.num_rows, row_group_rows):
                app.write_row_group(table.slice(off, row_group_rows))
            del table, batches
        path = None
        rows = 0
        if app is not None:
            rows = app.rows
            path = app.finish({"tcpsnap.closed": "recovered"})
        else:
            for p in (tmp, rglog_path(final)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
    except BaseException:
        if app is not None:
            app.close_files()
        raise
    for _, jp in replay:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(jp)
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    return RecoveryResult(path, rows, from_journal, torn)


def _options_from_kv(kv: dict[str, str], row_group_rows: int) -> dict:
    comp = kv.get("tcpsnap.compression") or "zstd"
    level = kv.get("tcpsnap.compression_level")
    return dict(compression=None if comp == "none" else comp,
                compression_level=int(level) if level not in (None, "", "default") else None,
                row_group_rows=row_group_rows, compat=kv.get("tcpsnap.encoding") == "compat")


def last_seq(root: Path) -> int | None:
    """The last ``seq`` recorded in the newest finished file under ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    try:
        parts = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("date="))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for d in reversed(parts):
        files = sorted(p for p in d.iterdir() if p.name.endswith(".parquet") and not p.name.startswith((".", "_")))
        for f in reversed(files):
            try:
                md = pq.read_metadata(f).metadata or {}
            except (OSError, pa.ArrowInvalid):
                continue
            v = md.get(b"tcpsnap.last_seq")
            if v is not None:
                try:
                    return int(v)
                except ValueError:
                    continue
    return None
