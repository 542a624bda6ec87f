// Span masking for audio frames: fairseq's wav2vec 2.0 / data2vec `compute_mask_indices` with
// mask_type "static", no_overlap false, require_same_masks true, mask_dropout 0.
#pragma once

#include <torch/torch.h>

namespace data2vec::audio {

struct SpanMaskOptions {
  /// Expected fraction of frames that START a span (not the masked fraction). Default 0.65.
  TORCH_ARG(double, mask_prob) = 0.65;
  /// Frames per span. Default 10.
  TORCH_ARG(int64_t, mask_length) = 10;
  /// Spans per example at least. Default 1.
  TORCH_ARG(int64_t, min_masks) = 1;
  /// Trim every example to the batch's smallest masked count (data2vec: true). Default true.
  TORCH_ARG(bool, require_same_masks) = true;
};

// [B,T] bool on the CPU, true = masked, from `lengths` [B] int64 (real frames per example; frames
// at or beyond an example's length are padding and never masked). Per example b with real length
// n_b:
//   spans = max(min_masks, int(mask_prob * n_b / mask_length + U[0,1)))
//   span starts drawn without replacement from [0, n_b - mask_length) (fairseq's range: the last
//   possible start is never drawn; when there are fewer than spans+1 starts the range widens to
//   spans+1 and frames past n_b are dropped), each span covers mask_length frames, overlaps
//   merge. Expected masked fraction for long inputs: 1 - exp(-mask_prob) (0.478 at 0.65).
// Then, with require_same_masks, every example keeps a uniformly random subset of its masked
// frames of the size of the batch's smallest masked count, so all examples mask the same number.
// Examples with no real frames mask nothing. All randomness comes from `generator`.
torch::Tensor span_mask(const torch::Tensor& lengths, int64_t time, const SpanMaskOptions& options,
                        at::Generator& generator);

// ---- data2vec 2.0: 1-D block masking (data2vec 2.0, arXiv 2212.07525) ----

struct BlockMask1dOptions {
  /// Fraction of real frames masked. Default 0.5.
  TORCH_ARG(double, mask_ratio) = 0.5;
  /// Frames per block. Default 5.
  TORCH_ARG(int64_t, block_length) = 5;
};

// [B,T] bool on the CPU (true = masked) from `lengths` [B] int64 real frames per example. Row b
// masks exactly v2_masked_count(lengths_b, mask_ratio) of its real frames (round(mask_ratio x its
// own length), core/masking.h), as blocks of block_length frames at random starts inside the
// real frames; the block that would overshoot contributes only the frames still missing (its
// first new ones). Frames at or beyond an example's length are padding: a row keeps the first of
// them as needed so that every row keeps v2_kept_count(T, mask_ratio) frames and the rest are
// marked true (dropped, never in the loss; drop_padding_to_kept_count).
torch::Tensor block_mask_1d(const torch::Tensor& lengths, int64_t time,
                            const BlockMask1dOptions& options, at::Generator& generator);

}  // namespace data2vec::audio
