#include "data2vec/vision/masking.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "data2vec/vision/rng.h"

namespace data2vec::vision {

int64_t scaled_min_mask_patches(int64_t num_patches) {
  return std::max<int64_t>(1, std::llround(16.0 * double(num_patches) / 196.0));
}

int64_t block_mask_count(int64_t num_patches, double mask_ratio) {
  TORCH_CHECK(mask_ratio > 0.0 && mask_ratio < 1.0,
              "block mask: mask_ratio must be in (0, 1), got ", mask_ratio);
  return std::llround(mask_ratio * double(num_patches));
}

namespace {

// One block draw of BEiT's MaskingGenerator._mask: up to 10 attempts at a rectangle that adds
// between 1 and `max_new` patches. Returns the number of patches newly masked (0: all failed).
int64_t add_block(std::vector<uint8_t>& mask, int64_t grid_h, int64_t grid_w, int64_t max_new,
                  const BlockMaskOptions& o, Rng& rng) {
  const double log_lo = std::log(o.min_aspect()), log_hi = std::log(o.max_aspect());
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double area = rng.uniform(double(o.min_patches()), double(max_new));
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    // Python's round (half to even), as BEiT.
    const auto h = int64_t(std::nearbyint(std::sqrt(area * aspect)));
    const auto w = int64_t(std::nearbyint(std::sqrt(area / aspect)));
    if (w >= grid_w || h >= grid_h) continue;
    const int64_t top = rng.randint(0, grid_h - h), left = rng.randint(0, grid_w - w);
    int64_t already = 0;
    for (int64_t i = top; i < top + h; ++i)
      for (int64_t j = left; j < left + w; ++j) already += mask[i * grid_w + j];
    const int64_t fresh = h * w - already;
    if (fresh <= 0 || fresh > max_new) continue;
    for (int64_t i = top; i < top + h; ++i)
      for (int64_t j = left; j < left + w; ++j) mask[i * grid_w + j] = 1;
    return fresh;
  }
  return 0;
}

// Flips `n` randomly chosen entries whose value is `from` (partial Fisher-Yates shuffle).
void flip_random(std::vector<uint8_t>& mask, uint8_t from, int64_t n, Rng& rng) {
  std::vector<int64_t> candidates;
  for (int64_t i = 0; i < int64_t(mask.size()); ++i)
    if (mask[i] == from) candidates.push_back(i);
  const auto size = int64_t(candidates.size());
  for (int64_t k = 0; k < n; ++k) {
    std::swap(candidates[k], candidates[rng.randint(k, size - 1)]);
    mask[candidates[k]] = uint8_t(1 - from);
  }
}

}  // namespace

torch::Tensor block_mask(int64_t batch, int64_t grid_h, int64_t grid_w,
                         const BlockMaskOptions& options, at::Generator& generator) {
  TORCH_CHECK(grid_h > 0 && grid_w > 0, "block mask: empty patch grid ", grid_h, "x", grid_w);
  const int64_t n = grid_h * grid_w;
  const int64_t target = block_mask_count(n, options.mask_ratio());
  TORCH_CHECK(options.min_patches() >= 1 && options.min_patches() <= target,
              "block mask: min_patches = ", options.min_patches(), " must be in [1, ", target,
              "] (the target for a ", grid_h, "x", grid_w, " grid at ratio ", options.mask_ratio(),
              "); hint: scale it with the grid, max(1, round(16 * N / 196)) = ",
              scaled_min_mask_patches(n));
  TORCH_CHECK(options.min_aspect() > 0 && options.min_aspect() <= options.max_aspect(),
              "block mask: aspect range [", options.min_aspect(), ", ", options.max_aspect(),
              "] must be positive and ordered");
  const int64_t max_block = options.max_patches() > 0 ? options.max_patches() : target;

  // One seed per image: images are independent, and the batch costs one generator call.
  const auto seeds = torch::randint(0, std::numeric_limits<int64_t>::max(), {batch}, generator,
                                    torch::TensorOptions().dtype(torch::kLong));
  auto out = torch::zeros({batch, n}, torch::kBool);  // [B,N]
  auto* out_data = out.data_ptr<bool>();
  const auto* seed_data = seeds.data_ptr<int64_t>();
  std::vector<uint8_t> mask(n);
  for (int64_t b = 0; b < batch; ++b) {
    Rng rng{uint64_t(seed_data[b])};
    std::fill(mask.begin(), mask.end(), 0);
    int64_t count = 0;
    while (count < target) {
      const int64_t delta =
          add_block(mask, grid_h, grid_w, std::min(target - count, max_block), options, rng);
      if (delta == 0) break;
      count += delta;
    }
    // BEiT stops short when no block fits the remainder; the count is made exact here.
    if (count < target) flip_random(mask, 0, target - count, rng);
    if (count > target) flip_random(mask, 1, count - target, rng);
    for (int64_t i = 0; i < n; ++i) out_data[b * n + i] = mask[i] != 0;
  }
  return out;
}

