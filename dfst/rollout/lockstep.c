/*
 * Closed-loop DFST rollouts in lockstep: the native twin of the numba
 * kernel in kernel.py, with the same arithmetic and lane protocol.
 *
 * W is (K, d, R) with R = VECTORS * WIDTH.  Row k of W[x] is column k of
 * [A[x]; B[x]; C[x]] followed by zero padding.  Each score is accumulated over
 * the k in 0 .. d-1 with h[k] not zero, in increasing order, by fused
 * multiply-adds, one rounding each.  IEEE 754 defines fma as correctly
 * rounded, so the result does not depend on the CPU: AVX-512 cores use the
 * instruction, other cores the C library's fma.  The file is compiled with
 * -ffp-contract=off, so no other operation is fused, and the numba kernel
 * computes the same bits.
 *
 * native.py compiles one library per element type and vector count:
 * -DLOCKSTEP_FLOAT64=0 or 1 and -DLOCKSTEP_VECTORS=n.  The vector count is
 * then a constant, so the accumulators of a group of lanes stay in registers.
 *
 * Each round gives every active lane one step.  The round orders its lanes
 * by observed symbol and steps them in groups of up to GROUP lanes with the
 * same symbol, so one load of a row of W[x] serves the whole group.  This
 * matters because mult10's W[x] (41 KB) does not fit in the L1 cache, and one
 * load per multiply-add would leave the core waiting on loads.  Each score of
 * a lane is the same sequence of roundings whatever its group, so grouping
 * never changes results.
 *
 * On AVX-512 cores, lanes with dense hidden states first run in lane-major
 * blocks (run_blocks below) when the estimate in blocks_pay favours them.
 * They compute each score by the same roundings, so results are the same.
 */
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if !defined(LOCKSTEP_VECTORS) || !defined(LOCKSTEP_FLOAT64)
#error "build with -DLOCKSTEP_FLOAT64=0 or 1 and -DLOCKSTEP_VECTORS=n (64-byte vectors per row of W)"
#endif

#define RUNNING 0
#define HALTED 1
#define NON_FINITE 2
#define NEEDS_GROWTH 3
#define STAY 4
#define VECTORS LOCKSTEP_VECTORS
/* Lane-major blocks (below) need AVX-512 with its DQ extension. */
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define BLOCKS 1
#else
#define BLOCKS 0
#endif
/* Largest group of lanes stepped together.  A group keeps GROUP * chunk accumulators, chunk vectors per lane. */
#define GROUP 8
/* Accumulators a group keeps in the 32 vector registers, leaving room for the rows and h[k]. */
#define ACCUMULATORS 24
/* 64-bit words of a lane's nonzero mask, enough for d < R <= 16 vectors of at most 16 values. */
#define MAX_WORDS 4
/* Largest alphabet, because cells are int8 and never negative. */
#define MAX_SYMBOLS 128
/* Largest number of vectors in a row of W, as native.py allows. */
#define MAX_VECTORS_PER_ROW 16

#if LOCKSTEP_FLOAT64
typedef double real;
#define WIDTH 8
#define LOCKSTEP lockstep_float64
typedef double vec __attribute__((vector_size(64)));
#else
typedef float real;
#define WIDTH 16
#define LOCKSTEP lockstep_float32
typedef float vec __attribute__((vector_size(64)));
#endif
/* The same vector at the alignment of one element, because rows of W need not start on a 64-byte boundary. */
typedef real row_vec __attribute__((vector_size(64), aligned(sizeof(real))));

/* Whether this build has lane-major blocks, and the steps they took since the library was loaded. */
const int64_t lockstep_has_blocks = BLOCKS;
int64_t lockstep_block_steps = 0;

static const int64_t ROW_DELTA[5] = {-1, 1, 0, 0, 0};
static const int64_t COL_DELTA[5] = {0, 0, -1, 1, 0};

