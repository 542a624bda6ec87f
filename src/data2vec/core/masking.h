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

// [B,T] bool with the SAME number of masked positions in every row: n = max(1, round(ratio *
// shortest real length)), chosen uniformly among each row's real positions (padding never
// masked). data2vec 2.0 needs equal counts so the kept positions gather into a rectangle.
torch::Tensor random_mask_same_count(int64_t batch, int64_t time, double ratio,
                                     const torch::Tensor& padding_mask, at::Generator& generator);

// ---- gather the kept positions, restore the original order (data2vec 2.0) ----

// ids_keep [R,Tk] int64, ascending, of the unmasked positions of `mask` [R,T] bool (true =
// masked). Every row must keep the same number Tk of positions.
torch::Tensor keep_indices(const torch::Tensor& mask);

// x [R,T,D] -> [R,Tk,D]: the rows of x at ids_keep [R,Tk].
torch::Tensor gather_positions(const torch::Tensor& x, const torch::Tensor& ids_keep);

// The kept positions of `clones` copies of each example without materialising the copies:
// x [B,T,...] -> [B*clones,Tk,...], row r taken from example r / clones at ids_keep[r].
torch::Tensor gather_copies(const torch::Tensor& x, const torch::Tensor& ids_keep, int64_t clones);

// kept [R,Tk,D] back into the original order: `fill` [R,T,D] with its rows at ids_keep replaced
// by kept (gradient flows to kept; fill is what the masked slots hold, e.g. noise).
torch::Tensor restore_positions(const torch::Tensor& kept, const torch::Tensor& ids_keep,
                                const torch::Tensor& fill);

}  // namespace data2vec
