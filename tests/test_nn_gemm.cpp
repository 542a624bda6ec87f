// nn/gemm.h: the row-major sgemm of each library against a product computed in double, and
// nn::linear against torch::linear (outputs and the gradients of input, weight and bias), for
// each library; which path ran shows in the autograd graph.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "data2vec/nn/gemm.h"
#include "data2vec/nn/transformer.h"
#include "support.h"

namespace data2vec::nn {
namespace {

using data2vec::testing::error_of;
using data2vec::testing::tensors_close;

std::vector<GemmLibrary> libraries() {
  std::vector<GemmLibrary> all{GemmLibrary::kTorch};
  if (have_onednn_gemm()) all.push_back(GemmLibrary::kOneDnn);
  return all;
}

// C = beta C + op(A) op(B) on strided storage: every transpose combination, leading dimensions
// wider than the rows (a column slice of a wider matrix, as the attention tiles are), beta 0
// (C's old values, NaN here, must not leak in) and beta 1.
TEST(Sgemm, EveryTransposeLeadingDimensionAndBetaMatchesDouble) {
  torch::manual_seed(0);
  const int64_t m = 37, n = 29, k = 19, pad = 5;
  for (const auto library : libraries()) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        for (const float beta : {0.0f, 1.0f}) {
          SCOPED_TRACE(to_string(library) + " trans_a " + std::to_string(ta) + " trans_b " +
                       std::to_string(tb) + " beta " + std::to_string(beta));
          // Stored A is [m,k] or [k,m], inside a wider buffer: its row stride is cols + pad.
          const auto a_full = torch::randn({ta ? k : m, (ta ? m : k) + pad});
          const auto b_full = torch::randn({tb ? n : k, (tb ? k : n) + pad});
          const auto a = a_full.narrow(1, 0, ta ? m : k), b = b_full.narrow(1, 0, tb ? k : n);
          const auto c0 = torch::randn({m, n + pad});
          auto c = beta == 0.0f ? torch::full_like(c0, std::nanf("")) : c0.clone();
          sgemm(library, ta, tb, m, n, k, a.data_ptr<float>(), a_full.size(1), b.data_ptr<float>(),
                b_full.size(1), beta, c.data_ptr<float>(), c.size(1));
          const auto opa = (ta ? a.t() : a).to(torch::kFloat64);
          const auto opb = (tb ? b.t() : b).to(torch::kFloat64);
          auto expected = torch::mm(opa, opb);
          if (beta == 1.0f) expected += c0.narrow(1, 0, n).to(torch::kFloat64);
          EXPECT_TRUE(tensors_close("C", c.narrow(1, 0, n).to(torch::kFloat64), expected, 1e-4));
          // The columns past n belong to someone else: untouched.
          if (beta == 1.0f) {
            EXPECT_TRUE(torch::equal(c.narrow(1, n, pad), c0.narrow(1, n, pad)));
          }
        }
      }
    }
  }
}

// Every autograd node behind y, by name.
std::string graph_names(const torch::Tensor& y) {
  std::string names;
  std::vector<std::shared_ptr<torch::autograd::Node>> stack{y.grad_fn()};
  while (!stack.empty()) {
    const auto node = stack.back();
    stack.pop_back();
    if (!node) continue;
    names += node->name() + " ";
    for (const auto& edge : node->next_edges()) stack.push_back(edge.function);
  }
  return names;
}

// nn::linear == torch::linear: 3-D and 2-D inputs, a strided (transposed) input, with and
// without bias; outputs and the gradients of x, W and b.
TEST(Linear, MatchesTorchLinearInOutputsAndEveryGradient) {
  torch::manual_seed(1);
  struct Case {
    std::string name;
    torch::Tensor x;
    bool bias;
  };
  const std::vector<Case> cases{
      {"[B,T,in] with bias", torch::randn({3, 7, 24}), true},
      {"[N,in] without bias", torch::randn({11, 24}), false},
      {"transposed [B,T,in]", torch::randn({3, 24, 7}).transpose(1, 2), true},
  };
  for (const auto library : libraries()) {
    for (const auto& c : cases) {
      SCOPED_TRACE(to_string(library) + ": " + c.name);
      const auto w = torch::randn({40, 24}) * 0.3;
      const auto b = c.bias ? torch::randn({40}) : torch::Tensor();
      auto x1 = c.x.clone().requires_grad_(true), x2 = c.x.clone().requires_grad_(true);
      auto w1 = w.clone().requires_grad_(true), w2 = w.clone().requires_grad_(true);
      auto b1 = c.bias ? b.clone().requires_grad_(true) : b;
      auto b2 = c.bias ? b.clone().requires_grad_(true) : b;
      const auto y1 = linear(x1, w1, b1, library), y2 = torch::linear(x2, w2, b2);
      ASSERT_EQ(y1.sizes(), y2.sizes());
      EXPECT_TRUE(tensors_close("y", y1, y2, 1e-5));
      const bool own = library == GemmLibrary::kOneDnn;
      EXPECT_EQ(graph_names(y1).find("LinearFunction") != std::string::npos, own)
          << graph_names(y1);
      const auto go = torch::randn_like(y2);
      (y1 * go).sum().backward();
      (y2 * go).sum().backward();
      EXPECT_TRUE(tensors_close("dx", x1.grad(), x2.grad(), 1e-5));
      EXPECT_TRUE(tensors_close("dW", w1.grad(), w2.grad(), 1e-4));
      if (c.bias) {
        EXPECT_TRUE(tensors_close("db", b1.grad(), b2.grad(), 1e-4));
      }
    }
  }
}

