// BEiT block masking for image patches (arXiv 2202.03555; fairseq's data2vec configs, vision column): random rectangles of patches with
// a log-uniform aspect ratio until the target count is reached, then the count made exact.
//
// Scaling with the grid: BEiT's numbers (blocks of >= 16 patches) are for a 14x14 grid (224 px,
// patch 16). For another grid of N patches keep the same block size relative to the image:
//   min_patches = max(1, round(16 * N / 196))      e.g. 7x7 -> 4, 14x14 -> 16, 16x16 -> 21
// (scaled_min_mask_patches below). min_patches must not exceed the target round(ratio * N).
#pragma once

#include <torch/torch.h>

namespace data2vec::vision {

struct BlockMaskOptions {
  /// Fraction of patches masked; the count per image is exactly round(mask_ratio * N). Default 0.6.
  TORCH_ARG(double, mask_ratio) = 0.6;
  /// Smallest block (in patches) a draw aims for. Default 16 (BEiT, 14x14 grid).
  TORCH_ARG(int64_t, min_patches) = 16;
  /// Largest block; <= 0 means the remaining target (BEiT's default). Default 0.
  TORCH_ARG(int64_t, max_patches) = 0;
  /// Aspect ratio range of a block, drawn log-uniformly. Default [0.3, 1/0.3].
  TORCH_ARG(double, min_aspect) = 0.3;
  TORCH_ARG(double, max_aspect) = 1.0 / 0.3;
};

// BEiT's block size for a grid of `num_patches`: max(1, round(16 * num_patches / 196)).
int64_t scaled_min_mask_patches(int64_t num_patches);

// Exactly round(mask_ratio * N) masked patches per image.
int64_t block_mask_count(int64_t num_patches, double mask_ratio);

// One BEiT block mask per image: [batch, grid_h * grid_w] bool (row-major patches, true = masked),
// each row with exactly block_mask_count(grid_h * grid_w, mask_ratio) trues. Draws one seed per
// image from `generator`, so the result is a pure function of (shape, options, generator state).
torch::Tensor block_mask(int64_t batch, int64_t grid_h, int64_t grid_w,
                         const BlockMaskOptions& options, at::Generator& generator);

// ---- data2vec 2.0: inverse block masking (data2vec 2.0, arXiv 2212.07525) ----
// The KEPT region is grown as blocks: random block centres, a block_size x block_size square of
// patches around each (clipped at the grid's edge) marked kept, until exactly
// inverse_block_keep_count(N, mask_ratio) patches are kept (the last block adds only as many of
// its new patches as are missing, chosen at random); everything else is masked.

struct InverseBlockMaskOptions {
  /// Fraction of patches masked (the kept count is exact, see below). Default 0.8.
  TORCH_ARG(double, mask_ratio) = 0.8;
  /// Side of a kept block in patches. Default 3.
  TORCH_ARG(int64_t, block_size) = 3;
};

// Kept patches per image: max(1, round((1 - mask_ratio) * N)), at most N - 1.
int64_t inverse_block_keep_count(int64_t num_patches, double mask_ratio);

// [batch, grid_h * grid_w] bool (true = masked), each row keeping exactly
// inverse_block_keep_count(N, mask_ratio) patches. One seed per image from `generator`.
torch::Tensor inverse_block_mask(int64_t batch, int64_t grid_h, int64_t grid_w,
                                 const InverseBlockMaskOptions& options, at::Generator& generator);

}  // namespace data2vec::vision
