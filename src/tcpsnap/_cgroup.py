"""Cgroup ids into cgroup paths, container ids and pod uids (Linux).

A socket's ``cgroup_id`` (``INET_DIAG_CGROUP_ID``, in every full socket's dump message) is
the inode number of its cgroup-v2 directory. The cgroup-v2 mount is found in
``/proc/self/mountinfo`` (``/sys/fs/cgroup`` on a unified host, ``/sys/fs/cgroup/unified``
on a hybrid one); walking it gives inode -> path. The walk is cached: a cgroup id not in
the cache re-walks the mount at once for an id it has never looked for (a cgroup created
since the last walk: its connections must not go unattributed for a second, which in
changes mode, where a connection's attribution is written once, would be for good), and
at most once per ``rewalk_interval`` seconds for ids a walk did not find (removed cgroups),
so an unknown id costs a dictionary look-up, not a walk per row. The cache holds at most ``max_entries``
paths (the walk stops there).

No privilege is needed: cgroup directories are world-readable.

Container ids and pod uids are parsed from the path (see ``container_of`` and
``pod_uid_of``); names follow the runtimes' cgroup drivers:

=========== ============================================ ==================================
runtime     systemd driver                               cgroupfs driver
=========== ============================================ ==================================
Docker      ``.../docker-<id>.scope``                    ``/docker/<id>``
containerd  ``.../cri-containerd-<id>.scope``            ``/.../<id>`` under ``kubepods``
CRI-O       ``.../crio-<id>.scope``                      ``/.../crio-<id>``
podman      ``.../libpod-<id>.scope``                    ``/libpod_parent/libpod-<id>``
Kubernetes  ``kubepods-<qos>-pod<uid_with_underscores>   ``/kubepods/<qos>/pod<uid>/<id>``
            .slice``
=========== ============================================ ==================================
"""

from __future__ import annotations

import os
import re
import threading
import time

import numpy as np

__all__ = ["cgroup2_mount", "container_of", "pod_uid_of", "CgroupResolver", "default_resolver"]

_ID = r"([0-9a-f]{64})"
# the innermost match wins: a container's own cgroup is its last component with an id
_CONTAINER = re.compile(r"(?:^|/)(?:docker-|cri-containerd-|crio-|libpod-)" + _ID + r"\.scope(?:/|$)"
                        r"|(?:^|/)(?:docker|libpod)[-/]" + _ID + r"(?:/|$)"
                        r"|(?:^|/)crio-" + _ID + r"(?:/|$)"
                        r"|/kubepods(?:[^/]*/)*?pod[0-9a-f_-]{36}/" + _ID + r"(?:/|$)")
_POD = re.compile(r"kubepods.*?[/-]pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
                  r"(?:\.slice)?(?:/|$)")


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup-v2 hierarchy is mounted (the first ``cgroup2`` line of
    ``mountinfo``), or None (no cgroup v2, or no /proc)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                left, sep, right = line.partition(" - ")
                if sep and right.split(" ", 1)[0] == "cgroup2":
                    # field 5 is the mount point, with spaces etc. escaped as \\ooo
                    return left.split(" ")[4].encode().decode("unicode_escape")
    except OSError:
        return None
    return None


def container_of(path: str) -> str | None:
    """The container id (64 hex digits) a cgroup path names, or None."""
    found = None
    for m in _CONTAINER.finditer(path):
        found = next(g for g in m.groups() if g)
    return found


def pod_uid_of(path: str) -> str | None:
    """The Kubernetes pod uid (with dashes) a cgroup path names, or None. The systemd
    driver writes it with underscores (``kubepods-besteffort-pod<uid>.slice``)."""
    m = _POD.search(path)
    return m.group(1).replace("_", "-") if m else None