// linear(..., kGelu) == torch::gelu(torch::linear): the forward bit for bit (the same product,
// then torch::gelu), the gradients of x, W and b (the GELU's derivative formed from its output
// and the bias gradient summed in the same pass on oneDNN; no separate GeluBackward node there).
TEST(Linear, GeluActivationMatchesTorchGeluOfLinearInOutputsAndEveryGradient) {
  torch::manual_seed(5);
  for (const auto library : libraries()) {
    for (const bool bias : {true, false}) {
      SCOPED_TRACE(to_string(library) + (bias ? " with bias" : " without bias"));
      const auto x = torch::randn({3, 70, 24});  // 210 rows: several row chunks and a tail
      const auto w = torch::randn({37, 24}) * 0.4;
      const auto b = bias ? torch::randn({37}) : torch::Tensor();
      auto x1 = x.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
      auto w1 = w.clone().requires_grad_(true), w2 = w.clone().requires_grad_(true);
      auto b1 = bias ? b.clone().requires_grad_(true) : b;
      auto b2 = bias ? b.clone().requires_grad_(true) : b;
      const auto y1 = linear(x1, w1, b1, library, Activation::kGelu);
      const auto y2 = torch::gelu(linear(x2, w2, b2, library));
      EXPECT_TRUE(torch::equal(y1, y2));
      const bool own = library == GemmLibrary::kOneDnn;
      EXPECT_EQ(graph_names(y1).find("GeluBackward") == std::string::npos, own) << graph_names(y1);
      const auto go = torch::randn_like(y2);
      (y1 * go).sum().backward();
      (y2 * go).sum().backward();
      // dW and db sum 210 rows of |values| up to ~25: 4e-5 is a few fp32 roundings of those sums
      // (the GELU derivative of LibTorch 2.6 differs from 1.13's in the last bits).
      EXPECT_TRUE(tensors_close("dx", x1.grad(), x2.grad(), 1e-5));
      EXPECT_TRUE(tensors_close("dW", w1.grad(), w2.grad(), 4e-5));
      if (bias) {
        EXPECT_TRUE(tensors_close("db", b1.grad(), b2.grad(), 4e-5));
      }
    }
  }
}

// Only the weight needs a gradient (a frozen input): dx is not computed, dW is right.
TEST(Linear, FrozenInputGetsNoGradientAndWeightStillDoes) {
  torch::manual_seed(2);
  const auto x = torch::randn({5, 8});
  auto w1 = torch::randn({6, 8}).requires_grad_(true);
  auto w2 = w1.detach().clone().requires_grad_(true);
  linear(x, w1, torch::Tensor(), default_gemm_library()).sum().backward();
  torch::linear(x, w2).sum().backward();
  EXPECT_FALSE(x.grad().defined());
  EXPECT_TRUE(tensors_close("dW", w1.grad(), w2.grad(), 1e-5));
}

// What oneDNN does not take goes to torch::linear: fp64, an empty batch, inference mode works.
TEST(Linear, OtherDtypesAndEmptyInputsFallBackToTorch) {
  torch::manual_seed(3);
  const auto w = torch::randn({4, 3}, torch::kFloat64), b = torch::randn({4}, torch::kFloat64);
  const auto x = torch::randn({2, 3}, torch::kFloat64).requires_grad_(true);
  const auto y = linear(x, w, b, GemmLibrary::kOneDnn);
  EXPECT_EQ(y.scalar_type(), torch::kFloat64);
  EXPECT_EQ(graph_names(y).find("LinearFunction"), std::string::npos);
  EXPECT_TRUE(torch::allclose(y, torch::linear(x, w, b)));
  const auto empty = linear(torch::randn({0, 3}), w.to(torch::kFloat32), b.to(torch::kFloat32),
                            GemmLibrary::kOneDnn);
  EXPECT_EQ(empty.sizes(), torch::IntArrayRef({0, 4}));
  torch::InferenceMode inference;
  const auto xf = torch::randn({2, 5, 3});
  EXPECT_TRUE(tensors_close(
      "inference y",
      linear(xf, w.to(torch::kFloat32), b.to(torch::kFloat32), default_gemm_library()),
      torch::linear(xf, w.to(torch::kFloat32), b.to(torch::kFloat32)), 1e-5));
}

