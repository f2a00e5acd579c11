/* tidecv's per-image matching at IoU 0.5 (bench.metrics.tide._match_images is the NumPy form).
 *
 * Detections are visited in array order, which the caller makes image by image, in score rank inside an
 * image; each
 * takes the unused same-class box of highest IoU (the first on ties) if that IoU >= 0.5. For every
 * detection it also reports, over the boxes of its image, the highest IoU (and its first box) among the
 * same class, the other classes and all boxes (0 and the image's first box when none overlaps), and, after
 * the matching, the highest IoU with a same-class box that ended up used. */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"
#include "overlap.h"

static void keep_best(double *value, int64_t *box, double candidate, int64_t g) {
    if (candidate > *value) *value = candidate, *box = g;
}

int32_t bench_tide_match(int64_t n_det, const double *det_xywh, const int64_t *det_label,
                         const int64_t *det_gt_start, const int64_t *det_gt_count,
                         const int64_t *gt_order, int64_t n_gt, const double *gt_xywh, const int64_t *gt_label,
                         double positive, int64_t *matched, uint8_t *used, double *best_iou, int64_t *best_gt,
                         double *used_cls) {
    for (int64_t g = 0; g < n_gt; g++) used[g] = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: match, 1: what the final used flags give */
        for (int64_t j = 0; j < n_det; j++) {
            int64_t n = det_gt_count[j];
            const int64_t *group = gt_order + det_gt_start[j];
            if (pass == 1) { /* only used boxes of the class: their overlaps alone */
                double top = 0.0;
                for (int64_t i = 0; i < n; i++) {
                    if (gt_label[group[i]] != det_label[j] || !used[group[i]]) continue;
                    double o = iou(det_xywh + 4 * j, gt_xywh + 4 * group[i], 0);
                    if (o > top) top = o;
                }
                used_cls[j] = top;
                continue;
            }
            /* best of the same class, the other classes, all; argmax semantics: the first of the maxima */
            double value[3] = {0.0, 0.0, 0.0};
            int64_t box[3] = {n ? group[0] : -1, n ? group[0] : -1, n ? group[0] : -1};
            int64_t hit = -1;
            double top = 0.0;
            const double *d = det_xywh + 4 * j;
            const int64_t label = det_label[j];
            for (int64_t i = 0; i < n; i++) {
                const int64_t g = group[i];
                const double o = iou(d, gt_xywh + 4 * g, 0);
                const int same = gt_label[g] == label;
                keep_best(value + !same, box + !same, o, g);
                keep_best(value + 2, box + 2, o, g);
                if (same && !used[g] && o > top) top = o, hit = g;
            }
            for (int c = 0; c < 3; c++) best_iou[c * n_det + j] = value[c], best_gt[c * n_det + j] = box[c];
            matched[j] = hit >= 0 && top >= positive ? hit : -1;
            if (matched[j] >= 0) used[hit] = 1;
        }
    }
    return 0;
}

/* tidecv's per-class recall samples of one fix (bench.metrics.tide._Fixes.ap is the caller; its NumPy form
 * _ap_at_true_positives). Candidate points come sorted in tidecv's order (order: candidate of each sorted
 * position; class_bounds over the sorted positions; correct: the sorted point is a true positive); the fix
 * keeps the candidates with chosen set. Per class, precision at the i-th kept true positive is i / its
 * 1-based place among the kept points, its right-to-left maximum the envelope; y[k, x] is the envelope at
 * the fewest true positives reaching recall x / 100 of the class's positives (recall 0: the first, if the
 * class keeps any point), 0 past the last. n_points: the kept points per class. The sums over x and classes
 * stay with the caller (NumPy's pairwise order). */
int32_t bench_tide_fix_ap(int64_t n_cls, const int64_t *class_bounds, const int64_t *order,
                          const uint8_t *correct, const uint8_t *chosen, const int64_t *positives,
                          double *y, int64_t *n_points) {
    int64_t widest = 1;
    for (int64_t k = 0; k < n_cls; k++)
        if (class_bounds[k + 1] - class_bounds[k] > widest) widest = class_bounds[k + 1] - class_bounds[k];
    double *precision = malloc(widest * sizeof(double));
    if (!precision) return -1;
    for (int64_t k = 0; k < n_cls; k++) {
        int64_t kept = 0, n_tp = 0;
        for (int64_t p = class_bounds[k]; p < class_bounds[k + 1]; p++) {
            if (!chosen[order[p]]) continue;
            kept++;
            if (correct[p]) n_tp++, precision[n_tp - 1] = (double)n_tp / (double)kept;
        }
        n_points[k] = kept;
        for (int64_t i = n_tp - 1; i > 0; i--)
            if (precision[i] > precision[i - 1]) precision[i - 1] = precision[i];
        double npos = (double)(positives[k] > 1 ? positives[k] : 1);
        for (int64_t i = 0; i <= 100; i++) {
            double x = (double)i / 100.0, needed = ceil(x * npos);
            if (needed > 0 && (needed - 1) / npos >= x) needed -= 1;
            if (needed / npos < x) needed += 1;
            int inside = n_tp > 0 && (needed > 0 ? needed <= (double)n_tp : kept > 0);
            y[k * 101 + i] = inside ? precision[(needed > 1 ? (int64_t)needed : 1) - 1] : 0.0;
        }
    }
    free(precision);
    return 0;
}
