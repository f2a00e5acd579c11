/* The resampled per-class AP of one area range at several thresholds (bench.metrics.bootstrap says what
 * is computed and why; bench.metrics.resample.ResampledArea is the NumPy form).
 *
 * For resample b an image drawn w times counts w times. Per threshold and class the detections stay in
 * score order; at each true positive the weighted TP count and the weighted counted (TP + FP) count give
 * the precision tp / (tp + fp + eps); its right-to-left maximum over the true positives is the envelope,
 * and a true positive moving the TP count from a to c serves the recall thresholds r > 0 whose fewest
 * reaching count lies in (a, c] (pycocotools' searchsorted(tp / npig, r, "left")); recall 0 takes the
 * first envelope value. The counted baseline (unmatched detections, per the range) is summed once per
 * class; each threshold corrects it at its matched detections only.
 *
 * Resamples are the innermost dimension of every array here (weights come as (images, resamples)), so
 * each step is one pass over a contiguous vector of resamples that the compiler vectorises.
 *
 * Inputs: detections in accumulate's order with their image position and class starts; counted: an
 * unmatched detection of rank below maxDets counts as a false positive; the matched detections of row t
 * are entries row_bounds[t]..row_bounds[t + 1], sorted by detection, with their status (0 FP, 1 TP,
 * 2 ignored), ranks past maxDets already left out; the range's regular ground truth (image, class).
 * Output ap (rows, resamples, classes), NaN where a resample holds no regular box of the class. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* Fewest TPs c with c / npig >= r in float64 (bench.metrics.accumulate.needed_true_positives). */
static int64_t needed(double r, double npig) {
    double c = ceil(r * npig);
    if (c > 0 && (c - 1) / npig >= r) c -= 1;
    if (c / npig < r) c += 1;
    return (int64_t)c;
}

typedef struct {
    int32_t *query;   /* (N,) a true positive's row in base, or -1 */
    int64_t *det_class;
    int32_t *base;    /* (queries, B) counted weight of the class up to the query */
    int32_t *npig;    /* (K, B) weighted regular boxes */
    int64_t *offset;  /* (K * B + 1,) start of each (class, resample) block of reach */
    uint8_t *reach;   /* reach[offset + c]: recall thresholds r > 0 reached by c true positives (at most
                       * 255: 8 bits keep a class's blocks in the first-level cache, its reads being the
                       * kernel's bottleneck) */
    int32_t *true_w, *correction, *served;
    double *pr, *envelope, *total;
} Scratch;

static void release(Scratch *s) {
    free(s->query), free(s->det_class), free(s->base), free(s->npig), free(s->offset), free(s->reach);
    free(s->true_w), free(s->correction), free(s->served), free(s->pr), free(s->envelope), free(s->total);
}

/* One class's entries of one row, from e; returns where the next class starts. */
static int64_t class_ap(const Scratch *s, int64_t B, int64_t n_cls, int64_t n_rec, int64_t e, int64_t end,
                        const int64_t *det_image, const uint8_t *counted, const int32_t *entry_det,
                        const int8_t *entry_status, const int32_t *weights, double *out) {
    int64_t k = s->det_class[entry_det[e]], n_tp = 0;
    const int64_t *block = s->offset + k * B;
    memset(s->true_w, 0, B * sizeof(int32_t));
    memset(s->correction, 0, B * sizeof(int32_t));
    for (; e < end && s->det_class[entry_det[e]] == k; e++) {
        int64_t j = entry_det[e];
        const int32_t *w = weights + det_image[j] * B;
        int32_t change = (entry_status[e] != BENCH_IGNORED) - (int32_t)counted[j];
        if (change)
            for (int64_t b = 0; b < B; b++) s->correction[b] += change * w[b];
        if (entry_status[e] != BENCH_TP) continue;
        /* two loops: the arithmetic one vectorises (the arrays are distinct: restrict), the table reads
         * (a gather) stay scalar */
        const int32_t *restrict at = s->base + (int64_t)s->query[j] * B, *restrict shift = s->correction;
        const int32_t *restrict add = w;
        int32_t *restrict true_w = s->true_w, *restrict served = s->served + n_tp * B;
        double *restrict p = s->pr + n_tp * B;
        for (int64_t b = 0; b < B; b++) {
            int32_t c = true_w[b] += add[b];
            p[b] = (double)c / ((double)(at[b] + shift[b]) + DBL_EPSILON);
        }
        for (int64_t b = 0; b < B; b++) {
            const uint8_t *reach = s->reach + block[b] + true_w[b];
            served[b] = (int32_t)reach[0] - (int32_t)reach[-add[b]];
        }
        n_tp++;
    }
    if (!n_tp) return e;
    for (int64_t b = 0; b < B; b++) s->envelope[b] = s->total[b] = 0.0;
    double *restrict envelope = s->envelope, *restrict total = s->total;
    for (int64_t i = n_tp - 1; i >= 0; i--) {
        const double *restrict p = s->pr + i * B;
        const int32_t *restrict served = s->served + i * B;
        for (int64_t b = 0; b < B; b++) {
            envelope[b] = p[b] > envelope[b] ? p[b] : envelope[b];
            total[b] += envelope[b] * (double)served[b];
        }
    }
    for (int64_t b = 0; b < B; b++)
        if (s->npig[k * B + b] > 0) out[b * n_cls + k] = (s->total[b] + s->envelope[b]) / (double)n_rec;
    return e;
}

