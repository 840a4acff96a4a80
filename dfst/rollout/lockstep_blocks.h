/*
 * Lane-major blocks of lockstep.c, which includes this file after its own
 * definitions (vec, fused, splat, lanes_t and the status codes) when BLOCKS is 1.
 *
 * A block steps up to WIDTH lanes with dense hidden states, one lane per
 * vector element.  Row k of its hidden buffer contains h[k] of every lane, and
 * row o of its output buffer contains score o of every lane.  One multiply-add
 * then serves WIDTH lanes, and nothing is padded, where the row-major path pads
 * d + K + 5 scores to whole vectors (mult2's 34 to 48).  When every lane
 * observes one symbol x, each weight W[x][k][o] is one broadcast load.
 * Otherwise one permutation picks each lane's weight from the K weights
 * W[0..K-1][k][o] in the lane-major table Wt (d, d + K + 5, K), so blocks need
 * K <= WIDTH.  Each score is the same sequence of fused multiply-adds as in
 * step_group, so both paths give the same bits.
 */
/* Score counts d + K + 5 that rows of VECTORS vectors contain without a whole padding vector. */
#define SCORES_MIN (WIDTH * (VECTORS - 1) + 1)
#define SCORES_MAX (WIDTH * VECTORS)
/* Accumulators of one pass over k, leaving registers for h[k] and the weights. */
#define SHARED_PASS 28
#define PERMUTED_PASS 24
/* Return 1 when a block of this many lanes is estimated to step faster than the row-major path, in
   multiply-add slots (two per cycle).  One row-major lane step costs VECTORS * d multiply-adds plus about
   100 slots of other work.  One block round with mixed symbols costs 2 * (d + K + 5) * d slots of
   permutations and multiply-adds plus about 30 per block slot.  The overheads are estimates: 100 fits the
   row-major mult2 step on an Intel Xeon, and on an AMD EPYC the estimate agrees with timing (blocks faster
   for mult2, slower for mult10).  Rows of W padded past whole vectors (never built by the engine) fall
   outside SCORES_MIN .. SCORES_MAX, whose passes alone are compiled, so they run row-major. */
static inline int blocks_pay(int64_t d, int64_t num_symbols, int64_t lanes) {
    const int64_t scores = d + num_symbols + 5;
    if (scores < SCORES_MIN || scores > SCORES_MAX) return 0;
    return lanes * (VECTORS * d + 100) > 2 * scores * d + 30 * WIDTH;
}
#if LOCKSTEP_FLOAT64
typedef int64_t slot_int;
typedef __mmask8 slot_mask;
#define PERMUTE(index, table) ((vec)_mm512_permutexvar_pd((index), (__m512d)(table)))
#define INDEX_SPLAT(i) _mm512_set1_epi64(i)
#define INDEX_MOVE(source, mask, value) _mm512_mask_mov_epi64((source), (mask), (value))
#define MASK_MOVE(source, mask, value) ((vec)_mm512_mask_mov_pd((__m512d)(source), (mask), (__m512d)(value)))
#define COMPARE(a, b, predicate) _mm512_cmp_pd_mask((__m512d)(a), (__m512d)(b), (predicate))
#define NOT_FINITE(v) _mm512_fpclass_pd_mask((__m512d)(v), 0x99)
#define INDEX_DIFFERS(mask, a, b) _mm512_mask_cmpneq_epi64_mask((mask), (a), (b))
#else
typedef int32_t slot_int;
typedef __mmask16 slot_mask;
#define PERMUTE(index, table) ((vec)_mm512_permutexvar_ps((index), (__m512)(table)))
#define INDEX_SPLAT(i) _mm512_set1_epi32(i)
#define INDEX_MOVE(source, mask, value) _mm512_mask_mov_epi32((source), (mask), (value))
#define MASK_MOVE(source, mask, value) ((vec)_mm512_mask_mov_ps((__m512)(source), (mask), (__m512)(value)))
#define COMPARE(a, b, predicate) _mm512_cmp_ps_mask((__m512)(a), (__m512)(b), (predicate))
#define NOT_FINITE(v) _mm512_fpclass_ps_mask((__m512)(v), 0x99)
#define INDEX_DIFFERS(mask, a, b) _mm512_mask_cmpneq_epi32_mask((mask), (a), (b))
#endif

/* Compute scores first .. first+count-1 of every slot into out rows 0 .. count-1.  weights points at
   W[x][0][first] (shared: stride r per k) or at Wt[0][first] (permuted by symbols: stride (d + K + 5) * K per
   k, K per score).  A permuted load reads WIDTH values from an entry of K, and Wt's zero padding covers it. */
