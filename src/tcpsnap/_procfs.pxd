# The Linux owning-process resolver (socket inode -> pid through /proc/<pid>/fd): its
# structs and the walk entry points. System declarations are in _system.pxd.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from tcpsnap._system cimport pthread_mutex_t

# ---------------------------------------------------------------- socket inode map
# Open addressing, linear probing, backward-shift deletion; inode 0 marks an empty slot.

cdef enum sock_state:
    SK_PENDING = 1     # in the table, not looked for yet
    SK_OWNED = 2       # owner known: proc / proc_gen / fd are valid
    SK_MISSING = 3     # a walk that started after it appeared did not find it
    SK_CAND = 4        # while merging a walk: proc / fd / proc_gen hold the best candidate

cdef struct sock_ent:     # 32 bytes: the row pass touches one per row
    uint64_t inode
    uint32_t cookie       # low half of the socket cookie: a reused inode number is not our socket
    uint32_t seen         # take() epoch it was last in the table
    uint32_t proc         # owner: slot in PidResolver.procs   (SK_CAND: candidate pid)
    uint32_t proc_gen     # ...and that slot's generation       (SK_CAND: worker << 24 | info)
    int32_t fd            # the owner's descriptor for it
    uint16_t born         # low 16 bits of the epoch it (re)appeared; SK_OWNED: of the check
                          # round its link was last known right (see PidResolver._verify)
    uint8_t state
    uint8_t misses        # walks that did not find it (SK_OWNED: 2 if several processes held it)

cdef struct sock_map:
    sock_ent *slots
    size_t cap            # power of two
    size_t count
    int shift             # 64 - log2(cap)


# ---------------------------------------------------------------- process table

cdef struct proc_ent:
    uint32_t pid          # 0 = free slot
    uint32_t gen          # bumped each time the slot is retired
    int32_t pidfd         # -1: none (liveness by start time instead)
    int32_t vdir          # /proc/<pid>/fd while a take re-checks links; -1 otherwise
    uint32_t seen         # epoch last referenced by a row or a name lookup
    uint32_t checked      # epoch the start time was last confirmed (no pidfd)
    uint64_t start        # /proc/<pid>/stat starttime: with pid, the process identity
    double name_time      # when comm was read
    uint8_t dead          # exited, or its pid now names another process
    uint8_t vchg          # this take's re-checks: its descriptor count moved, or is unknown
    uint32_t nfds         # its descriptors at the last look (st_size of /proc/<pid>/fd); 0: unknown
    uint64_t hot_until    # its links are re-read until the fast re-check cursor visited this many slots
    uint64_t fp           # how much its threads had run when it was last seen quiet (0: unknown)
    uint16_t fp_round     # ...the check round that first saw that fingerprint (low 16 bits)
    uint8_t catchup       # quiet: read all its links in the next round (PidResolver._verify)
    double catch_t        # when that was last done
    uint32_t look_round   # the check round its count is looked at in (PidResolver._queue_check)
    char comm[64]

cdef struct pid_slot:     # pid -> index into procs; pid 0 = empty
    uint32_t pid
    uint32_t idx

cdef struct pid_map:
    pid_slot *slots
    size_t cap
    size_t count
    int shift


# ---------------------------------------------------------------- /proc walks

cdef struct found_rec:    # a socket descriptor seen in a walk
    uint64_t inode
    uint32_t pid
    int32_t fd
    uint32_t info         # index into the worker's infos

cdef struct proc_info:    # a process that held wanted sockets, as read during the walk
    uint32_t pid
    uint32_t nfds         # its descriptor count right after they were read (0: unknown)
    uint64_t start
    char comm[64]

cdef struct walk_shared:       # what the workers of one walk share, under lock
    pthread_mutex_t lock
    const uint32_t *pids      # the processes to walk
    size_t npids
    size_t next               # next index into pids
    uint32_t epoch            # the take this walk serves
    int block                 # descriptors per shared block (0: directories are not shared)
    unsigned char *marks      # NULL, or per map slot: found already (early stop)
    size_t want_left          # unresolved rows not found yet (atomic)
    int stop                  # all found: take no further process (atomic)
    uint32_t big_pid          # a large fd directory being read block by block (0: none)
    uint32_t big_gen          # bumped for each new shared directory
    size_t big_next           # next block of it
    int done                  # background walk: threads finished (atomic, release/acquire)
    int background            # its threads run at a lower priority (BG_NICE)

cdef struct walker:
    int procfd                # /proc (shared, read-only)
    walk_shared *sh
    const sock_map *want      # NULL: record every socket; else only unresolved entries
    char *buf                 # getdents64 buffer
    size_t buf_size
    int big_fdd               # this worker's descriptor for the shared directory
    uint32_t big_gen          # ...of that generation
    found_rec *found
    size_t nfound
    size_t capfound
    proc_info *infos
    size_t ninfo
    size_t capinfo
    uint32_t procs            # fd directories read
    uint32_t denied           # processes whose fd directory or links we may not read
    uint32_t gone             # processes that exited before or while we read them
    uint64_t fds              # descriptors looked at
    uint64_t sockets          # of them sockets
    int err                   # ENOMEM: the walk is incomplete

cdef enum:
    MAX_WORKERS = 4
    COMM_LEN = 64

cdef int read_stat(int procfd, uint32_t pid, uint64_t *start, char *comm) noexcept nogil
cdef void walk_run(walker *w) noexcept nogil
