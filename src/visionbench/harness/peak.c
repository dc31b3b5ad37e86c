/* The CPU's peak arithmetic rate per instruction set, for visionbench.harness.peak: each kernel
 * runs independent chains of one vector instruction (enough chains to cover its latency on
 * the cores measured so far), so the core issues it as fast as its ports allow. Compiled on the
 * machine that runs it (cc -O2 -shared); each kernel carries its own target, and the caller runs
 * only those the CPU's flags name. A kernel returns a checksum (so the loop is not removed);
 * vb_ops_<kernel> gives the arithmetic operations (multiply and add counted apart) per iteration. */
#include <immintrin.h>

#define CHAINS 12

/* Each kernel's loop: the CHAINS accumulators acc[j] start at INIT (an expression of j), then
 * every one of `iters` iterations sets each acc[j] = STEP, unrolled so the chains interleave. */
#define RUN_CHAINS(INIT, STEP)                          \
    for (int j = 0; j < CHAINS; j++) acc[j] = INIT;     \
    for (long i = 0; i < iters; i++)                    \
        _Pragma("GCC unroll 16")                        \
        for (int j = 0; j < CHAINS; j++) acc[j] = STEP;

#define SUM_PS(STORE, LANES)                         \
    float out = 0.0f;                                   \
    for (int j = 0; j < CHAINS; j++) {                  \
        float tmp[LANES];                               \
        STORE(tmp, acc[j]);                             \
        out += tmp[0];                                  \
    }                                                   \
    return (double)out;

#define SUM_EPI32(STORE, LANES)                         \
    long long out = 0;                                  \
    for (int j = 0; j < CHAINS; j++) {                  \
        int tmp[LANES];                                 \
        STORE((void *)tmp, acc[j]);                     \
        out += tmp[0];                                  \
    }                                                   \
    return (double)out;

/* FP32 fused multiply-add, 256-bit (AVX2 + FMA): 8 lanes x 2 operations per instruction. */
__attribute__((target("avx2,fma"))) double vb_fp32_avx2(long iters) {
    __m256 acc[CHAINS];
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-6f);
    RUN_CHAINS(_mm256_set1_ps((float)j), _mm256_fmadd_ps(acc[j], x, y))
    SUM_PS(_mm256_storeu_ps, 8)
}
long vb_ops_fp32_avx2(void) { return CHAINS * 8 * 2; }

/* FP32 fused multiply-add, 512-bit (AVX-512F): 16 lanes x 2. */
__attribute__((target("avx512f"))) double vb_fp32_avx512(long iters) {
    __m512 acc[CHAINS];
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-6f);
    RUN_CHAINS(_mm512_set1_ps((float)j), _mm512_fmadd_ps(acc[j], x, y))
    SUM_PS(_mm512_storeu_ps, 16)
}
long vb_ops_fp32_avx512(void) { return CHAINS * 16 * 2; }

/* BF16 dot product into FP32 (AVX512_BF16 vdpbf16ps): 16 lanes x 2 pairs x 2. */
__attribute__((target("avx512f,avx512bf16"))) double vb_bf16_avx512(long iters) {
    __m512 acc[CHAINS];
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    RUN_CHAINS(_mm512_set1_ps((float)j), _mm512_dpbf16_ps(acc[j], a, b))
    SUM_PS(_mm512_storeu_ps, 16)
}
long vb_ops_bf16_avx512(void) { return CHAINS * 16 * 2 * 2; }

/* INT8 dot product into INT32 (AVX512_VNNI vpdpbusd): 16 lanes x 4 pairs x 2. */
__attribute__((target("avx512f,avx512vnni"))) double vb_int8_avx512vnni(long iters) {
    __m512i acc[CHAINS];
    const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
    RUN_CHAINS(_mm512_set1_epi32(j), _mm512_dpbusd_epi32(acc[j], u, s))
    SUM_EPI32(_mm512_storeu_si512, 16)
}
long vb_ops_int8_avx512vnni(void) { return CHAINS * 16 * 4 * 2; }

/* INT8 dot product into INT32, 256-bit (AVX-VNNI vpdpbusd, VEX-encoded): 8 lanes x 4 x 2. */
__attribute__((target("avx2,avxvnni"))) double vb_int8_avxvnni(long iters) {
    __m256i acc[CHAINS];
    const __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-2);
    RUN_CHAINS(_mm256_set1_epi32(j), _mm256_dpbusd_avx_epi32(acc[j], u, s))
    SUM_EPI32(_mm256_storeu_si256, 8)
}
long vb_ops_int8_avxvnni(void) { return CHAINS * 8 * 4 * 2; }

/* INT8 without VNNI (AVX2), as oneDNN and MLAS run it: vpmaddubsw (u8 x s8 pairs into INT16),
 * vpmaddwd by ones (pairs into INT32), vpaddd: 32 products x 2 per three instructions (the
 * accumulator's bytes are the u8 side, so nothing is loop-invariant). */
__attribute__((target("avx2"))) double vb_int8_avx2(long iters) {
    __m256i acc[CHAINS];
    const __m256i s = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
    RUN_CHAINS(_mm256_set1_epi32(j),
               _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[j], s), ones)))
    SUM_EPI32(_mm256_storeu_si256, 8)
}
long vb_ops_int8_avx2(void) { return CHAINS * 32 * 2; }

/* Memory bandwidth, STREAM's triad: a[i] = b[i] + s * c[i] over n floats, `reps` times (each
 * thread on its own slice of arrays far larger than the caches). 12 bytes per element: two
 * reads and a write; the read a write-allocate adds is not counted, as STREAM does not. */
double vb_triad(float *restrict a, const float *restrict b, const float *restrict c, long n,
                long reps) {
    for (long r = 0; r < reps; r++) {
        const float s = 1.0f + (float)(r & 7) * 1e-3f;
        for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
    }
    return (double)a[n / 2];
}
