# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Linux: the process that owns each socket, found by inode in /proc/<pid>/fd.

One PidResolver keeps, between snapshots, a map socket inode -> owner (a slot in its
process table, whose identity is pid + start time, pinned by a pidfd where it can
hold one). Per snapshot it only looks rows up; /proc is walked, in C and without the
GIL, only when the table holds inodes it has not resolved, and at most at the pace
set by ``walk_interval`` / ``walk_share``. The rules (who owns a shared socket, how
late a new one gets its pid, how stale entries are noticed) are written out in
``tcpsnap.pids``.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS
from libc.errno cimport errno, EACCES, EPERM, ENOENT, ENOMEM, ENOSYS, ESRCH, EINTR, EMFILE, ENFILE
from libc.limits cimport INT_MAX
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t, UINT32_MAX
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
from libc.string cimport memcpy, memset, memcmp
from posix.stat cimport struct_stat, fstat

import numpy as np

from tcpsnap.frame import merge_names
from tcpsnap._schema import ROW_DTYPE

from tcpsnap._row cimport (tcpsnap_row, room, check_out_array, get_buffer, index_arg, int_arg, float_arg,
                           int_text)
from tcpsnap._system cimport (
    ssize_t, read, readlinkat, lseek, close, SEEK_SET, openat, O_RDONLY, O_DIRECTORY, O_CLOEXEC,
    AT_FDCWD, dirent64, getdents64, pollfd, poll, POLLIN, pthread_t, pthread_mutex_t, pthread_mutex_init,
    pthread_mutex_lock, pthread_mutex_unlock, pthread_create, pthread_join, timespec,
    clock_gettime, CLOCK_MONOTONIC, set_errno, tcpsnap_pidfd_open, tcpsnap_nice_thread, raise_syscall)

cdef extern from *:
    # GCC / Clang builtins: atomics for the early-stop state the walk threads share (relaxed
    # is enough: it only decides how much is walked; the results are read after
    # pthread_join), and a prefetch.
    """
    #define TCPSNAP_GOLDEN 0x9E3779B97F4A7C15ULL
    static inline void tcpsnap_prefetch(const void *p) { __builtin_prefetch(p); }
    static inline int tcpsnap_mark(unsigned char *p) { return __atomic_exchange_n(p, 1, __ATOMIC_RELAXED); }
    static inline size_t tcpsnap_count_down(size_t *p) { return __atomic_sub_fetch(p, 1, __ATOMIC_RELAXED); }
    static inline int tcpsnap_load(int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void tcpsnap_done(int *p) { __atomic_add_fetch(p, 1, __ATOMIC_RELEASE); }
    static inline int tcpsnap_done_count(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline int tcpsnap_swap(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
    """
    uint64_t TCPSNAP_GOLDEN
    void prefetch "tcpsnap_prefetch"(const void *p) nogil
    int tcpsnap_mark(unsigned char *p) nogil
    size_t tcpsnap_count_down(size_t *p) nogil
    int tcpsnap_load(int *p) nogil
    void tcpsnap_done(int *p) nogil
    int tcpsnap_done_count(int *p) nogil
    int tcpsnap_swap(int *p, int v) nogil

