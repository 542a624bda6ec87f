#include "data2vec/nn/vec_math.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace data2vec::nn::vec {

DATA2VEC_VECTOR_CLONES
float dot(const float* a, const float* b, int64_t n) {
  Float8 lanes = {}, x, y;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    load8(x, a + j);
    load8(y, b + j);
    lanes += x * y;
  }
  float s = 0.0f;
  for (; j < n; ++j) s += a[j] * b[j];
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

DATA2VEC_VECTOR_CLONES
void add_to(float* out, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] += x[j];
}

void sum_rows_in_chunks(int64_t rows, int64_t cols, float* out,
                        const std::function<void(int64_t, int64_t, float*)>& body) {
  const int64_t chunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<float> sums(size_t(chunks * cols), 0.0f);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c)
      body(c * kRowChunk, std::min(rows, (c + 1) * kRowChunk), sums.data() + c * cols);
  });
  for (int64_t c = 0; c < chunks; ++c) add_to(out, sums.data() + c * cols, cols);
}

}  // namespace data2vec::nn::vec