static inline __attribute__((always_inline)) void block_pass(
        const real *weights, int64_t stride, int64_t entry, const real *h, real *out, int64_t d, __m512i symbols,
        const int shared, const int count) {
    vec acc[SHARED_PASS];
#pragma GCC unroll 32
    for (int j = 0; j < count; j++) acc[j] = (vec){0};
    for (int64_t k = 0; k < d; k++) {
        vec hk = *(const vec *)(h + k * WIDTH);
        const real *w = weights + k * stride;
        if (shared) {
#pragma GCC unroll 32
            for (int j = 0; j < count; j++) acc[j] = fused(splat(w + j), hk, acc[j]);
        } else {
#pragma GCC unroll 32
            for (int j = 0; j < count; j++)
                acc[j] = fused(PERMUTE(symbols, *(const row_vec *)(w + j * entry)), hk, acc[j]);
        }
    }
#pragma GCC unroll 32
    for (int j = 0; j < count; j++) *(vec *)(out + j * WIDTH) = acc[j];
}

/* block_pass with count as a literal, so that its accumulators stay in registers.  Blocks run only
   with SCORES_MIN to SCORES_MAX scores (blocks_pay checks), so a pass has between COUNT_MIN and COUNT_MAX
   scores, and only those counts are compiled. */
#define COUNT_MIN(limit) (SCORES_MIN / ((SCORES_MAX + (limit) - 1) / (limit)))
#define COUNT_MAX(limit) (SCORES_MAX < (limit) ? SCORES_MAX : (limit))
#define PASS_CASE(n) \
    case n: \
        if ((n) >= COUNT_MIN(limit) && (n) <= COUNT_MAX(limit)) \
            block_pass(weights, stride, entry, h, out, d, symbols, shared, n); \
        break;
#define PASS_CASES_1_24 PASS_CASE(1) PASS_CASE(2) PASS_CASE(3) PASS_CASE(4) PASS_CASE(5) PASS_CASE(6) \
    PASS_CASE(7) PASS_CASE(8) PASS_CASE(9) PASS_CASE(10) PASS_CASE(11) PASS_CASE(12) PASS_CASE(13) \
    PASS_CASE(14) PASS_CASE(15) PASS_CASE(16) PASS_CASE(17) PASS_CASE(18) PASS_CASE(19) PASS_CASE(20) \
    PASS_CASE(21) PASS_CASE(22) PASS_CASE(23) PASS_CASE(24)

static void shared_pass(const real *weights, int64_t stride, const real *h, real *out, int64_t d, __m512i symbols,
                        int count) {
    const int shared = 1, limit = SHARED_PASS;
    const int64_t entry = 1;
    switch (count) {
        PASS_CASES_1_24 PASS_CASE(25) PASS_CASE(26) PASS_CASE(27) PASS_CASE(28)
    }
}

static void permuted_pass(const real *weights, int64_t stride, int64_t entry, const real *h, real *out, int64_t d,
                          __m512i symbols, int count) {
    const int shared = 0, limit = PERMUTED_PASS;
    switch (count) {
        PASS_CASES_1_24
    }
}

/* Position, window and step count of each lane in a block, one slot per vector element.  The lane's own
   arrays contain stale values until the lane leaves the block. */
typedef struct {
    int64_t lane[WIDTH] __attribute__((aligned(64)));
    int64_t position[WIDTH] __attribute__((aligned(64)));
    int64_t row[WIDTH] __attribute__((aligned(64)));
    int64_t col[WIDTH] __attribute__((aligned(64)));
    int64_t width[WIDTH] __attribute__((aligned(64)));
    int64_t height[WIDTH] __attribute__((aligned(64)));
    int64_t steps[WIDTH] __attribute__((aligned(64)));
    int64_t target[WIDTH] __attribute__((aligned(64)));
    slot_int symbol[WIDTH] __attribute__((aligned(64)));
    slot_int written[WIDTH] __attribute__((aligned(64)));
    slot_int motion[WIDTH] __attribute__((aligned(64)));
} block_t;

/* Motion indexes of slots 8c .. 8c+7 as 64-bit integers. */
static inline __m512i motion_of(const block_t *block, int c) {
#if LOCKSTEP_FLOAT64
    return _mm512_load_si512(block->motion + 8 * c);
#else
    return _mm512_cvtepi32_epi64(_mm256_load_si256((const __m256i *)(block->motion + 8 * c)));
#endif
}

/* Return, for each slot, the index of the largest of count score rows; the first maximum wins ties, as in
   argmax_finite.  The rows must be finite. */
static inline __m512i block_argmax(const real *rows, int64_t count) {
    vec best = *(const vec *)rows;
    __m512i index = INDEX_SPLAT(0);
    for (int64_t i = 1; i < count; i++) {
        const vec value = *(const vec *)(rows + i * WIDTH);
        const slot_mask greater = COMPARE(value, best, _CMP_GT_OQ);
        best = MASK_MOVE(best, greater, value);
        index = INDEX_MOVE(index, greater, INDEX_SPLAT(i));
    }
    return index;
}

