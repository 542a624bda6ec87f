// Linear probe: separable blobs, random labels, L2 choice, and L-BFGS vs AdamW on one objective.
#include "data2vec/eval/linear_probe.h"
#include "support.h"

namespace {

using namespace data2vec::eval;
using data2vec::testing::tensors_close;

struct Split {
  torch::Tensor x, y;
};

// Gaussian blobs: class c around centre c (|centre| ~ 4 sigma apart), `counts[c]` rows each.
Split blobs(const torch::Tensor& centres, const std::vector<int64_t>& counts, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<torch::Tensor> xs, ys;
  for (size_t c = 0; c < counts.size(); ++c) {
    const auto c64 = static_cast<int64_t>(c);
    xs.push_back(centres[c64] + torch::randn({counts[c], centres.size(1)}, gen));
    ys.push_back(torch::full({counts[c]}, c64, torch::kLong));
  }
  return {torch::cat(xs), torch::cat(ys)};
}

torch::Tensor centres(int64_t classes, int64_t dim, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randn({classes, dim}, gen) * 3.0 + 5.0;  // offset: standardisation must cope
}

TEST(LinearProbe, SeparableBlobs) {
  auto c = centres(4, 16, 1);
  auto train = blobs(c, {100, 100, 100, 100}, 2);
  auto test = blobs(c, {50, 50, 50, 50}, 3);
  auto r = linear_probe(train.x, train.y, test.x, test.y);
  EXPECT_GT(r.test_acc, 0.95);
  EXPECT_GT(r.train_acc, 0.95);
  EXPECT_EQ(r.num_train, 400);
  EXPECT_EQ(r.num_val, 40);
  EXPECT_EQ(r.num_test, 200);
  ASSERT_EQ(r.val_acc.size(), r.l2_grid.size());
  const double best = *std::max_element(r.val_acc.begin(), r.val_acc.end());
  const auto at = std::find(r.l2_grid.begin(), r.l2_grid.end(), r.chosen_l2);
  ASSERT_NE(at, r.l2_grid.end());
  EXPECT_EQ(r.val_acc[static_cast<size_t>(at - r.l2_grid.begin())], best);
  // Ties go to the larger L2.
  for (size_t i = 0; i < r.l2_grid.size(); ++i) {
    if (r.val_acc[i] == best) {
      EXPECT_LE(r.l2_grid[i], r.chosen_l2);
    }
  }
  EXPECT_EQ(r.classifier.weight.sizes(), (std::vector<int64_t>{4, 16}));
}

TEST(LinearProbe, RejectsAnL2ThatCrushesTheWeights) {
  // 80/20 classes: with a huge L2 the weights vanish and the unpenalised bias predicts the
  // majority class (~80%), while a small L2 separates the blobs (~100%).
  auto c = centres(2, 8, 4);
  auto train = blobs(c, {240, 60}, 5);
  auto test = blobs(c, {80, 20}, 6);
  auto r = linear_probe(train.x, train.y, test.x, test.y,
                        LinearProbeOptions().l2_grid({1e-4, 1e3}).val_fraction(0.2));
  ASSERT_EQ(r.val_acc.size(), 2u);
  EXPECT_GT(r.val_acc[0], r.val_acc[1]);
  EXPECT_LT(r.val_acc[1], 0.9);
  EXPECT_EQ(r.chosen_l2, 1e-4);
  EXPECT_GT(r.test_acc, 0.95);
}

TEST(LinearProbe, RandomLabelsStayNearChance) {
  auto gen = at::detail::createCPUGenerator(8);
  auto train_x = torch::randn({300, 32}, gen), test_x = torch::randn({400, 32}, gen);
  auto train_y = torch::randint(0, 4, {300}, gen), test_y = torch::randint(0, 4, {400}, gen);
  auto r = linear_probe(train_x, train_y, test_x, test_y);
  // Chance is 0.25; the std of a 400-row accuracy at chance is ~0.022.
  EXPECT_NEAR(r.test_acc, 0.25, 0.1);
}

TEST(LinearProbe, LbfgsAndAdamWMinimiseTheSameObjective) {
  auto c = centres(3, 6, 9);
  auto train = blobs(c, {30, 30, 30}, 10);
  // Label noise keeps the optimum finite and well conditioned.
  train.y.slice(0, 0, 90, 9).fill_(2);
  const double l2 = 1e-2;
  auto lbfgs = fit_linear_classifier(train.x, train.y, 3, l2);
  auto adamw = fit_linear_classifier(
      train.x, train.y, 3, l2,
      LinearProbeOptions().optimizer(ProbeOptimizer::kAdamW).adamw_steps(1500).adamw_lr(2e-2));
  // The softmax objective is invariant to a shift shared by all classes; compare centred weights.
  auto centred = [](const torch::Tensor& w) { return w - w.mean(0, true); };
  EXPECT_TRUE(tensors_close("weights", centred(adamw.weight), centred(lbfgs.weight), 5e-3));
  EXPECT_TRUE(tensors_close("bias", centred(adamw.bias.unsqueeze(1)),
                            centred(lbfgs.bias.unsqueeze(1)), 5e-3));
  // Standardisation uses the fitted rows' statistics.
  EXPECT_TRUE(tensors_close("mean", lbfgs.mean, train.x.mean(0), 1e-5));
}

TEST(LinearProbe, AdamWOnBlobs) {
  auto c = centres(4, 16, 11);
  auto train = blobs(c, {60, 60, 60, 60}, 12);
  auto test = blobs(c, {30, 30, 30, 30}, 13);
  auto r = linear_probe(train.x, train.y, test.x, test.y,
                        LinearProbeOptions().optimizer(ProbeOptimizer::kAdamW).adamw_steps(200));
  EXPECT_GT(r.test_acc, 0.95);
}

TEST(LinearProbe, BadInputsThrow) {
  auto x = torch::randn({10, 3});
  auto y = torch::zeros({10}, torch::kLong);
  y[4] = -1;
  EXPECT_THROW(linear_probe(x, y, x, y), c10::Error);
  EXPECT_THROW(
      linear_probe(x, torch::zeros({9}, torch::kLong), x, torch::zeros({10}, torch::kLong)),
      c10::Error);
  EXPECT_THROW(linear_probe(x, torch::zeros({10}, torch::kLong), x,
                            torch::zeros({10}, torch::kLong), LinearProbeOptions().val_fraction(0)),
               c10::Error);
}

}  // namespace
