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
    for (int64_t g = 0; g < n_gt; g++) used[g] = 0;
    for (int pass = 0; pass < 2; pass++) { /* 0: match, 1: what the final used flags give */
        for (int64_t v = 0; v < n_det; v++) {
            int64_t j = visit[v], n = det_gt_count[j];
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
            /* best of the same class, the other classes, all; argmax semantics: the first of the maxima (kept
             * in locals: stores through the output pointers could alias the inputs and cost a write each) */
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
