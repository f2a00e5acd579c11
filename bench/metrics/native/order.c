/* Orderings by small integer keys: counting passes instead of comparison sorts. */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* Rank of every element inside its group when the elements are visited in array order (0 = first): a count
 * per group (bench.metrics.groups.rank_within_group with a stable sort by group is the NumPy form). */
int32_t bench_rank_in_order(int64_t n, const int64_t *group, int64_t n_groups, int64_t *rank) {
    int64_t *seen = calloc(n_groups + 1, sizeof(int64_t));
    if (!seen) return -1;
    for (int64_t j = 0; j < n; j++) rank[j] = seen[group[j]]++;
    free(seen);
    return 0;
}

/* `order` stably reordered by key[order[j]] (keys in [0, n_keys)) into `out`: one counting-sort pass. Passes
 * from the least to the most significant key give np.lexsort's order (bench.metrics.groups.ordered_by). */
int32_t bench_order_by_key(int64_t n, const int64_t *key, int64_t n_keys, const int64_t *order, int64_t *out) {
    int64_t *next = calloc(n_keys + 1, sizeof(int64_t));
    int64_t *visited = malloc((n > 0 ? n : 1) * sizeof(int64_t));  /* the keys in visit order */
    if (!next || !visited) {
        free(next);
        free(visited);
        return -1;
    }
    for (int64_t j = 0; j < n; j++) {
        visited[j] = key[order[j]];
        next[visited[j] + 1]++;
    }
    for (int64_t k = 1; k <= n_keys; k++) next[k] += next[k - 1];
    for (int64_t j = 0; j < n; j++) out[next[visited[j]]++] = order[j];
    free(next);
    free(visited);
    return 0;
}

/* Order-preserving unsigned key of a double for an ascending sort meaning descending scores: -0.0 as 0.0
 * (they tie), every NaN one key after all numbers (np.unique's one NaN, ranked last). */
static uint64_t descending_key(double x) {
    if (x != x) return UINT64_MAX;
    if (x == 0.0) x = 0.0;
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint64_t ascending = bits >> 63 ? ~bits : bits | (1ULL << 63); /* (never 0 for a number) */
    return ~ascending;
}

/* Dense rank of every score, the highest 0, equal scores (0.0 and -0.0, every NaN) sharing one, NaN last:
 * bench.metrics.groups.descending_rank. An LSD radix sort by 16-bit digits of the keys (digits that every
 * key shares are skipped), then one walk numbering the distinct keys. */
int32_t bench_descending_rank(int64_t n, const double *score, int64_t *rank) {
    size_t size = (size_t)(n > 0 ? n : 1);
    uint64_t *key = malloc(size * sizeof(uint64_t)), *key_out = malloc(size * sizeof(uint64_t));
    int64_t *order = malloc(size * sizeof(int64_t)), *order_out = malloc(size * sizeof(int64_t));
    int64_t *count = malloc(((1 << 16) + 1) * sizeof(int64_t));
    if (!key || !key_out || !order || !order_out || !count) {
        free(key), free(key_out), free(order), free(order_out), free(count);
        return -1;
    }
    uint64_t all_and = UINT64_MAX, all_or = 0;
    for (int64_t j = 0; j < n; j++) {
        key[j] = descending_key(score[j]);
        order[j] = j;
        all_and &= key[j];
        all_or |= key[j];
    }
    for (int shift = 0; shift < 64; shift += 16) {
        if ((((all_and ^ all_or) >> shift) & 0xFFFF) == 0) continue; /* every key has this digit */
        memset(count, 0, ((1 << 16) + 1) * sizeof(int64_t));
        for (int64_t j = 0; j < n; j++) count[((key[j] >> shift) & 0xFFFF) + 1]++;
        for (int64_t d = 1; d <= 1 << 16; d++) count[d] += count[d - 1];
        for (int64_t j = 0; j < n; j++) {
            int64_t at = count[(key[j] >> shift) & 0xFFFF]++;
            key_out[at] = key[j];
            order_out[at] = order[j];
        }
        uint64_t *k = key; key = key_out; key_out = k;
        int64_t *o = order; order = order_out; order_out = o;
    }
    int64_t r = -1;
    for (int64_t j = 0; j < n; j++) {
        if (j == 0 || key[j] != key[j - 1]) r++;
        rank[order[j]] = r;
    }
    free(key), free(key_out), free(order), free(order_out), free(count);
    return 0;
}
