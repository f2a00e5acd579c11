/* tidecv's per-image matching at IoU 0.5 (bench.metrics.tide._match_images is the NumPy form).
 *
 * Detections are visited image by image, in score rank inside an image (the caller's visit order); each
 * takes the unused same-class box of highest IoU (the first on ties) if that IoU >= 0.5. For every
 * detection it also reports, over the boxes of its image, the highest IoU (and its first box) among the
 * same class, the other classes and all boxes (0 and the image's first box when none overlaps), and, after
 * the matching, the highest IoU with a same-class box that ended up used. */
#include <stdlib.h>

#include "kernels.h"
#include "overlap.h"

static void keep_best(double *value, int64_t *box, double candidate, int64_t g) {
    if (candidate > *value) *value = candidate, *box = g;
}

int32_t bench_tide_match(int64_t n_det, const double *det_xywh, const int64_t *det_label,
                         const int64_t *visit, const int64_t *det_gt_start, const int64_t *det_gt_count,
                         const int64_t *gt_order, int64_t n_gt, const double *gt_xywh, const int64_t *gt_label,
                         double positive, int64_t *matched, uint8_t *used, double *best_iou, int64_t *best_gt,
                         double *used_cls) {
    int64_t widest = 1;
    for (int64_t j = 0; j < n_det; j++)
        if (det_gt_count[j] > widest) widest = det_gt_count[j];
    double *sim = malloc(widest * sizeof(double));
    if (!sim) return -1;
    for (int64_t g = 0; g < n_gt; g++) used[g] = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: match, 1: what the final used flags give */
        for (int64_t v = 0; v < n_det; v++) {
            int64_t j = visit[v], n = det_gt_count[j];
            const int64_t *group = gt_order + det_gt_start[j];
            for (int64_t i = 0; i < n; i++) sim[i] = iou(det_xywh + 4 * j, gt_xywh + 4 * group[i], 0);
            if (pass == 1) {
                double top = 0.0;
                for (int64_t i = 0; i < n; i++)
                    if (gt_label[group[i]] == det_label[j] && used[group[i]] && sim[i] > top) top = sim[i];
                used_cls[j] = top;
                continue;
            }
            /* best[0..2]: same class, other classes, all; argmax semantics: first of the maxima */
            for (int c = 0; c < 3; c++) {
                best_iou[c * n_det + j] = 0.0;
                best_gt[c * n_det + j] = n ? group[0] : -1;
            }
            int64_t hit = -1;
            double top = 0.0;
            for (int64_t i = 0; i < n; i++) {
                int same = gt_label[group[i]] == det_label[j];
                int c = same ? 0 : 1;
                keep_best(best_iou + c * n_det + j, best_gt + c * n_det + j, sim[i], group[i]);
                keep_best(best_iou + 2 * n_det + j, best_gt + 2 * n_det + j, sim[i], group[i]);
                if (same && !used[group[i]] && sim[i] > top) top = sim[i], hit = group[i];
            }
            matched[j] = hit >= 0 && top >= positive ? hit : -1;
            if (matched[j] >= 0) used[hit] = 1;
        }
    }
    free(sim);
    return 0;
}
