/* The overlaps the kernels share, each the same expression as its NumPy form. */
#ifndef BENCH_OVERLAP_H
#define BENCH_OVERLAP_H

#include <math.h>

/* min and max as NumPy's np.minimum / np.maximum give them for numbers (the second on a tie, so the sign of a
 * zero too). Not fmin/fmax: their NaN rules keep GCC from inlining them, and a call per coordinate made the
 * overlaps 3x slower. The inputs are finite (the readers reject NaN). */
static inline double smaller(double a, double b) { return a < b ? a : b; }
static inline double larger(double a, double b) { return a > b ? a : b; }

/* maskApi.c bbIou: the same operations in the same order. */
static inline double iou(const double *d, const double *g, int crowd) {
    double w = smaller(d[2] + d[0], g[2] + g[0]) - larger(d[0], g[0]);
    double h = smaller(d[3] + d[1], g[3] + g[1]) - larger(d[1], g[1]);
    if (!(w > 0) || !(h > 0)) return 0.0;
    double inter = w * h, det_area = d[2] * d[3];
    double uni = crowd ? det_area : det_area + g[2] * g[3] - inter;
    return inter / uni;
}

/* bench.metrics.confusion.box_iou: plain IoU of x1, y1, x2, y2 boxes, the same expression. */
static inline double plain_iou(const double *d, const double *g) {
    double inter = larger(smaller(d[2], g[2]) - larger(d[0], g[0]), 0.0) *
                   larger(smaller(d[3], g[3]) - larger(d[1], g[1]), 0.0);
    double uni = (d[2] - d[0]) * (d[3] - d[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter;
    return uni > 0 ? inter / uni : 0.0;
}

/* bench.metrics.nwd.nwd: the same expression. */
static inline double nwd(const double *d, const double *g, double constant) {
    double cx = (d[0] + d[2] / 2) - (g[0] + g[2] / 2);
    double cy = (d[1] + d[3] / 2) - (g[1] + g[3] / 2);
    double dw = d[2] - g[2], dh = d[3] - g[3];
    double w2 = cx * cx + cy * cy + (dw * dw + dh * dh) / 4.0;
    return exp(-sqrt(w2) / constant);
}

#endif
