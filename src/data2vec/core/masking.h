// Mask helpers shared by every modality. Masks are values: pure functions of (shape, options,
// generator). Modality-specific strategies live with their encoders.
#pragma once

#include <torch/torch.h>

namespace data2vec {

// Number of real (non-padded) positions per example: [B] int64.
torch::Tensor real_lengths(const torch::Tensor& padding_mask, int64_t batch, int64_t time);

// [B,T] bool with exactly round(ratio * real_length_b) positions masked in example b (at least
// one), chosen uniformly among its real positions; padding (true in `padding_mask` [B,T], may be
// undefined) is never masked.
torch::Tensor random_mask(int64_t batch, int64_t time, double ratio,
                          const torch::Tensor& padding_mask, at::Generator& generator);

}  // namespace data2vec
