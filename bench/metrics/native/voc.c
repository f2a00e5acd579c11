/* The VOC devkit's overlap step (bench.metrics.voc.match_devkit is the NumPy form): for every detection,
 * the ground-truth box of its group with the highest devkit IoU (+1-pixel areas, VOCevaldet.m's order of
 * operations), the first on ties; -inf where the group has no box. Whether the box was already used does
 * not matter to the devkit, so detections are independent here. */
#include <math.h>

#include "kernels.h"
#include "overlap.h"

static double devkit_iou(const double *d, const double *g) {
    double iw = larger(smaller(g[2], d[2]) - larger(g[0], d[0]) + 1.0, 0.0);
    double ih = larger(smaller(g[3], d[3]) - larger(g[1], d[1]) + 1.0, 0.0);
    double inters = iw * ih;
    double uni = (d[2] - d[0] + 1.0) * (d[3] - d[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inters;
    return inters / uni;
}

void bench_devkit_best_overlap(int64_t n_det, const double *det_boxes, const int64_t *det_gt_start,
                               const int64_t *det_gt_count, const int64_t *gt_order, const double *gt_boxes,
                               double *best_iou, int64_t *best_gt) {
    for (int64_t j = 0; j < n_det; j++) {
        const int64_t *group = gt_order + det_gt_start[j];
        best_iou[j] = -INFINITY;
        best_gt[j] = det_gt_count[j] ? group[0] : 0;
        for (int64_t i = 0; i < det_gt_count[j]; i++) {
            double o = devkit_iou(det_boxes + 4 * j, gt_boxes + 4 * group[i]);
            if (o > best_iou[j]) best_iou[j] = o, best_gt[j] = group[i];
        }
    }
}
