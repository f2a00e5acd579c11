/* The common COCO results file parsed straight into arrays: a JSON array of objects, each with an integer
 * image_id and category_id, a bbox of four numbers and a number score, in any key order; other keys' values
 * are skipped (pycocotools' bbox evaluation does not read them). Anything else (another layout, a missing or
 * repeated key, null, NaN, a string id, escapes in a key, a number too long to read here) returns
 * BENCH_NOT_THIS_LAYOUT, and bench.metrics.detections' checked reader names the entry.
 *
 * Numbers are exact: a decimal of at most 19 significant digits whose digits fit 2^53 and whose power of ten
 * is at most 22 is m * 10^e or m / 10^-e, one correctly rounded operation on two exact doubles (Clinger's
 * fast path); any other number goes through strtod, which rounds correctly too. So every value is the
 * double Python's json module (and pycocotools) reads from the same text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#ifndef _WIN32
#include <sys/mman.h>
#include <sys/stat.h>
#endif

typedef struct {
    const char *at, *end;
} Cursor;

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static void skip_space(Cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\n' || *c->at == '\r' || *c->at == '\t')) c->at++;
}

static int expect(Cursor *c, char ch) {
    skip_space(c);
    if (c->at == c->end || *c->at != ch) return 0;
    c->at++;
    return 1;
}

static int is_digit(const Cursor *c) { return c->at < c->end && *c->at >= '0' && *c->at <= '9'; }

/* A JSON number (RFC 8259 grammar); 0 when the text is not one. An integer token is a Python int to the
 * json module, so "-0" reads as +0.0. */
static int number(Cursor *c, double *out) {
    skip_space(c);
    const char *start = c->at;
    int negative = c->at < c->end && *c->at == '-';
    if (negative) c->at++;
    if (!is_digit(c)) return 0;
    uint64_t mantissa = 0;
    int digits = 0, exponent = 0, integral = 1; /* significant digits kept in the mantissa */
    if (*c->at == '0') {
        c->at++;
        if (is_digit(c)) return 0; /* no leading zeros */
    }
    for (; is_digit(c); c->at++) {
        if (digits < 19) mantissa = mantissa * 10 + (uint64_t)(*c->at - '0');
        else exponent++;
        digits += mantissa != 0;
    }
    if (c->at < c->end && *c->at == '.') {
        c->at++;
        integral = 0;
        if (!is_digit(c)) return 0;
        for (; is_digit(c); c->at++) {
            if (digits >= 19) continue; /* (the mantissa is not exact: strtod below) */
            mantissa = mantissa * 10 + (uint64_t)(*c->at - '0');
            exponent--;
            digits += mantissa != 0;
        }
    }
    if (c->at < c->end && (*c->at == 'e' || *c->at == 'E')) {
        c->at++;
        integral = 0;
        int sign = 1, power = 0;
        if (c->at < c->end && (*c->at == '+' || *c->at == '-')) sign = *c->at++ == '-' ? -1 : 1;
        if (!is_digit(c)) return 0;
        for (; is_digit(c); c->at++)
            if (power < 10000) power = power * 10 + (*c->at - '0');
        exponent += sign * power;
    }
    if (digits < 19 && mantissa <= (1ULL << 53) && exponent >= -22 && exponent <= 22) {
        double value = (double)mantissa;
        value = exponent < 0 ? value / POW10[-exponent] : value * POW10[exponent];
        *out = negative && !(integral && mantissa == 0) ? -value : value;
        return 1;
    }
    char text[128]; /* the rare long or far number: the C library's correctly rounded reading */
    size_t length = (size_t)(c->at - start);
    if (length >= sizeof text) return 0;
    memcpy(text, start, length);
    text[length] = 0;
    char *end;
    *out = strtod(text, &end);
    return end == text + length; /* (not all of it, under a locale whose decimal point is not '.') */
}

/* A JSON integer of at most 18 digits (ids: no fraction or exponent here; the checked reader takes those). */
static int integer(Cursor *c, int64_t *out) {
    skip_space(c);
    int negative = c->at < c->end && *c->at == '-';
    if (negative) c->at++;
    if (!is_digit(c)) return 0;
    int64_t value = 0;
    int digits = 0;
    for (; is_digit(c); c->at++, digits++) value = value * 10 + (*c->at - '0');
    if (digits > 18 || (digits > 1 && c->at[-digits] == '0')) return 0;
    if (c->at < c->end && (*c->at == '.' || *c->at == 'e' || *c->at == 'E')) return 0;
    *out = negative ? -value : value;
    return 1;
}

/* Skips a string (the opening quote already read), escapes included. */
static int skip_string(Cursor *c) {
    for (; c->at < c->end; c->at++) {
        if (*c->at == '\\') {
            c->at++;
            continue;
        }
        if (*c->at == '"') {
            c->at++;
            return 1;
        }
    }
    return 0;
}

/* Skips any JSON value but NaN / Infinity (which Python's json reads, and the checked reader then rejects
 * where they matter). */
