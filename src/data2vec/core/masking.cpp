#include "data2vec/core/masking.h"

#include <algorithm>
#include <cmath>

namespace data2vec {

torch::Tensor real_lengths(const torch::Tensor& padding_mask, int64_t batch, int64_t time) {
  if (!padding_mask.defined()) return torch::full({batch}, time, torch::kLong);
  TORCH_CHECK(padding_mask.scalar_type() == torch::kBool, "padding_mask must be bool, got ",
              padding_mask.scalar_type());
  return (~padding_mask).sum(/*dim=*/1).to(torch::kLong).cpu();
}

torch::Tensor random_mask(int64_t batch, int64_t time, double ratio,
                          const torch::Tensor& padding_mask, at::Generator& generator) {
  TORCH_CHECK(ratio > 0.0 && ratio < 1.0, "mask ratio must be in (0, 1), got ", ratio);
  const auto lengths = real_lengths(padding_mask, batch, time);
  // Random scores; padded positions score +inf so they sort last and are never chosen.
  auto scores = torch::rand({batch, time}, generator, torch::kFloat32);
  if (padding_mask.defined()) scores.masked_fill_(padding_mask.cpu(), 2.0);
  const auto order = scores.argsort(/*dim=*/int64_t{1});  // [B,T] positions by score
  auto mask = torch::zeros({batch, time}, torch::kBool);
  auto lengths_a = lengths.accessor<int64_t, 1>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = lengths_a[b];
    const int64_t n =
        length == 0 ? 0 : std::clamp<int64_t>(std::llround(ratio * double(length)), 1, length);
    mask[b].index_fill_(0, order[b].slice(0, 0, n), true);
  }
  return padding_mask.defined() ? mask.to(padding_mask.device()) : mask;
}

}  // namespace data2vec