int32_t bench_resample_area(int64_t n_det, int64_t n_cls, const int64_t *class_bounds,
                            const int64_t *det_image, const uint8_t *counted, int64_t n_rows,
                            const int64_t *row_bounds, const int32_t *entry_det, const int8_t *entry_status,
                            int64_t n_gt, const int64_t *gt_image, const int64_t *gt_class, int64_t n_rec,
                            const double *recall_thr, int64_t n_resamples, const int32_t *weights,
                            double *ap) {
    const int64_t B = n_resamples;
    Scratch s = {0};
    s.query = malloc((n_det + 1) * sizeof(int32_t));
    s.det_class = malloc((n_det + 1) * sizeof(int64_t));
    if (!s.query || !s.det_class) goto fail;
    for (int64_t k = 0; k < n_cls; k++)
        for (int64_t j = class_bounds[k]; j < class_bounds[k + 1]; j++) s.det_class[j] = k, s.query[j] = -1;
    int64_t n_query = 0, widest = 1; /* widest: most true positives of one class in one row */
    for (int64_t t = 0; t < n_rows; t++) {
        int64_t run = 0;
        for (int64_t e = row_bounds[t]; e < row_bounds[t + 1]; e++) {
            if (e == row_bounds[t] || s.det_class[entry_det[e]] != s.det_class[entry_det[e - 1]]) run = 0;
            if (entry_status[e] != BENCH_TP) continue;
            if (s.query[entry_det[e]] < 0) s.query[entry_det[e]] = (int32_t)n_query++;
            if (++run > widest) widest = run;
        }
    }
    s.base = malloc((n_query * B + 1) * sizeof(int32_t));
    s.npig = calloc(n_cls * B + 1, sizeof(int32_t));
    s.offset = malloc((n_cls * B + 1) * sizeof(int64_t));
    s.true_w = malloc(B * sizeof(int32_t)), s.correction = malloc(B * sizeof(int32_t));
    s.served = malloc(widest * B * sizeof(int32_t));
    s.pr = malloc(widest * B * sizeof(double));
    s.envelope = malloc(B * sizeof(double)), s.total = malloc(B * sizeof(double));
    if (!s.base || !s.npig || !s.offset || !s.true_w || !s.correction || !s.served || !s.pr || !s.envelope ||
        !s.total)
        goto fail;

    for (int64_t k = 0; k < n_cls; k++) { /* the counted baseline at every query, all resamples at once */
        int32_t *sum = s.true_w;
        memset(sum, 0, B * sizeof(int32_t));
        for (int64_t j = class_bounds[k]; j < class_bounds[k + 1]; j++) {
            const int32_t *w = weights + det_image[j] * B;
            if (counted[j])
                for (int64_t b = 0; b < B; b++) sum[b] += w[b];
            if (s.query[j] >= 0) memcpy(s.base + (int64_t)s.query[j] * B, sum, B * sizeof(int32_t));
        }
    }
    for (int64_t g = 0; g < n_gt; g++) {
        const int32_t *w = weights + gt_image[g] * B;
        int32_t *n = s.npig + gt_class[g] * B;
        for (int64_t b = 0; b < B; b++) n[b] += w[b];
    }
    s.offset[0] = 0;
    for (int64_t kb = 0; kb < n_cls * B; kb++) s.offset[kb + 1] = s.offset[kb] + s.npig[kb] + 1;
    s.reach = calloc(s.offset[n_cls * B] + 1, sizeof(uint8_t));
    if (!s.reach) goto fail;
    for (int64_t kb = 0; kb < n_cls * B; kb++) {
        if (s.npig[kb] == 0) continue;
        uint8_t *block = s.reach + s.offset[kb];
        for (int64_t r = 1; r < n_rec; r++) block[needed(recall_thr[r], (double)s.npig[kb])]++;
        for (int64_t c = 1; c <= s.npig[kb]; c++) block[c] += block[c - 1];
    }

    for (int64_t t = 0; t < n_rows; t++) {
        double *out = ap + t * B * n_cls;
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < n_cls; k++) out[b * n_cls + k] = s.npig[k * B + b] > 0 ? 0.0 : NAN;
        for (int64_t e = row_bounds[t]; e < row_bounds[t + 1];)
            e = class_ap(&s, B, n_cls, n_rec, e, row_bounds[t + 1], det_image, counted, entry_det,
                         entry_status, weights, out);
    }
    release(&s);
    return 0;
fail:
    release(&s);
    return -1;
}