/* Move the stepped slots by their motions and count their steps.  Return the slots that halted, left their
   window (the unsigned compares catch -1) or reached their target. */
static inline slot_mask block_move(block_t *block, slot_mask stepped) {
    /* the row and column changes of motions 0 to 4, zero past them */
    const __m512i row_delta = _mm512_maskz_loadu_epi64(0x1F, ROW_DELTA);
    const __m512i col_delta = _mm512_maskz_loadu_epi64(0x1F, COL_DELTA);
    slot_mask stopped = 0;
    for (int c = 0; c < WIDTH / 8; c++) {
        const __mmask8 m = (__mmask8)(stepped >> (8 * c));
        const __m512i motion = motion_of(block, c);
        const __m512i width = _mm512_load_si512(block->width + 8 * c);
        const __m512i height = _mm512_load_si512(block->height + 8 * c);
        const __m512i dc = _mm512_permutexvar_epi64(motion, col_delta);
        __m512i row = _mm512_load_si512(block->row + 8 * c);
        __m512i col = _mm512_load_si512(block->col + 8 * c);
        __m512i position = _mm512_load_si512(block->position + 8 * c);
        __m512i steps = _mm512_load_si512(block->steps + 8 * c);

        row = _mm512_mask_add_epi64(row, m, row, _mm512_permutexvar_epi64(motion, row_delta));
        col = _mm512_mask_add_epi64(col, m, col, dc);
        /* the cell index moves by dc, minus a row for motion 0 (up), plus a row for motion 1 (down) */
        const __mmask8 up = _mm512_mask_cmpeq_epi64_mask(m, motion, _mm512_set1_epi64(0));
        const __mmask8 down = _mm512_mask_cmpeq_epi64_mask(m, motion, _mm512_set1_epi64(1));
        position = _mm512_mask_add_epi64(position, m, position, dc);
        position = _mm512_mask_sub_epi64(position, up, position, width);
        position = _mm512_mask_add_epi64(position, down, position, width);
        steps = _mm512_mask_add_epi64(steps, m, steps, _mm512_set1_epi64(1));

        const __mmask8 stop = _mm512_mask_cmpeq_epi64_mask(m, motion, _mm512_set1_epi64(STAY))
            | _mm512_mask_cmpge_epu64_mask(m, row, height) | _mm512_mask_cmpge_epu64_mask(m, col, width)
            | _mm512_mask_cmpge_epi64_mask(m, steps, _mm512_load_si512(block->target + 8 * c));
        stopped |= (slot_mask)((slot_mask)stop << (8 * c));
        _mm512_store_si512(block->row + 8 * c, row);
        _mm512_store_si512(block->col + 8 * c, col);
        _mm512_store_si512(block->position + 8 * c, position);
        _mm512_store_si512(block->steps + 8 * c, steps);
    }
    return stopped;
}

/* Take lane into slot s: its h goes to column s of the hidden rows h. */
static inline void block_enter(const lanes_t *lanes, block_t *block, real *h, int s, int64_t lane) {
    block->lane[s] = lane;
    block->position[s] = lanes->position[lane];
    block->row[s] = lanes->rows[lane];
    block->col[s] = lanes->cols[lane];
    block->width[s] = lanes->widths[lane];
    block->height[s] = lanes->heights[lane];
    block->steps[s] = lanes->steps[lane];
    block->target[s] = lanes->targets[lane];
    for (int64_t k = 0; k < lanes->d; k++) h[k * WIDTH + s] = lanes->hidden[lane * lanes->d + k];
}

/* Copy slot s back to its lane's arrays, with column s of the hidden rows h as the lane's h.  Then clear
   that column, so that an empty slot computes zeros. */
static inline void block_leave(const lanes_t *lanes, const block_t *block, real *h, int s) {
    const int64_t lane = block->lane[s];
    lanes->position[lane] = block->position[s];
    lanes->rows[lane] = block->row[s];
    lanes->cols[lane] = block->col[s];
    lanes->steps[lane] = block->steps[s];
    for (int64_t k = 0; k < lanes->d; k++) {
        lanes->hidden[lane * lanes->d + k] = h[k * WIDTH + s];
        h[k * WIDTH + s] = 0;
    }
}

/* Step the queued lanes (RUNNING, dense, below their targets) in a block until all have left it or
   blocks_pay no longer favours the lanes left.  A lane leaves when it stops or when its new h has a zero
   coordinate, because only the row-major path skips zero terms.  A lane with a non-finite score leaves
   before its step, which the row-major path then takes with its checks.  Return 1 if a lane left its
   window. */