/* a * b + c with one rounding per element */
static inline vec fused(vec a, vec b, vec c) {
#if defined(__AVX512F__) && LOCKSTEP_FLOAT64
    return (vec)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif defined(__AVX512F__)
    return (vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#else
    for (int i = 0; i < WIDTH; i++) c[i] = LOCKSTEP_FLOAT64 ? __builtin_fma(a[i], b[i], c[i]) : __builtin_fmaf(a[i], b[i], c[i]);
    return c;
#endif
}

/* A vector with every element *x.  With AVX-512 this is one broadcast load.  The portable 0 + x would
   take an addition and a shuffle on the vector ports that the multiply-adds need. */
static inline vec splat(const real *x) {
#if defined(__AVX512F__) && LOCKSTEP_FLOAT64
    return (vec)_mm512_set1_pd(*x);
#elif defined(__AVX512F__)
    return (vec)_mm512_set1_ps(*x);
#else
    return (vec){0} + *x;
#endif
}

/* Store the first count (1 to WIDTH) elements of v at target, which needs no alignment. */
static inline void store_head(real *target, vec v, int64_t count) {
#if defined(__AVX512F__) && LOCKSTEP_FLOAT64
    _mm512_mask_storeu_pd(target, (__mmask8)((1u << count) - 1), (__m512d)v);
#elif defined(__AVX512F__)
    _mm512_mask_storeu_ps(target, (__mmask16)((1u << count) - 1), (__m512)v);
#else
    for (int64_t i = 0; i < count; i++) target[i] = v[i];
#endif
}

/* Return 1 when none of the first count (1 to WIDTH) elements of v is zero.  NaN counts as not zero. */
static inline int64_t no_zero_head(vec v, int64_t count) {
#if defined(__AVX512F__) && LOCKSTEP_FLOAT64
    return _mm512_mask_cmp_pd_mask((__mmask8)((1u << count) - 1), (__m512d)v, _mm512_setzero_pd(), _CMP_EQ_OQ) == 0;
#elif defined(__AVX512F__)
    return _mm512_mask_cmp_ps_mask((__mmask16)((1u << count) - 1), (__m512)v, _mm512_setzero_ps(), _CMP_EQ_OQ) == 0;
#else
    int64_t none = 1;
    for (int64_t i = 0; i < count; i++) none &= v[i] != 0;
    return none;
#endif
}

/* Bit i set where values[i] is not zero (NaN included), for count <= 64 values. */
static inline uint64_t nonzero(const real *values, int64_t count) {
    uint64_t bits = 0;
#if defined(__AVX512F__) && LOCKSTEP_FLOAT64
    for (int64_t i = 0; i < count; i += 8) {
        __mmask8 valid = count - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (count - i)) - 1);
        __m512d chunk = _mm512_maskz_loadu_pd(valid, values + i);
        bits |= (uint64_t)_mm512_mask_cmp_pd_mask(valid, chunk, _mm512_setzero_pd(), _CMP_NEQ_UQ) << i;
    }
#elif defined(__AVX512F__)
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

/* Return the index of the maximum as numpy.argmax does: the first maximum wins ties, the first NaN wins. */
static int64_t argmax(const real *scores, int64_t count) {
    real best = scores[0];
    if (best != best) return 0;
    int64_t index = 0;
    for (int64_t i = 1; i < count; i++) {
        real value = scores[i];
        if (value > best) {
            best = value;
            index = i;
        } else if (value != value) {
            return i;
        }
    }
    return index;
}

/* The scores of one lane: the next hidden state, then K symbol scores, then 5 motion scores. */
typedef union {
    vec vectors[VECTORS];
    real values[VECTORS * WIDTH];
} scores_t;

/* Return the index of the maximum of count scores that contain no NaN.  The first maximum wins ties. */
static inline __attribute__((always_inline)) int64_t argmax_finite(const real *scores, int64_t count) {
    real best = scores[0];
    int64_t index = 0;
    for (int64_t i = 1; i < count; i++) {
        if (scores[i] > best) {
            best = scores[i];
            index = i;
        }
    }
    return index;
}

/* Return 1 when every element of v is finite. */
static inline int all_finite(vec v) {
#if defined(__AVX512F__) && LOCKSTEP_FLOAT64
    return _mm512_cmp_pd_mask((__m512d)(v - v), _mm512_setzero_pd(), _CMP_NEQ_UQ) == 0;
#elif defined(__AVX512F__)
    return _mm512_cmp_ps_mask((__m512)(v - v), _mm512_setzero_ps(), _CMP_NEQ_UQ) == 0;
#else
    int finite = 1;
    for (int i = 0; i < WIDTH; i++) finite &= v[i] - v[i] == 0;
    return finite;
#endif
}

