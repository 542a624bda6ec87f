// Teacher targets (arXiv 2202.03555, sec. 3): top-K selection and the normalisations of
// core/targets.h, each checked against a hand computation.
#include <cmath>
#include <limits>
#include <vector>

#include "data2vec/core/targets.h"
#include "support.h"

namespace data2vec {
namespace {

using data2vec::testing::tensors_close;

constexpr double kEps = 1e-5;

// Instance norm of one example's real steps by explicit loops, in double: x [T,D], real [T] bool.
torch::Tensor instance_norm_by_hand(const torch::Tensor& x, const std::vector<bool>& real) {
  const auto t_len = x.size(0), d_len = x.size(1);
  auto xa = x.to(torch::kFloat64).contiguous();
  auto out = torch::zeros({t_len, d_len}, torch::kFloat64);
  auto a = xa.accessor<double, 2>();
  auto o = out.accessor<double, 2>();
  for (int64_t d = 0; d < d_len; ++d) {
    double sum = 0.0, count = 0.0;
    for (int64_t t = 0; t < t_len; ++t) {
      if (real[t]) sum += a[t][d], count += 1.0;
    }
    const double mean = sum / count;
    double var = 0.0;
    for (int64_t t = 0; t < t_len; ++t) {
      if (real[t]) var += (a[t][d] - mean) * (a[t][d] - mean);
    }
    var /= count;
    for (int64_t t = 0; t < t_len; ++t) {
      if (real[t]) o[t][d] = (a[t][d] - mean) / std::sqrt(var + kEps);
    }
  }
  return out;
}

// Parameter-free layer norm over D by explicit loops, in double: x [N,D].
torch::Tensor layer_norm_by_hand(const torch::Tensor& x) {
  auto xa = x.to(torch::kFloat64).contiguous();
  auto out = torch::empty_like(xa);
  auto a = xa.accessor<double, 2>();
  auto o = out.accessor<double, 2>();
  for (int64_t n = 0; n < xa.size(0); ++n) {
    double mean = 0.0, var = 0.0;
    for (int64_t d = 0; d < xa.size(1); ++d) mean += a[n][d];
    mean /= double(xa.size(1));
    for (int64_t d = 0; d < xa.size(1); ++d) var += (a[n][d] - mean) * (a[n][d] - mean);
    var /= double(xa.size(1));
    for (int64_t d = 0; d < xa.size(1); ++d) o[n][d] = (a[n][d] - mean) / std::sqrt(var + kEps);
  }
  return out;
}

std::vector<torch::Tensor> random_layers(int64_t num_layers, int64_t b, int64_t t, int64_t d) {
  std::vector<torch::Tensor> layers;
  for (int64_t i = 0; i < num_layers; ++i) {
    // Each layer with its own channel offsets and scales, so per-channel stats matter.
    layers.push_back(torch::randn({b, t, d}) * torch::rand({1, 1, d}) * 3 +
                     torch::randn({1, 1, d}));
  }
  return layers;
}

// The two-pass variance against torch's in double, over the first, a middle and the last dim,
// biased and unbiased, on values with a large common offset (where a one-pass sum of squares
// in float would cancel).
TEST(Variance, MatchesTorchInDoubleOverAnyDim) {
  torch::manual_seed(4);
  const auto x = torch::randn({6, 9, 5}) * torch::rand({1, 1, 5}) * 3 + 1000;
  for (const int64_t dim : {0, 1, 2}) {
    for (const bool unbiased : {false, true}) {
      const auto reference =
          x.to(torch::kFloat64).var(dim, unbiased, /*keepdim=*/true).to(torch::kFloat32);
      const auto got = variance(x, dim, unbiased);
      ASSERT_EQ(got.sizes(), reference.sizes());
      EXPECT_TRUE(tensors_close(
          "variance dim " + std::to_string(dim) + (unbiased ? " unbiased" : " biased"), got,
          reference, 1e-3))
          << (got - reference).abs().max().item<double>();
    }
  }
}

TEST(InstanceNorm, MatchesLoopsAndTorchWithoutPadding) {
  torch::manual_seed(0);
  const auto x = torch::randn({3, 7, 5}) * 2 + 1;  // [B,T,D]
  const auto y = instance_norm_over_time(x, {}, kEps);
  for (int64_t b = 0; b < 3; ++b) {
    EXPECT_TRUE(tensors_close("instance norm loops b" + std::to_string(b), y[b],
                              instance_norm_by_hand(x[b], std::vector<bool>(7, true)), 1e-5));
  }
  // torch's own instance norm on [B,D,T] normalises over time per (example, channel).
  const auto reference = torch::instance_norm(x.transpose(1, 2), {}, {}, {}, {},
                                              /*use_input_stats=*/true, 0.1, kEps, false)
                             .transpose(1, 2);
  EXPECT_TRUE(tensors_close("instance norm vs torch", y, reference, 1e-5));
  // Over time, per channel: each (example, channel) has zero mean and unit variance over T.
  EXPECT_TRUE(tensors_close("mean over T", y.mean(1), torch::zeros({3, 5}), 1e-5));
}

TEST(InstanceNorm, PaddingExcludedFromStatistics) {
  torch::manual_seed(1);
  const int64_t b = 2, t = 8, d = 4;
  auto x = torch::randn({b, t, d});
  auto padding = torch::zeros({b, t}, torch::kBool);
  padding[0].slice(0, 5).fill_(true);  // example 0: steps 5..7 padded
  padding[1][2] = true;                // example 1: a hole in the middle and the end
  padding[1][7] = true;
  const auto y = instance_norm_over_time(x, padding, kEps);

  for (int64_t i = 0; i < b; ++i) {
    std::vector<bool> real(t);
    for (int64_t j = 0; j < t; ++j) real[j] = !padding[i][j].item<bool>();
    EXPECT_TRUE(tensors_close("padded instance norm b" + std::to_string(i), y[i],
                              instance_norm_by_hand(x[i], real), 1e-5));
  }
  // Same as torch's instance norm on the real steps alone (example 0 is a prefix).
  const auto ref0 = torch::instance_norm(x[0].slice(0, 0, 5).t().unsqueeze(0), {}, {}, {}, {}, true,
                                         0.1, kEps, false)[0]
                        .t();
  EXPECT_TRUE(tensors_close("prefix vs torch", y[0].slice(0, 0, 5), ref0, 1e-5));

  // Changing the padded values leaves the real positions exactly as they were; padding -> 0.
  auto x2 = x.clone();
  x2.masked_fill_(padding.unsqueeze(-1), 1000.0);
  const auto y2 = instance_norm_over_time(x2, padding, kEps);
  const auto real = (~padding).unsqueeze(-1).expand({b, t, d});
  EXPECT_TRUE(torch::equal(y2.masked_select(real), y.masked_select(real)));
  EXPECT_TRUE(tensors_close("padded -> 0", y2.masked_select(~real),
                            torch::zeros({(~real).sum().item<int64_t>()}), 0.0));
}

TEST(InstanceNorm, NonFinitePaddingDoesNotLeak) {
  // Padded steps may hold anything (an encoder's output there is not defined: e.g. inf after a
  // bf16 overflow, NaN from attention over an all-padded row). They must not reach real steps.
  torch::manual_seed(6);
  auto x = torch::randn({2, 6, 3});
  auto padding = torch::zeros({2, 6}, torch::kBool);
  padding[0].slice(0, 4).fill_(true);
  const auto clean = instance_norm_over_time(x, padding, kEps);
  x[0][4].fill_(std::numeric_limits<float>::quiet_NaN());
  x[0][5].fill_(std::numeric_limits<float>::infinity());
  const auto dirty = instance_norm_over_time(x, padding, kEps);
  EXPECT_TRUE(tensors_close("real steps of example 0", dirty[0].slice(0, 0, 4),
                            clean[0].slice(0, 0, 4), 0.0));
  EXPECT_TRUE(tensors_close("example 1", dirty[1], clean[1], 0.0));
  EXPECT_TRUE(torch::isfinite(dirty).all().item<bool>()) << "padded steps should come out as 0";
}

TEST(LayerNorm, OverChannelsMatchesLoops) {
  torch::manual_seed(2);
  const auto x = torch::randn({2, 5, 6}) * 3 - 1;  // [B,T,D]
  const auto y = layer_norm_over_channels(x, kEps);
  EXPECT_TRUE(tensors_close("layer norm", y.reshape({10, 6}),
                            layer_norm_by_hand(x.reshape({10, 6})), 1e-5));
}

TEST(BuildTargets, TopKUsesExactlyTheLastKLayers) {
  // Layer i is the constant 10^i: the average identifies which layers were used.
  const int64_t num_layers = 4;
  std::vector<torch::Tensor> layers;
  for (int64_t i = 0; i < num_layers; ++i) {
    layers.push_back(torch::full({2, 3, 4}, std::pow(10.0, double(i))));
  }
  const auto opts =
      TargetOptions().layer_norm_targets(TargetNorm::kNone).final_norm(TargetNorm::kNone);
  const std::vector<std::pair<int64_t, double>> cases = {
      {1, 1000.0}, {2, 550.0}, {3, 370.0}, {4, 277.75}};
  for (const auto& [k, expected] : cases) {
    auto o = opts;
    o.top_k_layers(k);
    const auto targets = build_targets(layers, {}, o);
    EXPECT_EQ(targets.sizes(), torch::IntArrayRef({2, 3, 4}));
    EXPECT_TRUE(
        tensors_close("top " + std::to_string(k), targets, torch::full({2, 3, 4}, expected), 1e-4));
  }
  auto too_many = opts;
  too_many.top_k_layers(num_layers + 1);
  EXPECT_THROW(build_targets(layers, {}, too_many), c10::Error);
  auto zero = opts;
  zero.top_k_layers(0);
  EXPECT_THROW(build_targets(layers, {}, zero), c10::Error);
}

TEST(BuildTargets, PerLayerInstanceNormThenAverage) {
  torch::manual_seed(3);
  const auto layers = random_layers(5, 2, 6, 4);
  auto padding = torch::zeros({2, 6}, torch::kBool);
  padding[1].slice(0, 4).fill_(true);
  const auto opts = TargetOptions()
                        .top_k_layers(3)
                        .layer_norm_targets(TargetNorm::kInstance)
                        .final_norm(TargetNorm::kNone);
  const auto targets = build_targets(layers, padding, opts);
  EXPECT_EQ(targets.scalar_type(), torch::kFloat32);
  EXPECT_FALSE(targets.requires_grad());
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<bool> real(6);
    for (int64_t j = 0; j < 6; ++j) real[j] = !padding[b][j].item<bool>();
    auto expected = torch::zeros({6, 4}, torch::kFloat64);
    for (int64_t i = 2; i < 5; ++i) expected += instance_norm_by_hand(layers[i][b], real);
    expected /= 3.0;
    EXPECT_TRUE(tensors_close("instance/none b" + std::to_string(b), targets[b], expected, 1e-5));
  }
}

TEST(BuildTargets, FinalNormAppliedAfterTheAverage) {
  torch::manual_seed(4);
  const auto layers = random_layers(4, 2, 5, 6);
  // Per-layer layer norm, then layer norm of the average.
  {
    const auto opts = TargetOptions()
                          .top_k_layers(2)
                          .layer_norm_targets(TargetNorm::kLayer)
                          .final_norm(TargetNorm::kLayer);
    const auto targets = build_targets(layers, {}, opts).reshape({10, 6});
    const auto avg = (layer_norm_by_hand(layers[2].reshape({10, 6})) +
                      layer_norm_by_hand(layers[3].reshape({10, 6}))) /
                     2.0;
    EXPECT_TRUE(tensors_close("layer/layer", targets, layer_norm_by_hand(avg), 1e-5));
    // Not the same as skipping the final norm: the average of normalised layers is not normalised.
    EXPECT_FALSE(tensors_close("layer/none differs", targets, avg, 1e-3));
  }
  // No per-layer norm, instance norm of the average (with padding).
  {
    auto padding = torch::zeros({2, 5}, torch::kBool);
    padding[0][4] = true;
    const auto opts = TargetOptions()
                          .top_k_layers(4)
                          .layer_norm_targets(TargetNorm::kNone)
                          .final_norm(TargetNorm::kInstance);
    const auto targets = build_targets(layers, padding, opts);
    const auto avg = (layers[0] + layers[1] + layers[2] + layers[3]).to(torch::kFloat64) / 4.0;
    for (int64_t b = 0; b < 2; ++b) {
      std::vector<bool> real(5);
      for (int64_t j = 0; j < 5; ++j) real[j] = !padding[b][j].item<bool>();
      EXPECT_TRUE(tensors_close("none/instance b" + std::to_string(b), targets[b],
                                instance_norm_by_hand(avg[b], real), 1e-5));
    }
  }
}

TEST(BuildTargets, Bf16LayersGiveFp32TargetsWithoutGradient) {
  torch::manual_seed(5);
  auto layers = random_layers(3, 2, 4, 8);
  std::vector<torch::Tensor> bf16;
  for (auto& l : layers) bf16.push_back(l.to(torch::kBFloat16).requires_grad_(true));
  const auto opts = TargetOptions().top_k_layers(2).layer_norm_targets(TargetNorm::kInstance);
  const auto targets = build_targets(bf16, {}, opts);
  EXPECT_EQ(targets.scalar_type(), torch::kFloat32);
  EXPECT_FALSE(targets.requires_grad());
  std::vector<torch::Tensor> fp32;
  for (auto& l : bf16) fp32.push_back(l.detach().to(torch::kFloat32));
  EXPECT_TRUE(tensors_close("bf16 vs fp32 of the same values", targets,
                            build_targets(fp32, {}, opts), 1e-6));
}

TEST(TargetNormNames, ParseAndPrint) {
  for (auto norm : {TargetNorm::kNone, TargetNorm::kInstance, TargetNorm::kLayer}) {
    EXPECT_EQ(parse_target_norm(to_string(norm)), norm);
  }
  EXPECT_THROW(parse_target_norm("batch_norm"), c10::Error);
}

}  // namespace
}  // namespace data2vec
