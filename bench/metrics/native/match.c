/* pycocotools' evaluateImg matching for every area range and threshold.
 *
 * The loop form of bench.metrics.matching.greedy_match. Detections arrive in accumulate's order (class,
 * descending score, image, input order), in which each (image, class) group's detections already appear in
 * their rank order, so visiting them once front to back replays every group's greedy scan. A detection's
 * similarities to its group's ground truth are computed once and shared by all (area range, threshold)
 * rows; "taken" flags are kept per (ground truth, row), so one box's flags lie together, and each row
 * collects its matches in detection order.
 *
 * The scan is evaluateImg's: ground truth sorted regular first (input order inside each part), a taken box
 * skipped unless it is a crowd region, a candidate needs similarity >= the current best (so ties go to the
 * later box), and once a regular box is held the ignored ones are not looked at.
 *
 * A range's scan within a group depends on the group's boxes only through which of them the range ignores:
 * ranges that ignore the same boxes of a group match alike in it (taken flags included, since the group's
 * boxes belong to no other group). So each group scans only its first range of every ignore pattern and the
 * other ranges copy that range's matches (a box of a few pixels is regular in two or three of the union's
 * eight COCO + AI-TOD ranges: two scans instead of eight). A detection whose best similarity is below a
 * threshold matches nothing at it, so with ascending thresholds the rows stop at the first it cannot reach. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "overlap.h"

typedef struct {
    int64_t size, capacity;
    int32_t *det, *gt; /* sorted by detection; 32 bits halve the memory (the caller checks the counts) */
} Row;

typedef struct {
    int64_t n_rows;
    Row *rows; /* row = area * T + threshold */
} Matches;

static int push(Row *r, int64_t det, int64_t gt) {
    if (r->size == r->capacity) {
        int64_t capacity = r->capacity ? 2 * r->capacity : 1 << 10;
        int32_t *d = realloc(r->det, capacity * sizeof(int32_t));
        if (d) r->det = d;
        int32_t *g = realloc(r->gt, capacity * sizeof(int32_t));
        if (g) r->gt = g;
        if (!d || !g) return -1;
        r->capacity = capacity;
    }
    r->det[r->size] = (int32_t)det;
    r->gt[r->size++] = (int32_t)gt;
    return 0;
}

static void release(Matches *m) {
    for (int64_t r = 0; m->rows && r < m->n_rows; r++) free(m->rows[r].det), free(m->rows[r].gt);
    free(m->rows);
    free(m);
}