cdef extern from "<pthread.h>" nogil:
    int pthread_detach(pthread_t t)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    ctypedef struct pthread_cond_t:
        pass
    int pthread_cond_init(pthread_cond_t *c, const void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_signal(pthread_cond_t *c)
    int pthread_cond_broadcast(pthread_cond_t *c)

cdef extern from "<unistd.h>" nogil:
    int getpid()

cdef extern from "<pthread.h>" nogil:
    int pthread_setname_np(pthread_t t, const char *name)   # _GNU_SOURCE: Python.h's

cdef extern from "<sys/stat.h>" nogil:
    int fstatat(int dirfd, const char *path, struct_stat *buf, int flags)
    bint S_ISSOCK(unsigned int mode)

cdef extern from "<sys/socket.h>" nogil:
    int SOL_SOCKET
    int getsockopt(int fd, int level, int name, void *val, unsigned int *len)
    enum: SO_COOKIE_OPT "57"     # SO_COOKIE (Linux >= 4.12; older headers lack the name)

cdef extern from "Python.h":
    # resolve() lets the GIL go only where worth it (Cython's nogil takes no runtime flag)
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyEval_SaveThread()
    void PyEval_RestoreThread(PyThreadState *)

cdef enum:
    C_0 = 48                   # '0'
    C_1 = 49
    C_9 = 57
    C_LPAREN = 40
    C_RPAREN = 41
    C_SPACE = 32

cdef enum:
    MIN_CAP = 1024             # smallest socket map (slots)
    PROC_CAP0 = 64             # first process table size
    BUF_SIZE = 64 * 1024       # getdents64 buffer per worker
    MAX_MISSES = 3             # walks that may miss an inode before it stops asking for more
    POLL_CHUNK = 1024          # pidfds per poll() call (stays under any RLIMIT_NOFILE)
    VERIFY_MIN_DIV = 1024      # every take re-checks at least 1/1024 of the owners...
    VERIFY_MAX_DIV = 32        # ...and at most 1/32
    VERIFY_BACKSTOP = 4        # every owned socket re-read at least once per this many laps
    PREFETCH = 12              # rows ahead whose map slot the row pass prefetches
    # A background resolver's per-take passes (and name codes) keep the GIL below this many
    # rows: they take well under a millisecond there, and a capture thread that lets the
    # GIL go waits to get it back until the writer's Python lets go (the recorder at
    # --interval 0: benchmarks/RESULTS.md, "Rate at --interval 0"). Walks always let it go.
    NOGIL_ROWS = 1 << 15
    FD_BLOCK = 1024            # descriptors per block when workers share a directory
    MAX_VDIRS = 64             # fd directories a take keeps open while re-checking links
    VDIR_NONE = -1             # proc_ent.vdir: not opened in this take
    VDIR_GONE = -2             # ...the process is gone
    VDIR_PATH = -3             # ...use /proc/<pid>/fd/<fd> from /proc instead
    BG_NICE = 0                # nice value of background walk threads (0: as the writer; see below)
    FP_MAX_THREADS = 64        # run_fingerprint: more threads than this, not worth it (read the links)
    FP_MIN_LINKS = 4           # ...nor for fewer backstop links of a process in one round
    FP_DIRBUF = 4096
    CHG_MAX = 1 << 16          # owner changes begin_rows hands out (more: every row looked up)
    CATCHUP_MAX = 1024         # quiet owners' links read at once: at most this many a round (~5 ms)
    FP_NEW = 0x4000            # an owned entry's born, rounds back: "not known right since its fingerprint"
    FP_SLIDE = 0x2000          # a quiet owner's fp_round is moved up when this old...
    FP_KEEP = 0x1000           # ...to this many rounds back (over a backstop lap's rounds)

cdef double CHECK_PACE = 0.05    # background re-checks: seconds between rounds at least
cdef double CATCHUP_PACE = 1.0   # ...between passes over the map for quiet owners' links


cdef inline double mono() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef enum:
    W_WALK = 0
    W_POLL = 1
    W_MAP = 2
    W_LIST = 3

cdef enum:
    P_WALK = 0     # resolve(): time per phase, for the benchmarks' breakdown
    P_POLL = 1
    P_VERIFY = 2
    P_ROWS = 3
    P_MERGE = 4
    P_TIDY = 5
    P_COUNT = 6

PHASES = ("walk", "poll", "verify", "rows", "merge", "tidy")

WHERE = ("openat(/proc/<pid>/fd)", "poll(pidfd)", "owner map", "getdents64(/proc)")


# ---------------------------------------------------------------- socket inode map

cdef inline size_t slot_of(uint64_t key, int shift) noexcept nogil:
    return <size_t>((key * TCPSNAP_GOLDEN) >> shift)


cdef int smap_init(sock_map *m, size_t cap) noexcept nogil:
    cdef int bits = 0
    m.slots = <sock_ent *>calloc(cap, sizeof(sock_ent))
    if m.slots == NULL:
        return -1
    while (<size_t>1 << bits) < cap:
        bits += 1
    m.cap = cap
    m.count = 0
    m.shift = 64 - bits
    return 0


cdef sock_ent *smap_find(const sock_map *m, uint64_t key) noexcept nogil:
    cdef size_t mask = m.cap - 1
    cdef size_t i = slot_of(key, m.shift)
    cdef sock_ent *e
    while True:
        e = &m.slots[i]
        if e.inode == key:
            return e
        if e.inode == 0:
            return NULL
        i = (i + 1) & mask


cdef int smap_resize(sock_map *m, size_t cap) noexcept nogil:
    cdef sock_map n
    cdef size_t i, j, mask
    if smap_init(&n, cap) < 0:
        return -1
    mask = cap - 1
    for i in range(m.cap):
        if m.slots[i].inode != 0:
            j = slot_of(m.slots[i].inode, n.shift)
            while n.slots[j].inode != 0:
                j = (j + 1) & mask
            n.slots[j] = m.slots[i]
    n.count = m.count
    free(m.slots)
    m[0] = n
    return 0


cdef sock_ent *smap_insert(sock_map *m, uint64_t key) noexcept nogil:
    """Add ``key`` (known to be absent) as a zeroed entry; NULL when out of memory."""
    cdef size_t i, mask
    if (m.count + 1) * 10 > m.cap * 7:  # load factor at most 0.7
        if smap_resize(m, m.cap * 2) < 0:
            return NULL
    mask = m.cap - 1
    i = slot_of(key, m.shift)
    while m.slots[i].inode != 0:
        i = (i + 1) & mask
    memset(&m.slots[i], 0, sizeof(sock_ent))
    m.slots[i].inode = key
    m.count += 1
    return &m.slots[i]


cdef void smap_delete_at(sock_map *m, size_t i) noexcept nogil:
    """Empty slot i, shifting back the entries of its cluster (no tombstones)."""
    cdef size_t mask = m.cap - 1
    cdef size_t j = i, k
    while True:
        j = (j + 1) & mask
        if m.slots[j].inode == 0:
            break
        k = slot_of(m.slots[j].inode, m.shift)
        # the entry at j may stay when its home k lies cyclically in (i, j]
        if (i < k <= j) if i <= j else (i < k or k <= j):
            continue
        m.slots[i] = m.slots[j]
        i = j
    m.slots[i].inode = 0
    m.count -= 1


cdef size_t smap_evict(sock_map *m, uint32_t epoch) noexcept nogil:
    """Drop every entry not seen in ``epoch``; shrink when mostly empty."""
    cdef size_t mask = m.cap - 1
    cdef size_t s = 0, i, steps = 0, removed = 0, cap
    while m.slots[s].inode != 0:        # start after an empty slot: no cluster wraps past it
        s += 1
    i = (s + 1) & mask
    while steps < m.cap - 1:
        if m.slots[i].inode != 0 and m.slots[i].seen != epoch:
            smap_delete_at(m, i)         # slot i may now hold a later entry: look again
            removed += 1
            continue
        i = (i + 1) & mask
        steps += 1
    if m.cap > MIN_CAP and m.count * 8 < m.cap:
        cap = MIN_CAP
        while cap < m.count * 2:
            cap *= 2
        smap_resize(m, cap)              # on ENOMEM the larger map simply stays
    return removed


# ---------------------------------------------------------------- /proc reading

cdef int read_stat(int procfd, uint32_t pid, uint64_t *start, char *comm) noexcept nogil:
    """Start time and comm from /proc/<pid>/stat; 0, or -1 with errno (gone, denied)."""
    cdef char path[32]
    cdef char buf[1024]
    cdef ssize_t n
    cdef int fd, e, field
    cdef ssize_t i, lp = -1, rp = -1, clen
    cdef uint64_t v = 0
    snprintf(path, sizeof(path), "%u/stat", pid)
    fd = openat(procfd, path, O_RDONLY | O_CLOEXEC)
    if fd < 0:
        return -1
    n = read(fd, buf, sizeof(buf) - 1)
    e = errno
    close(fd)
    if n <= 0:
        set_errno(e if n < 0 else ESRCH)
        return -1
    # "pid (comm) S ppid ...": comm may hold ')' and spaces, so the last ')' ends it
    for i in range(n):
        if buf[i] == C_LPAREN:
            lp = i
            break
    i = n - 1
    while i > lp:
        if buf[i] == C_RPAREN:
            rp = i
            break
        i -= 1
    if lp < 0 or rp < 0:
        set_errno(ESRCH)
        return -1
    clen = rp - lp - 1
    if clen > COMM_LEN - 1:
        clen = COMM_LEN - 1
    memcpy(comm, buf + lp + 1, clen)
    comm[clen] = 0
    i = rp + 2                           # field 3, the state
    field = 3
    while field < 22 and i < n:          # starttime is field 22
        if buf[i] == C_SPACE:
            field += 1
        i += 1
    while i < n and C_0 <= buf[i] <= C_9:
        v = v * 10 + <uint64_t>(buf[i] - C_0)
        i += 1
    if field != 22:
        set_errno(ESRCH)
        return -1
    start[0] = v
    return 0


cdef inline int grow(void **p, size_t *cap, size_t need, size_t item) noexcept nogil:
    # the one growth rule (_row.pxd's room, as _cookies.pxd's buffers use it), from 256 items
    return room(p, cap, need, item, 256)


cdef enum walk_status:
    WS_END = 0         # no descriptor at or after the block's end
    WS_MORE = 1        # stopped at a descriptor >= the block's end
    WS_GONE = 2        # the process exited while we read it
    WS_DENIED = 3      # the directory is listable, the links are not ours to read


cdef walk_status walk_fds(walker *w, int fdd, uint32_t pid, int lo, int hi) noexcept nogil:
    """Read the links of descriptors lo <= fd < hi (hi 0: no end) of one fd directory;
    record the sockets the walk wants. procfs lists fds in ascending order, and a
    directory offset of fd + 2 starts the listing at fd: that is what lets several
    workers share one large directory, a block of fd numbers each."""
    cdef char link[64]
    cdef ssize_t got, off, k, j
    cdef size_t room = w.buf_size
    cdef dirent64 *d
    cdef uint64_t ino
    cdef const sock_ent *se
    cdef int fdnum
    if hi:
        room = <size_t>(hi - lo) * 24 + 256    # about one block of entries per read
        if room > w.buf_size:
            room = w.buf_size
    if lseek(fdd, lo + 2 if lo else 0, SEEK_SET) < 0:
        return WS_GONE
    while True:
        got = getdents64(fdd, w.buf, room)
        if got < 0:
            return WS_GONE if errno == ENOENT else WS_END
        if got == 0:
            return WS_END
        off = 0
        while off < got:
            d = <dirent64 *>(w.buf + off)
            off += d.d_reclen
            if d.d_name[0] < C_0 or d.d_name[0] > C_9:
                continue
            fdnum = 0
            j = 0
            while d.d_name[j] != 0:
                fdnum = fdnum * 10 + (d.d_name[j] - C_0)
                j += 1
            if hi and fdnum >= hi:
                return WS_MORE
            w.fds += 1
            k = readlinkat(fdd, d.d_name, link, sizeof(link))
            if k < 0:
                if errno == EACCES or errno == EPERM:
                    return WS_DENIED
                continue                 # closed since getdents
            if k < 10 or memcmp(link, b"socket:[", 8) != 0:
                continue
            ino = 0
            j = 8
            while j < k and C_0 <= link[j] <= C_9:
                ino = ino * 10 + <uint64_t>(link[j] - C_0)
                j += 1
            w.sockets += 1
            if w.want != NULL:
                se = smap_find(w.want, ino)
                if se == NULL or se.state == SK_OWNED:
                    continue
                if (se.seen == w.sh.epoch and w.sh.marks != NULL
                        and not tcpsnap_mark(&w.sh.marks[se - w.want.slots])
                        and tcpsnap_count_down(&w.sh.want_left) == 0):
                    w.sh.stop = 1        # every unresolved row found once: higher pids cannot win
            if grow(<void **>&w.found, &w.capfound, w.nfound + 1, sizeof(found_rec)) < 0:
                w.err = ENOMEM
                return WS_END
            w.found[w.nfound].inode = ino
            w.found[w.nfound].pid = pid
            w.found[w.nfound].fd = fdnum
            w.found[w.nfound].info = <uint32_t>w.ninfo
            w.nfound += 1


cdef inline uint32_t count_of(const struct_stat *sb) noexcept nogil:
    """A /proc/<pid>/fd directory's st_size: Linux >= 6.2 makes it the number of open
    descriptors (0 before: not known)."""
    cdef long long n = sb.st_size
    return <uint32_t>n if 0 < n < <long long>UINT32_MAX else 0


cdef uint32_t fd_count(int procfd, uint32_t pid) noexcept nogil:
    """How many descriptors ``pid`` has open, without reading the links (``count_of``).
    0: not known (older kernel, gone, denied)."""
    cdef char path[32]
    cdef struct_stat sb
    snprintf(path, sizeof(path), "%u/fd", pid)
    if fstatat(procfd, path, &sb, 0) != 0:
        return 0
    return count_of(&sb)


cdef inline uint64_t fp_mix(uint64_t h, uint64_t v) noexcept nogil:
    h ^= v + TCPSNAP_GOLDEN + (h << 6) + (h >> 2)
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    return h ^ (h >> 33)


cdef uint64_t run_fingerprint(int procfd, uint32_t pid) noexcept nogil:
    """How much the threads of ``pid`` have run, as one number: its thread ids and each
    one's CPU time in ns, run-queue wait and times scheduled in
    (``/proc/<pid>/task/<tid>/schedstat``). Equal at two looks: no thread of it ran in
    between, so it changed nothing of its own descriptor table (see
    ``PidResolver._verify``). 0: not known (gone, unreadable, more than FP_MAX_THREADS
    threads, or a kernel without schedstats, whose file says "0 0 0")."""
    cdef char path[48]
    cdef char buf[FP_DIRBUF]
    cdef char st[96]
    cdef int tdir, f, nthr = 0
    cdef ssize_t got, off, k, i
    cdef dirent64 *d
    cdef uint64_t h = pid, v, tid
    cdef int field
    snprintf(path, sizeof(path), "%u/task", pid)
    tdir = openat(procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if tdir < 0:
        return 0
    while True:
        got = getdents64(tdir, buf, sizeof(buf))
        if got <= 0:
            break
        off = 0
        while off < got:
            d = <dirent64 *>(buf + off)
            off += d.d_reclen
            if d.d_name[0] < C_0 or d.d_name[0] > C_9:
                continue
            nthr += 1
            if nthr > FP_MAX_THREADS:
                close(tdir)
                return 0
            tid = 0
            i = 0
            while d.d_name[i]:
                tid = tid * 10 + <uint64_t>(d.d_name[i] - C_0)
                i += 1
            snprintf(path, sizeof(path), "%s/schedstat", d.d_name)
            f = openat(tdir, path, O_RDONLY | O_CLOEXEC)
            if f < 0:
                continue                 # a thread that just ended: the others say enough
            k = read(f, st, sizeof(st) - 1)
            close(f)
            if k <= 0:
                continue
            h = fp_mix(h, tid)
            v = 0
            field = 0
            for i in range(k):
                if C_0 <= st[i] <= C_9:
                    v = v * 10 + <uint64_t>(st[i] - C_0)
                elif st[i] == C_SPACE or st[i] == 10:
                    if field == 0 and v == 0:
                        close(tdir)
                        return 0         # no schedstats in this kernel: not known
                    h = fp_mix(h, v)
                    v = 0
                    field += 1
    close(tdir)
    if got < 0 or nthr == 0:
        return 0
    return h | 1


cdef void pin_identity(walker *w, int fdd, uint32_t pid, size_t first) noexcept nogil:
    """After sockets were recorded from fdd (found[first:]): the start time of the
    process, read while its fd directory is still open, then proof that the directory's
    process is still alive (so the stat we read was its own, not a successor's).
    Without that proof the records are dropped."""
    cdef uint64_t tiny[16]
    cdef proc_info *pi
    cdef struct_stat sb
    if w.nfound == first:
        return
    if grow(<void **>&w.infos, &w.capinfo, w.ninfo + 1, sizeof(proc_info)) < 0:
        w.err = ENOMEM
        return
    pi = &w.infos[w.ninfo]
    pi.pid = pid
    if (read_stat(w.procfd, pid, &pi.start, pi.comm) != 0
            or lseek(fdd, 0, SEEK_SET) < 0
            or getdents64(fdd, tiny, sizeof(tiny)) < 0):
        w.nfound = first
        w.gone += 1
    else:
        # the first look at its descriptor count (see PidResolver._saw_count), taken
        # right after its sockets were read
        pi.nfds = count_of(&sb) if fstat(fdd, &sb) == 0 else 0
        w.ninfo += 1


cdef int open_fd_dir(walker *w, uint32_t pid) noexcept nogil:
    cdef char path[32]
    cdef int fdd, e
    snprintf(path, sizeof(path), "%u/fd", pid)
    fdd = openat(w.procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fdd < 0:
        e = errno
        if e == EACCES or e == EPERM:
            w.denied += 1
        elif e == EMFILE or e == ENFILE or e == ENOMEM:
            w.err = e                    # ours, not the process's: the walk cannot go on
        else:
            w.gone += 1
    return fdd


cdef bint offer_blocks(walk_shared *sh, uint32_t pid) noexcept nogil:
    """Make pid's fd directory, past its first block, the one the workers share."""
    cdef bint taken = False
    pthread_mutex_lock(&sh.lock)
    if sh.big_pid == 0:
        sh.big_pid = pid
        sh.big_next = 1
        sh.big_gen += 1
        taken = True
    pthread_mutex_unlock(&sh.lock)
    return taken


cdef void walk_one(walker *w, uint32_t pid) noexcept nogil:
    """One process: its first block of descriptors; a larger directory is offered to
    the other workers block by block (``walk_block``)."""
    cdef walk_shared *sh = w.sh
    cdef int fdd = open_fd_dir(w, pid)
    cdef size_t first = w.nfound
    cdef walk_status st = WS_END         # always set below; the compiler cannot tell
    cdef bint shared = False
    cdef struct_stat sb
    if fdd < 0:
        return
    w.procs += 1
    if sh.block == 0:                    # sharing off: one worker reads the whole directory
        st = walk_fds(w, fdd, pid, 0, 0)
    elif fstat(fdd, &sb) == 0 and sb.st_size > sh.block:
        # Linux >= 6.2 reports the number of open descriptors as the size: offer the
        # blocks after the first to the other workers before reading it
        shared = offer_blocks(sh, pid)
    if sh.block:
        st = walk_fds(w, fdd, pid, 0, sh.block)
        if st == WS_MORE and not shared and not offer_blocks(sh, pid):
            st = walk_fds(w, fdd, pid, sh.block, 0)    # another directory is shared: read on alone
    if st == WS_GONE:
        w.nfound = first
        w.gone += 1
    else:
        if st == WS_DENIED:
            w.denied += 1
        pin_identity(w, fdd, pid, first)
    close(fdd)


cdef void walk_block(walker *w, uint32_t pid, uint32_t gen, size_t blk) noexcept nogil:
    """One block of a shared directory, through this worker's own descriptor for it."""
    cdef walk_shared *sh = w.sh
    cdef size_t first = w.nfound
    cdef walk_status st
    if w.big_gen != gen:
        if w.big_fdd >= 0:
            close(w.big_fdd)
        w.big_gen = gen
        w.big_fdd = open_fd_dir(w, pid)
    st = WS_GONE if w.big_fdd < 0 else walk_fds(w, w.big_fdd, pid, <int>(blk * sh.block), <int>((blk + 1) * sh.block))
    if st != WS_MORE:                    # the end of the directory (or of the process)
        pthread_mutex_lock(&sh.lock)
        if sh.big_gen == gen:
            sh.big_pid = 0
        pthread_mutex_unlock(&sh.lock)
    if st == WS_GONE:
        w.nfound = first
    elif st != WS_DENIED:
        pin_identity(w, w.big_fdd, pid, first)


cdef void walk_run(walker *w) noexcept nogil:
    cdef walk_shared *sh = w.sh
    cdef uint32_t pid, gen
    cdef size_t blk
    w.big_fdd = -1
    w.big_gen = 0
    while w.err == 0:
        pthread_mutex_lock(&sh.lock)
        if sh.big_pid:
            pid = sh.big_pid
            gen = sh.big_gen
            blk = sh.big_next
            sh.big_next += 1
            pthread_mutex_unlock(&sh.lock)
            walk_block(w, pid, gen, blk)
            continue
        if sh.next >= sh.npids or tcpsnap_load(&sh.stop):
            pthread_mutex_unlock(&sh.lock)
            break
        pid = sh.pids[sh.next]
        sh.next += 1
        pthread_mutex_unlock(&sh.lock)
        walk_one(w, pid)
    if w.big_fdd >= 0:
        close(w.big_fdd)
        w.big_fdd = -1


cdef void walk_job(void *arg, int procfd) noexcept nogil:
    """One worker's part of a walk, on a walk worker (``tcpsnap-walk``: long-lived, at
    BG_NICE: the capture thread (nice -10) comes first anyway; at nice 10 walks starved
    on a busy machine and pids came seconds late, benchmarks/RESULTS.md "Footprint").
    The walker's own /proc descriptor is used (the resolver's); -2: ended unrun, which
    cannot happen to a walk (the resolver waits for its walk before stopping them)."""
    cdef walker *w = <walker *>arg
    if procfd == -2:
        return
    walk_run(w)
    tcpsnap_done(&w.sh.done)             # release: its results are complete


# ---------------------------------------------------------------- names, off the caller's thread

cdef enum:
    NJ_RUNNING = 0             # name_job.state: its thread is reading
    NJ_DONE = 1                # ...finished: the resolver merges and frees it
    NJ_ORPHANED = 2            # ...the resolver was closed first: the thread frees it

# A background job (a name job, a check job) is handed to a worker thread; whoever of the
# worker (ending the job) and the resolver (merging, or closing) comes second frees it: its
# state is swapped to NJ_DONE by the one, NJ_ORPHANED by the other.

ctypedef void (*job_fn)(void *job, int procfd) noexcept nogil

cdef struct bg_worker:
    # A long-lived thread that runs one kind of job, one at a time (a thread of their own
    # for each job cost a clone, its stack's faults and /proc opened anew: a check round
    # and a name re-read a second at --interval 1s). One per kind, so that a name
    # lookup stuck in the kernel never holds the check rounds up (nor these it).
    pthread_mutex_t lock
    pthread_cond_t cond
    void *job                  # handed over, not taken yet (NULL: none)
    job_fn run
    pthread_cond_t idle        # signalled when a job has been run (busy back to 0)
    int busy                   # a job handed over and not run to its end yet
    int stop                   # its resolver is gone: end (a job not taken is ended unrun)
    int pid                    # the process it was started in (a fork's child has no thread)
    int own_proc               # opens /proc for its jobs (walks use the resolver's: no descriptor
                               # of its own, which would move this process's count as it starts)


cdef void *worker_main(void *arg) noexcept nogil:
    """A worker's thread: runs each job handed to it with its own /proc descriptor (the
    resolver may close its own meanwhile), until stopped; then frees the worker."""
    cdef bg_worker *w = <bg_worker *>arg
    cdef void *j
    cdef int procfd = openat(AT_FDCWD, b"/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC) if w.own_proc else -3
    tcpsnap_nice_thread(BG_NICE)
    pthread_mutex_lock(&w.lock)
    while True:
        while w.job == NULL and not w.stop:
            pthread_cond_wait(&w.cond, &w.lock)
        j = w.job
        w.job = NULL
        if w.stop:
            break
        pthread_mutex_unlock(&w.lock)
        w.run(j, procfd)
        pthread_mutex_lock(&w.lock)
        w.busy = 0
        pthread_cond_broadcast(&w.idle)
    pthread_mutex_unlock(&w.lock)
    if j != NULL:
        w.run(j, -2)                 # ended unrun: freed (its resolver is gone)
    if procfd >= 0:
        close(procfd)
    pthread_cond_destroy(&w.idle)
    pthread_cond_destroy(&w.cond)
    pthread_mutex_destroy(&w.lock)
    free(w)
    return NULL


cdef int hand_job(bg_worker **slot, job_fn run, void *job, const char *name) noexcept nogil:
    """``job`` to the worker in ``*slot`` (started on first use as a thread called
    ``name``, or anew in a fork's child): 0, or -1 (no thread: nothing runs, the job is
    still the caller's). The worker's previous job must have been taken (the resolver
    hands one at a time, after the last one ended)."""
    cdef bg_worker *w = slot[0]
    cdef pthread_t tid
    if w != NULL and w.pid != getpid():
        w = slot[0] = NULL               # its thread is the parent's: leave it to it
    if w == NULL:
        w = <bg_worker *>calloc(1, sizeof(bg_worker))
        if w == NULL:
            return -1
        pthread_mutex_init(&w.lock, NULL)
        pthread_cond_init(&w.cond, NULL)
        pthread_cond_init(&w.idle, NULL)
        w.run = run
        w.pid = getpid()
        w.own_proc = run != walk_job
        if pthread_create(&tid, NULL, worker_main, w) != 0:
            pthread_cond_destroy(&w.idle)
            pthread_cond_destroy(&w.cond)
            pthread_mutex_destroy(&w.lock)
            free(w)
            return -1
        pthread_setname_np(tid, name)    # top -H, perf: where the CPU goes
        pthread_detach(tid)
        slot[0] = w
    pthread_mutex_lock(&w.lock)
    w.job = job
    w.busy = 1
    pthread_cond_signal(&w.cond)
    pthread_mutex_unlock(&w.lock)
    return 0


cdef void wait_idle(bg_worker *w) noexcept nogil:
    """Until the worker has run the job handed to it (none: at once). Not after
    ``stop_worker`` (the worker frees itself)."""
    if w == NULL or w.pid != getpid():
        return
    pthread_mutex_lock(&w.lock)
    while w.busy:
        pthread_cond_wait(&w.idle, &w.lock)
    pthread_mutex_unlock(&w.lock)


cdef void stop_worker(bg_worker **slot) noexcept nogil:
    """The resolver is gone: its worker ends (after the job it runs, if any) and frees
    itself."""
    cdef bg_worker *w = slot[0]
    if w == NULL:
        return
    slot[0] = NULL
    if w.pid != getpid():
        return
    pthread_mutex_lock(&w.lock)
    w.stop = 1
    pthread_cond_signal(&w.cond)
    pthread_mutex_unlock(&w.lock)


cdef void end_job(int *state, void *reqs, void *job, int mine) noexcept nogil:
    """One side is done with a job: ``mine`` NJ_DONE (its thread) or NJ_ORPHANED (the
    resolver); the job and its requests are freed if the other side was done first."""
    if tcpsnap_swap(state, mine) == (NJ_ORPHANED if mine == NJ_DONE else NJ_DONE):
        free(reqs)
        free(job)


cdef struct name_req:
    uint32_t pid
    int32_t rc                 # 0: read; -1: gone or unreadable
    uint64_t start             # the identity the resolver holds
    uint64_t got               # what /proc/<pid>/stat says now
    double t                   # when it was read
    char comm[COMM_LEN]

cdef struct name_job:
    int state
    int block_fd               # tests: one byte is read from it before each lookup (-1: none)
    size_t n
    name_req *reqs


cdef void name_work(void *arg, int procfd) noexcept nogil:
    """Re-read the comm of each process of the job (on the name worker, ``procfd`` its
    /proc; -2: ended unrun), then hand the job back (or free it if the resolver is gone)."""
    cdef name_job *j = <name_job *>arg
    cdef name_req *r
    cdef size_t i
    cdef char one
    for i in range(j.n if procfd != -2 else 0):
        r = &j.reqs[i]
        if j.block_fd >= 0:
            read(j.block_fd, &one, 1)
        r.rc = -1 if procfd < 0 else read_stat(procfd, r.pid, &r.got, r.comm)
        r.t = mono()
    end_job(&j.state, j.reqs, j, NJ_DONE)


cdef struct check_req:    # one owner's link to re-read off the caller's thread
    uint64_t inode
    uint32_t cookie
    uint32_t pid
    uint32_t proc
    uint32_t proc_gen
    int32_t fd
    int32_t ok                 # the link still names socket:[inode]
    uint32_t nfds              # in: the owner's descriptor count at the last look (0: none);
                               # out: now (0: unknown: kernel < 6.2, or unreadable)
    uint8_t must               # read the link whatever the count says (backstop, shared)
    uint8_t hot                # the owner's count moved less than a lap ago: read it
    uint8_t read               # out: the link was read (else the unchanged count spared it)
    uint8_t quiet              # out: a backstop read spared: its owner has not run (fp)
    uint16_t born              # in: the round its link was last known right
    uint16_t fp_round          # in: the round that first saw the owner's fingerprint fp
    uint64_t fp                # in: the owner's fingerprint when last seen quiet (0: none);
                               # out: now (0: not looked at, or not known)

cdef struct check_job:
    int state                  # as name_job
    uint16_t round             # this round's number (low 16 bits)
    uint32_t fp_min            # PidResolver.backstop_min_links
    size_t n
    check_req *reqs


cdef int by_pid(const void *a, const void *b) noexcept nogil:
    cdef uint32_t x = (<const check_req *>a).pid, y = (<const check_req *>b).pid
    return (x > y) - (x < y)


cdef void check_work(void *arg, int procfd) noexcept nogil:
    """Re-read owners' /proc/<pid>/fd/<fd> links, one process at a time (requests
    sorted by pid: one directory descriptor each), on the check worker (``procfd`` its
    /proc; -2: ended unrun). A process's count of descriptors is looked at first:
    unchanged since the last look (and not ``hot``), only the links that ``must`` be
    read are; else all of them. Then hand the job back or free it if the resolver is
    gone."""
    cdef check_job *j = <check_job *>arg
    cdef check_req *r
    cdef size_t i, a = 0, b
    cdef char path[32]
    cdef char want[40]
    cdef char link[64]
    cdef ssize_t k
    cdef int wl, dirfd
    cdef uint32_t n, musts
    cdef uint64_t fp
    cdef bint moved, opened, quiet
    if procfd == -2:
        end_job(&j.state, j.reqs, j, NJ_DONE)
        return
    qsort(j.reqs, j.n, sizeof(check_req), by_pid)
    while a < j.n:
        b = a + 1
        while b < j.n and j.reqs[b].pid == j.reqs[a].pid:
            b += 1
        # the count, looked at before any link: a descriptor closed after this look is
        # a change the next look sees
        n = 0 if procfd < 0 else fd_count(procfd, j.reqs[a].pid)
        moved = n == 0 or n != j.reqs[a].nfds
        for i in range(a, b):
            # hot: any of its requests (a round may hold the slices of two takes, the
            # owner hot in the first only)
            moved = moved or j.reqs[i].hot
        # the backstop's links of an owner whose count stayed: spared when none of its
        # threads ran since a round that saw the same fingerprint, and each link was
        # known right at or after that round (PidResolver._verify). Looked at after the
        # count, before any link: a run after this look is a change the next look sees
        fp = 0
        if not moved and procfd >= 0:
            musts = 0
            for i in range(a, b):
                musts += j.reqs[i].must
            if musts >= j.fp_min:
                fp = run_fingerprint(procfd, j.reqs[a].pid)
        dirfd = -1
        opened = False
        for i in range(a, b):
            r = &j.reqs[i]
            r.nfds = n
            r.ok = 1             # unreadable /proc: no news (the owner's pidfd says if it exited)
            r.read = 0
            quiet = (fp != 0 and fp == r.fp
                     and <uint16_t>(r.born - r.fp_round) < 0x8000)
            r.fp = fp
            r.quiet = quiet and r.must
            if procfd < 0 or not (moved or r.must) or quiet or r.fd < 0:
                continue                 # (fd -1: a look at the count only)
            if not opened:
                snprintf(path, sizeof(path), "%u/fd", r.pid)
                dirfd = openat(procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                opened = True
            r.read = 1
            if dirfd < 0:
                r.ok = 0
                continue
            snprintf(path, sizeof(path), "%d", r.fd)
            k = readlinkat(dirfd, path, link, sizeof(link))
            wl = snprintf(want, sizeof(want), "socket:[%llu]", <unsigned long long>r.inode)
            r.ok = k == wl and memcmp(link, want, wl) == 0
        if dirfd >= 0:
            close(dirfd)
        a = b
    end_job(&j.state, j.reqs, j, NJ_DONE)


# ---------------------------------------------------------------- sockets this process holds

cdef enum:
    MAX_CLAIMS = 64            # own sockets waiting for the next take (more: a walk finds them)

cdef struct own_claim:     # a socket of ours (claim()), proven by its link, not merged yet
    uint64_t inode
    uint32_t cookie
    int32_t fd
    uint64_t start             # our start time and comm, read when it was claimed
    char comm[COMM_LEN]


# ---------------------------------------------------------------- the resolver

U32, U64, I64 = np.dtype(np.uint32), np.dtype(np.uint64), np.dtype(np.int64)
NO_U32, NO_U64 = np.zeros(0, np.uint32), np.zeros(0, np.uint64)   # begin_rows: no changes


cdef const void *array_ptr(object arr, object dtype, bint write=False) except? NULL:
    """The data of ``arr`` when it is a 1-D C-contiguous numpy array of this very dtype
    object (and writeable, with ``write``), else NULL: the caller converts it or checks it
    the slow way. At a snapshot a second the rows' calls run with cold caches, where each
    numpy call costs microseconds; this one makes none."""
    cdef Py_buffer b
    if not isinstance(arr, np.ndarray) or arr.dtype is not dtype or arr.ndim != 1:
        return NULL
    try:
        PyObject_GetBuffer(arr, &b, (PyBUF_WRITABLE if write else PyBUF_SIMPLE) | PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError):
        return NULL
    PyBuffer_Release(&b)                 # numpy buffers do not move while the array lives
    return b.buf


cdef class PidResolver:
    """Socket inode -> owning pid, cached between snapshots (see ``tcpsnap.pids``).

    ``begin()`` before the netlink dump, ``resolve(rows, n)`` after it (or ``abort()``
    if the dump failed); ``process_names(pids)`` for names. One thread at a time.
    """

    cdef sock_map socks
    cdef sock_map pidix              # pid -> procs slot (kept in .proc)
    cdef proc_ent *procs
    cdef pollfd *pfds                # parallel to procs: the pidfds, -1 where none
    cdef uint32_t nprocs             # slots handed out (high water)
    cdef uint32_t capprocs
    cdef uint32_t *freelist
    cdef uint32_t nfree
    cdef int procfd
    cdef uint32_t epoch
    cdef walker w[MAX_WORKERS]
    cdef int nworkers                # workers of the current / last walk
    cdef bg_worker *wworkers[MAX_WORKERS]   # long-lived walk threads (started on first use)
    cdef int wfirst                  # walkers wfirst .. wfirst + nthreads - 1 run on them
    cdef int nthreads                # walk workers running the current walk
    cdef bint walk_open              # a walk was started and not merged yet
    cdef bint walk_all               # ...recording every socket (started before the dump)
    cdef bint walk_bg                # ...on background threads only, across takes
    cdef uint32_t walk_epoch         # first epoch whose new sockets the open walk may miss
    cdef bint _background            # walks never run on the caller's thread
    cdef uint32_t *pidlist
    cdef size_t npids
    cdef size_t cappids
    cdef walk_shared shared
    cdef unsigned char *marks        # per map slot: found by this walk (early stop)
    cdef size_t capmarks
    cdef uint32_t unresolved         # rows of the last table without an owner
    cdef double walk_t0
    cdef double last_take
    cdef double last_walk_t0
    cdef size_t verify_cursor
    cdef size_t backstop_cursor      # the slower cursor that re-reads every owned link
    cdef uint64_t vvisits            # slots the fast cursor has visited (proc_ent.hot_until)
    cdef int nvdirs                  # fd directories open for this take's re-checks
    cdef uint64_t *shared_inodes     # owned sockets that had several holders
    cdef size_t nshared
    cdef size_t capshared
    cdef size_t touched
    cdef uint32_t pidfd_cap
    cdef uint32_t npidfd
    cdef bint pidfd_ok
    cdef readonly uint32_t pending
    cdef readonly uint32_t retry
    # the knobs, set through the properties of the same names (which check them)
    cdef double _walk_interval
    cdef double _walk_share
    cdef double _retry_interval
    cdef double _verify_interval
    cdef double _name_ttl
    cdef name_job *njob              # a name refresh going on (background), or NULL
    cdef bg_worker *nworker          # the thread that runs name jobs (started on first use)
    cdef bg_worker *cworker          # ... check jobs
    cdef int32_t *slotcode           # names_into: per process slot, its code (scratch)
    cdef size_t capslot
    cdef check_job *cjob             # owners' links being re-read (background), or NULL
    cdef check_req *cq               # the next check job, gathered by _verify
    cdef size_t ncq
    cdef size_t capcq
    cdef readonly unsigned long long check_jobs
    cdef readonly unsigned long long backstop_quiet   # backstop reads its owner's fingerprint spared
    cdef double last_check           # when the last check round started
    cdef uint32_t check_epoch        # ...and the take (epoch) that handed it
    cdef uint32_t check_round        # check rounds handed out
    cdef uint32_t ncatchup           # processes whose links the next round reads all at once
    cdef double last_catchup         # when the map was last gone over for them
    cdef size_t catchup_pos          # the next map slot of a pass going on (0: none)
    cdef uint32_t _fp_min            # backstop_min_links
    cdef int _name_block_fd          # tests: handed to each name job (see name_job)
    cdef readonly unsigned long long name_jobs
    cdef readonly unsigned long long names_refreshed
    cdef int _threads
    cdef int _block                  # descriptors per shared block; 0: no sharing
    cdef readonly unsigned long long walks
    cdef readonly double walk_seconds
    cdef readonly double last_walk_seconds
    cdef readonly unsigned long long verified
    cdef readonly unsigned long long verify_skipped
    cdef readonly unsigned long long moved
    cdef readonly unsigned long long owner_exits
    cdef readonly unsigned long long evicted
    cdef readonly unsigned long long skipped_procs
    cdef readonly unsigned long long takes
    cdef readonly uint32_t denied
    cdef double phase_seconds[P_COUNT]
    cdef readonly uint32_t last_walk_procs
    cdef readonly unsigned long long last_walk_fds
    cdef pthread_mutex_t claim_lock  # claims come from other threads (the metrics server)
    cdef own_claim claims[MAX_CLAIMS]
    cdef int nclaims
    cdef readonly unsigned long long claimed
    # owner changes a caller that looks up only some rows must know of (begin_rows): the
    # pids whose rows must be looked up again (owner exited, retired, renamed) and the
    # inodes whose entry left SK_OWNED, since the last begin_rows. Kept while `track`.
    cdef bint track
    cdef bint rows_open              # begin_rows without its forget(): the next looks up all
    cdef bint full_next              # the next begin_rows asks for every row (map outgrew the table)
    cdef uint32_t *chg_pids
    cdef size_t nchg_pids
    cdef size_t capchg_pids
    cdef uint64_t *chg_inodes
    cdef size_t nchg_inodes
    cdef size_t capchg_inodes
    cdef Py_ssize_t rows_n           # rows of the last end_rows
    cdef readonly unsigned long long rows_carried   # rows whose owner a caller carried over
    cdef readonly unsigned long long rows_looked    # rows looked up by end_rows
    cdef size_t claim_touched        # entries _take_claims marked seen in this take
    cdef bint take_ready             # begin_rows -> end_rows: a walk to merge
    cdef double take_t, take_now

    def __cinit__(self):
        self.procfd = -1
        self.nthreads = 0
        self.njob = NULL
        self.slotcode = NULL
        self.capslot = 0
        self.cjob = NULL
        self.cq = NULL
        self.ncq = self.capcq = 0
        self._name_block_fd = -1
        self.socks.slots = NULL
        self.pidix.slots = NULL
        memset(self.w, 0, sizeof(self.w))
        memset(self.wworkers, 0, sizeof(self.wworkers))
        memset(self.phase_seconds, 0, sizeof(self.phase_seconds))
        memset(&self.shared, 0, sizeof(self.shared))
        pthread_mutex_init(&self.shared.lock, NULL)
        pthread_mutex_init(&self.claim_lock, NULL)
        self.nclaims = 0

    def __init__(self, *, threads=2, walk_interval=0.25, walk_share=0.25, retry_interval=1.0,
                 verify_interval=10.0, name_ttl=1.0, max_pidfds=-1, background=False):
        """Bad arguments, before anything is allocated: TypeError for a non-integer threads
        or max_pidfds (floats too) or a non-number duration; ValueError for threads outside
        1..MAX_WORKERS, a max_pidfds past 2**32-1 (negative: the default), a duration too
        large for a float. The knobs' setters check the same way."""
        cdef int k
        self.threads = threads
        self._block = FD_BLOCK
        self.walk_interval = walk_interval
        self.walk_share = walk_share
        self.retry_interval = retry_interval
        self.verify_interval = verify_interval
        self.name_ttl = name_ttl
        self._fp_min = FP_MIN_LINKS
        self.last_catchup = -1e300
        self._background = bool(background)
        m = index_arg(max_pidfds, "max_pidfds")
        if m < 0:
            import resource
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            m = 4096 if soft == resource.RLIM_INFINITY else min(4096, soft // 8)
        self.pidfd_cap = int_arg(m, "max_pidfds", 0, 0xFFFFFFFF)
        self.pidfd_ok = True
        if smap_init(&self.socks, MIN_CAP) < 0 or smap_init(&self.pidix, 256) < 0:
            raise MemoryError()
        self.capprocs = PROC_CAP0
        self.procs = <proc_ent *>calloc(PROC_CAP0, sizeof(proc_ent))
        self.pfds = <pollfd *>calloc(PROC_CAP0, sizeof(pollfd))
        self.freelist = <uint32_t *>malloc(PROC_CAP0 * sizeof(uint32_t))
        if self.procs == NULL or self.pfds == NULL or self.freelist == NULL:
            raise MemoryError()
        for k in range(MAX_WORKERS):
            self.w[k].buf = <char *>malloc(BUF_SIZE)
            if self.w[k].buf == NULL:
                raise MemoryError()
            self.w[k].buf_size = BUF_SIZE
        self.procfd = openat(AT_FDCWD, b"/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if self.procfd < 0:
            raise_syscall("open(/proc)", errno, enomem_as_memoryerror=True)

    def __dealloc__(self):
        cdef uint32_t i
        cdef int k
        self._join()
        self._release_jobs()
        free(self.cq)
        free(self.slotcode)
        if self.procfd >= 0:
            close(self.procfd)
        if self.procs != NULL:
            for i in range(self.nprocs):
                if self.procs[i].pidfd >= 0:
                    close(self.procs[i].pidfd)
        free(self.procs)
        free(self.pfds)
        free(self.freelist)
        free(self.socks.slots)
        free(self.pidix.slots)
        free(self.pidlist)
        free(self.shared_inodes)
        free(self.marks)
        free(self.chg_pids)
        free(self.chg_inodes)
        for k in range(MAX_WORKERS):
            free(self.w[k].buf)
            free(self.w[k].found)
            free(self.w[k].infos)

    # ------------------------------------------------------------ process table

    cdef int _proc_alloc(self) noexcept nogil:
        """A free slot index, or -1 when out of memory."""
        cdef uint32_t cap
        cdef void *a
        cdef void *b
        cdef void *c
        if self.nfree:
            self.nfree -= 1
            return self.freelist[self.nfree]
        if self.nprocs == self.capprocs:
            cap = self.capprocs * 2
            a = realloc(self.procs, cap * sizeof(proc_ent))
            if a == NULL:
                return -1
            self.procs = <proc_ent *>a
            b = realloc(self.pfds, cap * sizeof(pollfd))
            if b == NULL:
                return -1
            self.pfds = <pollfd *>b
            c = realloc(self.freelist, cap * sizeof(uint32_t))
            if c == NULL:
                return -1
            self.freelist = <uint32_t *>c
            memset(&self.procs[self.capprocs], 0, (cap - self.capprocs) * sizeof(proc_ent))
            memset(&self.pfds[self.capprocs], 0, (cap - self.capprocs) * sizeof(pollfd))
            self.capprocs = cap
        self.nprocs += 1
        return self.nprocs - 1

    cdef void _note_pid(self, uint32_t pid) noexcept nogil:
        """begin_rows: rows owned by ``pid`` need another look (it exited, its slot was
        retired, or it was renamed). Too many to keep: every row is looked up next time."""
        if not self.track or pid == 0 or self.full_next:
            return
        if self.nchg_pids >= CHG_MAX or grow(<void **>&self.chg_pids, &self.capchg_pids,
                                             self.nchg_pids + 1, sizeof(uint32_t)) < 0:
            self.full_next = True
            return
        self.chg_pids[self.nchg_pids] = pid
        self.nchg_pids += 1

    cdef void _note_inode(self, uint64_t inode) noexcept nogil:
        """begin_rows: this socket's entry left SK_OWNED (or changed owner) outside a
        rows pass."""
        if not self.track or inode == 0 or self.full_next:
            return
        if self.nchg_inodes >= CHG_MAX or grow(<void **>&self.chg_inodes, &self.capchg_inodes,
                                               self.nchg_inodes + 1, sizeof(uint64_t)) < 0:
            self.full_next = True
            return
        self.chg_inodes[self.nchg_inodes] = inode
        self.nchg_inodes += 1

    cdef void _proc_drop_pidfd(self, uint32_t idx) noexcept nogil:
        cdef proc_ent *p = &self.procs[idx]
        if p.pidfd >= 0:
            close(p.pidfd)
            p.pidfd = -1
            self.npidfd -= 1
        self.pfds[idx].fd = -1

    cdef void _proc_retire(self, uint32_t idx) noexcept nogil:
        """Forget a process: entries that point at this slot go stale (gen moves on)."""
        cdef proc_ent *p = &self.procs[idx]
        cdef sock_ent *k
        if p.pid == 0:
            return
        self._note_pid(p.pid)
        self._proc_drop_pidfd(idx)
        k = smap_find(&self.pidix, p.pid)
        if k != NULL and k.proc == idx:
            smap_delete_at(&self.pidix, k - self.pidix.slots)
        p.pid = 0
        p.gen += 1
        p.dead = 1
        self.freelist[self.nfree] = idx
        self.nfree += 1

    cdef void _proc_mark_dead(self, uint32_t idx) noexcept nogil:
        """It exited: its sockets need another owner; its name stays for this snapshot."""
        self._proc_drop_pidfd(idx)
        if not self.procs[idx].dead:
            self.procs[idx].dead = 1
            self.owner_exits += 1
            self._note_pid(self.procs[idx].pid)

    cdef int _proc_pin(self, uint32_t idx) noexcept nogil:
        """Give slot idx a pidfd if we may hold one more. 0, or -1 if the pid no longer
        names the process the slot describes."""
        cdef proc_ent *p = &self.procs[idx]
        cdef uint64_t start
        cdef char comm[COMM_LEN]
        cdef int fd
        if p.pidfd >= 0 or not self.pidfd_ok or self.npidfd >= self.pidfd_cap:
            return 0
        fd = tcpsnap_pidfd_open(p.pid)
        if fd < 0:
            if errno == ENOSYS or errno == EPERM:
                self.pidfd_ok = False    # kernel < 5.3, or seccomp: start-time checks only
                return 0
            return -1 if errno == ESRCH else 0
        # the pidfd names whoever has this pid now: make sure it is the process we read
        if read_stat(self.procfd, p.pid, &start, comm) != 0 or start != p.start:
            close(fd)
            return -1
        p.pidfd = fd
        self.pfds[idx].fd = fd
        self.pfds[idx].events = POLLIN
        self.pfds[idx].revents = 0
        self.npidfd += 1
        return 0

    cdef int _proc_add(self, uint32_t pid, uint64_t start, const char *comm, double now) noexcept nogil:
        """A slot for (pid, start), reusing the one we have when it is the same process.
        Returns the index, -1 out of memory, -2 the process is gone."""
        cdef sock_ent *k = smap_find(&self.pidix, pid)
        cdef int idx
        cdef proc_ent *p
        if k != NULL:
            idx = k.proc
            p = &self.procs[idx]
            if not p.dead and p.start == start:
                if self._proc_pin(idx) < 0:
                    self._proc_mark_dead(idx)
                    return -2
                return idx
            self._proc_retire(idx)
        idx = self._proc_alloc()
        if idx < 0:
            return -1
        p = &self.procs[idx]
        p.pid = pid
        p.start = start
        p.pidfd = -1
        p.vdir = VDIR_NONE
        p.dead = 0
        p.nfds = 0
        p.hot_until = 0
        p.fp = 0
        p.fp_round = 0
        p.catchup = 0
        p.catch_t = -1e300
        p.look_round = 0
        p.vchg = 1
        p.seen = self.epoch
        p.checked = self.epoch
        p.name_time = now
        memcpy(p.comm, comm, COMM_LEN)
        self.pfds[idx].fd = -1
        if self._proc_pin(idx) < 0:
            p.pid = 0
            p.gen += 1
            self.freelist[self.nfree] = idx
            self.nfree += 1
            return -2
        k = smap_insert(&self.pidix, pid)
        if k == NULL:
            self._proc_drop_pidfd(idx)
            p.pid = 0
            self.freelist[self.nfree] = idx
            self.nfree += 1
            return -1
        k.proc = idx
        return idx

    cdef uint32_t _owner_pid(self, sock_ent *e) noexcept nogil:
        """The owner's pid if it is still the process we resolved, else 0."""
        cdef proc_ent *p = &self.procs[e.proc]
        cdef uint64_t start
        cdef char comm[COMM_LEN]
        if p.gen != e.proc_gen or p.pid == 0 or p.dead:
            return 0
        if p.pidfd < 0 and p.checked != self.epoch:
            # no pidfd to watch: confirm the start time, once per take
            p.checked = self.epoch
            if read_stat(self.procfd, p.pid, &start, comm) != 0 or start != p.start:
                self._proc_mark_dead(e.proc)
                return 0
        p.seen = self.epoch
        return p.pid

    cdef int _check_owners(self) noexcept nogil:
        """One poll() over every pidfd: a readable pidfd is a process that exited."""
        cdef uint32_t off, m, i
        cdef int rc
        if self.npidfd == 0:
            return 0
        off = 0
        while off < self.nprocs:
            m = self.nprocs - off
            if m > POLL_CHUNK:
                m = POLL_CHUNK
            rc = poll(&self.pfds[off], m, 0)
            if rc < 0:
                if errno == EINTR:
                    continue
                return errno
            if rc > 0:
                for i in range(off, off + m):
                    if self.pfds[i].fd >= 0 and self.pfds[i].revents:
                        self._proc_mark_dead(i)
            off += m
        return 0

    # ------------------------------------------------------------ per-take passes

    cdef bint _saw_count(self, proc_ent *p, uint32_t n) noexcept nogil:
        """A look at a process's descriptor count ``n`` (0: unknown). Whether its links
        must be read now: the count moved since the last look, is unknown, or moved less
        than a lap of the fast cursor ago (``hot``: so that each of its sockets is read
        once after the move, whichever round looked)."""
        cdef bint moved = n == 0 or p.nfds == 0 or n != p.nfds or p.hot_until > self.vvisits
        if n != 0 and n != p.nfds:       # moved, or the first look (no walk's look before)
            # a lap is cap slots; twice that, as the map may double meanwhile
            p.hot_until = self.vvisits + 2 * self.socks.cap
        p.nfds = n
        return moved

    cdef bint _verify_one(self, sock_ent *e, bint must=True) noexcept nogil:
        """Is the owner's descriptor still this socket? If not, back to pending. Unless
        ``must``, the link is read only when the owner's descriptor count says it may
        have changed (``_saw_count``)."""
        cdef proc_ent *p = &self.procs[e.proc]
        cdef char path[32]
        cdef char want[40]
        cdef char link[64]
        cdef ssize_t k
        cdef int wl
        cdef struct_stat sb
        if p.gen != e.proc_gen or p.pid == 0 or p.dead:
            return True                  # the row pass re-resolves it
        if self._background and self.walks > 0:
            self._queue_check(e, p, must)    # read on the check thread; a later take merges it
            return True
        if p.vdir == VDIR_NONE and self.nvdirs < MAX_VDIRS:
            # /proc/<pid>/fd, opened once per take for the owner's links; its count first
            snprintf(path, sizeof(path), "%u/fd", p.pid)
            p.vdir = openat(self.procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if p.vdir >= 0:
                self.nvdirs += 1
                p.vchg = self._saw_count(p, count_of(&sb) if fstat(p.vdir, &sb) == 0 else 0)
            else:
                p.vdir = VDIR_GONE if errno == ENOENT or errno == ESRCH else VDIR_PATH
        if not must and p.vdir >= 0 and not p.vchg:
            self.verify_skipped += 1     # its owner's count has not moved
            return True
        if p.vdir >= 0:
            snprintf(path, sizeof(path), "%d", e.fd)
            k = readlinkat(p.vdir, path, link, sizeof(link))
        elif p.vdir == VDIR_GONE:
            k = -1
        else:                            # no directory descriptor to spare: the full path
            snprintf(path, sizeof(path), "%u/fd/%d", p.pid, e.fd)
            k = readlinkat(self.procfd, path, link, sizeof(link))
        wl = snprintf(want, sizeof(want), "socket:[%llu]", <unsigned long long>e.inode)
        self.verified += 1
        if k == wl and memcmp(link, want, wl) == 0:
            return True
        self._note_inode(e.inode)
        e.state = SK_PENDING             # closed, or moved to another process
        e.misses = 0
        e.born = <uint16_t>self.epoch    # unresolved since now: an older walk could not see it
        self.moved += 1
        return False

    cdef void _queue_check(self, sock_ent *e, proc_ent *p, bint must) noexcept nogil:
        """``e``'s link to the next check round. A link that need not be read now (not
        ``must``; its owner's count known and not hot) is read only if the round finds
        the count moved, and then not in this round but when the cursor next reaches it
        (hot: within a lap of the look): so it is not queued, only one look at its
        owner's count per round (``inode`` 0) -- the round's work and its merge follow
        the links that are read and the owners, not the slice."""
        cdef check_req *r
        cdef bint look = False           # a look at the owner's count only (no link)
        if not must and p.nfds != 0 and p.hot_until <= self.vvisits:
            self.verify_skipped += 1         # read only if the look finds the count moved
            if p.look_round == self.check_round + 1:
                return                       # its look is queued already
            p.look_round = self.check_round + 1
            look = True
        if grow(<void **>&self.cq, &self.capcq, self.ncq + 1, sizeof(check_req)) < 0:
            return                       # out of memory: this one waits for the next round
        r = &self.cq[self.ncq]
        r.inode = 0 if look else e.inode
        r.cookie = 0 if look else e.cookie
        r.pid = p.pid
        r.proc = e.proc
        r.proc_gen = e.proc_gen
        r.fd = -1 if look else e.fd
        r.ok = 1
        r.nfds = p.nfds
        r.must = must
        r.hot = p.hot_until > self.vvisits
        r.read = 0
        r.quiet = 0
        r.born = 0 if look else e.born
        r.fp = p.fp
        r.fp_round = p.fp_round
        self.ncq += 1

    cdef void _merge_checks(self, double now, double lap) noexcept nogil:
        """Take up a check job that has ended: each socket whose link no longer names it,
        if its entry still says the same owner and descriptor, goes back to pending."""
        cdef check_job *j = self.cjob
        cdef check_req *r
        cdef sock_ent *e
        cdef proc_ent *p
        cdef size_t i
        cdef uint32_t last = 0
        if j == NULL or tcpsnap_done_count(&j.state) != NJ_DONE:
            return
        for i in range(j.n):
            r = &j.reqs[i]
            if r.pid != last:            # the requests come sorted by pid: one look each
                last = r.pid
                p = &self.procs[r.proc]
                if r.proc < self.nprocs and p.pid == r.pid and p.gen == r.proc_gen and not p.dead:
                    self._saw_count(p, r.nfds)
                    if r.fp != 0 and r.fp != p.fp:
                        p.fp = r.fp      # it ran since: quiet from this round on, if it stays
                        p.fp_round = j.round
                    elif r.fp != 0:
                        if <uint16_t>(j.round - p.fp_round) >= FP_SLIDE:
                            # quiet for long: its round moves up (stricter, never wrong) so
                            # that 16-bit rounds never wrap between it and its links' (each
                            # known right within a lap)
                            p.fp_round = <uint16_t>(j.round - FP_KEEP)
                        if now - p.catch_t >= lap:
                            # quiet since an earlier round: its links read all at once in
                            # the next one, rather than a lap of backstop slices, and spared
                            # from then on while it stays quiet. At most once a lap: an owner
                            # that keeps waking costs what the backstop did (each link read
                            # once a lap), plus a look at the map
                            p.catchup = 1
                            self.ncatchup += 1
            if r.inode == 0:
                continue                 # a look at the owner's count only
            if r.read:
                self.verified += 1
            else:
                self.verify_skipped += 1
                self.backstop_quiet += r.quiet
            if r.ok and not r.read:
                # not read, or spared (quiet): its born stays. Known right at or after the
                # round that first saw the fingerprint, it stays spared while the owner
                # stays quiet; when that round slides up (FP_SLIDE) past it, the link is
                # read once more at its next backstop look, which brings it up (born never
                # falls 2**15 rounds behind). Not writing it here keeps the merge to the
                # links read and the owners: no map slot per spared link
                continue
            e = smap_find(&self.socks, r.inode)
            if (e == NULL or e.state != SK_OWNED or e.cookie != r.cookie or e.proc != r.proc
                    or e.proc_gen != r.proc_gen or e.fd != r.fd):
                continue                 # changed since it was asked about: nothing to undo
            if r.ok:
                e.born = j.round         # its link is known right as of this round
                continue
            self._note_inode(e.inode)
            e.state = SK_PENDING         # closed, or moved to another process
            e.misses = 0
            e.born = <uint16_t>self.epoch
            self.moved += 1
        free(j.reqs)
        free(j)
        self.cjob = NULL

    cdef void _queue_catchup(self, double now) noexcept nogil:
        """The links of every owner flagged ``catchup``, queued, CATCHUP_MAX a round at
        most (a pass over the map, resumed round after round: a round of reads stays
        short, and with it the delay of every other check)."""
        cdef size_t n = 0
        cdef sock_ent *e
        cdef proc_ent *p
        cdef uint32_t q
        while self.catchup_pos < self.socks.cap and n < CATCHUP_MAX:
            e = &self.socks.slots[self.catchup_pos]
            self.catchup_pos += 1
            if e.inode == 0 or e.state != SK_OWNED or e.proc >= self.nprocs:
                continue
            p = &self.procs[e.proc]
            if p.catchup and p.gen == e.proc_gen and p.pid != 0 and not p.dead:
                self._queue_check(e, p, True)
                n += 1
        if self.catchup_pos < self.socks.cap:
            return                       # the rest in the next rounds
        self.catchup_pos = 0
        for q in range(self.nprocs):
            if self.procs[q].catchup:
                self.procs[q].catchup = 0
                self.procs[q].catch_t = now
        self.ncatchup = 0

    cdef void _start_checks(self) noexcept nogil:
        """The links _verify queued, to the check worker."""
        cdef check_job *j
        if self.ncq == 0:
            return
        j = <check_job *>calloc(1, sizeof(check_job))
        if j == NULL:
            self.ncq = 0
            return
        j.reqs = self.cq                 # handed over: the next round gathers anew
        j.n = self.ncq
        j.state = NJ_RUNNING
        self.check_round += 1
        j.round = <uint16_t>self.check_round
        j.fp_min = self._fp_min
        self.cq = NULL
        self.ncq = self.capcq = 0
        if hand_job(&self.cworker, check_work, j, b"tcpsnap-check") != 0:
            free(j.reqs)
            free(j)
            return
        self.cjob = j
        self.check_jobs += 1
        self.check_epoch = self.epoch

    cdef void _release_jobs(self) noexcept nogil:
        """The resolver is done with its name and check jobs (closing): each is freed
        now if its thread ended, else by its thread when it does. Its workers end (the
        walk workers' last walk was waited for: ``_join`` first)."""
        cdef int k
        if self.njob != NULL:
            end_job(&self.njob.state, self.njob.reqs, self.njob, NJ_ORPHANED)
            self.njob = NULL
        if self.cjob != NULL:
            end_job(&self.cjob.state, self.cjob.reqs, self.cjob, NJ_ORPHANED)
            self.cjob = NULL
        stop_worker(&self.nworker)
        stop_worker(&self.cworker)
        for k in range(MAX_WORKERS):     # after _join: none of them runs a walk
            stop_worker(&self.wworkers[k])

    cdef void _verify(self, double now) noexcept nogil:
        """Re-read owners' links. Sockets that had several holders when resolved (fork,
        hand-off: how an owner usually changes) every take; all others a slice of the
        map per take: (time since the last take) / verify_interval of it, within
        [1/1024, 1/32], so each is looked at within max(verify_interval, 32 takes) -- and
        its link read if its owner's descriptor count moved since the last look
        (``_saw_count``) --, and a slice VERIFY_BACKSTOP times thinner whose links are
        read whatever the count says, so each is read within VERIFY_BACKSTOP times that.
        With ``background`` (after the first walk) the links are read on a thread of
        their own, one round at a time and at most one per CHECK_PACE and every other
        take (the slices of the takes in between go together; while there are shared
        sockets or a catch-up pass goes on, every take): while a round runs, takes check
        nothing and the slice waits; the next take after it ended merges it and starts
        the next round. There a quiet owner's links that need no read now are not queued
        (``_queue_check``): one look at its count per round."""
        cdef double f, dt, lag
        cdef size_t quota, i, mask, j
        cdef sock_ent *e
        cdef uint32_t q
        cdef bint bg = self._background and self.walks > 0
        cdef bint starting = True
        if bg:
            self._merge_checks(now, VERIFY_BACKSTOP * max(self._verify_interval,
                                                          VERIFY_MAX_DIV * (now - self.last_take)))
            if self.cjob != NULL:
                return                   # a round still runs: the slice waits for it
            # a round (a thread) at most every CHECK_PACE: at --interval 0 the slices of
            # several takes go together, rather than a thread per take
            starting = now - self.last_check >= CHECK_PACE
            if (starting and self.check_epoch == self.epoch - 1 and not self.nshared
                    and not self.ncatchup and not self.catchup_pos):
                # and at most every other take, unless sockets with several holders are
                # re-read every take or a catch-up pass goes on: a thread's wake-up costs
                # more than a round's reads at --interval 1s. This take's slice waits for
                # the next round; the slices are one take larger (below) so that each
                # socket is still looked at within F
                starting = False
        if starting and self.ncatchup and (self.catchup_pos or now - self.last_catchup >= CATCHUP_PACE):
            # a pass over the map for every owner flagged since (at most one started a
            # second), CATCHUP_MAX links a round, so that a round stays short
            if not self.catchup_pos:
                self.last_catchup = now
            self._queue_catchup(now)
        j = 0
        while starting and j < self.nshared:
            e = smap_find(&self.socks, self.shared_inodes[j])
            if e == NULL or e.state != SK_OWNED or e.misses < 2:
                self.nshared -= 1        # gone or no longer shared: drop from the list
                self.shared_inodes[j] = self.shared_inodes[self.nshared]
                continue
            self._verify_one(e)
            j += 1
        if self.socks.count:
            dt = now - self.last_take
            # in the background a slice may wait one take for its round (above): the lap
            # then ends a take early -- over verify_interval less a take, within [31, 1023]
            # takes -- so that the look comes no later than without the wait
            lag = dt if bg else 0.0
            f = dt / (self._verify_interval - lag) if self._verify_interval > 2 * lag else 1.0
            if f < 1.0 / (VERIFY_MIN_DIV - bg):
                f = 1.0 / (VERIFY_MIN_DIV - bg)
            if f > 1.0 / (VERIFY_MAX_DIV - bg):
                f = 1.0 / (VERIFY_MAX_DIV - bg)
            quota = <size_t>(self.socks.cap * f) + 1
            mask = self.socks.cap - 1
            for _ in range(quota):
                i = self.verify_cursor & mask
                self.verify_cursor = (i + 1) & mask
                self.vvisits += 1
                e = &self.socks.slots[i]
                if e.inode != 0 and e.state == SK_OWNED:
                    self._verify_one(e, False)
            # the backstop: a change that left the count as it was (a descriptor closed and
            # another opened between two looks) is found by this one
            for _ in range(quota // VERIFY_BACKSTOP + 1):
                i = self.backstop_cursor & mask
                self.backstop_cursor = (i + 1) & mask
                e = &self.socks.slots[i]
                if e.inode != 0 and e.state == SK_OWNED:
                    self._verify_one(e, True)
        for q in range(self.nprocs):
            if self.procs[q].vdir >= 0:
                close(self.procs[q].vdir)
            self.procs[q].vdir = VDIR_NONE
        self.nvdirs = 0
        if bg and starting:
            self.last_check = now
            self._start_checks()

    cdef int _rows_pass(self, tcpsnap_row *rows, Py_ssize_t n, const int64_t *idx=NULL) noexcept nogil:
        """Fill pid from the map; add new inodes as pending. -1 when out of memory.
        ``idx``: only the rows at these n indices (end_rows), else rows[:n].

        Rows of one owner mostly come in runs (a process's sockets, both ends of its
        loopback connections), so the last owner confirmed in this pass is remembered: a
        row whose entry names the same process slot and generation takes its pid without
        looking at the process again (``_owner_pid`` confirmed it, and marks it dead only
        from inside itself: nothing between two rows of one pass changes that answer)."""
        cdef Py_ssize_t i, k
        cdef tcpsnap_row *r
        cdef tcpsnap_row *ahead
        cdef sock_ent *e
        cdef uint32_t pid, ep = self.epoch
        cdef uint32_t pending = 0, retry = 0, unresolved = 0
        cdef size_t touched = 0
        cdef uint32_t last_proc = UINT32_MAX, last_gen = 0, last_pid = 0
        for k in range(n):
            i = idx[k] if idx != NULL else k
            r = rows + i
            if k + PREFETCH < n:
                ahead = rows + (idx[k + PREFETCH] if idx != NULL else k + PREFETCH)
                if ahead.inode:
                    # the map is cold here (the dump, the kernel's walk of its hash, and the
                    # writer on the other core evict it between takes, even at 1k
                    # connections): ask for the slot a few rows ahead
                    prefetch(&self.socks.slots[slot_of(ahead.inode, self.socks.shift)])
            if r.inode == 0:
                r.pid = 0                # TIME_WAIT, orphans, request socks: no owner
                continue
            e = smap_find(&self.socks, r.inode)
            if e == NULL:
                e = smap_insert(&self.socks, r.inode)
                if e == NULL:
                    return -1
                e.cookie = <uint32_t>r.cookie
                e.state = SK_PENDING
                e.born = <uint16_t>ep
                e.seen = ep
                touched += 1
                pending += 1
                unresolved += 1
                r.pid = 0
                continue
            if e.seen != ep:
                touched += 1
                e.seen = ep
            if e.cookie != <uint32_t>r.cookie:   # the inode number now names another socket
                e.cookie = <uint32_t>r.cookie
                e.state = SK_PENDING
                e.born = <uint16_t>ep
                e.misses = 0
            if e.state == SK_OWNED:
                if e.proc == last_proc and e.proc_gen == last_gen:
                    r.pid = last_pid
                    continue
                pid = self._owner_pid(e)
                if pid:
                    last_proc, last_gen, last_pid = e.proc, e.proc_gen, pid
                    r.pid = pid
                    continue
                e.state = SK_PENDING     # its owner exited; someone else holds it
                e.misses = 0
                e.born = <uint16_t>ep
            r.pid = 0
            unresolved += 1
            if e.state == SK_PENDING:
                pending += 1
            elif e.misses < MAX_MISSES:
                retry += 1
        self.touched = touched
        self.pending = pending
        self.retry = retry
        self.unresolved = unresolved     # rows without an owner: what a walk looks for
        return 0

    cdef void _fill_pass(self, tcpsnap_row *rows, Py_ssize_t n) noexcept nogil:
        """After a merge: pids for rows resolved by the walk; count what it missed."""
        cdef Py_ssize_t i
        cdef tcpsnap_row *r
        cdef sock_ent *e
        cdef uint32_t pending = 0, retry = 0
        for i in range(n):
            r = rows + i
            if r.inode == 0 or r.pid != 0:
                continue
            e = smap_find(&self.socks, r.inode)
            if e == NULL:
                continue
            if e.state == SK_OWNED:
                r.pid = self._owner_pid(e)
                if r.pid:
                    continue
                e.state = SK_PENDING
                e.born = <uint16_t>(self.walk_epoch - 1)   # as before: known before the walk
            # not found by this walk: unless it became unresolved (appeared, lost its
            # owner) after the walk started (the walk may have passed its holder already:
            # a walk begun before the dump, or one on background threads), it is missing.
            # born is 16 bits: an entry unresolved for 2**15 takes may read as new once
            # (it stays as it is then; no harm)
            if <uint16_t>(e.born - <uint16_t>self.walk_epoch) >= 0x8000:
                e.state = SK_MISSING
                if e.misses < 255:
                    e.misses += 1
            if e.state == SK_PENDING:
                pending += 1
            elif e.misses < MAX_MISSES:
                retry += 1
        self.pending = pending
        self.retry = retry

    # ------------------------------------------------------------ walks

    cdef int _list_pids(self) noexcept nogil:
        """Every process in /proc, ascending (the order procfs lists them)."""
        cdef ssize_t got, off
        cdef dirent64 *d
        cdef uint32_t pid
        cdef int j
        cdef char *buf = self.w[0].buf
        self.npids = 0
        if lseek(self.procfd, 0, SEEK_SET) < 0:
            return errno
        while True:
            got = getdents64(self.procfd, buf, BUF_SIZE)
            if got < 0:
                return errno
            if got == 0:
                return 0
            off = 0
            while off < got:
                d = <dirent64 *>(buf + off)
                off += d.d_reclen
                if d.d_name[0] < C_1 or d.d_name[0] > C_9:
                    continue
                pid = 0
                j = 0
                while C_0 <= d.d_name[j] <= C_9:
                    pid = pid * 10 + <uint32_t>(d.d_name[j] - C_0)
                    j += 1
                if d.d_name[j] != 0:
                    continue
                if grow(<void **>&self.pidlist, &self.cappids, self.npids + 1, sizeof(uint32_t)) < 0:
                    return ENOMEM
                self.pidlist[self.npids] = pid
                self.npids += 1

    cdef int _start_walk(self, bint record_all, bint background=False) noexcept nogil:
        """List /proc, set the workers up and start threads for workers 1..n-1; the
        caller walks as worker 0 in ``_finish_walk`` (after its dump, when the walk was
        started by ``begin``). Returns 0 or an errno."""
        cdef int k, err, nw = self._threads
        cdef walker *w
        if nw > MAX_WORKERS:
            nw = MAX_WORKERS
        err = self._list_pids()
        if err:
            return err
        if <size_t>nw > self.npids:
            nw = <int>self.npids
        if nw < 1:
            nw = 1
        self.nworkers = nw
        self.shared.pids = self.pidlist
        self.shared.npids = self.npids
        self.shared.next = 0
        self.shared.big_pid = 0
        self.shared.stop = 0
        self.shared.block = self._block if self._block > 0 else 0
        self.shared.epoch = self.epoch
        self.shared.want_left = self.unresolved
        if not record_all and self.unresolved:
            # early stop: one mark per map slot, so each unresolved row counts once
            if grow(<void **>&self.marks, &self.capmarks, self.socks.cap, 1) < 0:
                return ENOMEM
            memset(self.marks, 0, self.socks.cap)
            self.shared.marks = self.marks
        else:
            self.shared.marks = NULL
        self.walk_all = record_all
        self.walk_bg = background
        # sockets that enter the map from the next take on may have been missed by it
        self.walk_epoch = self.epoch + 1
        self.shared.done = 0
        self.shared.background = background
        self.walk_t0 = mono()
        for k in range(nw):
            w = &self.w[k]
            w.procfd = self.procfd
            w.sh = &self.shared
            w.want = NULL if record_all else &self.socks
            w.nfound = 0
            w.ninfo = 0
            w.procs = 0
            w.denied = 0
            w.gone = 0
            w.fds = 0
            w.sockets = 0
            w.err = 0
        self.walk_open = True
        self.nthreads = 0
        self.wfirst = 0 if background else 1
        for k in range(self.wfirst, nw):
            # long-lived walk threads (one per walker): a thread per walk cost a clone, its
            # stack's faults and an exit, every walk
            if hand_job(&self.wworkers[k], walk_job, &self.w[k], b"tcpsnap-walk") != 0:
                break                    # fewer threads: the others walk the rest
            self.nthreads += 1
        if background and self.nthreads == 0:
            self.walk_bg = False         # no thread at all: the caller walks (_finish_walk)
        return 0

    cdef void _join(self) noexcept nogil:
        """Until the walk workers have finished their part of the walk."""
        cdef int k
        for k in range(self.wfirst, self.wfirst + self.nthreads):
            wait_idle(self.wworkers[k])
        self.nthreads = 0

    cdef int _finish_walk(self) noexcept nogil:
        """Walk along with the threads until the list is done; join them."""
        cdef int k
        cdef double dur
        if not self.walk_bg:
            walk_run(&self.w[0])
        self._join()
        dur = mono() - self.walk_t0
        self.walks += 1
        self.walk_seconds += dur
        self.last_walk_seconds = dur
        self.last_walk_t0 = self.walk_t0
        self.skipped_procs += self.shared.npids - self.shared.next
        self.denied = 0
        self.last_walk_procs = 0
        self.last_walk_fds = 0
        for k in range(self.nworkers):
            if self.w[k].err:
                return self.w[k].err
            self.denied += self.w[k].denied
            self.last_walk_procs += self.w[k].procs
            self.last_walk_fds += self.w[k].fds
        return 0

    cdef int _merge(self, double now) noexcept nogil:
        """Owners from the walk: for each unresolved inode, the lowest pid holding it
        (and its lowest descriptor there). Candidates wait in the entry itself."""
        cdef int k, idx = -2
        cdef size_t j
        cdef uint32_t tag
        cdef found_rec *f
        cdef sock_ent *e
        cdef proc_info *pi
        cdef proc_info *last = NULL
        for k in range(self.nworkers):
            for j in range(self.w[k].nfound):
                f = &self.w[k].found[j]
                e = smap_find(&self.socks, f.inode)
                if e == NULL or e.state == SK_OWNED:
                    continue
                if e.state != SK_CAND:
                    e.misses = 1         # while a candidate: 2 = held by several processes
                elif f.pid != e.proc:
                    e.misses = 2
                if e.state != SK_CAND or f.pid < e.proc or (f.pid == e.proc and f.fd < e.fd):
                    e.state = SK_CAND
                    e.proc = f.pid
                    e.fd = f.fd
                    e.proc_gen = (<uint32_t>k << 24) | f.info
        for k in range(self.nworkers):
            for j in range(self.w[k].nfound):
                f = &self.w[k].found[j]
                e = smap_find(&self.socks, f.inode)
                tag = (<uint32_t>k << 24) | f.info
                if e == NULL or e.state != SK_CAND or e.proc != f.pid or e.fd != f.fd or e.proc_gen != tag:
                    continue
                pi = &self.w[k].infos[f.info]
                if pi != last:           # records of one process come together
                    idx = self._proc_add(pi.pid, pi.start, pi.comm, now)
                    if idx == -1:
                        return ENOMEM
                    if idx >= 0 and self.procs[idx].nfds == 0:
                        self.procs[idx].nfds = pi.nfds   # a new process: the walk's look
                    last = pi
                if idx < 0:              # gone since the walk: it stays unresolved
                    e.state = SK_PENDING
                    e.misses = 0
                    continue
                e.state = SK_OWNED           # misses stays: 2 = shared, re-checked every take
                e.proc = idx
                e.proc_gen = self.procs[idx].gen
                e.born = <uint16_t>(self.check_round - FP_NEW)   # read by the next backstop look
                if e.misses >= 2:
                    if grow(<void **>&self.shared_inodes, &self.capshared, self.nshared + 1, sizeof(uint64_t)) < 0:
                        return ENOMEM
                    self.shared_inodes[self.nshared] = e.inode
                    self.nshared += 1
        return 0

    cdef bint _walk_due(self, double now) noexcept nogil:
        """The rate limit: a walk starts no sooner than max(walk_interval, D / walk_share)
        after the previous one started (D its duration); walks for inodes that earlier
        walks missed, no sooner than retry_interval."""
        cdef double gap
        if self.walks == 0:
            return True
        gap = self.last_walk_seconds / self._walk_share if self._walk_share > 0 else 0.0
        if gap < self._walk_interval:
            gap = self._walk_interval
        if self.pending and now >= self.last_walk_t0 + gap:
            return True
        if gap < self._retry_interval:
            gap = self._retry_interval
        return self.retry != 0 and now >= self.last_walk_t0 + gap

    # ------------------------------------------------------------ the knobs

    @property
    def background(self):
        """Walks run on background threads only, and a later take merges what they found
        (``resolve`` never waits for /proc; the first walk, with an empty map, is still
        done in place). Settable while no walk is going on."""
        return self._background

    @background.setter
    def background(self, value):
        if self.walk_open:
            raise ValueError("background cannot change while a walk is going on")
        self._background = bool(value)

    @property
    def threads(self):
        """Walk threads, 1..MAX_WORKERS (the caller walks as one of them)."""
        return self._threads

    @threads.setter
    def threads(self, value):
        t = index_arg(value, "threads")
        if not 1 <= t <= MAX_WORKERS:
            raise ValueError(f"threads must be 1..{MAX_WORKERS}, got {int_text(t)}")
        self._threads = t

    @property
    def block(self):
        """Descriptors per block when walk threads share a large fd directory; 0: never."""
        return self._block

    @block.setter
    def block(self, value):
        self._block = int_arg(value, "block", 0, INT_MAX)

    @property
    def walk_interval(self):
        return self._walk_interval

    @walk_interval.setter
    def walk_interval(self, value):
        self._walk_interval = float_arg(value, "walk_interval")

    @property
    def walk_share(self):
        return self._walk_share

    @walk_share.setter
    def walk_share(self, value):
        self._walk_share = float_arg(value, "walk_share")

    @property
    def retry_interval(self):
        return self._retry_interval

    @retry_interval.setter
    def retry_interval(self, value):
        self._retry_interval = float_arg(value, "retry_interval")

    @property
    def verify_interval(self):
        return self._verify_interval

    @verify_interval.setter
    def verify_interval(self, value):
        self._verify_interval = float_arg(value, "verify_interval")

    @property
    def backstop_min_links(self):
        """In the background, the backstop looks at an owner's fingerprint (has any of
        its threads run?) instead of reading its links when a round has at least this
        many of its links to read (default 4: under that, reading them costs less)."""
        return self._fp_min

    @backstop_min_links.setter
    def backstop_min_links(self, value):
        self._fp_min = int_arg(value, "backstop_min_links", 1, 0xFFFFFFFF)

    @property
    def name_ttl(self):
        return self._name_ttl

    @name_ttl.setter
    def name_ttl(self, value):
        self._name_ttl = float_arg(value, "name_ttl")

    # ------------------------------------------------------------ sockets of our own

    def claim(self, int fd):
        """Say that this process holds the socket on descriptor ``fd`` (e.g. a connection
        the recorder's metrics server accepted), so that its row gets our pid at the next
        ``resolve()`` without a /proc walk. Thread-safe (any thread, while another runs
        ``resolve``). The claim is proven first, here, on the caller's thread: /proc's
        ``<our pid>/fd/<fd>`` must name the socket's inode (so a /proc of another pid
        namespace never gets a wrong pid), and the cookie (``SO_COOKIE``) is kept as for
        any row. Returns True when queued; False when not (not a socket, no cookie, no
        proof, or MAX_CLAIMS waiting already): then a walk finds it as any other."""
        cdef struct_stat sb
        cdef uint64_t cookie = 0
        cdef unsigned int clen = sizeof(cookie)
        cdef own_claim c
        cdef char path[48]
        cdef char want[40]
        cdef char link[64]
        cdef ssize_t k
        cdef int wl
        cdef bint ok = False
        with nogil:
            if (self.procfd >= 0 and fstat(fd, &sb) == 0 and S_ISSOCK(sb.st_mode)
                    and getsockopt(fd, SOL_SOCKET, SO_COOKIE_OPT, &cookie, &clen) == 0):
                c.inode = <uint64_t>sb.st_ino
                c.cookie = <uint32_t>cookie
                c.fd = fd
                snprintf(path, sizeof(path), "%u/fd/%d", <uint32_t>getpid(), fd)
                k = readlinkat(self.procfd, path, link, sizeof(link))
                wl = snprintf(want, sizeof(want), "socket:[%llu]", <unsigned long long>c.inode)
                ok = (k == wl and memcmp(link, want, wl) == 0
                      and read_stat(self.procfd, <uint32_t>getpid(), &c.start, c.comm) == 0)
            if ok:
                pthread_mutex_lock(&self.claim_lock)
                ok = self.nclaims < MAX_CLAIMS
                if ok:
                    self.claims[self.nclaims] = c
                    self.nclaims += 1
                pthread_mutex_unlock(&self.claim_lock)
        return ok

    cdef size_t _take_claims(self, double now) noexcept nogil:
        """At the start of a take: the claimed sockets become ours (owned by this
        process, by the descriptor claimed) unless a walk or an earlier take gave them an
        owner already. Each is marked seen in this take, so that it is kept until the
        next dump (which began after the accept) has its row. Returns how many entries
        it marked seen that were not (the rows pass's ``touched`` counts the others)."""
        cdef own_claim got[MAX_CLAIMS]
        cdef int n, i, idx
        cdef sock_ent *e
        cdef size_t touched = 0
        pthread_mutex_lock(&self.claim_lock)
        n = self.nclaims
        if n:
            memcpy(got, self.claims, n * sizeof(own_claim))
        self.nclaims = 0
        pthread_mutex_unlock(&self.claim_lock)
        for i in range(n):
            e = smap_find(&self.socks, got[i].inode)
            if e != NULL and e.state == SK_OWNED and e.cookie == got[i].cookie:
                continue                 # resolved already (a walk found it)
            idx = self._proc_add(<uint32_t>getpid(), got[i].start, got[i].comm, now)
            if idx < 0:
                continue                 # no memory: a walk finds it
            if e != NULL:
                self._note_inode(e.inode)    # its row may hold another owner
            if e == NULL:
                e = smap_insert(&self.socks, got[i].inode)
                if e == NULL:
                    continue
            e.cookie = got[i].cookie
            e.state = SK_OWNED
            e.proc = idx
            e.proc_gen = self.procs[idx].gen
            e.fd = got[i].fd
            e.misses = 1
            e.born = <uint16_t>(self.check_round - FP_NEW)
            if e.seen != self.epoch:
                e.seen = self.epoch
                touched += 1
            self.claimed += 1
        return touched

    # ------------------------------------------------------------ Python entry points

    def begin(self):
        """Before the dump: when a walk is due already, start it on background threads
        (recording every socket), so that it runs while the kernel dumps."""
        cdef int err = 0
        if self.walk_open or self._threads < 2 or self._background:
            return
        with nogil:
            if self._walk_due(mono()):
                err = self._start_walk(True)
        if err:
            raise_syscall("getdents64(/proc)", err, enomem_as_memoryerror=True)

    def abort(self):
        """The dump failed after ``begin()``: finish and drop the background walk."""
        with nogil:
            if self.walk_open and not self.walk_bg:
                self._finish_walk()
                self.walk_open = False

    def resolve(self, rows, n):
        """Fill ``pid`` of ``rows[:n]`` (ROW_DTYPE, fresh from a dump). Bad arguments abort
        a walk begun and raise: ValueError for any wrong kind of rows (check_out_array) or
        an n outside 0..len(rows), TypeError for an n that is not an integer."""
        cdef Py_buffer b
        cdef tcpsnap_row *r
        cdef int err = 0, where = 0
        cdef double now, t
        cdef bint ready = False, release
        cdef Py_ssize_t cn
        cdef PyThreadState *ts
        try:
            check_out_array(rows, "rows")
            i = index_arg(n, "n")
            if i < 0:
                raise ValueError(f"n must be at least 0, got {int_text(i)}")
            get_buffer(rows, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "rows")
        except BaseException:
            self.abort()
            raise
        try:
            # in rows, not in bytes: n * sizeof(row) could wrap around past the check
            if i > b.len // <Py_ssize_t>sizeof(tcpsnap_row):
                self.abort()
                raise ValueError(f"n is larger than the row array ({int_text(i)} > {b.len // sizeof(tcpsnap_row)} rows)")
            cn = i
            r = <tcpsnap_row *>b.buf
            # a walk in place (not background, or the first) always lets the GIL go
            release = not self._background or self.walks == 0 or cn >= NOGIL_ROWS
            ts = NULL
            if release:
                ts = PyEval_SaveThread()
            if True:                     # without the GIL where released (C only)
                now = mono()
                t = now
                self.rows_open = False   # a whole table: nothing carried over
                err = self._open_take(now, &t, &where, &ready)
                if not err:
                    if self._rows_pass(r, cn) < 0:
                        err = ENOMEM
                        where = W_MAP
                    self.touched += self.claim_touched
                    t = self._phase(P_ROWS, t)
                if not err:
                    err = self._close_take(now, t, r, cn, True, ready, &where)
                else:
                    self._end_take(now, ready)
            if ts != NULL:
                PyEval_RestoreThread(ts)
        finally:
            PyBuffer_Release(&b)
        if err:
            raise_syscall(WHERE[where], err, enomem_as_memoryerror=True)

    cdef int _open_take(self, double now, double *t, int *where, bint *ready) noexcept nogil:
        """A take's first half, before its rows are looked up: the walk that ended merged
        in, owners' exits polled, links re-checked, claims taken. 0 or an errno (where)."""
        cdef int err = 0
        self.epoch += 1
        self.takes += 1
        self.claim_touched = 0
        if self.walk_open and (not self.walk_bg
                               or tcpsnap_done_count(&self.shared.done) >= self.nthreads):
            # begun before the dump, or a background walk that has ended: merge it
            # in this take (a background walk still going on is left alone)
            err = self._finish_walk()
            where[0] = W_WALK
            ready[0] = True
            t[0] = self._phase(P_WALK, t[0])
        if not err:
            err = self._check_owners()
            where[0] = W_POLL
            t[0] = self._phase(P_POLL, t[0])
        if not err:
            self._verify(now)
            t[0] = self._phase(P_VERIFY, t[0])
            # an unlocked peek (a claim that lands just after waits for the next take)
            self.claim_touched = self._take_claims(now) if self.nclaims else 0
        return err

    cdef int _close_take(self, double now, double t, tcpsnap_row *r, Py_ssize_t cn, bint by_seen,
                         bint ready, int *where) noexcept nogil:
        """A take's second half, after the rows pass: a walk started when due, one ended
        merged and its rows filled, entries no row looked at dropped (``by_seen``: every
        row of the table was looked up), processes no row references retired."""
        cdef int err = 0
        cdef bint bg, merged = False
        if not self.walk_open and (self.pending or self.retry) and self._walk_due(now):
            # background: the walk threads record every socket (the map changes
            # while they run) and a later take merges what they found
            bg = self._background and self.walks > 0
            err = self._start_walk(bg, bg)
            where[0] = W_LIST
            if not err and not self.walk_bg:
                err = self._finish_walk()
                where[0] = W_WALK
                ready = True
            t = self._phase(P_WALK, t)
        if not err and ready:
            err = self._merge(now)
            where[0] = W_MAP
            self.walk_open = False
            merged = True
            t = self._phase(P_MERGE, t)
        if not err:
            if merged:
                self._fill_pass(r, cn)
            if by_seen and self.touched != self.socks.count:
                self.evicted += smap_evict(&self.socks, self.epoch)
            self._sweep_procs()
            t = self._phase(P_TIDY, t)
        self._end_take(now, ready)
        return err

    cdef void _end_take(self, double now, bint ready) noexcept nogil:
        """Every take ends so, also one that failed: a walk merged (or begun in place)
        is over."""
        self.last_take = now
        if ready or not self.walk_bg:
            self.walk_open = False

    # ------------------------------------------------------------ some rows only

    def begin_rows(self):
        """The first half of a take whose caller looks up only the rows it cannot carry
        over from its previous table (changes mode, ``record.changes.ChangeTracker``):
        everything ``resolve`` does before its rows pass. Returns ``(pids, inodes)``: the
        owners (uint32) whose rows must be looked up again -- exited, their pid now
        another process's, renamed -- and the sockets (uint64 inodes) whose owner changed
        outside a rows pass (a re-checked link, a claim), each since the last
        ``begin_rows``; or None when every row must be looked up this time (the first
        call, a background walk not done yet, a take left unfinished, too many changes,
        the map outgrew the table). Then ``end_rows`` and, once the table is diffed,
        ``forget``. Background resolvers only: ValueError otherwise. OSError or
        MemoryError as ``resolve``."""
        cdef int err = 0, where = 0
        cdef double now = mono(), t = now
        cdef bint ready = False
        cdef uint32_t q
        cdef proc_ent *p
        cdef uint64_t start
        cdef char comm[COMM_LEN]
        if not self._background:
            raise ValueError("begin_rows needs a background resolver")
        full = not self.track or self.rows_open or self.full_next or self.walks == 0
        self.track = True
        self.full_next = False
        # (the changes noted since the last call stay: those of its end_rows came after
        # its rows were carried)
        self._merge_names()             # renames in before the rows are carried (names_into
                                        # merges no more in this take: merge=False)
        err = self._open_take(now, &t, &where, &ready)
        if not err:
            # owners without a pidfd: their start time, once per take (resolve's rows
            # pass does it for each owner a row names; carried rows name no owner here)
            for q in range(self.nprocs):
                p = &self.procs[q]
                if p.pid != 0 and not p.dead and p.pidfd < 0 and p.checked != self.epoch:
                    p.checked = self.epoch
                    if read_stat(self.procfd, p.pid, &start, comm) != 0 or start != p.start:
                        self._proc_mark_dead(q)
        self.rows_open = True
        self.take_ready = ready
        self.take_t = t
        self.take_now = now
        if err:
            self._end_take(now, ready)     # (rows_open stays: the next take looks every row up)
            raise_syscall(WHERE[where], err, enomem_as_memoryerror=True)
        if full or self.full_next:
            self.nchg_pids = self.nchg_inodes = 0
            return None
        if not self.nchg_pids and not self.nchg_inodes:
            return NO_U32, NO_U64        # (every quiet take: nothing is written into them)
        pids = np.empty(self.nchg_pids, np.uint32)
        inodes = np.empty(self.nchg_inodes, np.uint64)
        if self.nchg_pids:
            memcpy(<void *>(<size_t>pids.ctypes.data), self.chg_pids, self.nchg_pids * sizeof(uint32_t))
        if self.nchg_inodes:
            memcpy(<void *>(<size_t>inodes.ctypes.data), self.chg_inodes, self.nchg_inodes * sizeof(uint64_t))
        self.nchg_pids = self.nchg_inodes = 0
        return pids, inodes

    def end_rows(self, rows, need=None, carried=None):
        """The second half of a ``begin_rows`` take: ``rows`` (ROW_DTYPE, C-contiguous,
        writeable: the whole table) has ``pid`` filled at the indices ``need`` (int64), as
        ``resolve`` would; the others were carried over by the caller from its previous
        table, their owners ``carried`` (uint32 pids, each once: kept, as a row naming
        them keeps them). ``need`` None: every row is looked up (``resolve``'s pass; after
        a ``begin_rows`` that returned None). Entries are then dropped by ``forget``, not
        here, unless every row was looked up. ValueError for wrong arrays or an index
        outside rows, RuntimeError without ``begin_rows``; OSError or MemoryError as
        ``resolve``."""
        cdef Py_buffer b
        cdef tcpsnap_row *r
        cdef Py_ssize_t cn, m = 0, k
        cdef int err = 0, where = W_MAP
        cdef double t
        cdef const int64_t *ix = NULL
        cdef const uint32_t *cp = NULL
        cdef Py_ssize_t nc = 0
        cdef sock_ent *ke
        cdef PyThreadState *ts
        cdef bint all_rows = need is None
        if not self.rows_open:
            raise RuntimeError("end_rows without begin_rows")
        if array_ptr(rows, ROW_DTYPE, True) == NULL:
            check_out_array(rows, "rows")      # (what is wrong with it, or another dtype object)
        if not all_rows:
            ix = <const int64_t *>array_ptr(need, I64)
            if ix == NULL:
                need = np.ascontiguousarray(need, np.int64)
                ix = <const int64_t *>(<size_t>need.ctypes.data)
            m = len(need)
            if m and (need.min() < 0 or need.max() >= len(rows)):
                raise ValueError("need holds an index outside rows")
        if carried is not None:
            cp = <const uint32_t *>array_ptr(carried, U32)
            if cp == NULL:
                carried = np.ascontiguousarray(carried, np.uint32)
                cp = <const uint32_t *>(<size_t>carried.ctypes.data)
            nc = len(carried)
        get_buffer(rows, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, "rows")
        try:
            cn = b.len // <Py_ssize_t>sizeof(tcpsnap_row)
            r = <tcpsnap_row *>b.buf
            # the GIL kept for small tables, as resolve() does in the background
            ts = PyEval_SaveThread() if cn >= NOGIL_ROWS else NULL
            if True:
                t = self.take_t
                for k in range(nc):
                    # a carried row's owner is referenced as resolve's _owner_pid marks it
                    ke = smap_find(&self.pidix, cp[k])
                    if ke != NULL and ke.proc < self.nprocs and self.procs[ke.proc].pid == cp[k]:
                        self.procs[ke.proc].seen = self.epoch
                if all_rows:
                    if self._rows_pass(r, cn) < 0:
                        err = ENOMEM
                    self.touched += self.claim_touched
                elif self._rows_pass(r, m, ix) < 0:
                    err = ENOMEM
                t = self._phase(P_ROWS, t)
                if not err:
                    err = self._close_take(self.take_now, t, r, cn, all_rows, self.take_ready, &where)
                else:
                    self._end_take(self.take_now, self.take_ready)
                self.rows_n = cn
                self.rows_looked += cn if all_rows else m
                self.rows_carried += 0 if all_rows else cn - m
                if not all_rows and self.socks.count > <size_t>(2 * cn + MIN_CAP):
                    self.full_next = True    # entries forget() missed: a full pass drops them
            if ts != NULL:
                PyEval_RestoreThread(ts)
        finally:
            PyBuffer_Release(&b)
        if err:                          # (rows_open stays: the next take looks every row up)
            raise_syscall(WHERE[where], err, enomem_as_memoryerror=True)
        if not self.walks:
            return
        self._refresh_names()

    cdef _refresh_names(self):
        """Names older than ``name_ttl`` of every process a row referenced in this take
        re-read on the name thread (names_into does it for the rows it is given)."""
        cdef uint32_t q
        cdef proc_ent *p
        cdef double now = mono()
        if self.njob != NULL:
            return
        stale = []
        for q in range(self.nprocs):
            p = &self.procs[q]
            if (p.pid != 0 and not p.dead and p.seen == self.epoch and p.comm[0] != 0
                    and now - p.name_time >= self._name_ttl):
                stale.append(q)
        if stale:
            self._start_name_job(stale)

    def forget(self, inodes, cookies):
        """Ends a ``begin_rows`` take: the entries of these sockets (uint64 inodes and
        their cookies: the rows the caller's diff found closed, or whose inode changed)
        are dropped, unless the inode now names another socket. ValueError for arrays of
        different lengths."""
        cdef const uint64_t *iv = <const uint64_t *>array_ptr(inodes, U64)
        cdef const uint64_t *cv = <const uint64_t *>array_ptr(cookies, U64)
        cdef Py_ssize_t k, n
        cdef sock_ent *e
        cdef size_t cap
        if iv == NULL:
            inodes = np.ascontiguousarray(inodes, np.uint64)
            iv = <const uint64_t *>array_ptr(inodes, U64)
        if cv == NULL:
            cookies = np.ascontiguousarray(cookies, np.uint64)
            cv = <const uint64_t *>array_ptr(cookies, U64)
        if iv == NULL or cv == NULL:
            raise ValueError("inodes and cookies must be 1-dimensional")
        if len(inodes) != len(cookies):
            raise ValueError(f"inodes and cookies differ in length ({len(inodes)} != {len(cookies)})")
        n = len(inodes)
        with nogil:
            for k in range(n):
                if iv[k] == 0:
                    continue
                e = smap_find(&self.socks, iv[k])
                if e != NULL and e.cookie == <uint32_t>cv[k]:
                    smap_delete_at(&self.socks, e - self.socks.slots)
                    self.evicted += 1
            if self.socks.cap > MIN_CAP and self.socks.count * 8 < self.socks.cap:
                cap = MIN_CAP
                while cap < self.socks.count * 2:
                    cap *= 2
                smap_resize(&self.socks, cap)    # on ENOMEM the larger map simply stays
        self.rows_open = False

    def recheck_inodes(self, inodes):
        """The rows of these sockets (uint64 inodes) are looked up again at the next
        ``begin_rows`` take (rows whose pid a caller set itself)."""
        cdef const uint64_t[::1] iv = np.ascontiguousarray(inodes, np.uint64)
        cdef Py_ssize_t k
        for k in range(iv.shape[0]):
            self._note_inode(iv[k])

    cdef inline double _phase(self, int k, double t0) noexcept nogil:
        cdef double t = mono()
        self.phase_seconds[k] += t - t0
        return t

    cdef void _sweep_procs(self) noexcept nogil:
        """Drop processes no row has referenced in this take or the one before."""
        cdef uint32_t i
        cdef proc_ent *p
        for i in range(self.nprocs):
            p = &self.procs[i]
            if p.pid != 0 and self.epoch - p.seen > 1:
                self._proc_retire(i)

    cdef object _name(self, uint32_t pid, double now, bint recheck):
        cdef sock_ent *k = smap_find(&self.pidix, pid)
        cdef proc_ent *p = NULL
        cdef uint64_t start
        cdef char comm[COMM_LEN]
        cdef int rc, idx
        if k != NULL:
            p = &self.procs[k.proc]
            if p.dead:
                # exited: its last name is right for rows taken before; asked for names
                # as of now (recheck), look whether another process has the pid
                stale = recheck
            else:
                stale = ((p.pidfd < 0 and (recheck or p.checked != self.epoch))
                         or now - p.name_time >= self._name_ttl)
            if not stale:
                p.seen = self.epoch
                return p.comm.decode("utf-8", "replace")
        with nogil:
            rc = read_stat(self.procfd, pid, &start, comm)
        if rc != 0:
            if p != NULL:                # exited since the snapshot: its last name
                self._proc_mark_dead(k.proc)
                p.seen = self.epoch
                return p.comm.decode("utf-8", "replace")
            return None
        if p != NULL and p.start == start and not p.dead:
            if memcmp(p.comm, comm, COMM_LEN) != 0:
                self._note_pid(pid)
            memcpy(p.comm, comm, COMM_LEN)   # renamed (exec, prctl) or just confirmed
            p.name_time = now
            p.checked = self.epoch
            p.seen = self.epoch
            return p.comm.decode("utf-8", "replace")
        # a pid we did not know, or one that now names another process
        idx = self._proc_add(pid, start, comm, now)
        if idx == -1:
            raise MemoryError()
        return comm.decode("utf-8", "replace")

    def process_names(self, pids, bint recheck=False):
        """``(codes, names)``: int32 codes into ``names``, -1 where the pid is 0 or has
        no readable name. A cached name is used while its process is provably the same
        one (pidfd not readable, or start time confirmed in this take) and younger than
        ``name_ttl``; otherwise /proc/<pid>/stat is read again (start time + comm).
        With ``background`` (and not ``recheck``), /proc is never read here: each pid
        the last take() resolved gets its cached name (its walk read it), a name older
        than ``name_ttl`` is re-read on a thread of its own and a later call takes the
        new one up, and a pid this resolver does not hold gets -1.
        ``pids``: integers, 1-D (pids outside 1..2**32-1 get -1). Bad arguments: ValueError
        for other than one dimension, TypeError for what is not integers."""
        cdef double now = mono()
        if recheck:
            # names as of now, not as of the last take(): exits seen, idle entries dropped
            with nogil:
                self.epoch += 1
                self._check_owners()
                self._sweep_procs()
        p = np.asarray(pids)
        if p.ndim != 1:
            raise ValueError("pids must be 1-dimensional")
        if len(p) == 0:
            return np.zeros(0, np.int32), []
        if p.dtype.kind not in "uibO":
            raise TypeError(f"pids must be integers, got dtype {p.dtype!r}")
        if self._background and not recheck and p.dtype.kind in "ub":
            return self._cached_names(p, now)
        uniq, inv = np.unique(p, return_inverse=True)
        ucodes = np.full(len(uniq), -1, np.int32)
        names = []
        index = {}
        for j, pid in enumerate(uniq.tolist()):
            pid = index_arg(pid, "pids")        # an object array may hold anything
            if pid <= 0 or pid > 0xFFFFFFFF:
                continue
            name = self._name(<uint32_t>pid, now, recheck)
            if name is None:
                continue
            code = index.get(name)
            if code is None:
                code = index[name] = len(names)
                names.append(name)
            ucodes[j] = code
        return ucodes[inv.ravel()], names

    cdef object _cached_names(self, object p, double now):
        """process_names off the caller's thread (background): two passes in C over the
        rows and one Python step per process named."""
        cdef Py_ssize_t n = len(p), i
        cdef uint32_t[::1] pv
        cdef int32_t[::1] slot
        cdef int32_t[::1] codes
        cdef int32_t[::1] scode
        cdef uint8_t[::1] used
        cdef sock_ent *k
        cdef uint32_t pid, idx, last = 0, nprocs
        cdef int32_t lastslot = -1
        cdef proc_ent *pe
        cdef size_t nstale = 0
        self._merge_names()
        if p.dtype.kind == "u" and p.dtype.itemsize > 4:
            p = np.where(p > 0xFFFFFFFF, 0, p)      # no such pid: unknown
        pv = np.ascontiguousarray(p, dtype=np.uint32)
        nprocs = self.nprocs
        slot_a = np.empty(n, np.int32)
        used_a = np.zeros(max(nprocs, 1), np.uint8)
        scode_a = np.full(max(nprocs, 1) + 1, -1, np.int32)
        slot = slot_a
        used = used_a
        scode = scode_a
        with nogil:
            for i in range(n):
                pid = pv[i]
                if pid == 0:
                    slot[i] = -1
                    continue
                if pid == last:
                    slot[i] = lastslot
                    continue
                last = pid
                k = smap_find(&self.pidix, pid)
                if k == NULL or k.proc >= nprocs or self.procs[k.proc].pid != pid:
                    lastslot = -1
                else:
                    lastslot = <int32_t>k.proc
                    used[k.proc] = 1
                slot[i] = lastslot
        names = []
        index = {}
        stale = []
        for idx in range(nprocs):
            if not used[idx]:
                continue
            scode[idx] = self._name_code(idx, now, index, names, stale)
        if stale and self.njob == NULL:
            self._start_name_job(stale)
        codes_a = np.empty(n, np.int32)
        codes = codes_a
        with nogil:
            for i in range(n):
                codes[i] = scode[slot[i]] if slot[i] >= 0 else -1
        return codes_a, names

    def names_into(self, pids, int32_t[::1] out, dict index, list names, bint merge=True):
        """``process_names(pids)`` folded into a running dictionary (the recorder's batch):
        ``out[i]`` becomes the code in ``names`` of row i's process name, -1 where it is
        unknown; ``index`` maps name -> code, and both grow by the names not in them yet.
        The names are exactly ``process_names``'. In the background (the recorder) no array
        is made: one C pass finds each row's process slot (a pid repeated from the row
        before is not looked up again), one Python step per process named (its code,
        and a re-read on the name thread when older than ``name_ttl``), one C pass writes
        the codes. ``pids``: 1-D integers (``rows["pid"]``, strided, is fine); ``out`` as
        long (ValueError otherwise). ``merge`` False: a name round that ended is not taken
        up here (``begin_rows`` did, for the whole table)."""
        cdef const uint32_t[:] pv
        cdef Py_ssize_t n
        cdef uint32_t nprocs, idx
        cdef proc_ent *pe
        cdef double now
        if len(pids) != out.shape[0]:
            raise ValueError(f"pids and out differ in length ({len(pids)} != {out.shape[0]})")
        if not self._background or getattr(pids, "dtype", None) != np.uint32 or pids.ndim != 1:
            codes, pnames = self.process_names(pids)
            np.take(merge_names(pnames, index, names), codes, out=np.asarray(out), mode="wrap")
            return
        pv = pids
        n = pv.shape[0]
        now = mono()
        if merge:
            self._merge_names()
        nprocs = self.nprocs
        if grow(<void **>&self.slotcode, &self.capslot, nprocs + 1, sizeof(int32_t)) < 0:
            raise MemoryError()
        memset(self.slotcode, 0, nprocs * sizeof(int32_t))   # 1: some row's owner
        if n >= NOGIL_ROWS:
            with nogil:
                self._slots_of(pv, out, nprocs)
        else:
            self._slots_of(pv, out, nprocs)
        stale = []
        for idx in range(nprocs):
            if self.slotcode[idx] != 1:
                continue
            self.slotcode[idx] = self._name_code(idx, now, index, names, stale)
        if stale and self.njob == NULL:
            self._start_name_job(stale)
        if n >= NOGIL_ROWS:
            with nogil:
                self._codes_of(out)
        else:
            self._codes_of(out)

    cdef void _slots_of(self, const uint32_t[:] pv, int32_t[::1] out, uint32_t nprocs) noexcept nogil:
        """names_into: each row's process slot (-1: none), and slotcode[slot] = 1 where used."""
        cdef Py_ssize_t i
        cdef uint32_t pid, last = 0
        cdef int32_t lastslot = -1
        cdef sock_ent *k
        for i in range(pv.shape[0]):
            pid = pv[i]
            if pid == 0:
                out[i] = -1
                continue
            if pid != last:
                last = pid
                k = smap_find(&self.pidix, pid)
                if k == NULL or k.proc >= nprocs or self.procs[k.proc].pid != pid:
                    lastslot = -1
                else:
                    lastslot = <int32_t>k.proc
                    self.slotcode[k.proc] = 1
            out[i] = lastslot

    cdef void _codes_of(self, int32_t[::1] out) noexcept nogil:
        """names_into: each row's slot -> its code (slotcode)."""
        cdef Py_ssize_t i
        cdef int32_t sl
        for i in range(out.shape[0]):
            sl = out[i]
            out[i] = self.slotcode[sl] if sl >= 0 else -1

    cdef int32_t _name_code(self, Py_ssize_t idx, double now, dict index, list names,
                            list stale) except? -2:
        """Process ``idx``'s name as a code into ``names`` (added there and to ``index``
        when new), -1 for none; marks it seen, and notes it in ``stale`` when its name is
        older than ``name_ttl`` (re-read in the background)."""
        cdef proc_ent *pe = &self.procs[idx]
        pe.seen = self.epoch
        if pe.comm[0] == 0:
            return -1
        name = pe.comm.decode("utf-8", "replace")
        code = index.get(name)
        if code is None:
            code = index[name] = len(names)
            names.append(name)
        if not pe.dead and now - pe.name_time >= self._name_ttl:
            stale.append(idx)
        return code

    cdef _start_name_job(self, list stale):
        """Re-read the names of these process slots on the name worker."""
        cdef name_job *j = <name_job *>calloc(1, sizeof(name_job))
        cdef size_t i = 0
        cdef uint32_t idx
        if j == NULL:
            raise MemoryError()
        j.reqs = <name_req *>calloc(len(stale), sizeof(name_req))
        if j.reqs == NULL:
            free(j)
            raise MemoryError()
        for idx in stale:
            j.reqs[i].pid = self.procs[idx].pid
            j.reqs[i].start = self.procs[idx].start
            i += 1
        j.n = i
        j.state = NJ_RUNNING
        j.block_fd = self._name_block_fd
        if hand_job(&self.nworker, name_work, j, b"tcpsnap-names") != 0:
            free(j.reqs)
            free(j)
            return                   # no thread now: the cached names stay; try next time
        self.njob = j
        self.name_jobs += 1

    cdef void _merge_names(self) noexcept nogil:
        """Take up what a name job that has ended read: the new comm of each process that
        is still the one asked about (pid + start time)."""
        cdef name_job *j = self.njob
        cdef name_req *r
        cdef sock_ent *k
        cdef proc_ent *pe
        cdef size_t i
        if j == NULL or tcpsnap_done_count(&j.state) != NJ_DONE:
            return
        for i in range(j.n):
            r = &j.reqs[i]
            k = smap_find(&self.pidix, r.pid)
            if k == NULL:
                continue
            pe = &self.procs[k.proc]
            if pe.pid != r.pid or pe.start != r.start or pe.dead:
                continue
            pe.name_time = r.t           # asked again name_ttl from now, read or not
            if r.rc != 0 or r.got != r.start:
                continue                 # exited: its pidfd (or start time) says so in a take
            if memcmp(pe.comm, r.comm, COMM_LEN) != 0:
                self._note_pid(pe.pid)   # renamed: its rows' name codes change
            memcpy(pe.comm, r.comm, COMM_LEN)
            self.names_refreshed += 1
        free(j.reqs)
        free(j)
        self.njob = NULL

    @property
    def _name_block(self):
        """Tests: a descriptor each later name job reads one byte from before each
        lookup (a name lookup that blocks until the test writes); -1: none."""
        return self._name_block_fd

    @_name_block.setter
    def _name_block(self, value):
        self._name_block_fd = int_arg(value, "_name_block", -1, INT_MAX)

    def owner(self, inode):
        """``(pid, fd)`` the cache holds for a socket inode, or None (for tests/tools).
        TypeError for an inode that is not an integer, ValueError outside 0..2**64-1."""
        cdef sock_ent *e = smap_find(&self.socks, int_arg(inode, "inode", 0, 0xFFFFFFFFFFFFFFFF))
        cdef proc_ent *p
        if e == NULL or e.state != SK_OWNED:
            return None
        p = &self.procs[e.proc]
        if p.gen != e.proc_gen or p.pid == 0:
            return None
        return p.pid, e.fd

    def _forge_start(self, unsigned int pid, unsigned long long start):
        """Tests: pretend the cached process at ``pid`` started at ``start``."""
        cdef sock_ent *k = smap_find(&self.pidix, pid)
        if k == NULL:
            raise KeyError(pid)
        self.procs[k.proc].start = start

    @property
    def stats(self):
        """Counters and sizes: see ``tcpsnap.pids``."""
        return {
            "takes": self.takes,
            "walks": self.walks,
            "walk_seconds": self.walk_seconds,
            "last_walk_seconds": self.last_walk_seconds,
            "last_walk_procs": self.last_walk_procs,
            "last_walk_fds": self.last_walk_fds,
            "denied": self.denied,
            "pending": self.pending,
            "retry": self.retry,
            "entries": self.socks.count,
            "map_slots": self.socks.cap,
            "processes": self.nprocs - self.nfree,
            "pidfds": self.npidfd,
            "verified": self.verified,
            "verify_skipped": self.verify_skipped,
            "moved": self.moved,
            "owner_exits": self.owner_exits,
            "evicted": self.evicted,
            "skipped_procs": self.skipped_procs,
            "walking": bool(self.walk_open and self.walk_bg),
            "name_jobs": self.name_jobs,
            "names_refreshed": self.names_refreshed,
            "naming": self.njob != NULL,
            "check_jobs": self.check_jobs,
            "backstop_quiet": self.backstop_quiet,
            "checking": self.cjob != NULL,
            "claimed": self.claimed,
            "phase_seconds": {PHASES[k]: self.phase_seconds[k] for k in range(P_COUNT)},
        }

    def close(self):
        with nogil:
            self._join()
            self._release_jobs()
        self.walk_open = False
