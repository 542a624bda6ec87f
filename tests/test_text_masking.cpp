// BERT masking of token ids (text/masking.h): exact selection counts, the 80/10/10 split, and
// special / padding tokens left alone.
#include <cmath>

#include "data2vec/text/masking.h"
#include "support.h"

namespace {

using data2vec::text::bert_mask;
using data2vec::text::TextMaskOptions;

constexpr int64_t kBos = 0, kPad = 1, kEos = 2, kUnk = 3, kMask = 4;
const std::vector<int64_t> kSpecial = {kBos, kPad, kEos, kUnk, kMask};

// Rows <s> w... </s> <pad>...; lengths count <s> and </s>. Words are drawn from [5, vocab).
struct Rows {
  torch::Tensor ids;      // [B,T]
  torch::Tensor padding;  // [B,T] bool
};

Rows make_rows(const std::vector<int64_t>& lengths, int64_t time, int64_t vocab, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto b = static_cast<int64_t>(lengths.size());
  auto ids = torch::randint(5, vocab, {b, time}, gen, torch::kLong);
  auto padding = torch::zeros({b, time}, torch::kBool);
  for (int64_t i = 0; i < b; ++i) {
    const auto n = lengths[i];
    ids[i][0] = kBos;
    ids[i][n - 1] = kEos;
    ids[i].slice(0, n).fill_(kPad);
    padding[i].slice(0, n).fill_(true);
  }
  return {ids, padding};
}

}  // namespace

TEST(TextMasking, ExactSelectionCounts) {
  // Eligible (real, non-special) counts: 98 -> round(14.7)=15, 10 -> round(1.5)=2 (half away from
  // zero), 3 -> round(0.45)=0 -> at least 1, 0 -> none, 21 with one <unk> -> 20 -> 3.
  const std::vector<int64_t> lengths = {100, 12, 5, 2, 23};
  auto rows = make_rows(lengths, 100, 1000, 1);
  rows.ids[4][7] = kUnk;
  const std::vector<int64_t> expected = {15, 2, 1, 0, 3};
  auto gen = at::detail::createCPUGenerator(7);
  for (int draw = 0; draw < 20; ++draw) {
    const auto out =
        bert_mask(rows.ids, rows.padding, kSpecial, kMask, 1000, TextMaskOptions(), gen);
    ASSERT_EQ(out.mask.sizes(), rows.ids.sizes());
    ASSERT_EQ(out.mask.scalar_type(), torch::kBool);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(out.mask[i].sum().item<int64_t>(), expected[i]) << "row " << i;
    }
  }
}

TEST(TextMasking, SpecialAndPaddingNeverSelectedNorChanged) {
  auto rows = make_rows({40, 17, 33, 8}, 40, 50, 2);
  rows.ids[0][5] = kUnk;
  rows.ids[2][9] = kUnk;
  const auto special = torch::isin(rows.ids, torch::tensor(kSpecial)) | rows.padding;
  auto gen = at::detail::createCPUGenerator(3);
  for (int draw = 0; draw < 200; ++draw) {
    const auto out = bert_mask(rows.ids, rows.padding, kSpecial, kMask, 50, TextMaskOptions(), gen);
    EXPECT_FALSE((out.mask & special).any().item<bool>()) << "a special/padding token was selected";
    // Only selected positions may change.
    EXPECT_TRUE(out.ids.masked_select(~out.mask).equal(rows.ids.masked_select(~out.mask)));
    // Random replacements are never special ids (only <mask> itself may appear).
    const auto changed = out.mask & (out.ids != rows.ids) & (out.ids != kMask);
    const auto replaced = out.ids.masked_select(changed);
    EXPECT_FALSE(torch::isin(replaced, torch::tensor(kSpecial)).any().item<bool>());
    EXPECT_TRUE((replaced >= 0).all().item<bool>() && (replaced < 50).all().item<bool>());
  }
}

