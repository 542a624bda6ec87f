// Span masking of audio frames (fairseq compute_mask_indices semantics).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data2vec/audio/masking.h"
#include "support.h"

using data2vec::audio::span_mask;
using data2vec::audio::SpanMaskOptions;

namespace {

torch::Tensor lengths_of(std::vector<int64_t> lengths) {
  return torch::tensor(lengths, torch::kLong);
}

// Lengths of the maximal runs of true in a [T] bool mask.
std::vector<int64_t> runs(const torch::Tensor& row) {
  std::vector<int64_t> out;
  int64_t run = 0;
  auto a = row.accessor<bool, 1>();
  for (int64_t t = 0; t < row.size(0); ++t) {
    if (a[t]) {
      ++run;
    } else if (run > 0) {
      out.push_back(run);
      run = 0;
    }
  }
  if (run > 0) out.push_back(run);
  return out;
}

}  // namespace

// Reference means: a numpy transcription of fairseq's compute_mask_indices (mask_prob 0.65,
// length 10, min_masks 1), 4000 draws: 0.4913 for one example of 500 frames, 0.4601 for four
// examples of 500 frames (trimmed to the batch minimum). The standard error of a 400-draw mean
// is ~0.001, so 0.01 is ten of them.
TEST(AudioSpanMask, MaskedFractionMatchesFairseq) {
  auto gen = at::detail::createCPUGenerator(11);
  double single = 0.0, batch4 = 0.0;
  const int draws = 400;
  for (int i = 0; i < draws; ++i) {
    single += span_mask(lengths_of({500}), 500, SpanMaskOptions(), gen)
                  .to(torch::kFloat64)
                  .mean()
                  .item<double>();
    batch4 += span_mask(lengths_of({500, 500, 500, 500}), 500, SpanMaskOptions(), gen)
                  .to(torch::kFloat64)
                  .mean()
                  .item<double>();
  }
  EXPECT_NEAR(single / draws, 0.4913, 0.01);
  EXPECT_NEAR(batch4 / draws, 0.4601, 0.01);
}

TEST(AudioSpanMask, SameCountPerExampleAndPaddingNeverMasked) {
  auto gen = at::detail::createCPUGenerator(3);
  const std::vector<int64_t> lengths{500, 300, 120, 480, 37};
  const int64_t time = 520;
  for (int i = 0; i < 50; ++i) {
    const auto mask = span_mask(lengths_of(lengths), time, SpanMaskOptions(), gen);
    ASSERT_EQ(mask.sizes(), torch::IntArrayRef({5, time}));
    ASSERT_EQ(mask.scalar_type(), torch::kBool);
    const auto counts = mask.sum(1);
    EXPECT_GT(counts[0].item<int64_t>(), 0);
    EXPECT_TRUE(torch::equal(counts, counts[0].expand_as(counts))) << counts;
    for (size_t b = 0; b < lengths.size(); ++b) {
      EXPECT_FALSE(mask[b].slice(0, lengths[b]).any().item<bool>()) << "padding masked in " << b;
    }
  }
}

TEST(AudioSpanMask, UntrimmedMasksAreWholeSpans) {
  // With one example nothing is trimmed: every run of masked frames is one or more whole spans.
  auto gen = at::detail::createCPUGenerator(5);
  for (int i = 0; i < 20; ++i) {
    const auto mask = span_mask(lengths_of({300}), 300, SpanMaskOptions(), gen);
    for (const int64_t run : runs(mask[0])) EXPECT_GE(run, 10);
    EXPECT_FALSE(mask[0][299].item<bool>()) << "fairseq never starts a span at T - 10";
  }
}

TEST(AudioSpanMask, AtLeastOneSpan) {
  // int(0.01 * 15 / 10 + U) = 0 spans, raised to min_masks = 1: exactly one span of 10 frames.
  auto gen = at::detail::createCPUGenerator(7);
  for (int i = 0; i < 20; ++i) {
    const auto mask = span_mask(lengths_of({15, 15}), 20, SpanMaskOptions().mask_prob(0.01), gen);
    for (int64_t b = 0; b < 2; ++b) {
      EXPECT_EQ(runs(mask[b]), std::vector<int64_t>{10});
    }
  }
}

TEST(AudioSpanMask, DeterministicPerSeed) {
  auto a = at::detail::createCPUGenerator(42);
  auto b = at::detail::createCPUGenerator(42);
  auto c = at::detail::createCPUGenerator(43);
  const auto lengths = lengths_of({400, 350, 200});
  const auto ma = span_mask(lengths, 400, SpanMaskOptions(), a);
  const auto mb = span_mask(lengths, 400, SpanMaskOptions(), b);
  const auto mc = span_mask(lengths, 400, SpanMaskOptions(), c);
  EXPECT_TRUE(torch::equal(ma, mb));
  EXPECT_FALSE(torch::equal(ma, mc));
}

TEST(AudioSpanMask, EmptyExampleAndUntrimmedOption) {
  auto gen = at::detail::createCPUGenerator(1);
  // An example without real frames masks nothing, and so (same count) neither does the batch.
  const auto empty = span_mask(lengths_of({0, 200}), 200, SpanMaskOptions(), gen);
  EXPECT_EQ(empty.sum().item<int64_t>(), 0);
  // Without require_same_masks each example keeps its own count.
  bool differed = false;
  for (int i = 0; i < 20 && !differed; ++i) {
    const auto mask =
        span_mask(lengths_of({400, 100}), 400, SpanMaskOptions().require_same_masks(false), gen);
    const auto counts = mask.sum(1);
    differed = counts[0].item<int64_t>() != counts[1].item<int64_t>();
  }
  EXPECT_TRUE(differed);
}

TEST(AudioSpanMask, RejectsBadArguments) {
  auto gen = at::detail::createCPUGenerator(1);
  EXPECT_THROW(span_mask(lengths_of({10}), 5, SpanMaskOptions(), gen), c10::Error);
  EXPECT_THROW(span_mask(lengths_of({10}), 10, SpanMaskOptions().mask_length(0), gen), c10::Error);
  EXPECT_THROW(span_mask(lengths_of({10}), 10, SpanMaskOptions().mask_prob(0.0), gen), c10::Error);
}
