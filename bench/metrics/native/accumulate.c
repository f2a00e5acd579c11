/* pycocotools' accumulate for one (area range, maxDets) cell: per threshold and class, recall tp / npig,
 * precision tp / (fp + tp + eps) over the detections in score order (ignored ones add nothing), its
 * right-to-left running maximum, and the first position whose recall reaches each recall threshold
 * (searchsorted "left"; past the end: 0). *
 * The loop form of bench.metrics.accumulate.accumulate_cell, with its inputs: detections in accumulate's
 * order, class_bounds their class starts; an unmatched detection is a false positive where base_counted,
 * else ignored; the matched ones of threshold t are entries row_bounds[t]..row_bounds[t + 1] (sorted by
 * detection) with their own status (0 FP, 1 TP, 2 ignored); within: rank below maxDets. Class k's values go
 * to column column[k] of the outputs (the caller's class order), so they land where they stay; scores may
 * be NULL (not wanted). */
#include <float.h>
#include <stdlib.h>

#include "kernels.h"

/* Only true positives are visited, which gives the same floats: recall grows only at a true positive, so
 * every position searchsorted picks for r > 0 is one, and recall 0 picks position 0, whose enveloped
 * precision is the maximum over all positions; between two true positives precision only falls, so the
 * envelope at a true positive is the maximum over the later ones. The counted (TP + FP) number at a
 * detection is the unmatched baseline's running count plus the matched entries' corrections, and
 * fp + tp of pycocotools' float arrays is that count exactly. */
int32_t bench_accumulate_cell(int64_t n_det, int64_t n_cls, int64_t n_thr, int64_t n_rec,
                              const int64_t *class_bounds, const double *score, const uint8_t *within,
                              const uint8_t *base_counted, const int64_t *row_bounds, const int32_t *entry_det,
                              const int8_t *entry_status, const int64_t *n_regular, const double *recall_thr,
                              const int64_t *column, double *precision, double *scores, double *recall) {
    int64_t *base = malloc((n_det + 1) * sizeof(int64_t)); /* counted up to j, within the class */
    int64_t *first = malloc((n_cls + 1) * sizeof(int64_t)); /* first detection below maxDets, or -1 */
    int64_t widest = 1;
    for (int64_t t = 0; t < n_thr; t++)
        if (row_bounds[t + 1] - row_bounds[t] > widest) widest = row_bounds[t + 1] - row_bounds[t];
    double *pr = malloc(widest * sizeof(double)), *rc = malloc(widest * sizeof(double));
    int64_t *at = malloc(widest * sizeof(int64_t));
    if (!base || !first || !pr || !rc || !at) {
        free(base), free(first), free(pr), free(rc), free(at);
        return -1;
    }
    for (int64_t k = 0; k < n_cls; k++) {
        int64_t sum = 0;
        first[k] = -1;
        for (int64_t j = class_bounds[k]; j < class_bounds[k + 1]; j++) {
            if (within[j] && first[k] < 0) first[k] = j;
            sum += within[j] && base_counted[j];
            base[j] = sum;
        }
    }
    for (int64_t t = 0; t < n_thr; t++) {
        int64_t e = row_bounds[t], end = row_bounds[t + 1];
        for (int64_t k = 0; k < n_cls; k++) {
            double npig = (double)(n_regular[k] > 0 ? n_regular[k] : 1);
            int64_t tp = 0, correction = 0;
            for (; e < end && entry_det[e] < class_bounds[k + 1]; e++) {
                int64_t j = entry_det[e];
                if (!within[j]) continue;
                correction += (entry_status[e] != BENCH_IGNORED) - (int64_t)base_counted[j];
                if (entry_status[e] != BENCH_TP) continue;
                tp++;
                rc[tp - 1] = (double)tp / npig;
                pr[tp - 1] = (double)tp / ((double)(base[j] + correction) + DBL_EPSILON);
                at[tp - 1] = j;
            }
            recall[t * n_cls + column[k]] = first[k] < 0 ? 0.0 : (double)tp / npig;
            for (int64_t i = tp - 1; i > 0; i--)
                if (pr[i] > pr[i - 1]) pr[i - 1] = pr[i];
            int64_t p = 0;
            for (int64_t r = 0; r < n_rec; r++) {
                int64_t out = (t * n_rec + r) * n_cls + column[k];
                if (recall_thr[r] <= 0.0) { /* position 0 of the class's list */
                    precision[out] = tp ? pr[0] : 0.0;
                    if (scores) scores[out] = first[k] < 0 ? 0.0 : score[first[k]];
                    continue;
                }
                while (p < tp && rc[p] < recall_thr[r]) p++;
                precision[out] = p < tp ? pr[p] : 0.0;
                if (scores) scores[out] = p < tp ? score[at[p]] : 0.0;
            }
        }
    }
    free(base), free(first), free(pr), free(rc), free(at);
    return 0;
}