int64_t bench_match_greedy(int64_t n_det, const double *det_xywh, const uint8_t *det_active,
                           const int64_t *det_gt_start, const int64_t *det_gt_count, const int64_t *gt_order,
                           int64_t n_gt, const double *gt_xywh, const uint8_t *gt_crowd,
                           const uint8_t *gt_ignored, int64_t n_area, int64_t n_thr, const double *limits,
                           int32_t similarity, double nwd_constant, void **result) {
    const int64_t n_rows = n_area * n_thr;
    Matches *m = calloc(1, sizeof(Matches));
    uint8_t *taken = calloc(n_gt * n_rows + 1, 1); /* (ground truth, row) */
    /* first_alike[start * n_area + a] - 1: the first range ignoring the same boxes of the group whose boxes
     * start at gt_order[start] as range a (0: not yet worked out); hit: this detection's box per row */
    int32_t *first_alike = calloc(n_gt * n_area + 1, sizeof(int32_t));
    int64_t *hit_of = malloc((n_rows + 1) * sizeof(int64_t));
    int64_t widest = 1;
    for (int64_t j = 0; j < n_det; j++)
        if (det_gt_count[j] > widest) widest = det_gt_count[j];
    double *sim = malloc(widest * sizeof(double));
    if (!m || !(m->rows = calloc(n_rows + 1, sizeof(Row))) || !taken || !sim || !first_alike || !hit_of)
        goto fail;
    m->n_rows = n_rows;
    double lowest = INFINITY;
    int ascending = 1;
    for (int64_t t = 0; t < n_thr; t++) {
        lowest = smaller(lowest, limits[t]);
        if (t > 0 && !(limits[t - 1] <= limits[t])) ascending = 0;
    }
    int64_t size = 0;
    for (int64_t j = 0; j < n_det; j++) {
        int64_t n = det_gt_count[j];
        if (!det_active[j] || n == 0) continue;
        const int64_t *group = gt_order + det_gt_start[j];
        const double *d = det_xywh + 4 * j;
        double top = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            const double *g = gt_xywh + 4 * group[i];
            sim[i] = similarity == 0 ? iou(d, g, gt_crowd[group[i]])
                     : similarity == 1 ? nwd(d, g, nwd_constant) : plain_iou(d, g);
            top = larger(top, sim[i]);
        }
        if (!(top >= lowest)) continue; /* reaches no box at any threshold */
        int64_t reach = n_thr; /* thresholds some box can pass: with ascending ones, those up to `top` */
        if (ascending) {
            reach = 0;
            while (reach < n_thr && limits[reach] <= top) reach++;
        }
        int32_t *alike = first_alike + det_gt_start[j] * n_area;
        if (!alike[0])
            for (int64_t a = 0; a < n_area; a++) {
                int64_t b = 0;
                for (; b < a; b++) {
                    int64_t i = 0;
                    while (i < n && gt_ignored[a * n_gt + group[i]] == gt_ignored[b * n_gt + group[i]]) i++;
                    if (i == n) break;
                }
                alike[a] = (int32_t)b + 1;
            }
        for (int64_t a = 0; a < n_area; a++) {
            const uint8_t *ignored = gt_ignored + a * n_gt;
            int64_t same = alike[a] - 1;
            for (int64_t t = 0; t < reach; t++) { /* (past `reach` no range matches: nothing to copy) */
                int64_t row = a * n_thr + t, hit = -1;
                double bar = limits[t];
                if (same != a) { /* matched as range `same` was, a moment ago */
                    hit = hit_of[same * n_thr + t];
                    if (hit >= 0) {
                        if (push(m->rows + row, j, hit)) goto fail;
                        size++;
                    }
                    continue;
                }
                hit_of[row] = -1;
                if (top < bar) continue;
                for (int pass = 0; pass < 2 && hit < 0; pass++) { /* regular boxes, then ignored ones */
                    for (int64_t i = 0; i < n; i++) {
                        int64_t g = group[i];
                        if (ignored[g] != pass || (taken[g * n_rows + row] && !gt_crowd[g]) || sim[i] < bar)
                            continue;
                        bar = sim[i];
                        hit = g;
                    }
                }
                if (hit < 0) continue;
                hit_of[row] = hit;
                taken[hit * n_rows + row] = 1;
                if (push(m->rows + row, j, hit)) goto fail;
                size++;
            }
        }
    }
    free(taken), free(sim), free(first_alike), free(hit_of);
    *result = m;
    return size;
fail:
    if (m) release(m);
    free(taken), free(sim), free(first_alike), free(hit_of);
    *result = NULL;
    return -1;
}

/* Copies the matches out row by row (row = area * T + threshold; row r's are [bounds[r], bounds[r + 1]), by
 * detection) with each one's status before ignore regions, as CocoMatching.status has it: a true positive
 * when the box is credited (annotation id != 0: pycocotools stores a match as the id, so 0 never counts) and
 * not ignored in the area range; ignored when the box is, or when an uncredited match's detection lies
 * outside the range (det_outside (A, N)); else a false positive. Frees the buffers. */
int32_t bench_match_take(void *result, int64_t n_thr, const uint8_t *gt_credited, const uint8_t *gt_ignored,
                         int64_t n_gt, const uint8_t *det_outside, int64_t n_det, int64_t *bounds,
                         int32_t *det, int32_t *gt, int8_t *status) {
    Matches *m = result;
    int64_t at = 0;
    for (int64_t r = 0; r < m->n_rows; r++) {
        const Row *row = m->rows + r;
        const uint8_t *ignored = gt_ignored + (r / n_thr) * n_gt, *outside = det_outside + (r / n_thr) * n_det;
        bounds[r] = at;
        memcpy(det + at, row->det, row->size * sizeof(int32_t));
        memcpy(gt + at, row->gt, row->size * sizeof(int32_t));
        for (int64_t s = 0; s < row->size; s++, at++) {
            int credited = gt_credited[gt[at]], on_ignored = ignored[gt[at]];
            status[at] = on_ignored || (!credited && outside[det[at]]) ? BENCH_IGNORED
                         : credited ? BENCH_TP : BENCH_FP;
        }
    }
    bounds[m->n_rows] = at;
    release(m);
    return 0;
}