int64_t inverse_block_keep_count(int64_t num_patches, double mask_ratio) {
  TORCH_CHECK(mask_ratio > 0.0 && mask_ratio < 1.0,
              "inverse block mask: mask_ratio must be in (0, 1), got ", mask_ratio);
  TORCH_CHECK(num_patches >= 2, "inverse block mask: needs at least 2 patches, got ", num_patches);
  return std::clamp<int64_t>(std::llround((1.0 - mask_ratio) * double(num_patches)), 1,
                             num_patches - 1);
}

torch::Tensor inverse_block_mask(int64_t batch, int64_t grid_h, int64_t grid_w,
                                 const InverseBlockMaskOptions& options, at::Generator& generator) {
  TORCH_CHECK(grid_h > 0 && grid_w > 0, "inverse block mask: empty patch grid ", grid_h, "x",
              grid_w);
  TORCH_CHECK(options.block_size() >= 1, "inverse block mask: block_size must be >= 1, got ",
              options.block_size());
  const int64_t n = grid_h * grid_w;
  const int64_t target = inverse_block_keep_count(n, options.mask_ratio());
  const int64_t lo = (options.block_size() - 1) / 2, hi = options.block_size() / 2;  // around c

  const auto seeds = torch::randint(0, std::numeric_limits<int64_t>::max(), {batch}, generator,
                                    torch::TensorOptions().dtype(torch::kLong));
  auto out = torch::ones({batch, n}, torch::kBool);  // [B,N], true = masked
  auto* out_data = out.data_ptr<bool>();
  const auto* seed_data = seeds.data_ptr<int64_t>();
  std::vector<uint8_t> kept(n);
  std::vector<int64_t> fresh;
  for (int64_t b = 0; b < batch; ++b) {
    Rng rng{uint64_t(seed_data[b])};
    std::fill(kept.begin(), kept.end(), 0);
    int64_t count = 0;
    while (count < target) {
      // A block centre anywhere on the grid; the block is clipped at the edges.
      const int64_t ci = rng.randint(0, grid_h - 1), cj = rng.randint(0, grid_w - 1);
      fresh.clear();
      for (int64_t i = std::max<int64_t>(0, ci - lo); i <= std::min(grid_h - 1, ci + hi); ++i)
        for (int64_t j = std::max<int64_t>(0, cj - lo); j <= std::min(grid_w - 1, cj + hi); ++j)
          if (!kept[i * grid_w + j]) fresh.push_back(i * grid_w + j);
      // All of the block when it fits; otherwise a random subset of its new patches.
      const auto take = std::min<int64_t>(int64_t(fresh.size()), target - count);
      for (int64_t k = 0; k < take; ++k) {
        std::swap(fresh[k], fresh[rng.randint(k, int64_t(fresh.size()) - 1)]);
        kept[fresh[k]] = 1;
      }
      count += take;
    }
    for (int64_t i = 0; i < n; ++i) out_data[b * n + i] = kept[i] == 0;
  }
  return out;
}

}  // namespace data2vec::vision
