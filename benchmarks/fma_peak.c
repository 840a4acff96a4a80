/*
 * Peak float32 fused multiply-add rate of one core, for the arithmetic bound
 * in rollout_speed.py.  Twelve independent accumulators hide the FMA latency,
 * so the loop runs at the core's FMA throughput.  Prints multiply-adds per
 * nanosecond.  Build: cc -O2 -march=native fma_peak.c -o fma_peak
 */
#include <stdio.h>
#include <time.h>

#define CHAINS 12
#define WIDTH 16
#define ITERATIONS 100000000L

typedef float f32x16 __attribute__((vector_size(64)));

#if defined(__AVX512F__)
#include <immintrin.h>
static inline f32x16 fused(f32x16 a, f32x16 b, f32x16 c) {
    return (f32x16)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}
#else
static inline f32x16 fused(f32x16 a, f32x16 b, f32x16 c) {
    for (int i = 0; i < WIDTH; i++) c[i] = __builtin_fmaf(a[i], b[i], c[i]);
    return c;
}
#endif

static double seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + now.tv_nsec * 1e-9;
}

int main(void) {
    f32x16 acc[CHAINS], scale = (f32x16){0} + 0.9999f, shift = (f32x16){0} + 1e-7f;
    for (int c = 0; c < CHAINS; c++) acc[c] = (f32x16){0} + (float)c;
    double started = seconds();
    for (long i = 0; i < ITERATIONS; i++) {
#pragma GCC unroll 12
        for (int c = 0; c < CHAINS; c++) acc[c] = fused(acc[c], scale, shift);
    }
    double elapsed = seconds() - started;
    float sink = 0;
    for (int c = 0; c < CHAINS; c++) sink += acc[c][0];
    printf("%.3f %g\n", (double)ITERATIONS * CHAINS * WIDTH / elapsed / 1e9, (double)sink);
    return 0;
}
