// The fast paths of the shared transformer blocks (fused q/k/v with the softmax scale in the
// query weights, the fused or the blocked attention kernel, the polynomial GELU, the fused
// layer-scale residual) against their plain twins (BlockOptions::fast_paths(false)): same
// outputs and same gradients of the input, the logit bias and every parameter for the same
// weights.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

#include "data2vec/nn/attention.h"
#include "data2vec/nn/transformer.h"
#include "support.h"

namespace data2vec::nn {
namespace {

using data2vec::testing::tensors_close;

// Builds the block twice (fast paths on and off) with the same weights.
template <typename Block>
std::pair<Block, Block> twins(BlockOptions options) {
  Block fast(options);
  Block plain(options.fast_paths(false));
  torch::NoGradGuard no_grad;
  auto source = fast->named_parameters();
  for (auto& p : plain->named_parameters()) {
    // Non-trivial values everywhere, including the layer scales and biases.
    source[p.key()].copy_(torch::randn_like(source[p.key()]) * 0.2);
    p.value().copy_(source[p.key()]);
  }
  return {fast, plain};
}

template <typename Block>
void expect_same(Block& fast, Block& plain, const torch::Tensor& x, const torch::Tensor& bias,
                 const torch::Tensor& padding, double tolerance = 1e-5) {
  auto xf = x.clone().requires_grad_(true), xp = x.clone().requires_grad_(true);
  auto bf = bias.defined() ? bias.clone().requires_grad_(true) : bias;
  auto bp = bias.defined() ? bias.clone().requires_grad_(true) : bias;
  const auto of = fast->forward(xf, bf, padding), op = plain->forward(xp, bp, padding);
  EXPECT_TRUE(tensors_close("block output", of.x, op.x, tolerance));
  EXPECT_TRUE(tensors_close("ffn result", of.ffn, op.ffn, tolerance));
  const auto go = torch::randn_like(of.x);
  (of.x * go).sum().backward();
  (op.x * go).sum().backward();
  EXPECT_TRUE(tensors_close("input gradient", xf.grad(), xp.grad(), tolerance));
  if (bias.defined()) {
    EXPECT_TRUE(tensors_close("bias gradient", bf.grad(), bp.grad(), tolerance));
  }
  auto plain_params = plain->named_parameters();
  for (const auto& p : fast->named_parameters()) {
    EXPECT_TRUE(tensors_close(p.key() + " gradient", p.value().grad(), plain_params[p.key()].grad(),
                              tolerance));
  }
}

class FastPaths : public ::testing::TestWithParam<AttentionKernel> {};

TEST_P(FastPaths, PreNormBlockWithLayerScaleNoKeyBiasAndRelativeBias) {
  torch::manual_seed(0);
  auto [fast, plain] = twins<PreNormBlock>(BlockOptions(24, 3, 48)
                                               .layer_norm_eps(1e-6)
                                               .layer_scale_init(0.1)
                                               .key_bias(false)
                                               .attention_kernel(GetParam())
                                               .fast_gelu(true));
  const auto x = torch::randn({2, 7, 24});
  const auto bias = torch::randn({3, 7, 7});  // [H,T,T]
  expect_same(fast, plain, x, bias, torch::Tensor());
}

// The default GELU (torch::gelu's forward inside fc1's node, its derivative formed from the
// output) and the layer-scale residuals as one node each, against the plain twin.
TEST_P(FastPaths, PreNormBlockWithLayerScaleAndTheGeluInsideTheFirstLinear) {
  torch::manual_seed(7);
  auto [fast, plain] = twins<PreNormBlock>(
      BlockOptions(24, 3, 48).layer_scale_init(0.1).attention_kernel(GetParam()));
  const auto x = torch::randn({2, 45, 24});
  expect_same(fast, plain, x, torch::Tensor(), torch::Tensor());
}

TEST_P(FastPaths, PostNormBlockWithPaddingMask) {
  torch::manual_seed(1);
  auto [fast, plain] = twins<PostNormBlock>(BlockOptions(16, 2, 32).attention_kernel(GetParam()));
  fast->eval();  // no dropout randomness (its defaults are 0 anyway)
  plain->eval();
  const auto x = torch::randn({3, 5, 16});
  auto padding = torch::zeros({3, 5}, torch::kBool);
  padding[1].slice(0, 3).fill_(true);
  padding[2].fill_(true);  // a fully padded row stays finite
  expect_same(fast, plain, x, torch::Tensor(), padding);
}

// An example that is all padding is not masked (SelfAttention::forward), on every kernel: its
// rows are those of the same example unpadded, and the partly padded one keeps its mask.
TEST_P(FastPaths, AnExampleThatIsAllPaddingIsNotMasked) {
  torch::manual_seed(2);
  auto [fast, plain] = twins<PostNormBlock>(BlockOptions(16, 2, 32).attention_kernel(GetParam()));
  fast->eval();
  plain->eval();
  const auto x = torch::randn({2, 5, 16});
  auto padding = torch::zeros({2, 5}, torch::kBool);
  padding[0].slice(0, 3).fill_(true);
  padding[1].fill_(true);
  auto unpadded = padding.clone();
  unpadded[1].fill_(false);
  torch::NoGradGuard no_grad;
  for (auto* block : {&fast, &plain}) {
    const auto padded_out = (*block)->forward(x, torch::Tensor(), padding).x;
    const auto unpadded_out = (*block)->forward(x, torch::Tensor(), unpadded).x;
    EXPECT_TRUE(torch::equal(padded_out, unpadded_out));
    const auto no_mask_out = (*block)->forward(x, torch::Tensor(), torch::Tensor()).x;
    EXPECT_FALSE(torch::allclose(padded_out[0], no_mask_out[0]));  // example 0 is still masked
  }
}

TEST_P(FastPaths, LongerOddSequencesWithPaddingAndPerExampleBias) {
  torch::manual_seed(3);
  auto [fast, plain] = twins<PreNormBlock>(
      BlockOptions(32, 4, 64).layer_scale_init(0.1).attention_kernel(GetParam()).fast_gelu(true));
  const auto x = torch::randn({3, 131, 32});
  const auto bias = torch::randn({3, 4, 131, 131});  // [B,H,T,T]
  auto padding = torch::zeros({3, 131}, torch::kBool);
  padding[0].slice(0, 77).fill_(true);
  // The layer-scale gradients (up to ~30) sum 393 rows: each path lands ~5e-6 from an fp64 twin
  // of the block (checked 2026-12-03), in different summation orders, so they may differ by 1e-5.
  expect_same(fast, plain, x, bias, padding, 2e-5);
}

TEST_P(FastPaths, PreNormBlockWithoutLayerScaleTakesThePlainResidual) {
  torch::manual_seed(2);
  auto [fast, plain] = twins<PreNormBlock>(BlockOptions(8, 2, 16).attention_kernel(GetParam()));
  expect_same(fast, plain, torch::randn({2, 4, 8}), torch::Tensor(), torch::Tensor());
}

INSTANTIATE_TEST_SUITE_P(Kernels, FastPaths,
                         ::testing::Values(AttentionKernel::kFused, AttentionKernel::kBlocked),
                         [](const auto& info) {
                           return info.param == AttentionKernel::kFused ? "Fused" : "Blocked";
                         });

// Every autograd node behind y, by name: which kernel ran shows in the graph (the blocked
// kernel's custom function, or fused's bmm).
std::string graph_names(const torch::Tensor& y) {
  std::string names;
  std::vector<std::shared_ptr<torch::autograd::Node>> stack{y.grad_fn()};
  std::set<const torch::autograd::Node*> seen;
  while (!stack.empty()) {
    const auto node = stack.back();
    stack.pop_back();
    if (!node || !seen.insert(node.get()).second) continue;
    names += node->name() + " ";
    for (const auto& edge : node->next_edges()) stack.push_back(edge.function);
  }
  return names;
}

// kAuto: the blocked kernel at every length, on both sides of kWholeRowTokens (probabilities
// kept for backward, one query block per head, below; recomputed, 64-row blocks, above), with
// the same outputs and gradients as the plain twin.
TEST(AttentionKernelAuto, BlockedAtEveryLength) {
  torch::manual_seed(6);
  for (const int64_t t : {int64_t(11), int64_t(64), kWholeRowTokens, kWholeRowTokens + 1}) {
    SCOPED_TRACE("T = " + std::to_string(t));
    auto [fast, plain] = twins<PostNormBlock>(BlockOptions(16, 2, 32));
    ASSERT_EQ(fast->attention->options.kernel(), AttentionKernel::kAuto);  // the default
    const auto x = torch::randn({2, t, 16});
    auto padding = torch::zeros({2, t}, torch::kBool);
    padding[1].slice(0, t - 3).fill_(true);
    const auto names = graph_names(fast->forward(x.clone().requires_grad_(true), {}, padding).x);
    EXPECT_NE(names.find("BlockedAttention"), std::string::npos) << names;
    EXPECT_EQ(names.find("BmmBackward"), std::string::npos) << names;
    EXPECT_EQ(names.find("BatchedMatmulFunction"), std::string::npos) << names;
    // The parameter gradients sum 2T rows of magnitude up to ~40: fp32 rounding grows with T.
    expect_same(fast, plain, x, torch::Tensor(), padding, 1e-5 * std::max<double>(1, t / 32));
  }
}

// Which nodes the fast pre-LN block with layer scale builds: the residuals as
// ScaledResidualFunction (not addcmul's node), the GELU inside fc1's LinearFunction where oneDNN
// runs the linears (no GeluBackward node).
TEST(FastPathNodes, LayerScaleResidualsAndTheGeluHaveTheirOwnNodes) {
  torch::manual_seed(8);
  auto [fast, plain] = twins<PreNormBlock>(BlockOptions(16, 2, 32).layer_scale_init(0.1));
  const auto names =
      graph_names(fast->forward(torch::randn({2, 5, 16}).requires_grad_(true), {}, {}).x);
  EXPECT_NE(names.find("ScaledResidualFunction"), std::string::npos) << names;
  EXPECT_EQ(names.find("AddcmulBackward"), std::string::npos) << names;
  if (have_onednn_gemm()) {
    EXPECT_EQ(names.find("GeluBackward"), std::string::npos) << names;
  }
}

// The blocks' layer norms are nn::layer_norm's nodes on the fast paths, LibTorch's in the twin.
TEST(FastPathNodes, LayerNormsHaveTheirOwnNodes) {
  torch::manual_seed(9);
  const auto x = torch::randn({2, 5, 16});
  auto [pre, pre_plain] = twins<PreNormBlock>(BlockOptions(16, 2, 32));
  auto [post, post_plain] = twins<PostNormBlock>(BlockOptions(16, 2, 32));
  for (const auto& names : {graph_names(pre->forward(x.clone().requires_grad_(true), {}, {}).x),
                            graph_names(post->forward(x.clone().requires_grad_(true), {}, {}).x)}) {
    EXPECT_NE(names.find("LayerNormFunction"), std::string::npos) << names;
    EXPECT_EQ(names.find("NativeLayerNormBackward"), std::string::npos) << names;
  }
  const auto plain_names =
      graph_names(post_plain->forward(x.clone().requires_grad_(true), {}, {}).x);
  EXPECT_NE(plain_names.find("NativeLayerNormBackward"), std::string::npos) << plain_names;
}

// A bf16 input (autocast's dtype) through a module built with the blocked kernel takes the
// fused path and stays close to the plain twin.
TEST(FastPathsBf16, BlockedKernelFallsBackOutsideFp32) {
  torch::manual_seed(5);
  auto [fast, plain] = twins<PreNormBlock>(
      BlockOptions(16, 2, 32).attention_kernel(AttentionKernel::kBlocked).fast_gelu(true));
  fast->to(torch::kBFloat16);
  plain->to(torch::kBFloat16);
  const auto x = torch::randn({2, 9, 16}).to(torch::kBFloat16);
  const auto of = fast->forward(x, {}, {}), op = plain->forward(x, {}, {});
  EXPECT_EQ(of.x.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(tensors_close("bf16 block output", of.x, op.x, 0.1));
}

}  // namespace
}  // namespace data2vec::nn
