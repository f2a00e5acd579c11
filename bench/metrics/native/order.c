/* Orderings by small integer keys: counting passes instead of comparison sorts. */
#include <stdlib.h>

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
