/* The evaluator's compiled kernels, called through ctypes (bench/metrics/native/__init__.py).
 *
 * Each kernel is the loop form of a NumPy routine of bench.metrics that stays in the tree as its reference
 * (the tests compare the two on random problems). Floating-point expressions are written in the order
 * pycocotools and NumPy evaluate them and compiled without contraction (-ffp-contract=off), so the COCO
 * arrays stay bit-identical. No kernel keeps state between calls or takes the GIL: callers may run kernels
 * on several threads at once. */
#ifndef BENCH_KERNELS_H
#define BENCH_KERNELS_H

#include <stdint.h>

/* A match's status, as bench.metrics.accumulate's TP, FP and IGNORED. */
#define BENCH_FP 0
#define BENCH_TP 1
#define BENCH_IGNORED 2

/* Greedy matching, see match.c. similarity: 0 COCO IoU (x, y, w, h boxes, crowd rule), 1 NWD (x, y, w, h),
 * 2 plain IoU (x1, y1, x2, y2: the confusion matrix). Returns the number of matches, or -1 when memory ran
 * out. */
int64_t bench_match_greedy(int64_t n_det, const double *det_xywh, const uint8_t *det_active,
                           const int64_t *det_gt_start, const int64_t *det_gt_count, const int64_t *gt_order,
                           int64_t n_gt, const double *gt_xywh, const uint8_t *gt_crowd,
                           const uint8_t *gt_ignored, int64_t n_area, int64_t n_thr, const double *limits,
                           int32_t similarity, double nwd_constant, void **result);
int32_t bench_match_take(void *result, int64_t n_thr, const uint8_t *gt_credited, const uint8_t *gt_ignored,
                         int64_t n_gt, const uint8_t *det_outside, int64_t n_det, int64_t *bounds,
                         int32_t *det, int32_t *gt, int8_t *status);

/* Rank of each element in its group (group ids in [0, n_groups)) in array order, see order.c. */
int32_t bench_rank_in_order(int64_t n, const int64_t *group, int64_t n_groups, int64_t *rank);
/* A permutation stably reordered by one integer key (in [0, n_keys)) of its elements, see order.c. */
int32_t bench_order_by_key(int64_t n, const int64_t *key, int64_t n_keys, const int64_t *order, int64_t *out);
/* The common COCO results file read into arrays, see results.c. Statuses besides 0 and -1 (memory): */
#define BENCH_NOT_THIS_LAYOUT 1
#define BENCH_UNREADABLE 2
int32_t bench_read_results(const char *path, int64_t capacity, int64_t *image_id, int64_t *category_id,
                           double *bbox, double *score, int64_t *n_out);

/* Dense descending rank of scores (the highest 0, NaN last), see order.c. */
int32_t bench_descending_rank(int64_t n, const double *score, int64_t *rank);

/* pycocotools' accumulate of one (area range, maxDets) cell, see accumulate.c. */
int32_t bench_accumulate_cell(int64_t n_det, int64_t n_cls, int64_t n_thr, int64_t n_rec,
                              const int64_t *class_bounds, const double *score, const uint8_t *within,
                              const uint8_t *base_counted, const int64_t *row_bounds, const int32_t *entry_det,
                              const int8_t *entry_status, const int64_t *n_regular, const double *recall_thr,
                              const int64_t *column, double *precision, double *scores, double *recall);

/* Resampled per-class AP of one area range at several thresholds, see resample.c. */
int32_t bench_resample_area(int64_t n_det, int64_t n_cls, const int64_t *class_bounds,
                            const int64_t *det_image, const uint8_t *counted, int64_t n_rows,
                            const int64_t *row_bounds, const int32_t *entry_det, const int8_t *entry_status,
                            int64_t n_gt, const int64_t *gt_image, const int64_t *gt_class, int64_t n_rec,
                            const double *recall_thr, int64_t n_resamples, const int32_t *weights,
                            double *ap);

/* tidecv's per-image matching at IoU `positive`, see tide.c. best_*: (3, N) same class, other, all. */
int32_t bench_tide_match(int64_t n_det, const double *det_xywh, const int64_t *det_label,
                         const int64_t *det_gt_start, const int64_t *det_gt_count,
                         const int64_t *gt_order, int64_t n_gt, const double *gt_xywh, const int64_t *gt_label,
                         double positive, int64_t *matched, uint8_t *used, double *best_iou, int64_t *best_gt,
                         double *used_cls);

/* tidecv's recall samples (K, 101) of one fix of the TIDE errors, see tide.c. */
int32_t bench_tide_fix_ap(int64_t n_cls, const int64_t *class_bounds, const int64_t *order,
                          const uint8_t *correct, const uint8_t *chosen, const int64_t *positives,
                          double *y, int64_t *n_points);

/* The VOC devkit's highest-overlap box per detection, see voc.c. */
void bench_devkit_best_overlap(int64_t n_det, const double *det_boxes, const int64_t *det_gt_start,
                               const int64_t *det_gt_count, const int64_t *gt_order, const double *gt_boxes,
                               double *best_iou, int64_t *best_gt);

#endif