/* The lanes' arrays, as passed by native.py. */
typedef struct {
    const real *W;
    int64_t num_symbols, d, r;
    real *hidden;
    int8_t *cells;
    const int64_t *offsets, *widths, *heights;
    int64_t *rows, *cols, *steps;
    const int64_t *targets;
    int64_t *status;
    int64_t *position;  /* flat index into cells of each lane's cell */
    int64_t *dense;  /* 1 for each lane whose h has no zero coordinate */
} lanes_t;

/* Compute the scores of a group with dense hidden states, by multiply-adds over every k.  With shared
   set, every lane of the group reads matrix[0], so each row vector is loaded once for the group. */
static inline __attribute__((always_inline)) void dense_scores(
        const lanes_t *lanes, const int64_t *lane_of, const real *const *matrix, scores_t *acc,
        const int group, const int shared) {
    const int chunk = ACCUMULATORS / group < 1 ? 1 : ACCUMULATORS / group;
    const int64_t d = lanes->d, r = lanes->r;
#pragma GCC unroll 16
    for (int first = 0; first < VECTORS; first += chunk) {
        const int last = first + chunk < VECTORS ? first + chunk : VECTORS;
        vec part[GROUP][ACCUMULATORS];
        for (int g = 0; g < group; g++)
            for (int v = first; v < last; v++) part[g][v - first] = (vec){0};
        for (int64_t k = 0; k < d; k++) {
            if (shared) {
                const row_vec *row = (const row_vec *)(matrix[0] + k * r);
                vec w[ACCUMULATORS];
                for (int v = first; v < last; v++) w[v - first] = row[v];
                for (int g = 0; g < group; g++) {
                    vec hk = splat(lanes->hidden + lane_of[g] * d + k);
                    for (int v = first; v < last; v++) part[g][v - first] = fused(w[v - first], hk, part[g][v - first]);
                }
            } else {
                for (int g = 0; g < group; g++) {
                    const row_vec *row = (const row_vec *)(matrix[g] + k * r);
                    vec hk = splat(lanes->hidden + lane_of[g] * d + k);
                    for (int v = first; v < last; v++) part[g][v - first] = fused(row[v], hk, part[g][v - first]);
                }
            }
        }
        for (int g = 0; g < group; g++)
            for (int v = first; v < last; v++) acc[g].vectors[v] = part[g][v - first];
    }
}

/* Step the lanes lane_of[0 .. group-1] once and append the lanes that may continue to continuing.
   Set *any_dense when the group took the dense path.  Return 1 if a lane left its window. */
