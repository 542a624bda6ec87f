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

// ---- data2vec 2.0 masks: each row its own share, the same kept count in every row ----
// The student encodes only the kept positions, gathered into a [R,Tk] rectangle, so every row
// must keep the same number Tk. Each row masks round(ratio x ITS real length), so rows of
// different lengths keep different numbers of real positions; the difference is made up with
// padding: a row keeps its first padded positions as needed and drops the rest of its padding
// (marks it true, "not kept"). Padded positions never count in the loss, kept or dropped.
// Tk depends on the batch's length T alone (it is what a row without padding keeps), so the
// masks of parts of one batch (train.mask_group) join into one rectangle.

// Masked positions of a row of `length` real positions: round(ratio x length), at least 1 and at
// most length - 1 (one masked, one kept; length must be >= 2).
int64_t v2_masked_count(int64_t length, double ratio);

// Kept positions per row of a 2.0 mask over `time` positions: time - v2_masked_count(time, ratio).
// Never fewer than the real positions any row keeps (the kept count grows with the length).
int64_t v2_kept_count(int64_t time, double ratio);

// `mask` [R,T] bool (true = masked, real positions only) with every row brought to `kept` kept
// positions: of each row's padding (`padding` [R,T] bool, true = padding; undefined: none) the
// first positions stay kept as needed, the rest is marked true. A row that keeps more than `kept`
// real positions, or has too little padding to reach it, is an error.
torch::Tensor drop_padding_to_kept_count(const torch::Tensor& mask, const torch::Tensor& padding,
                                         int64_t kept);

// [B,T] bool: in each row v2_masked_count(real length, ratio) masked positions chosen uniformly
// among its real positions, then padding dropped so that every row keeps v2_kept_count(T, ratio)
// positions (see above). Without padding: exactly round(ratio x T) masked in every row.
torch::Tensor random_mask_same_count(int64_t batch, int64_t time, double ratio,
                                     const torch::Tensor& padding_mask, at::Generator& generator);

// ---- gather the kept positions, restore the original order (data2vec 2.0) ----

// ids_keep [R,Tk] int64, ascending, of the unmasked positions of `mask` [R,T] bool (true =
// masked or dropped). Every row must keep the same number Tk of positions.
torch::Tensor keep_indices(const torch::Tensor& mask);

// x [R,T,D] -> [R,Tk,D]: the rows of x at ids_keep [R,Tk].
torch::Tensor gather_positions(const torch::Tensor& x, const torch::Tensor& ids_keep);

// The kept positions of `clones` copies of each example without materialising the copies:
// x [B,T,...] -> [B*clones,Tk,...], row r taken from example r / clones at ids_keep[r].
torch::Tensor gather_copies(const torch::Tensor& x, const torch::Tensor& ids_keep, int64_t clones);

// x [R,T,D] -> [N,D]: the rows of x where `selected` [R,T] bool is true, in row-major order
// (what x.index({selected}) returns). Its backward writes each row's gradient once into zeros:
// the boolean index's backward accumulates through index_put_, one row at a time (4.5 ms
// against 0.16 ms for the 2.0 demo step's 10k x 128 predictions on 2 cores).
torch::Tensor select_positions(const torch::Tensor& x, const torch::Tensor& selected);

// kept [R,Tk,D] back into the original order: `fill` [R,T,D] with its rows at ids_keep replaced
// by kept (gradient flows to kept; fill is what the masked slots hold, e.g. noise).
torch::Tensor restore_positions(const torch::Tensor& kept, const torch::Tensor& ids_keep,
                                const torch::Tensor& fill);

}  // namespace data2vec