static __attribute__((noinline)) int run_blocks(const lanes_t *lanes, const real *Wt, const int64_t *queue,
                                                int64_t queued, int64_t *total) {
    const int64_t d = lanes->d, r = lanes->r, num_symbols = lanes->num_symbols;
    const int64_t scores = d + num_symbols + 5;
    real buffers[2][MAX_VECTORS_PER_ROW * WIDTH * WIDTH] __attribute__((aligned(64)));
    real *h = buffers[0], *out = buffers[1];
    for (int64_t i = 0; i < d * WIDTH; i++) h[i] = 0;
    block_t block;
    for (int s = 0; s < WIDTH; s++) {
        block.symbol[s] = 0;
        block.position[s] = block.row[s] = block.col[s] = block.steps[s] = 0;
        block.width[s] = block.height[s] = block.target[s] = 1;
    }
    const slot_mask full = (slot_mask)((1u << WIDTH) - 1);
    slot_mask occupied = 0;
    int64_t next = 0;
    int growth = 0;
    while (!growth) {
        while (next < queued && occupied != full) {
            int s = __builtin_ctz((unsigned)(slot_mask)~occupied);
            block_enter(lanes, &block, h, s, queue[next++]);
            occupied |= (slot_mask)(1u << s);
        }
        if (occupied == 0 || (next >= queued && !blocks_pay(d, num_symbols, __builtin_popcount(occupied)))) break;

        /* scores of every slot, with weights broadcast when all lanes observe one symbol */
        for (slot_mask left = occupied; left; left &= left - 1) {
            const int s = __builtin_ctz(left);
            block.symbol[s] = lanes->cells[block.position[s]];
        }
        const __m512i symbols = _mm512_load_si512(block.symbol);
        const slot_int first = block.symbol[__builtin_ctz(occupied)];
        const int shared = INDEX_DIFFERS(occupied, symbols, INDEX_SPLAT(first)) == 0;
        const int64_t limit = shared ? SHARED_PASS : PERMUTED_PASS;
        const int64_t passes = (scores + limit - 1) / limit;
        for (int64_t p = 0; p < passes; p++) {
            int64_t start = p * scores / passes, count = (p + 1) * scores / passes - start;
            real *rows = out + start * WIDTH;
            if (shared)
                shared_pass(lanes->W + first * d * r + start, r, h, rows, d, symbols, (int)count);
            else
                permuted_pass(Wt + start * num_symbols, scores * num_symbols, num_symbols, h, rows, d, symbols,
                              (int)count);
        }

        const vec zero = (vec){0};
        slot_mask not_finite = 0;
        for (int64_t o = 0; o < scores; o++) not_finite |= NOT_FINITE(*(const vec *)(out + o * WIDTH));
        slot_mask has_zero = 0;
        for (int64_t o = 0; o < d; o++) has_zero |= COMPARE(*(const vec *)(out + o * WIDTH), zero, _CMP_EQ_OQ);
        _mm512_store_si512(block.written, block_argmax(out + d * WIDTH, num_symbols));
        _mm512_store_si512(block.motion, block_argmax(out + (d + num_symbols) * WIDTH, 5));

        /* Lanes with finite scores take their step: write, move, count. */
        const slot_mask stepped = occupied & (slot_mask)~not_finite;
        for (slot_mask left = stepped; left; left &= left - 1) {
            const int s = __builtin_ctz(left);
            lanes->cells[block.position[s]] = (int8_t)block.written[s];
        }
        *total += __builtin_popcount(stepped);
        __atomic_fetch_add(&lockstep_block_steps, __builtin_popcount(stepped), __ATOMIC_RELAXED);
        const slot_mask leaving = not_finite | (has_zero & stepped) | block_move(&block, stepped);

        /* Leaving lanes take their h back: the old one if they did not step, else the new one. */
        for (slot_mask left = leaving & occupied; left; left &= left - 1) {
            const int s = __builtin_ctz(left);
            const slot_mask bit = (slot_mask)(1u << s);
            if (not_finite & bit) {
                block_leave(lanes, &block, h, s);
                for (int64_t k = 0; k < d; k++) out[k * WIDTH + s] = 0;
            } else {
                const int64_t lane = block.lane[s];
                if (block.motion[s] == STAY) {
                    lanes->status[lane] = HALTED;
                } else if ((uint64_t)block.row[s] >= (uint64_t)block.height[s]
                           || (uint64_t)block.col[s] >= (uint64_t)block.width[s]) {
                    lanes->status[lane] = NEEDS_GROWTH;
                    growth = 1;
                }
                lanes->dense[lane] = !(has_zero & bit);
                block_leave(lanes, &block, out, s);
            }
            occupied &= (slot_mask)~bit;
        }

        real *swap = h;
        h = out;
        out = swap;
    }
    for (slot_mask left = occupied; left; left &= left - 1) {
        block_leave(lanes, &block, h, __builtin_ctz(left));
    }
    return growth;
}
