// core/masking.h: random_mask counts, padding and determinism.
#include <cmath>

#include "data2vec/core/masking.h"
#include "support.h"

namespace data2vec {
namespace {

// Example b has real length lengths[b]; padding sits at the end except for example 1, whose
// padding is scattered (even steps), to catch masks that assume padding is a suffix.
torch::Tensor make_padding(int64_t time) {
  auto padding = torch::zeros({5, time}, torch::kBool);
  // example 0: no padding (20 real)
  for (int64_t t = 0; t < 10; t += 2) padding[1][t] = true;  // example 1: 10 real, scattered
  for (int64_t t = 15; t < time; ++t) padding[1][t] = true;
  padding[2].slice(0, 7).fill_(true);  // example 2: 7 real
  padding[3].slice(0, 1).fill_(true);  // example 3: 1 real
  padding[4].fill_(true);              // example 4: all padding
  return padding;
}

TEST(RandomMask, ExactCountsNeverOnPadding) {
  const int64_t time = 20;
  const auto padding = make_padding(time);
  const std::vector<int64_t> lengths = {20, 10, 7, 1, 0};
  EXPECT_TRUE(torch::equal(real_lengths(padding, 5, time), torch::tensor(lengths)));

  for (double ratio : {0.4, 0.6}) {  // no .5 ties
    for (uint64_t seed = 0; seed < 10; ++seed) {
      auto gen = at::detail::createCPUGenerator(seed);
      const auto mask = random_mask(5, time, ratio, padding, gen);
      ASSERT_EQ(mask.sizes(), torch::IntArrayRef({5, time}));
      ASSERT_EQ(mask.scalar_type(), torch::kBool);
      EXPECT_FALSE((mask & padding).any().item<bool>()) << "masked a padded step, seed " << seed;
      for (int64_t b = 0; b < 5; ++b) {
        const int64_t length = lengths[b];
        const int64_t expected =
            length == 0 ? 0 : std::max<int64_t>(1, std::llround(ratio * double(length)));
        EXPECT_EQ(mask[b].sum().item<int64_t>(), expected)
            << "example " << b << " length " << length << " ratio " << ratio;
      }
    }
  }
  // Spelled out for ratio 0.4: 8 of 20, 4 of 10, 3 of 7 (2.8), at least 1 of 1, none of 0.
  auto gen = at::detail::createCPUGenerator(3);
  const auto counts = random_mask(5, time, 0.4, padding, gen).sum(1);
  EXPECT_TRUE(torch::equal(
      counts, torch::tensor({int64_t{8}, int64_t{4}, int64_t{3}, int64_t{1}, int64_t{0}})))
      << counts;
}

TEST(RandomMask, WithoutPaddingMask) {
  auto gen = at::detail::createCPUGenerator(7);
  const auto mask = random_mask(3, 10, 0.3, {}, gen);
  EXPECT_TRUE(torch::equal(mask.sum(1), torch::full({3}, 3, torch::kLong)));
  EXPECT_TRUE(torch::equal(real_lengths({}, 3, 10), torch::full({3}, 10, torch::kLong)));
}

TEST(RandomMask, DeterministicForAGeneratorSeed) {
  const auto padding = make_padding(20);
  auto g1 = at::detail::createCPUGenerator(42);
  auto g2 = at::detail::createCPUGenerator(42);
  auto g3 = at::detail::createCPUGenerator(43);
  const auto a = random_mask(5, 20, 0.5, padding, g1);
  const auto b = random_mask(5, 20, 0.5, padding, g2);
  const auto c = random_mask(5, 20, 0.5, padding, g3);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c)) << "different seeds gave the same mask";
  // The generator advances: a second draw from the same generator differs.
  EXPECT_FALSE(torch::equal(random_mask(5, 20, 0.5, padding, g1), a));
}

TEST(RandomMask, RoughlyUniformOverRealPositions) {
  // Over many draws each real step is masked about ratio of the time (no position bias).
  auto gen = at::detail::createCPUGenerator(5);
  auto padding = torch::zeros({1, 12}, torch::kBool);
  padding[0].slice(0, 10).fill_(true);
  auto freq = torch::zeros({12}, torch::kFloat64);
  const int draws = 2000;
  for (int i = 0; i < draws; ++i)
    freq += random_mask(1, 12, 0.5, padding, gen)[0].to(torch::kFloat64);
  freq /= draws;
  for (int64_t t = 0; t < 10; ++t) EXPECT_NEAR(freq[t].item<double>(), 0.5, 0.06) << "step " << t;
  EXPECT_EQ(freq[10].item<double>(), 0.0);
  EXPECT_EQ(freq[11].item<double>(), 0.0);
}

TEST(RandomMask, RejectsBadRatio) {
  auto gen = at::detail::createCPUGenerator(0);
  EXPECT_THROW(random_mask(2, 5, 0.0, {}, gen), c10::Error);
  EXPECT_THROW(random_mask(2, 5, 1.0, {}, gen), c10::Error);
}

}  // namespace
}  // namespace data2vec
