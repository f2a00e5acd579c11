/* The overlaps the kernels share, each the same expression as its NumPy form. */
#ifndef BENCH_OVERLAP_H
#define BENCH_OVERLAP_H

#include <math.h>

/* maskApi.c bbIou: the same operations in the same order. */
static inline double iou(const double *d, const double *g, int crowd) {
    double w = fmin(d[2] + d[0], g[2] + g[0]) - fmax(d[0], g[0]);
    double h = fmin(d[3] + d[1], g[3] + g[1]) - fmax(d[1], g[1]);
    if (!(w > 0) || !(h > 0)) return 0.0;
    double inter = w * h, det_area = d[2] * d[3];
    double uni = crowd ? det_area : det_area + g[2] * g[3] - inter;
    return inter / uni;
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
