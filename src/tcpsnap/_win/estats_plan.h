/* Which connections' Windows extended statistics (GetPerTcpConnectionEStats) one snapshot
 * reads, and which it enables collection for: plain C on tcpsnap rows, no Windows header, so
 * that the same code runs in the Windows backend (_windows.pyx) and, through
 * tcpsnap._tcp_info.EstatsPlan, in tests on any platform.
 *
 * Each call to GetPerTcpConnectionEStats is a round trip to the TCP stack per connection and
 * per struct: on a busy host a snapshot reads at most `cap` connections (ESTABLISHED ones
 * only), in round-robin so that every connection is read within ceil(n / cap) snapshots:
 * the connections are taken in the order of a 64-bit key of their 4-tuple, starting after
 * the key of the last one read (the cursor), wrapping around. A connection whose key was not
 * in the previous snapshot is "fresh": collection is enabled for it (SetPerTcpConnectionEStats)
 * in this snapshot whatever the cap, so that its counts start when tcpsnap first saw it.
 *
 * A key is a 64-bit hash (splitmix64's mixer) of family, addresses, ports and scope ids: two live connections with the
 * same key (a 64-bit collision) would share "seen" state; the second one would not be enabled
 * until the first is gone. */
#ifndef TCPSNAP_ESTATS_PLAN_H
#define TCPSNAP_ESTATS_PLAN_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_row.h"

#define TCPSNAP_ESTATS_DEFAULT_CAP 1000
#define TCPSNAP_ESTATS_STATE_ESTAB 5    /* MIB_TCP_STATE_ESTAB: the only state EStats is read in */

typedef struct estats_ent {
    uint64_t key;
    uint32_t idx;             /* row index in this snapshot */
} estats_ent;

typedef struct estats_plan {
    size_t cap;               /* connections read per snapshot (>= 1) */
    uint64_t cursor;          /* key of the last connection read */
    int has_cursor;
    estats_ent *cur;          /* this snapshot's ESTABLISHED rows, sorted by key */
    estats_ent *tmp;          /* the radix sort's other half */
    size_t ncur, cur_cap;
    uint64_t *seen;           /* the previous snapshot's keys, sorted */
    size_t nseen, seen_cap;
    uint32_t *fresh;          /* row indices to enable collection for (first seen) */
    size_t nfresh;
    uint32_t *pick;           /* row indices to read (at most cap) */
    size_t npick;
} estats_plan;

