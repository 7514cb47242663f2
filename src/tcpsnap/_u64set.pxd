# One open-addressing set of nonzero uint64 keys (cookies, inodes, pids), inline: a table
# of mask + 1 slots (a power of two; 0 marks an empty slot), linear probing from a
# multiplicative hash. The dump's cookie dedupe (_cookies.pxd) and the diff's carry
# (_diffrow.pxd) both use it; callers keep it at most half full. No module of its own.
from libc.stdint cimport uint64_t


cdef inline uint64_t u64_mix(uint64_t c) noexcept nogil:
    # Fibonacci hashing: cookies, inodes and pids are near-sequential; the product's
    # high bits spread them over the table
    return (c * <uint64_t>0x9E3779B97F4A7C15ULL) >> 20


cdef inline bint u64set_has(const uint64_t *s, uint64_t mask, uint64_t key) noexcept nogil:
    """Whether ``key`` (not 0) is in the set ``s`` of ``mask + 1`` slots."""
    cdef uint64_t i = u64_mix(key) & mask
    while s[i] != 0:
        if s[i] == key:
            return True
        i = (i + 1) & mask
    return False


cdef inline void u64set_add(uint64_t *s, uint64_t mask, uint64_t key) noexcept nogil:
    """``key`` (not 0) into the set (nothing when it is there already)."""
    cdef uint64_t i = u64_mix(key) & mask
    while s[i] != 0:
        if s[i] == key:
            return
        i = (i + 1) & mask
    s[i] = key


cdef inline void u64set_del(uint64_t *s, uint64_t mask, uint64_t key) noexcept nogil:
    """``key`` out of the set: linear probing's deletion (later entries of the run move
    back into the hole, so every key stays reachable from its hash)."""
    cdef uint64_t i = u64_mix(key) & mask, j, k
    while s[i] != key:
        if s[i] == 0:
            return
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if s[j] == 0:
            break
        k = u64_mix(s[j]) & mask          # where s[j] would sit unhindered
        if (k <= i or k > j) if i <= j else (k <= i and k > j):
            s[i] = s[j]
            i = j
    s[i] = 0