static int skip_value(Cursor *c, int depth) {
    skip_space(c);
    if (c->at == c->end || depth > 64) return 0;
    char ch = *c->at;
    if (ch == '"') {
        c->at++;
        return skip_string(c);
    }
    if (ch == '[' || ch == '{') {
        char close = ch == '[' ? ']' : '}';
        c->at++;
        if (expect(c, close)) return 1;
        do {
            if (close == '}') {
                if (!expect(c, '"') || !skip_string(c) || !expect(c, ':')) return 0;
            }
            if (!skip_value(c, depth + 1)) return 0;
        } while (expect(c, ','));
        return expect(c, close);
    }
    const char *words[3] = {"true", "false", "null"};
    for (int w = 0; w < 3; w++) {
        size_t n = strlen(words[w]);
        if ((size_t)(c->end - c->at) >= n && !memcmp(c->at, words[w], n)) {
            c->at += n;
            return 1;
        }
    }
    double ignored;
    return number(c, &ignored);
}

/* One key of an entry: 0 image_id, 1 category_id, 2 bbox, 3 score, 4 another; -1 not a plain key. */
static int key(Cursor *c) {
    if (!expect(c, '"')) return -1;
    const char *start = c->at;
    while (c->at < c->end && *c->at != '"' && *c->at != '\\') c->at++;
    if (c->at == c->end || *c->at == '\\') return -1;
    size_t n = (size_t)(c->at++ - start);
    static const char *names[4] = {"image_id", "category_id", "bbox", "score"};
    for (int k = 0; k < 4; k++)
        if (strlen(names[k]) == n && !memcmp(start, names[k], n)) return k;
    return 4;
}

static int32_t parse(Cursor *c, int64_t capacity, int64_t *image_id, int64_t *category_id, double *bbox,
                     double *score, int64_t *n_out) {
    if (c->end - c->at >= 3 && !memcmp(c->at, "\xEF\xBB\xBF", 3)) return BENCH_NOT_THIS_LAYOUT; /* a BOM */
    int64_t n = 0;
    if (!expect(c, '[')) return BENCH_NOT_THIS_LAYOUT;
    if (!expect(c, ']')) {
        do {
            if (n == capacity || !expect(c, '{')) return BENCH_NOT_THIS_LAYOUT;
            int seen = 0;
            do {
                int k = key(c);
                if (k < 0 || !expect(c, ':') || (k < 4 && (seen >> k & 1))) return BENCH_NOT_THIS_LAYOUT;
                int ok = 1;
                if (k == 0) ok = integer(c, image_id + n);
                else if (k == 1) ok = integer(c, category_id + n);
                else if (k == 2) {
                    ok = expect(c, '[');
                    for (int i = 0; ok && i < 4; i++)
                        ok = number(c, bbox + 4 * n + i) && (i == 3 || expect(c, ','));
                    ok = ok && expect(c, ']');
                } else if (k == 3) ok = number(c, score + n);
                else ok = skip_value(c, 0);
                if (!ok) return BENCH_NOT_THIS_LAYOUT;
                if (k < 4) seen |= 1 << k;
            } while (expect(c, ','));
            if (!expect(c, '}') || seen != 15) return BENCH_NOT_THIS_LAYOUT;
            n++;
        } while (expect(c, ','));
        if (!expect(c, ']')) return BENCH_NOT_THIS_LAYOUT;
    }
    skip_space(c);
    if (c->at != c->end) return BENCH_NOT_THIS_LAYOUT;
    *n_out = n;
    return 0;
}

/* Reads the file at `path` (mapped where the system can map it) into at most `capacity` entries. Returns 0,
 * BENCH_NOT_THIS_LAYOUT, BENCH_UNREADABLE (the checked reader then reports the file), or -1 (memory). */
int32_t bench_read_results(const char *path, int64_t capacity, int64_t *image_id, int64_t *category_id,
                           double *bbox, double *score, int64_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return BENCH_UNREADABLE;
#ifndef _WIN32
    struct stat info;
    if (fstat(fileno(f), &info) != 0 || !S_ISREG(info.st_mode)) { /* a folder opens too */
        fclose(f);
        return BENCH_UNREADABLE;
    }
#endif
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return BENCH_UNREADABLE;
    }
    long size = ftell(f);
    if (size < 0) {
        fclose(f);
        return BENCH_UNREADABLE;
    }
    int32_t status;
#ifndef _WIN32
    if (size > 0) { /* mapped: the page cache's pages, no copy */
        void *mapped = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fileno(f), 0);
        if (mapped != MAP_FAILED) {
            madvise(mapped, (size_t)size, MADV_SEQUENTIAL);
            Cursor c = {mapped, (const char *)mapped + size};
            status = parse(&c, capacity, image_id, category_id, bbox, score, n_out);
            munmap(mapped, (size_t)size);
            fclose(f);
            return status;
        }
    }
#endif
    char *text = malloc((size_t)size + 1);
    if (!text) {
        fclose(f);
        return -1;
    }
    rewind(f);
    size_t got = fread(text, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        free(text);
        return BENCH_UNREADABLE;
    }
    Cursor c = {text, text + size};
    status = parse(&c, capacity, image_id, category_id, bbox, score, n_out);
    free(text);
    return status;
}