static inline uint64_t estats_mix(uint64_t h, uint64_t w)
{
    /* one round of a multiply-xorshift (splitmix64's finalizer) per 64-bit word */
    h ^= w;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static inline uint64_t estats_key(const tcpsnap_row *r)
{
    uint64_t w[4];
    uint64_t h = 0x9e3779b97f4a7c15ull;
    memcpy(w, r->local_addr, 16);
    memcpy(w + 2, r->remote_addr, 16);
    h = estats_mix(h, w[0]);
    h = estats_mix(h, w[1]);
    h = estats_mix(h, w[2]);
    h = estats_mix(h, w[3]);
    h = estats_mix(h, (uint64_t)r->family << 32 | (uint64_t)r->local_port << 16 | r->remote_port);
    return estats_mix(h, (uint64_t)r->local_scope_id << 32 | r->remote_scope_id);
}

static inline void estats_plan_init(estats_plan *p, size_t cap)
{
    memset(p, 0, sizeof(*p));
    p->cap = cap ? cap : 1;
}

static inline void estats_plan_free(estats_plan *p)
{
    free(p->cur);
    free(p->tmp);
    free(p->seen);
    free(p->fresh);
    free(p->pick);
    estats_plan_init(p, p->cap);
}

/* Sort e[0:n] by key: LSD radix, 8 passes of 8 bits through tmp (keys are hashes: every pass
 * moves; all 8 histograms in one read). Measured in benchmarks/bench_estats_plan.py. */
static inline void estats_sort(estats_ent *e, estats_ent *tmp, size_t n)
{
    size_t count[8][256];
    size_t i, pass, sum, c;
    estats_ent *src = e, *dst = tmp, *t;
    memset(count, 0, sizeof(count));
    for (i = 0; i < n; i++)
        for (pass = 0; pass < 8; pass++)
            count[pass][(e[i].key >> (8 * pass)) & 255]++;
    for (pass = 0; pass < 8; pass++) {
        for (sum = 0, c = 0; c < 256; c++) {
            size_t k = count[pass][c];
            count[pass][c] = sum;
            sum += k;
        }
        for (i = 0; i < n; i++)
            dst[count[pass][(src[i].key >> (8 * pass)) & 255]++] = src[i];
        t = src; src = dst; dst = t;
    }
    /* an even number of passes: the result is back in e */
}

/* Room for n rows in every array; -1 when out of memory (the plan is then unchanged). */
static inline int estats_plan_reserve(estats_plan *p, size_t n)
{
    estats_ent *c, *t;
    uint64_t *s;
    uint32_t *f, *k;
    if (n <= p->cur_cap)
        return 0;
    c = (estats_ent *)malloc(n * sizeof(*c));
    t = (estats_ent *)malloc(n * sizeof(*t));
    s = (uint64_t *)malloc(n * sizeof(*s));
    f = (uint32_t *)malloc(n * sizeof(*f));
    k = (uint32_t *)malloc(n * sizeof(*k));
    if (!c || !t || !s || !f || !k) {
        free(c); free(t); free(s); free(f); free(k);
        return -1;
    }
    if (p->nseen)
        memcpy(s, p->seen, p->nseen * sizeof(*s));
    free(p->cur); free(p->tmp); free(p->seen); free(p->fresh); free(p->pick);
    p->cur = c; p->tmp = t; p->seen = s; p->fresh = f; p->pick = k;
    p->cur_cap = p->seen_cap = n;
    return 0;
}

/* One snapshot: rows[0:n] -> p->fresh / p->pick (row indices, ascending key order), and the
 * keys remembered for the next snapshot. -1 when out of memory (nothing planned). */
static inline int estats_plan_run(estats_plan *p, const tcpsnap_row *rows, size_t n)
{
    size_t i, j, m = 0, start, take;
    if (estats_plan_reserve(p, n) < 0) {
        p->nfresh = p->npick = 0;
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (rows[i].state != TCPSNAP_ESTATS_STATE_ESTAB)
            continue;
        p->cur[m].key = estats_key(&rows[i]);
        p->cur[m].idx = (uint32_t)i;
        m++;
    }
    p->ncur = m;
    estats_sort(p->cur, p->tmp, m);
    /* fresh: in cur, not in seen (both sorted) */
    p->nfresh = 0;
    for (i = 0, j = 0; i < m; i++) {
        while (j < p->nseen && p->seen[j] < p->cur[i].key)
            j++;
        if (j == p->nseen || p->seen[j] != p->cur[i].key)
            p->fresh[p->nfresh++] = p->cur[i].idx;
    }
    /* pick: cap of them from the first key after the cursor, wrapping */
    take = m < p->cap ? m : p->cap;
    start = 0;
    if (p->has_cursor && take < m) {
        size_t lo = 0, hi = m;            /* first key > cursor */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (p->cur[mid].key <= p->cursor)
                lo = mid + 1;
            else
                hi = mid;
        }
        start = lo == m ? 0 : lo;
    }
    for (i = 0; i < take; i++)
        p->pick[i] = p->cur[(start + i) % m].idx;
    p->npick = take;
    if (take) {
        p->cursor = p->cur[(start + take - 1) % m].key;
        p->has_cursor = 1;
    }
    for (i = 0; i < m; i++)
        p->seen[i] = p->cur[i].key;
    p->nseen = m;
    return 0;
}

#endif
