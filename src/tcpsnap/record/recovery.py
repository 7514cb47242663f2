"""Recovery: turn what a crash left into finished Parquet files, losing nothing.

For each interrupted file (``.name.tmp`` + ``.name.rglog`` + journals ``.name.jK``):

- every row group the log vouches for is kept, and every intact journal frame is
  replayed as one more row group per journal; the file is finished and published under
  a name that replaces nothing, with ``tcpsnap.closed=recovered`` in its footer;
- a torn last write (kill -9 mid-append) is the one thing dropped: bytes no entry
  vouches for after the last verified one;
- anything else recovery cannot vouch for -- a corrupt log entry or header, a missing
  log, a journal frame that does not check -- is never deleted: it is moved (or, for a
  log recovery still uses, copied) to ``_tcpsnap_unrecovered/`` and the result says so
  (``problems``; ``tcpsnap recover`` then exits 1);
- a file that only looks like a leftover (not a tcpsnap file, a link, another owner's)
  is left where it is, with a warning.

Idempotent at every crash point: a journal is removed only once its rows are verified
to be in a row group of the file or of a file already published from it (by the
``seq`` ranges of their statistics and footers), so running recovery again after a
crash in the middle of it never replays anything twice.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import RecorderError
from .folder import copy_aside, find_leftovers, finished_files, footer_kv, keep_aside, lock, unlock
from .layout import JOURNAL_RE, free_name, rglog_path, tmp_path
from .safedir import SafeDir, UnsafePath

__all__ = ["recover", "recover_all", "recover_file", "RecoveryResult"]

log = logging.getLogger("tcpsnap.recorder")

_PARQUET_MAGIC = b"PAR1"
#: A row-group log holds a few KiB per row group; a larger one is not ours to load.
_MAX_LOG = 64 << 20


@dataclass
class RecoveryResult:
    """What recovery did for one interrupted file.

    ``path``: the finished file (None if there were no rows); ``rows`` in it,
    ``from_journal`` of them from journals; ``torn``: a torn last write was dropped;
    ``problems``: what could not be verified (empty when all went well); ``kept``: where
    the bytes recovery could not use now are.
    """

    path: Path | None
    rows: int = 0
    from_journal: int = 0
    torn: bool = False
    problems: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _covered(ranges: list[tuple[int, int]], lo: int, hi: int) -> bool:
    return any(a <= lo and hi <= b for a, b in ranges)


def _published_ranges(d: SafeDir, name: str) -> list[tuple[int, int]]:
    """``seq`` ranges of the finished files published from ``name`` (itself, or
    ``<stem>-N.parquet`` when the name was taken)."""
    stem = name[: -len(".parquet")]
    out = []
    for n in finished_files(d):
        if n == name or (n.startswith(stem + "-") and n[len(stem) + 1:-8].isdigit()):
            kv = footer_kv(d, n)
            try:
                out.append((int(kv[b"tcpsnap.first_seq"]), int(kv[b"tcpsnap.last_seq"])))
            except (KeyError, ValueError):
                continue
    return out


def _journal_seq(batches: list) -> tuple[int, int] | None:  # (first, last) seq of their rows
    import pyarrow.compute as pc

    lo = hi = None
    for b in batches:
        i = b.schema.get_field_index("seq")
        if i < 0 or b.num_rows == 0:
            continue
        mm = pc.min_max(b.column(i))
        a, z = mm["min"].as_py(), mm["max"].as_py()
        lo = a if lo is None else min(lo, a)
        hi = z if hi is None else max(hi, z)
    return None if lo is None or hi is None else (int(lo), int(hi))


def _options_from_kv(kv: dict[str, str], row_group_rows: int) -> dict:
    comp = kv.get("tcpsnap.compression") or "zstd"
    level = kv.get("tcpsnap.compression_level")
    return dict(compression=None if comp == "none" else comp,
                compression_level=int(level) if level not in (None, "", "default") else None,
                row_group_rows=row_group_rows, compat=kv.get("tcpsnap.encoding") == "compat")


def recover_file(final: Path, row_group_rows: int = 1 << 20, *, folder: SafeDir | None = None,
                 root: SafeDir | None = None, part: str | None = None) -> RecoveryResult:
    """Recover one interrupted file whose final path is ``final`` (see the module doc).

    ``folder`` is its (open) partition folder, ``root`` the recording folder and
    ``part`` the partition's name in it (defaults: ``final``'s parent, which is then
    also where suspect files are kept aside).
    """
    from .journal import max_raw_bytes, read_journal, unify_table
    from .parquet import ParquetAppender, kv_of, read_rglog, rg_seq_ranges, schema_from_header, verify_row_groups

    final = Path(final)
    own = folder is None
    d = folder or SafeDir.open(final.parent)
    top = root or d
    part_name = part if part is not None else ("" if root is None else final.parent.name)
    name = final.name
    tmpn, logn = tmp_path(final).name, rglog_path(final).name
    res = RecoveryResult(None)
    aside: list[str] = []  # names to move aside (once the rest is published)
    drop: list[str] = []  # names verified to hold nothing more (removed once published)
    app: ParquetAppender | None = None
    try:
        # -------- what is there, and whether it is ours
        _finish_publish(d, tmpn, name)
        has_tmp = d.is_file(tmpn)
        if d.exists(tmpn) and not has_tmp:
            log.warning("%s is not a regular file: left alone", d.path / tmpn)
        has_log = d.is_file(logn)
        tmp_size = d.lstat(tmpn).st_size if has_tmp else 0
        head = d.read_bytes(tmpn, limit=4) if has_tmp else b""
        if has_tmp and head != _PARQUET_MAGIC[:len(head)]:
            log.warning("%s is not a Parquet file of tcpsnap's: left alone", d.path / tmpn)
            has_tmp = has_log = False
        log_size = d.lstat(logn).st_size if has_log else 0
        if log_size > _MAX_LOG:
            scan = read_rglog(b"", tmp_size)
            scan.problems.append(f"row-group log of {log_size} bytes: more than a log can hold")
        else:
            scan = read_rglog(d.read_bytes(logn) if has_log else b"", tmp_size)
        if has_tmp and scan.header is not None and scan.rgs:
            # the log vouches for the metadata; the data must read back too (page CRCs)
            fd = d.open_file(tmpn)
            try:
                bad = verify_row_groups(fd, scan.header, scan.rgs, scan.end)
            finally:
                os.close(fd)
            if bad:
                scan.problems.append(f"row group(s) {', '.join(map(str, bad))} of the data do not "
                                     f"read back (corrupt bytes); they stay in the file, "
                                     f"unreferenced")
                scan.rgs = [rg for i, rg in enumerate(scan.rgs) if i not in set(bad)]
        if has_tmp and tmp_size > len(_PARQUET_MAGIC) and scan.header is None:
            # the data cannot be interpreted without the log's header: keep it whole
            if not scan.problems:
                scan.problems.append("row-group log missing" if not has_log else
                                     "row-group log header unreadable")
            # moved now: nothing below reads them, and a new file may need their names
            res.kept += keep_aside(top, part_name, d, [tmpn, logn])
            has_tmp = has_log = False
        missing = (rg_seq_ranges(schema_from_header(scan.header), scan.missing)
                   if scan.header and scan.missing else [])
        res.torn |= scan.torn
        ranges = rg_seq_ranges(schema_from_header(scan.header), scan.rgs) if scan.header else []
        done = _published_ranges(d, name)

        # -------- journals: replay, drop as verified-covered, or keep aside
        journals = sorted((int(m.group("k")), n) for n in d.listdir()
                          if (m := JOURNAL_RE.match(n)) and m.group("name") == name)
        replay = []
        for _, jn in journals:
            if not d.is_file(jn):
                log.warning("%s is not a regular file: left alone", d.path / jn)
                continue
            schema, batches, complete, status = read_journal(
                d.path / jn, d, max_raw_bytes(row_group_rows), detail=True)
            if status == "foreign":
                log.warning("%s is not a tcpsnap journal: left alone", d.path / jn)
                continue
            if status == "corrupt":
                res.problems.append(f"{d.path / jn}: a frame does not check; the frames before it "
                                    f"are recovered, the file is kept aside")
                aside.append(jn)
            res.torn |= status == "torn"
            sr = _journal_seq(batches)
            if sr is None or _covered(ranges + done, *sr):
                if jn not in aside:
                    drop.append(jn)  # verified: its rows are durable elsewhere (or it has none)
                continue
            replay.append((jn, schema, batches, sr))
        have = done + [sr for *_, sr in replay]
        if scan.missing and not all(_covered(have, a, b) for a, b in missing):
            scan.problems.append(f"row groups after byte {scan.end} are in the log but not in the "
                                 f"data file (lost writes)")
        res.problems += [f"{d.path / logn}: {p}" for p in scan.problems]

        # -------- the file: resume it, or start one for the journals' rows
        if has_tmp and scan.header is not None:
            res.torn |= tmp_size > scan.end  # data no entry vouches for: the last write
            if scan.problems:
                kept = copy_aside(top, part_name, d, logn)
                if kept:
                    res.kept.append(kept)
            schema = schema_from_header(scan.header)
            kv = kv_of(scan.header)
            # with a corrupt entry, keep every data byte (the unverified ones stay in the
            # file, unreferenced, and their metadata in the copy kept aside)
            pos = max(scan.end, tmp_size) if scan.problems else scan.end
            app = ParquetAppender(final, schema, **_options_from_kv(kv, row_group_rows),
                                  folder=d, _resume=(scan.header, scan.rgs, pos, scan.log_end))
        elif has_tmp or has_log:
            # nothing verified in them: a crash right after they were created (only magic
            # bytes), or a log whose data is gone; the latter is kept aside
            if has_tmp and tmp_size > len(_PARQUET_MAGIC) or scan.rgs and not _all_covered(
                    ranges, done):
                res.problems.append(f"{d.path / name}: in-progress file without verified row "
                                    f"groups")
                res.kept += keep_aside(top, part_name, d, [tmpn, logn])
            else:
                d.unlink(tmpn)  # magic bytes only, or a log of a file already published
                d.unlink(logn)
        for _jn, schema, batches, _ in replay:
            if app is None:
                kv = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
                out = final
                if d.exists(tmpn) or d.exists(logn):  # names held by what was left alone
                    out = d.path / free_name(d, name)
                app = ParquetAppender(out, schema, **_options_from_kv(kv, row_group_rows),
                                      folder=d)
            table = unify_table(app.schema, batches)
            res.from_journal += table.num_rows
            app.write_row_group(table)  # one row group per journal, as the recorder does
            del table, batches
        if app is not None:
            res.rows = app.rows
            res.path = app.finish({"tcpsnap.closed": "recovered", "tcpsnap.recovered_from": name})
            app = None

        # -------- clean up: what is verified goes, what is not is kept aside
        for jn in drop + [jn for jn, *_ in replay if jn not in aside]:
            d.unlink(jn)
        if aside:
            res.kept += keep_aside(top, part_name, d, aside)
        return res
    except BaseException:
        if app is not None:
            app.close_files()
        raise
    finally:
        if own:
            d.close()


def _finish_publish(d: SafeDir, tmpn: str, name: str) -> None:
    """A crash between the two steps of publishing (hard link, then unlink of the
    in-progress name) leaves both names on one inode: the file is published; drop the
    in-progress name."""
    try:
        st = d.lstat(tmpn)
    except FileNotFoundError:
        return
    if st.st_nlink < 2 or not d.is_file(tmpn):
        return
    stem = name[: -len(".parquet")]
    for n in finished_files(d):
        if (n == name or n.startswith(stem + "-")) and d.lstat(n).st_ino == st.st_ino:
            d.unlink(tmpn)
            d.unlink(rglog_path(Path(name)).name)
            return


def _all_covered(ranges: list[tuple[int, int]], done: list[tuple[int, int]]) -> bool:
    return all(_covered(done, a, b) for a, b in ranges)


def recover_all(root: SafeDir, row_group_rows: int, level: int = logging.INFO) -> list[RecoveryResult]:
    """Recover every leftover in ``root``. A leftover that cannot be recovered is
    reported (a result with ``problems``) and kept; it never stops the others, nor
    the recorder from starting."""
    out = []
    for lo in find_leftovers(root):
        final = root.path / lo.part / lo.name if lo.part else root.path / lo.name
        try:
            d = root.subdir(lo.part) if lo.part else root
        except (UnsafePath, OSError) as e:
            out.append(RecoveryResult(None, problems=[str(e)]))
            continue
        try:
            r = recover_file(final, row_group_rows, folder=d, root=root, part=lo.part)
        except (OSError, RecorderError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            r = RecoveryResult(None, problems=[f"recovering {final}: {msg} (its files are kept)"])
        except Exception as e:  # noqa: BLE001 - keep the files, go on with the others
            r = RecoveryResult(None, problems=[f"could not recover {final} (its files are "
                                               f"kept): {type(e).__name__}: {e}"])
        finally:
            if lo.part:
                d.close()
        if r.path is not None:
            log.log(level, "recovered %s: %d rows (%d from the journal%s)", r.path, r.rows,
                    r.from_journal, ", torn tail dropped" if r.torn else "")
        for p in r.problems:
            log.error("%s", p)
        if r.kept:
            log.error("kept aside for inspection: %s", ", ".join(r.kept))
        out.append(r)
    return out


def recover(path: str | os.PathLike, row_group_rows: int = 1 << 20) -> list[RecoveryResult]:
    """Finish the files a crashed recorder left in folder ``path``: every row the crash
    did not take (see the module doc). Refuses (``RecorderLocked``) while a recorder
    runs there; ``UnsafePath`` for a folder other users control."""
    with SafeDir.open(path) as root:
        fd = lock(root)
        try:
            return recover_all(root, row_group_rows)
        finally:
            unlock(fd, root)