static inline __attribute__((always_inline)) int step_group(
        const lanes_t *lanes, const int64_t *lane_of, const int group, int64_t *continuing,
        int64_t *continuing_count, int64_t *total, int *any_dense) {
    const int64_t d = lanes->d, r = lanes->r, num_symbols = lanes->num_symbols;
    scores_t acc[GROUP];
    int64_t position[GROUP];
    const real *matrix[GROUP];
    int growth = 0;
    int shared = 1;
    for (int g = 0; g < group; g++) {
        int64_t lane = lane_of[g];
        position[g] = lanes->position[lane];
        matrix[g] = lanes->W + (int64_t)lanes->cells[position[g]] * d * r;
        shared &= matrix[g] == matrix[0];
    }
    /* Dense groups (no lane's h has a zero coordinate, as the last step recorded) take the loop over
       every k.  Otherwise bit k of nonzero_bits[g] is set when h[k] of lane g is not zero.  A product
       W[x][k] * h[k] with h[k] zero only adds a signed zero to the score, so skipping it changes at most
       the sign of a zero score and never a comparison.  One-hot hidden states (oracle DFSTs, extracted
       automata) then need one row instead of d. */
    int dense = 1;
    for (int g = 0; g < group; g++) dense &= (int)lanes->dense[lane_of[g]];
    uint64_t nonzero_bits[GROUP][MAX_WORDS];
    if (!dense) {
        for (int g = 0; g < group; g++) {
            const real *h = lanes->hidden + lane_of[g] * d;
            for (int64_t base = 0; base < d; base += 64) {
                int64_t end = base + 64 < d ? base + 64 : d;
                nonzero_bits[g][base / 64] = nonzero(h + base, end - base);
            }
        }
    }
    *any_dense |= dense;
    if (dense && shared) {
        dense_scores(lanes, lane_of, matrix, acc, group, 1);
    } else if (dense) {
        dense_scores(lanes, lane_of, matrix, acc, group, 0);
    } else {
        for (int g = 0; g < group; g++)
            for (int v = 0; v < VECTORS; v++) acc[g].vectors[v] = (vec){0};
        for (int g = 0; g < group; g++) {
            const real *h = lanes->hidden + lane_of[g] * d;
            for (int64_t base = 0; base < d; base += 64) {
                for (uint64_t bits = nonzero_bits[g][base / 64]; bits; bits &= bits - 1) {
                    int64_t k = base + __builtin_ctzll(bits);
                    const row_vec *row = (const row_vec *)(matrix[g] + k * r);
                    vec hk = splat(h + k);
                    for (int v = 0; v < VECTORS; v++) acc[g].vectors[v] = fused(row[v], hk, acc[g].vectors[v]);
                }
            }
        }
    }
    for (int g = 0; g < group; g++) {
        int64_t lane = lane_of[g];
        real *h = lanes->hidden + lane * d;
        const real *scores = acc[g].values;
        int finite = 1;
        for (int v = 0; v < VECTORS; v++) finite &= all_finite(acc[g].vectors[v]);
        int64_t written, motion;
        if (finite) {
            written = argmax_finite(scores + d, num_symbols);
            motion = argmax_finite(scores + d + num_symbols, 5);
        } else {
            /* a non-finite h makes every score non-finite (inf * 0 is NaN), so h is checked only here */
            int h_finite = 1;
            for (int64_t k = 0; k < d; k++)
                if (h[k] - h[k] != 0) h_finite = 0;
            if (!h_finite) {
                lanes->status[lane] = NON_FINITE;
                continue;
            }
            written = argmax(scores + d, num_symbols);
            motion = argmax(scores + d + num_symbols, 5);
        }
        lanes->cells[position[g]] = (int8_t)written;
        int64_t no_zero = 1;
        for (int v = 0; v * WIDTH < d; v++) {
            int64_t count = d - v * WIDTH < WIDTH ? d - v * WIDTH : WIDTH;
            store_head(h + v * WIDTH, acc[g].vectors[v], count);
            no_zero &= no_zero_head(acc[g].vectors[v], count);
        }
        lanes->dense[lane] = no_zero;
        lanes->steps[lane] += 1;
        *total += 1;
        if (motion == STAY) {
            lanes->status[lane] = HALTED;
            continue;
        }
        int64_t i = lanes->rows[lane] + ROW_DELTA[motion];
        int64_t j = lanes->cols[lane] + COL_DELTA[motion];
        lanes->rows[lane] = i;
        lanes->cols[lane] = j;
        lanes->position[lane] = position[g] + ROW_DELTA[motion] * lanes->widths[lane] + COL_DELTA[motion];
        if (i < 0 || j < 0 || i >= lanes->heights[lane] || j >= lanes->widths[lane]) {
            lanes->status[lane] = NEEDS_GROWTH;
            growth = 1;
            continue;
        }
        if (lanes->steps[lane] < lanes->targets[lane]) continuing[(*continuing_count)++] = lane;
    }
    return growth;
}

#if BLOCKS
#include "lockstep_blocks.h"
#endif

/* Run every lane with status RUNNING until it halts, turns non-finite, reaches targets[lane] steps or
   leaves its window.  Return the steps taken, or -1 when R or K does not match this build.  active
   has room for 5 * lanes scratch entries.  When a lane leaves its window, the call returns after that group
   or block round so that the caller grows the window, and the other lanes resume on the next call. */