// batched_matmul == torch::bmm with the operands as the fused kernel hands them over (q and a
// transposed k, probabilities and v), a transposed left operand, and a strided one that is
// neither (copied first); outputs and both gradients.
TEST(BatchedMatmul, MatchesBmmForEveryOperandLayoutInOutputsAndGradients) {
  torch::manual_seed(5);
  const int64_t n = 6, m = 13, k = 8, p = 11;
  struct Case {
    std::string name;
    torch::Tensor a, b;
  };
  const std::vector<Case> cases{
      {"q k^T", torch::randn({n, m, k}), torch::randn({n, p, k}).transpose(1, 2)},
      {"a^T b", torch::randn({n, k, m}).transpose(1, 2), torch::randn({n, k, p})},
      {"a with a column stride of 2", torch::randn({n, m, 2 * k}).slice(2, 0, 2 * k, 2),
       torch::randn({n, k, p})},
  };
  for (const auto library : libraries()) {
    for (const auto& c : cases) {
      SCOPED_TRACE(to_string(library) + ": " + c.name);
      // detach() keeps the layout: the leaves batched_matmul sees are strided as in the case.
      auto a1 = c.a.detach().requires_grad_(true), b1 = c.b.detach().requires_grad_(true);
      auto a2 = c.a.detach().clone().requires_grad_(true);
      auto b2 = c.b.detach().clone().requires_grad_(true);
      ASSERT_EQ(a1.strides(), c.a.strides());
      const auto y1 = batched_matmul(a1, b1, library), y2 = torch::bmm(a2, b2);
      EXPECT_TRUE(tensors_close("C", y1, y2, 1e-5));
      EXPECT_EQ(graph_names(y1).find("BatchedMatmulFunction") != std::string::npos,
                library == GemmLibrary::kOneDnn);
      const auto go = torch::randn_like(y2);
      (y1 * go).sum().backward();
      (y2 * go).sum().backward();
      EXPECT_TRUE(tensors_close("dA", a1.grad(), a2.grad(), 1e-5));
      EXPECT_TRUE(tensors_close("dB", b1.grad(), b2.grad(), 1e-5));
    }
  }
}

TEST(GemmLibrary, NamesParseAndTheDefaultIsOneDnnWhereBuilt) {
  EXPECT_EQ(parse_gemm_library("torch"), GemmLibrary::kTorch);
  EXPECT_EQ(parse_gemm_library("auto"), default_gemm_library());
  EXPECT_EQ(default_gemm_library(),
            have_onednn_gemm() ? GemmLibrary::kOneDnn : GemmLibrary::kTorch);
  if (have_onednn_gemm()) {
    EXPECT_EQ(parse_gemm_library("onednn"), GemmLibrary::kOneDnn);
  } else {
    EXPECT_NE(error_of([] { parse_gemm_library("onednn"); }).find("libdnnl-dev"),
              std::string::npos);
  }
  EXPECT_NE(error_of([] { parse_gemm_library("mkl"); }).find("'mkl'"), std::string::npos);
  // The blocks take the default; their plain twin keeps LibTorch's linears.
  PreNormBlock fast(BlockOptions(16, 2, 32));
  PreNormBlock plain(BlockOptions(16, 2, 32).fast_paths(false));
  EXPECT_EQ(fast->attention->options.gemm(), default_gemm_library());
  EXPECT_EQ(plain->attention->options.gemm(), GemmLibrary::kTorch);
}

// Two blocks with the same weights, one per library, agree in outputs and every gradient, at the
// blocked kernel's short rows (its tiles through the library) and the fused band.
TEST(GemmLibrary, BlocksAgreeAcrossLibraries) {
  if (!have_onednn_gemm()) GTEST_SKIP() << "this build has no oneDNN";
  torch::manual_seed(4);
  for (const int64_t t : {int64_t(11), int64_t(80)}) {
    SCOPED_TRACE("T = " + std::to_string(t));
    PreNormBlock a(BlockOptions(32, 4, 64).layer_scale_init(0.1).gemm(GemmLibrary::kOneDnn));
    PreNormBlock b(BlockOptions(32, 4, 64).layer_scale_init(0.1).gemm(GemmLibrary::kTorch));
    {
      torch::NoGradGuard no_grad;
      auto source = a->named_parameters();
      for (auto& p : b->named_parameters()) {
        source[p.key()].copy_(torch::randn_like(p.value()) * 0.2);
        p.value().copy_(source[p.key()]);
      }
    }
    const auto x = torch::randn({3, t, 32});
    auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
    const auto ya = a->forward(xa, {}, {}).x, yb = b->forward(xb, {}, {}).x;
    EXPECT_TRUE(tensors_close("block output", ya, yb, 1e-5));
    const auto go = torch::randn_like(ya);
    (ya * go).sum().backward();
    (yb * go).sum().backward();
    EXPECT_TRUE(tensors_close("input gradient", xa.grad(), xb.grad(), 1e-5));
    auto b_params = b->named_parameters();
    for (const auto& p : a->named_parameters()) {
      EXPECT_TRUE(
          tensors_close(p.key() + " gradient", p.value().grad(), b_params[p.key()].grad(), 1e-4));
    }
  }
}

}  // namespace
}  // namespace data2vec::nn
