// BEiT block masking: exact counts, determinism, blockiness, and the CLS column via apply_mask.
#include <gtest/gtest.h>

#include "data2vec/core/masking.h"
#include "data2vec/vision/encoder.h"
#include "data2vec/vision/masking.h"
#include "support.h"

using data2vec::vision::block_mask;
using data2vec::vision::block_mask_count;
using data2vec::vision::BlockMaskOptions;
using data2vec::vision::scaled_min_mask_patches;

namespace {

at::Generator seeded(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

// Mean, over masked patches, of how many of their 4-neighbours are masked. mask [B, gh*gw].
double mean_masked_neighbours(const torch::Tensor& mask, int64_t gh, int64_t gw) {
  const auto grid = mask.view({-1, gh, gw}).to(torch::kLong);   // [B,gh,gw]
  auto padded = torch::constant_pad_nd(grid, {1, 1, 1, 1}, 0);  // [B,gh+2,gw+2]
  const auto neighbours = padded.slice(1, 0, gh).slice(2, 1, gw + 1) +
                          padded.slice(1, 2, gh + 2).slice(2, 1, gw + 1) +
                          padded.slice(1, 1, gh + 1).slice(2, 0, gw) +
                          padded.slice(1, 1, gh + 1).slice(2, 2, gw + 2);  // [B,gh,gw]
  return (neighbours * grid).sum().item<double>() / grid.sum().item<double>();
}

}  // namespace

TEST(VisionMasking, CountIsRoundedRatio) {
  EXPECT_EQ(block_mask_count(196, 0.6), 118);  // 117.6
  EXPECT_EQ(block_mask_count(49, 0.6), 29);    // 29.4
  EXPECT_EQ(scaled_min_mask_patches(196), 16);
  EXPECT_EQ(scaled_min_mask_patches(49), 4);
  EXPECT_EQ(scaled_min_mask_patches(4), 1);
}

TEST(VisionMasking, ExactCountForManySeedsAndGrids) {
  struct Case {
    int64_t gh, gw;
    double ratio;
  };
  for (const Case c :
       {Case{14, 14, 0.6}, Case{7, 7, 0.6}, Case{8, 5, 0.4}, Case{2, 2, 0.5}, Case{16, 16, 0.75}}) {
    const int64_t n = c.gh * c.gw;
    const auto options = BlockMaskOptions().mask_ratio(c.ratio).min_patches(
        std::min(scaled_min_mask_patches(n), block_mask_count(n, c.ratio)));
    for (uint64_t seed = 0; seed < 20; ++seed) {
      auto gen = seeded(seed);
      const auto mask = block_mask(16, c.gh, c.gw, options, gen);
      ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{16, n}));
      ASSERT_EQ(mask.scalar_type(), torch::kBool);
      const auto counts = mask.sum(1);
      EXPECT_TRUE((counts == block_mask_count(n, c.ratio)).all().item<bool>())
          << c.gh << "x" << c.gw << " seed " << seed << ": counts " << counts;
    }
  }
  auto gen = seeded(1);
  EXPECT_EQ(block_mask(3, 14, 14, BlockMaskOptions(), gen).sum(1)[0].item<int64_t>(), 118);
  EXPECT_EQ(block_mask(3, 7, 7, BlockMaskOptions().min_patches(4), gen).sum(1)[2].item<int64_t>(),
            29);
}

TEST(VisionMasking, DeterministicPerGeneratorState) {
  auto a = seeded(7), b = seeded(7), c = seeded(8);
  const auto options = BlockMaskOptions();
  const auto ma = block_mask(8, 14, 14, options, a);
  EXPECT_TRUE(ma.equal(block_mask(8, 14, 14, options, b)));
  EXPECT_FALSE(ma.equal(block_mask(8, 14, 14, options, c)));
  // Images of one batch get different masks, and the next call draws fresh ones.
  EXPECT_FALSE(ma[0].equal(ma[1]));
  EXPECT_FALSE(ma.equal(block_mask(8, 14, 14, options, a)));
}

TEST(VisionMasking, MasksAreBlocky) {
  for (const auto& [g, min_patches] : {std::pair<int64_t, int64_t>{14, 16}, {7, 4}}) {
    auto gen = seeded(3);
    const auto blocky = block_mask(64, g, g, BlockMaskOptions().min_patches(min_patches), gen);
    const auto uniform = data2vec::random_mask(64, g * g, 0.6, torch::Tensor(), gen);
    ASSERT_TRUE(uniform.sum(1).equal(blocky.sum(1)));  // same counts: a fair comparison
    const double block_nb = mean_masked_neighbours(blocky, g, g);
    const double uniform_nb = mean_masked_neighbours(uniform, g, g);
    // Measured (seed 3, 64 masks): 14x14 3.5 vs 2.2; 7x7 3.0 vs 2.0.
    EXPECT_GT(block_nb, uniform_nb + 0.6)
        << g << "x" << g << ": block " << block_nb << " vs uniform " << uniform_nb;
  }
}

TEST(VisionMasking, RejectsBlocksLargerThanTarget) {
  auto gen = seeded(0);
  try {
    block_mask(1, 7, 7, BlockMaskOptions().min_patches(30), gen);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("min_patches = 30"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("= 4"), std::string::npos) << e.what();  // the hint
  }
}

TEST(VisionMasking, ApplyMaskNeverMasksCls) {
  auto options =
      data2vec::vision::vision_preset("fmnist-tiny").depth(1).dim(16).num_heads(2).mlp_dim(32);
  auto encoder = data2vec::vision::make_vision_encoder(options);
  data2vec::EncoderInput input;
  input.source = torch::rand({12, 1, 28, 28});
  auto gen = seeded(5);
  const auto masked = encoder->apply_mask(input, gen);
  ASSERT_EQ(masked.mask.sizes(), (std::vector<int64_t>{12, 50}));
  EXPECT_FALSE(masked.mask.select(1, 0).any().item<bool>());
  EXPECT_TRUE((masked.mask.sum(1) == 29).all().item<bool>());
  EXPECT_TRUE(masked.student.source.equal(input.source));  // images reach the student unchanged
}
