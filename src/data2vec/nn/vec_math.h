// Branch-free float exp and erf that the compiler vectorises (nn/attention.cpp, nn/gelu.cpp).
// The loops that call them are compiled twice (AVX2 and the baseline) and picked at load
// time by DATA2VEC_VECTOR_CLONES, so the library still runs on CPUs without AVX2; the selects
// vectorise only without trapping math (hence the optimize attribute). GCC may still leave a
// clone scalar without a warning; tests/vector_clones.cmake checks the AVX2 ones in the library.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DATA2VEC_VECTOR_CLONES \
  __attribute__((target_clones("avx2", "default"), optimize("no-trapping-math")))
// Also an AVX512 clone, for kernels where it pays (2 threads, Zen 5): the GELU derivative ran
// 0.43 ms against 1.06 in its AVX2 clone on a [3152,768] tensor, the attention's softmax rows
// 0.93 against 1.55 ms for 48 heads at T = 197 (1 thread). The others showed no gain in the
// training step (BENCHMARKS.md).
#define DATA2VEC_WIDE_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"), optimize("no-trapping-math")))
#else
#define DATA2VEC_VECTOR_CLONES
#define DATA2VEC_WIDE_VECTOR_CLONES
#endif

namespace data2vec::nn::vec {

// exp(x) for float, Cephes' expf polynomial (about 1 ulp); inputs are clamped to [-87.3, 88]
// (no denormals: exp(x) for x < -87.3 gives exp(-87.3) = 1.2e-38).
__attribute__((always_inline)) inline float exp(float x) {
  x = x > -87.3f ? x : -87.3f;
  x = x < 88.0f ? x : 88.0f;
  const float t = x * 1.44269504088896341f;  // n = round(x / ln 2), by truncation (vectorises)
  const float n = float(int32_t(t + __builtin_copysignf(0.5f, t)));
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;  // 2^n, n in [-126, 127]
  return y * __builtin_bit_cast(float, bits);
}

// erf(x) for float, two branch-free pieces fitted (relative least squares on Chebyshev nodes)
// for this file: |x| < 0.75: x P(x^2), degree 6 in x^2; 0.75 <= |x| <= 4 (erf(4) rounds to 1):
// 1 - exp(-x^2) G(|x| - 2.375), G of degree 14 fitting erfc(x) exp(x^2) (relative error 1e-10
// in double). Absolute error against std::erf below 2^-23 (one fp32 ulp at 1) over the float
// range (tests/test_nn_gelu.cpp). The rational approximation of Eigen / XLA is 4.7e-7 off near
// x = 3.27, and PyTorch's (Abramowitz-Stegun 7.1.26) 1.5e-7.
__attribute__((always_inline)) inline float erf(float x) {
  const float a = __builtin_fabsf(x);
  const float a2 = a * a;
  float p = 9.510367818e-05f;  // small |x|
  p = p * a2 + -8.363596862e-04f;
  p = p * a2 + 5.217209924e-03f;
  p = p * a2 + -2.686489560e-02f;
  p = p * a2 + 1.128378063e-01f;
  p = p * a2 + -3.761263788e-01f;
  p = p * a2 + 1.128379226e+00f;
  const float small = a * p;
  const float c = a < 4.0f ? a : 4.0f;  // large |x|
  const float y = c - 2.375f;
  float g = 9.473039242e-09f;
  g = g * y + -4.354802741e-08f;
  g = g * y + 8.843679211e-08f;
  g = g * y + -3.149520751e-07f;
  g = g * y + 1.551942660e-06f;
  g = g * y + -6.005626801e-06f;
  g = g * y + 2.156801929e-05f;
  g = g * y + -7.729780918e-05f;
  g = g * y + 2.702447237e-04f;
  g = g * y + -9.131554398e-04f;
  g = g * y + 2.979316050e-03f;
  g = g * y + -9.358462878e-03f;
  g = g * y + 2.818500809e-02f;
  g = g * y + -8.097713441e-02f;
  g = g * y + 2.205056995e-01f;
  const float large = 1.0f - exp(-(c * c)) * g;
  // A bitwise select: from `a < 0.75f ? small : large` GCC sinks `large` into a branch that it
  // does not if-convert in the AVX2 clone, which then stays scalar.
  const uint32_t use_small = -uint32_t(a < 0.75f);
  const uint32_t r = (use_small & __builtin_bit_cast(uint32_t, small)) |
                     (~use_small & __builtin_bit_cast(uint32_t, large));
  return __builtin_copysignf(__builtin_bit_cast(float, r), x);
}

// Reductions run on eight-float vectors (GCC's vector extension: AVX registers in the AVX2
// clones, SSE pairs in the baseline): without -ffast-math GCC vectorises a float sum only in
// order (one dependent add per element) and a max not at all.
typedef float Float8 __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

// Through a reference: a function returning an AVX vector has another ABI in the baseline clone.
__attribute__((always_inline)) inline void load8(Float8& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}

// The eight lanes' sum, in lane order.
__attribute__((always_inline)) inline float lane_sum(const Float8& v) {
  float s = 0.0f;
  for (int64_t l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

// sum_j a[j] b[j] in eight float lanes (vec_math.cpp; the attention's backward, the gradient
// norm of train/optimizer.h).
float dot(const float* a, const float* b, int64_t n);

// out[j] += x[j] (the attention's bias gradient, the chunk sums below).
void add_to(float* out, const float* x, int64_t n);

// Column sums of a row-wise pass, the same for any thread count: rows [0, rows) go in parallel in
// fixed chunks of kRowChunk; body(first, last, sums) handles its rows and adds their columns into
// `sums` (its chunk's own zeroed [cols] buffer); the chunks' sums are then added into out[cols]
// in chunk order. What the fused backwards use for a bias or scale gradient in the same pass as
// the rest (LibTorch's sum over the rows is a second pass, and slow over [B,T,D] to [D]).
constexpr int64_t kRowChunk = 64;
void sum_rows_in_chunks(int64_t rows, int64_t cols, float* out,
                        const std::function<void(int64_t, int64_t, float*)>& body);

}  // namespace data2vec::nn::vec
