// nn::blocked_attention against the plain attention (torch::softmax over the whole [B,H,T,T]
// logits): outputs and the gradients of q, k, v and the logit bias, for odd lengths (up to
// kWholeRowTokens one query block whose probabilities backward keeps; above, 64-row blocks whose
// probabilities backward recomputes), shared and per-example biases and key padding; without
// gradients (nothing kept) the output is the same bits.
// With dropout: the backward rebuilds the forward's mask (a finite-difference check) and the
// expectation is kept.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "data2vec/nn/attention.h"
#include "support.h"

namespace data2vec::nn {
namespace {

using data2vec::testing::tensors_close;

// The plain twin: heads split by views, full logits, torch::softmax (as SelfAttention's
// kPlain path, with q already scaled).
torch::Tensor plain_attention(const torch::Tensor& qkv, int64_t h, const torch::Tensor& bias,
                              const torch::Tensor& pad) {
  const auto b = qkv.size(0), t = qkv.size(1), d = qkv.size(2) / 3, dh = d / h;
  const auto parts = qkv.view({b, t, 3, h, dh}).permute({2, 0, 3, 1, 4}).unbind(0);
  auto logits = torch::matmul(parts[0], parts[1].transpose(-2, -1));  // [B,H,T,T]
  // Padded keys get fp32's lowest value added (SelfAttention's plain path): the softmax of a fully
  // padded row is uniform and the gradient passes the addition.
  if (bias.defined()) logits = logits + bias;
  if (pad.defined())
    logits = logits + torch::zeros({b, 1, 1, t}).masked_fill(pad.view({b, 1, 1, t}),
                                                             std::numeric_limits<float>::lowest());
  const auto context = torch::matmul(torch::softmax(logits, -1), parts[2]);  // [B,H,T,Dh]
  return context.transpose(1, 2).reshape({b, t, d});
}

struct Case {
  int64_t b, t, h, dh;
  int bias_kind;  // 0 none, 1 [H,T,T], 2 [B,H,T,T], 3 [1,H,T,T]
  bool padding;
};

void expect_agree(const Case& c) {
  torch::manual_seed(c.t * 7 + c.bias_kind);
  const auto d = c.h * c.dh;
  const auto qkv = torch::randn({c.b, c.t, 3 * d});
  torch::Tensor bias;
  if (c.bias_kind == 1) bias = torch::randn({c.h, c.t, c.t});
  if (c.bias_kind == 2) bias = torch::randn({c.b, c.h, c.t, c.t});
  if (c.bias_kind == 3) bias = torch::randn({1, c.h, c.t, c.t});
  torch::Tensor pad;
  if (c.padding) {
    pad = torch::zeros({c.b, c.t}, torch::kBool);
    for (int64_t i = 0; i < c.b; ++i) pad[i].slice(0, c.t - (i * 3) % c.t).fill_(true);
    if (c.b > 2) pad[c.b - 1].fill_(true);  // a fully padded example stays finite
  }
  const std::string label = "B" + std::to_string(c.b) + " T" + std::to_string(c.t) + " H" +
                            std::to_string(c.h) + " bias" + std::to_string(c.bias_kind) +
                            (c.padding ? " padded" : "");
  auto qb = qkv.clone().requires_grad_(true), qp = qkv.clone().requires_grad_(true);
  auto bb = bias.defined() ? bias.clone().requires_grad_(true) : bias;
  auto bp = bias.defined() ? bias.clone().requires_grad_(true) : bias;
  const auto ob = blocked_attention(qb, c.h, bb, pad);
  const auto op = plain_attention(qp, c.h, bp, pad);
  ASSERT_TRUE(ob.isfinite().all().item<bool>()) << label;
  {
    torch::NoGradGuard no_grad;  // probabilities in scratch rows, none kept: the same arithmetic
    EXPECT_TRUE(torch::equal(blocked_attention(qkv, c.h, bias, pad), ob.detach())) << label;
  }
  EXPECT_TRUE(tensors_close(label + " output", ob, op, 1e-5));
  const auto go = torch::randn_like(ob);
  (ob * go).sum().backward();
  (op * go).sum().backward();
  const auto gb = qb.grad().view({c.b, c.t, 3, d}).unbind(2);
  const auto gp = qp.grad().view({c.b, c.t, 3, d}).unbind(2);
  // Gradients reach |g| ~ 5: fp32 sums in another order differ by a few 1e-6 there.
  EXPECT_TRUE(tensors_close(label + " q gradient", gb[0], gp[0], 3e-5));
  EXPECT_TRUE(tensors_close(label + " k gradient", gb[1], gp[1], 3e-5));
  EXPECT_TRUE(tensors_close(label + " v gradient", gb[2], gp[2], 3e-5));
  if (bias.defined()) {
    EXPECT_TRUE(tensors_close(label + " bias gradient", bb.grad(), bp.grad(), 3e-5));
  }
}

TEST(BlockedAttention, AgreesWithThePlainPathWithoutBiasOrPadding) {
  expect_agree({2, 7, 3, 8, 0, false});
  expect_agree({1, 1, 2, 4, 0, false});
}

TEST(BlockedAttention, AgreesAcrossQueryBlocks) {
  expect_agree({2, 63, 2, 16, 0, false});
  expect_agree({2, 65, 2, 16, 1, false});
  expect_agree({1, 130, 4, 8, 0, true});
  // Above kWholeRowTokens: 64-row blocks, a partial last one, probabilities recomputed.
  expect_agree({2, kWholeRowTokens + 1, 2, 8, 0, false});
  expect_agree({2, 300, 2, 8, 2, true});
}

TEST(BlockedAttention, AgreesWithSharedAndPerExampleBiases) {
  expect_agree({3, 17, 3, 8, 1, false});
  expect_agree({3, 17, 3, 8, 2, true});
  expect_agree({3, 71, 2, 8, 3, true});
}

TEST(BlockedAttention, AgreesWithKeyPadding) {
  expect_agree({4, 29, 2, 12, 0, true});
  expect_agree({5, 97, 3, 4, 1, true});
}

TEST(BlockedAttention, RejectsWhatItCannotRun) {
  const auto qkv = torch::randn({2, 5, 12});
  EXPECT_THROW(blocked_attention(qkv.to(torch::kFloat64), 2, {}, {}), c10::Error);
  EXPECT_THROW(blocked_attention(qkv, 5, {}, {}), c10::Error);
  EXPECT_THROW(blocked_attention(qkv, 2, torch::zeros({3, 5, 5}), {}), c10::Error);
  EXPECT_THROW(blocked_attention(qkv, 2, {}, torch::zeros({2, 4}, torch::kBool)), c10::Error);
}

// f(qkv) = <out, g> with the same dropout seed: the directional derivative from the backward
// equals the central difference, which holds only when backward rebuilds the forward's mask.
TEST(BlockedAttention, DropoutBackwardRebuildsTheForwardMask) {
  torch::manual_seed(3);
  const int64_t b = 2, t = 70, h = 2, d = 16;
  const auto qkv = torch::randn({b, t, 3 * d}).mul_(0.5);
  const auto bias = torch::randn({h, t, t}).mul_(0.5);
  const auto g = torch::randn({b, t, d});
  const auto u = torch::randn_like(qkv);
  auto f = [&](const torch::Tensor& x) {
    torch::manual_seed(11);  // the kernel draws its seed from the default generator
    return (blocked_attention(x, h, bias, {}, 0.3) * g).sum();
  };
  auto x = qkv.clone().requires_grad_(true);
  f(x).backward();
  const double analytic = (x.grad() * u).sum().item<double>();
  torch::NoGradGuard no_grad;
  const double eps = 1e-2;
  const double numeric = (f(qkv + eps * u).item<double>() - f(qkv - eps * u).item<double>()) / (2 * eps);
  EXPECT_NEAR(analytic, numeric, 2e-3 * std::abs(numeric) + 1e-2)
      << "analytic " << analytic << " numeric " << numeric;
  // Different seeds give different masks; no dropout gives a third result.
  torch::manual_seed(12);
  const auto other = (blocked_attention(qkv, h, bias, {}, 0.3) * g).sum().item<double>();
  EXPECT_NE(other, f(qkv).item<double>());
}

// Uniform probabilities over values of 1: each output is (kept keys / T) / (1 - p), so the mean
// over many rows is 1 and the spread matches a binomial.
TEST(BlockedAttention, DropoutKeepsTheExpectation) {
  torch::manual_seed(4);
  const int64_t b = 4, t = 256, h = 4, dh = 2, d = h * dh;
  auto qkv = torch::zeros({b, t, 3 * d});
  qkv.slice(2, 2 * d).fill_(1.0);
  const double p = 0.25;
  const auto out = blocked_attention(qkv, h, {}, {}, p);
  EXPECT_NEAR(out.mean().item<double>(), 1.0, 0.01);
  const double expected_std = std::sqrt(p / (1 - p) / double(t));  // binomial, rescaled
  EXPECT_NEAR(out.select(2, 0).std().item<double>(), expected_std, 0.2 * expected_std);
}

}  // namespace
}  // namespace data2vec::nn