class CgroupResolver:
    """cgroup id -> (path, container, pod uid), by walking the cgroup-v2 mount.

    ``resolve(ids)`` takes a uint64 array and returns three ``(codes, strings)`` pairs, one
    per column (``cgroup``, ``container``, ``pod_uid``): int32 codes into the strings, -1 where
    unknown (id 0: a TIME_WAIT row whose connection was never seen, a Windows row; or an id
    no walk found: a cgroup already removed). Paths are relative to the mount, starting
    with ``/`` (``/`` itself is the root cgroup). Thread-safe.
    """

    def __init__(self, mount: str | None = None, *, max_entries: int = 200_000,
                 rewalk_interval: float = 1.0) -> None:
        self.mount = mount if mount is not None else cgroup2_mount()
        self.max_entries = max_entries
        self.rewalk_interval = rewalk_interval
        self._paths: dict[int, str] = {}
        #: ids a walk looked for and did not find (bounded by ``max_entries``)
        self._not_found: set[int] = set()
        self._last_walk = -1e18
        self._lock = threading.Lock()
        #: ``walks`` done and ``misses`` (ids found by no walk)
        self.stats = {"walks": 0, "misses": 0}

    def _walk(self) -> None:
        paths: dict[int, str] = {}
        root = self.mount
        if root is None:
            return
        stack = [(root, "/")]
        try:
            paths[os.stat(root).st_ino] = "/"
        except OSError:
            return
        while stack and len(paths) < self.max_entries:
            d, rel = stack.pop()
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            r = rel + e.name if rel == "/" else rel + "/" + e.name
                            try:
                                paths[e.inode()] = r
                            except OSError:
                                continue
                            stack.append((e.path, r))
            except OSError:
                continue      # removed meanwhile
        self._paths = paths
        self._last_walk = time.monotonic()
        self.stats["walks"] += 1

    def path(self, cgroup_id: int) -> str | None:
        """The cgroup path of one id, or None."""
        codes, strings = self.resolve(np.array([cgroup_id], np.uint64))[0]
        return strings[codes[0]] if codes[0] >= 0 else None

    def resolve(self, ids: np.ndarray) -> tuple[tuple[np.ndarray, list[str]], ...]:
        inv, columns = self.resolve_distinct(ids)
        return tuple((lut[inv], strings) for lut, strings in columns)

    def resolve_distinct(self, ids: np.ndarray) -> tuple[np.ndarray, tuple[tuple[np.ndarray, list[str]], ...]]:
        """What ``resolve`` does, per distinct id: ``(inv, columns)``, ``inv`` the row ->
        distinct id index (int32), each column ``(lut, strings)`` with ``lut`` the distinct
        id -> code (-1 unknown); ``lut[inv]`` are the rows' codes. Cost: one hash of the ids,
        then work per distinct id only."""
        from ._encode import dictionary_encode

        # hashing, not sorting: few distinct ids in many rows (in C: no pyarrow.compute)
        ids = np.ascontiguousarray(ids, dtype=np.uint64)
        first, inv = dictionary_encode(ids)
        uniq = ids[first]
        with self._lock:
            want = [int(i) for i in uniq if i != 0]
            unknown = [i for i in want if i not in self._paths]
            if unknown and (any(i not in self._not_found for i in unknown)
                            or time.monotonic() - self._last_walk >= self.rewalk_interval):
                self._walk()
                if len(self._not_found) > self.max_entries:
                    self._not_found.clear()
                self._not_found.update(i for i in unknown if i not in self._paths)
            found = [self._paths.get(i) for i in want]
            self.stats["misses"] += sum(p is None for p in found)
        lut_path = np.full(len(uniq), -1, np.int32)
        lut_cont = np.full(len(uniq), -1, np.int32)
        lut_pod = np.full(len(uniq), -1, np.int32)
        paths: list[str] = []
        conts: list[str] = []
        pods: list[str] = []
        nonzero = [j for j in range(len(uniq)) if uniq[j] != 0]
        for j, p in zip(nonzero, found, strict=False):
            if p is None:
                continue
            lut_path[j] = len(paths)
            paths.append(p)
            c = container_of(p)
            if c is not None:
                lut_cont[j] = _code(conts, c)
            u = pod_uid_of(p)
            if u is not None:
                lut_pod[j] = _code(pods, u)
        return inv, ((lut_path, paths), (lut_cont, conts), (lut_pod, pods))


def _code(strings: list[str], s: str) -> int:
    # few containers and pods per batch: a linear search is cheaper than a dict to build
    try:
        return strings.index(s)
    except ValueError:
        strings.append(s)
        return len(strings) - 1


_DEFAULT: CgroupResolver | None = None


def default_resolver() -> CgroupResolver:
    """The process-wide resolver (one walk cache for every reader and writer)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CgroupResolver()
    return _DEFAULT
