# The compiled diff of two consecutive snapshots (changes mode): declarations.
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from tcpsnap._row cimport tcpsnap_row
from tcpsnap._diffrow cimport carry_args, info_args

cdef struct diff_result:
    Py_ssize_t n_events     # cur rows written to ev_idx / ev_code
    Py_ssize_t n_closed     # prev rows written to closed_idx
    int duplicate           # an identity occurs twice in prev or cur: emit a keyframe
    int cur_duplicate       # ... twice in cur

# Diff prev[:np] (with per-row process codes pproc) against cur[:nc] (cproc). With `ca`
# (not NULL), cur_w / cproc_w are cur / cproc, written as carry_args says. Fills
# ev_idx/ev_code (capacity nc) with the cur rows to record -- every row when
# `keyframe` (or when an identity repeats) -- and closed_idx (capacity np) with the prev
# rows gone from cur. `slots` (nslots, a power of two >= 2*nc) is left holding cur's
# identities for diff_lookup; `matched` is scratch of nc bytes.
cdef diff_result diff_tables(const tcpsnap_row *prev, const int32_t *pproc, Py_ssize_t np,
                             const tcpsnap_row *cur, const int32_t *cproc, Py_ssize_t nc,
                             int keyframe, int32_t *slots, Py_ssize_t nslots, uint8_t *matched,
                             int64_t *ev_idx, uint8_t *ev_code, int64_t *closed_idx,
                             const info_args *info, tcpsnap_row *cur_w, int32_t *cproc_w,
                             carry_args *ca) noexcept nogil