TEST(TextMasking, EightyTenTenSplit) {
  const int64_t vocab = 1000;
  std::vector<int64_t> lengths(32, 256);
  auto rows = make_rows(lengths, 256, vocab, 4);
  auto gen = at::detail::createCPUGenerator(5);
  int64_t selected = 0, masked = 0, random = 0, kept = 0;
  for (int draw = 0; draw < 10; ++draw) {
    const auto out =
        bert_mask(rows.ids, rows.padding, kSpecial, kMask, vocab, TextMaskOptions(), gen);
    const auto original = rows.ids.masked_select(out.mask);
    const auto student = out.ids.masked_select(out.mask);
    selected += out.mask.sum().item<int64_t>();
    masked += (student == kMask).sum().item<int64_t>();
    kept += (student == original).sum().item<int64_t>();
    random += ((student != kMask) & (student != original)).sum().item<int64_t>();
  }
  ASSERT_EQ(selected, 10 * 32 * std::llround(0.15 * 254));
  // ~12k selections: the std of each fraction is < 0.004; a random draw equals the original with
  // probability 1/995, which moves ~0.0001 from "random" to "kept".
  EXPECT_NEAR(double(masked) / selected, 0.8, 0.015);
  EXPECT_NEAR(double(random) / selected, 0.1, 0.015);
  EXPECT_NEAR(double(kept) / selected, 0.1, 0.015);
}

TEST(TextMasking, OptionsChangeTheSplit) {
  auto rows = make_rows(std::vector<int64_t>(8, 64), 64, 100, 6);
  auto gen = at::detail::createCPUGenerator(8);
  // All selected become <mask>.
  auto out = bert_mask(rows.ids, rows.padding, kSpecial, kMask, 100,
                       TextMaskOptions().random_token_prob(0).leave_unmasked_prob(0), gen);
  EXPECT_TRUE((out.ids.masked_select(out.mask) == kMask).all().item<bool>());
  // All selected kept: the ids are untouched, the mask still marks them (the loss covers them).
  out =
      bert_mask(rows.ids, rows.padding, kSpecial, kMask, 100,
                TextMaskOptions().mask_prob(0.5).random_token_prob(0).leave_unmasked_prob(1), gen);
  EXPECT_TRUE(out.ids.equal(rows.ids));
  EXPECT_EQ(out.mask.sum().item<int64_t>(), 8 * 31);
}

TEST(TextMasking, SameGeneratorSeedSameMask) {
  auto rows = make_rows({30, 20}, 30, 100, 9);
  auto g1 = at::detail::createCPUGenerator(11);
  auto g2 = at::detail::createCPUGenerator(11);
  const auto a = bert_mask(rows.ids, rows.padding, kSpecial, kMask, 100, TextMaskOptions(), g1);
  const auto b = bert_mask(rows.ids, rows.padding, kSpecial, kMask, 100, TextMaskOptions(), g2);
  EXPECT_TRUE(a.mask.equal(b.mask));
  EXPECT_TRUE(a.ids.equal(b.ids));
}

TEST(TextMasking, NoPaddingMaskMeansAllReal) {
  auto rows = make_rows({20, 20}, 20, 100, 10);
  auto gen = at::detail::createCPUGenerator(12);
  const auto out =
      bert_mask(rows.ids, torch::Tensor(), kSpecial, kMask, 100, TextMaskOptions(), gen);
  EXPECT_EQ(out.mask.sum().item<int64_t>(), 2 * std::llround(0.15 * 18));
}

TEST(TextMasking, RejectsBadArguments) {
  auto rows = make_rows({10}, 10, 100, 13);
  auto gen = at::detail::createCPUGenerator(14);
  EXPECT_THROW(bert_mask(rows.ids.to(torch::kInt), rows.padding, kSpecial, kMask, 100,
                         TextMaskOptions(), gen),
               c10::Error);
  EXPECT_THROW(bert_mask(rows.ids, rows.padding, kSpecial, kMask, 100,
                         TextMaskOptions().random_token_prob(0.6).leave_unmasked_prob(0.6), gen),
               c10::Error);
}
