/*
 * Closed-loop DFST rollouts in lockstep: the native twin of the numba
 * kernel in kernel.py, with the same arithmetic and lane protocol.
 *
 * W is (K, d, R) with R a multiple of the vector width.  Row k of W[x] is
 * column k of [A[x]; B[x]; C[x]] followed by zero padding.  Each score is
 * accumulated over the k in 0 .. d-1 with h[k] not zero, in increasing order,
 * by fused multiply-adds, one rounding each.  IEEE 754 defines fma as correctly rounded, so the result does not
 * depend on the CPU: AVX-512 and FMA3 cores use the instruction, other cores
 * the C library's fma.  The file is compiled with -ffp-contract=off, so no
 * other operation is fused, and the numba kernel computes the same bits.
 *
 * Lanes are stepped GROUP at a time.  When every h[k] of the group is nonzero,
 * their accumulators are interleaved, so the multiply-add chains of
 * different lanes overlap in the pipeline.  A lone
 * lane at the end of a round runs alone.  Each score of a lane is the same
 * sequence of roundings whatever its group, so grouping never changes results.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define RUNNING 0
#define HALTED 1
#define NON_FINITE 2
#define NEEDS_GROWTH 3
#define STAY 4
#define MAX_VECTORS 16
/* 64-bit words of a lane's nonzero mask: d < MAX_VECTORS * 16 = 256, since R = d + K + 5 */
#define MAX_WORDS 4

static const int64_t ROW_DELTA[5] = {-1, 1, 0, 0, 0};
static const int64_t COL_DELTA[5] = {0, 0, -1, 1, 0};

typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));

/* a * b + c with one rounding per element */
static inline f32x16 fma_f32x16(f32x16 a, f32x16 b, f32x16 c) {
#if defined(__AVX512F__)
    return (f32x16)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#else
    for (int i = 0; i < 16; i++) c[i] = __builtin_fmaf(a[i], b[i], c[i]);
    return c;
#endif
}

static inline f64x8 fma_f64x8(f64x8 a, f64x8 b, f64x8 c) {
#if defined(__AVX512F__)
    return (f64x8)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#else
    for (int i = 0; i < 8; i++) c[i] = __builtin_fma(a[i], b[i], c[i]);
    return c;
#endif
}

/* Bit i set where values[i] is not zero (NaN included), for count <= 64 values. */
static inline uint64_t nonzero_f32(const float *values, int64_t count) {
    uint64_t bits = 0;
#if defined(__AVX512F__)
    for (int64_t i = 0; i < count; i += 16) {
        __mmask16 valid = count - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - i)) - 1);
        __m512 chunk = _mm512_maskz_loadu_ps(valid, values + i);
        bits |= (uint64_t)_mm512_mask_cmp_ps_mask(valid, chunk, _mm512_setzero_ps(), _CMP_NEQ_UQ) << i;
    }
#else
    for (int64_t i = 0; i < count; i++) bits |= (uint64_t)(values[i] != 0) << i;
#endif
    return bits;
}

static inline uint64_t nonzero_f64(const double *values, int64_t count) {
    uint64_t bits = 0;
#if defined(__AVX512F__)
    for (int64_t i = 0; i < count; i += 8) {
        __mmask8 valid = count - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (count - i)) - 1);
        __m512d chunk = _mm512_maskz_loadu_pd(valid, values + i);
        bits |= (uint64_t)_mm512_mask_cmp_pd_mask(valid, chunk, _mm512_setzero_pd(), _CMP_NEQ_UQ) << i;
    }
#else
    for (int64_t i = 0; i < count; i++) bits |= (uint64_t)(values[i] != 0) << i;
#endif
    return bits;
}

#define CASE(NAME, NV)                                                                                    \
    case NV:                                                                                              \
        return NAME##_body(W, num_symbols, d, r, lanes, hidden, cells, offsets, widths, heights, rows,    \
                           cols, steps, targets, status, active, NV);

#define DEFINE_LOCKSTEP(NAME, REAL, WIDTH, GROUP, VEC, FMA, NONZERO)                                     \
typedef VEC NAME##_vec;                                                                                   \
                                                                                                          \
static int64_t NAME##_argmax(const REAL *scores, int64_t count) {                                        \
    REAL best = scores[0];                                                                                \
    if (best != best) return 0;                                                                           \
    int64_t index = 0;                                                                                    \
    for (int64_t i = 1; i < count; i++) {                                                                 \
        REAL value = scores[i];                                                                           \
        if (value > best) { best = value; index = i; }                                                    \
        else if (value != value) return i;                                                                \
    }                                                                                                     \
    return index;                                                                                         \
}                                                                                                         \
                                                                                                          \