int64_t LOCKSTEP(const real *W, int64_t num_symbols, int64_t d, int64_t r, int64_t num_lanes, real *hidden,
                 int8_t *cells, const int64_t *offsets, const int64_t *widths, const int64_t *heights,
                 int64_t *rows, int64_t *cols, int64_t *steps, const int64_t *targets, int64_t *status,
                 int64_t *active, const real *Wt) {
    if (r != VECTORS * WIDTH || num_symbols < 1 || num_symbols > MAX_SYMBOLS) return -1;
    int64_t *position = active + 2 * num_lanes;
    int64_t *symbol = active + 3 * num_lanes;
    int64_t *dense = active + 4 * num_lanes;
    for (int64_t lane = 0; lane < num_lanes; lane++) {
        position[lane] = offsets[lane] + rows[lane] * widths[lane] + cols[lane];
        dense[lane] = 1;
        for (int64_t base = 0; base < d; base += 64) {
            int64_t end = base + 64 < d ? base + 64 : d;
            uint64_t all = end - base == 64 ? ~(uint64_t)0 : ((uint64_t)1 << (end - base)) - 1;
            dense[lane] &= nonzero(hidden + lane * d + base, end - base) == all;
        }
    }
    const lanes_t lanes = {W, num_symbols, d, r, hidden, cells, offsets, widths, heights,
                           rows, cols, steps, targets, status, position, dense};
    /* A round steps the lanes in current, or sorted into next.  It keeps the lanes that continue at the
       front of the array it read, so a sorted round then swaps the two. */
    int64_t *current = active, *next = active + num_lanes;
    int64_t count = 0;
    for (int64_t lane = 0; lane < num_lanes; lane++)
        if (status[lane] == RUNNING && steps[lane] < targets[lane]) current[count++] = lane;
    int64_t total = 0;
#if !BLOCKS
    (void)Wt;
#else
    /* Dense lanes go to lane-major blocks first, when blocks_pay favours them. */
    if (Wt != 0 && num_symbols <= WIDTH) {
        int64_t queued = 0;
        for (int64_t n = 0; n < count; n++)
            if (dense[current[n]]) next[queued++] = current[n];
        if (blocks_pay(d, num_symbols, queued < WIDTH ? queued : WIDTH)) {
            if (run_blocks(&lanes, Wt, next, queued, &total)) return total;
            int64_t still_running = 0;
            for (int64_t n = 0; n < count; n++)
                if (status[current[n]] == RUNNING && steps[current[n]] < targets[current[n]])
                    current[still_running++] = current[n];
            count = still_running;
        }
    }
#endif
    /* Sorting pays only for dense states, whose groups share loads of W[x], so it runs in the first
       round and after rounds that had a dense group.  Unsorted, all lanes form one bucket. */
    int sort = 1;
    int64_t end[MAX_SYMBOLS + 1];
    while (count > 0) {
        int64_t buckets = 1;
        int64_t *order = current;
        if (sort && count > 1) {
            /* Group the round's lanes by observed symbol.  Lanes often arrive in symbol order already
               (the previous round sorted them); then the runs of equal symbols are the buckets. */
            int in_order = 1;
            for (int64_t n = 0; n < count; n++) {
                symbol[n] = cells[position[current[n]]];
                in_order &= n == 0 || symbol[n] >= symbol[n - 1];
            }
            if (in_order) {
                buckets = 0;
                for (int64_t n = 1; n < count; n++)
                    if (symbol[n] != symbol[n - 1]) end[buckets++] = n;
                end[buckets++] = count;
            } else {
                /* Counting sort into next, after which bucket s ends at next[end[s]]. */
                for (int64_t s = 0; s <= num_symbols; s++) end[s] = 0;
                for (int64_t n = 0; n < count; n++) end[symbol[n] + 1]++;
                for (int64_t s = 0; s < num_symbols; s++) end[s + 1] += end[s];
                for (int64_t n = 0; n < count; n++) next[end[symbol[n]]++] = current[n];
                buckets = num_symbols;
                order = next;
            }
        } else {
            end[0] = count;
        }
        int64_t continuing = 0;
        int growth = 0;
        int dense = 0;
        int64_t start = 0;
        for (int64_t s = 0; s < buckets && !growth; s++) {
            while (start < end[s] && !growth) {
                /* continuing never overtakes start, so the continuing lanes overwrite only stepped ones.
                   Each group size is a literal, so each call compiles with its accumulators in registers. */
                int64_t left = end[s] - start;
                int group;
                if (left >= 8) {
                    group = 8;
                    growth = step_group(&lanes, order + start, 8, order, &continuing, &total, &dense);
                } else if (left >= 4) {
                    group = 4;
                    growth = step_group(&lanes, order + start, 4, order, &continuing, &total, &dense);
                } else if (left >= 2) {
                    group = 2;
                    growth = step_group(&lanes, order + start, 2, order, &continuing, &total, &dense);
                } else {
                    group = 1;
                    growth = step_group(&lanes, order + start, 1, order, &continuing, &total, &dense);
                }
                start += group;
            }
        }
        if (growth) return total;
        if (order == next) {
            next = current;
            current = order;
        }
        count = continuing;
        sort = dense;
    }
    return total;
}
