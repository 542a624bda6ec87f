#include "data2vec/nn/vec_math.h"

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

}  // namespace data2vec::nn::vec