/* Step the active lanes start .. start+group-1 (the last active lane fills spare slots); return 1  \
   if a lane left its window. */                                                                          \
static inline __attribute__((always_inline)) int NAME##_group(                                          \
        const REAL *W, int64_t num_symbols, int64_t d, int64_t r, REAL *hidden, int8_t *cells,           \
        const int64_t *offsets, const int64_t *widths, const int64_t *heights, int64_t *rows,            \
        int64_t *cols, int64_t *steps, const int64_t *targets, int64_t *status, int64_t *active,          \
        int64_t start, int64_t count, int64_t *kept, int64_t *total, const int nv, const int group) {     \
    NAME##_vec acc[GROUP][MAX_VECTORS];                                                                   \
    int64_t lane_of[GROUP], position[GROUP];                                                              \
    const REAL *matrix[GROUP];                                                                            \
    int growth = 0;                                                                                       \
    for (int g = 0; g < group; g++) {                                                                     \
        int64_t slot = start + g < count ? start + g : count - 1;                                         \
        int64_t lane = active[slot];                                                                      \
        lane_of[g] = lane;                                                                                \
        position[g] = offsets[lane] + rows[lane] * widths[lane] + cols[lane];                             \
        matrix[g] = W + (int64_t)cells[position[g]] * d * r;                                              \
    }                                                                                                     \
    /* Bit k of nonzero[g] is set when h[k] of lane g is not zero.  A product W[x][k] * h[k] with h[k]    \
       zero only adds a signed zero to the score, so skipping it changes at most the sign of a zero       \
       score and never a comparison.  One-hot hidden states (oracle DFSTs, extracted automata) then need  \
       one row instead of d.  Dense states take the interleaved loop over every k. */                     \
    uint64_t nonzero[GROUP][MAX_WORDS];                                                                   \
    int dense = 1;                                                                                        \
    for (int g = 0; g < group; g++) {                                                                     \
        const REAL *h = hidden + lane_of[g] * d;                                                          \
        for (int64_t base = 0; base < d; base += 64) {                                                    \
            int64_t end = base + 64 < d ? base + 64 : d;                                                  \
            uint64_t bits = NONZERO(h + base, end - base);                                                \
            nonzero[g][base / 64] = bits;                                                                 \
            dense &= bits == (end - base == 64 ? ~(uint64_t)0 : ((uint64_t)1 << (end - base)) - 1);       \
        }                                                                                                 \
    }                                                                                                     \
    for (int g = 0; g < group; g++)                                                                       \
        for (int v = 0; v < nv; v++) acc[g][v] = (NAME##_vec){0};                                         \
    if (dense) {                                                                                          \
        for (int64_t k = 0; k < d; k++) {                                                                 \
            for (int g = 0; g < group; g++) {                                                             \
                const NAME##_vec *row = (const NAME##_vec *)(matrix[g] + k * r);                          \
                NAME##_vec hk = (NAME##_vec){0} + hidden[lane_of[g] * d + k];                             \
                for (int v = 0; v < nv; v++) acc[g][v] = FMA(row[v], hk, acc[g][v]);                      \
            }                                                                                             \
        }                                                                                                 \
    } else {                                                                                              \
        for (int g = 0; g < group; g++) {                                                                 \
            const REAL *h = hidden + lane_of[g] * d;                                                      \
            for (int64_t base = 0; base < d; base += 64) {                                                \
                for (uint64_t bits = nonzero[g][base / 64]; bits; bits &= bits - 1) {                     \
                    int64_t k = base + __builtin_ctzll(bits);                                             \
                    const NAME##_vec *row = (const NAME##_vec *)(matrix[g] + k * r);                      \
                    NAME##_vec hk = (NAME##_vec){0} + h[k];                                               \
                    for (int v = 0; v < nv; v++) acc[g][v] = FMA(row[v], hk, acc[g][v]);                  \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
    for (int g = 0; g < group && start + g < count; g++) {                                                \
        int64_t lane = lane_of[g];                                                                        \
        REAL *h = hidden + lane * d;                                                                      \
        union { NAME##_vec vectors[MAX_VECTORS]; REAL values[MAX_VECTORS * WIDTH]; } computed;            \
        for (int v = 0; v < nv; v++) computed.vectors[v] = acc[g][v];                                     \
        const REAL *scores = computed.values;                                                             \
        /* a non-finite h makes every score non-finite (inf * 0 is NaN), and a finite h has finite       \
           entries, so the full check runs only when the first score is suspect */                        \
        if (scores[0] - scores[0] != 0) {                                                                 \
            int finite = 1;                                                                               \
            for (int64_t k = 0; k < d; k++)                                                               \
                if (h[k] - h[k] != 0) finite = 0;                                                         \
            if (!finite) { status[lane] = NON_FINITE; continue; }                                         \
        }                                                                                                 \
        int64_t written = NAME##_argmax(scores + d, num_symbols);                                         \
        int64_t motion = NAME##_argmax(scores + d + num_symbols, 5);                                      \
        cells[position[g]] = (int8_t)written;                                                             \
        /* fixed-size copies compile to vector moves, where a d-sized memcpy is a library call */         \
        int64_t k = 0;                                                                                    \
        for (; k + WIDTH <= d; k += WIDTH) memcpy(h + k, scores + k, WIDTH * sizeof(REAL));               \
        for (; k < d; k++) h[k] = scores[k];                                                              \
        steps[lane] += 1;                                                                                 \
        *total += 1;                                                                                      \
        if (motion == STAY) { status[lane] = HALTED; continue; }                                          \
        int64_t i = rows[lane] + ROW_DELTA[motion];                                                       \
        int64_t j = cols[lane] + COL_DELTA[motion];                                                       \
        rows[lane] = i;                                                                                   \
        cols[lane] = j;                                                                                   \
        if (i < 0 || j < 0 || i >= heights[lane] || j >= widths[lane]) {                                  \
            status[lane] = NEEDS_GROWTH;                                                                  \
            growth = 1;                                                                                   \
            continue;                                                                                     \
        }                                                                                                 \
        if (steps[lane] < targets[lane]) active[(*kept)++] = lane;                                        \
    }                                                                                                     \
    return growth;                                                                                        \
}                                                                                                         \
                                                                                                          \
static inline __attribute__((always_inline)) int64_t NAME##_body(                                      \
        const REAL *W, int64_t num_symbols, int64_t d, int64_t r, int64_t lanes, REAL *hidden,           \
        int8_t *cells, const int64_t *offsets, const int64_t *widths, const int64_t *heights,            \
        int64_t *rows, int64_t *cols, int64_t *steps, const int64_t *targets, int64_t *status,            \
        int64_t *active, const int nv) {                                                                  \
    int64_t count = 0;                                                                                    \
    for (int64_t lane = 0; lane < lanes; lane++)                                                          \
        if (status[lane] == RUNNING && steps[lane] < targets[lane]) active[count++] = lane;               \
    int64_t total = 0;                                                                                    \
    while (count > 0) {                                                                                   \
        int64_t kept = 0;                                                                                 \
        for (int64_t start = 0; start < count; start += GROUP) {                                          \
            /* a lone lane runs in a group of one rather than computing twice */                          \
            int growth = count - start == 1                                                               \
                ? NAME##_group(W, num_symbols, d, r, hidden, cells, offsets, widths, heights, rows, cols, \
                               steps, targets, status, active, start, count, &kept, &total, nv, 1)        \
                : NAME##_group(W, num_symbols, d, r, hidden, cells, offsets, widths, heights, rows, cols, \
                               steps, targets, status, active, start, count, &kept, &total, nv, GROUP);   \
            /* the caller grows the window; the other lanes resume on the next call */                   \
            if (growth) return total;                                                                     \
        }                                                                                                 \
        count = kept;                                                                                     \
    }                                                                                                     \
    return total;                                                                                         \
}                                                                                                         \
                                                                                                          \
/* One copy of the body per vector count, so that the accumulators stay in registers. */                 \
int64_t NAME(const REAL *W, int64_t num_symbols, int64_t d, int64_t r, int64_t lanes, REAL *hidden,     \
             int8_t *cells, const int64_t *offsets, const int64_t *widths, const int64_t *heights,       \
             int64_t *rows, int64_t *cols, int64_t *steps, const int64_t *targets, int64_t *status,       \
             int64_t *active) {                                                                           \
    switch (r / WIDTH * (r % WIDTH == 0)) {                                                               \
        CASE(NAME, 1) CASE(NAME, 2) CASE(NAME, 3) CASE(NAME, 4) CASE(NAME, 5) CASE(NAME, 6)               \
        CASE(NAME, 7) CASE(NAME, 8) CASE(NAME, 9) CASE(NAME, 10) CASE(NAME, 11) CASE(NAME, 12)           \
        CASE(NAME, 13) CASE(NAME, 14) CASE(NAME, 15) CASE(NAME, 16)                                       \
        default: return -1;                                                                               \
    }                                                                                                     \
}

DEFINE_LOCKSTEP(lockstep_float32, float, 16, 2, f32x16, fma_f32x16, nonzero_f32)
DEFINE_LOCKSTEP(lockstep_float64, double, 8, 2, f64x8, fma_f64x8, nonzero_f64)
