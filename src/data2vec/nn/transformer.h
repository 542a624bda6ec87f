// Shared transformer blocks: self-attention, feed-forward, and the pre-LN (BEiT / ViT) and
// post-LN (wav2vec 2.0 / RoBERTa) blocks built from them.
//
// Shapes: B batch, T time steps, D width, H heads, Dh = D / H.
#pragma once

#include <torch/torch.h>

#include "data2vec/nn/gemm.h"

namespace data2vec::nn {

// How attention is computed; chosen when the module is built (the options), never in forward.
// All three give the same outputs and gradients (tests/test_nn_fast_paths.cpp,
// tests/test_nn_blocked_attention.cpp); the parameters and their names are the same.
enum class AttentionKernel {
  kPlain,    // separate q/k/v projections, [B,H,T,T] logits, torch::softmax: the reference
  kFused,    // one q/k/v GEMM (softmax scale in the query weights), bmm over [B*H,T,Dh]
  kBlocked,  // one q/k/v GEMM, then blocked_attention (nn/attention.h): above
             // kWholeRowTokens never holds [T,T] per head, forward and backward; CPU fp32
             // (other devices / dtypes take kFused)
  kAuto,     // the fastest measured: kBlocked (so kFused off CPU fp32); see below
};

// kAuto is kBlocked at every length. Once its (batch x head) tiles really ran on all threads
// (at::parallel_for is serial in code built without OpenMP) and it kept the probabilities for
// backward up to kWholeRowTokens, it beat fused's bmm by 4-9% per layer at T 64-256 and by 3-14%
// per training step (vision-tiny, text-tiny, audio-tiny, batch 16, 2 threads; BENCHMARKS.md,
// 2026-12-03). It was a band by length before (fused for 64 <= T <= 256); kAuto stays the
// default so that a later measurement can change the choice without touching configs.

struct AttentionOptions {
  AttentionOptions(int64_t dim, int64_t num_heads) : dim_(dim), num_heads_(num_heads) {}
  /// Model width D.
  TORCH_ARG(int64_t, dim);
  /// Number of heads H (D must divide by H).
  TORCH_ARG(int64_t, num_heads);
  /// Bias on the key projection. BEiT has q and v biases but none on k. Default true.
  TORCH_ARG(bool, key_bias) = true;
  /// Dropout on the attention probabilities. Default 0.
  TORCH_ARG(double, attention_dropout) = 0.0;
  /// How the attention is computed. Default kAuto (kBlocked on CPU fp32, kFused elsewhere).
  TORCH_ARG(AttentionKernel, kernel) = AttentionKernel::kAuto;
  /// The GEMM library of the q/k/v and output projections and the blocked kernel's tiles (the
  /// plain kernel uses LibTorch's modules). Default: oneDNN where the build has it (nn/gemm.h).
  TORCH_ARG(GemmLibrary, gemm) = default_gemm_library();
};

// Multi-head self-attention with separate q/k/v projections (the Hugging Face layout).
class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const AttentionOptions& options);
  // x [B,T,D]; bias [H,T,T] or [B,H,T,T] added to the logits (undefined: none);
  // key_padding_mask [B,T] bool, true = padding (undefined: none; an example that is all padding
  // is not masked). Returns [B,T,D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias,
                        const torch::Tensor& key_padding_mask);

  AttentionOptions options;
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};  // D -> D each
  torch::nn::Linear output{nullptr};                               // D -> D

 private:
  // The implementations of forward (same math), one chosen at construction from the kernel.
  using Forward = torch::Tensor (SelfAttentionImpl::*)(const torch::Tensor&, const torch::Tensor&,
                                                       const torch::Tensor&);
  torch::Tensor forward_plain(const torch::Tensor& x, const torch::Tensor& bias,
                              const torch::Tensor& key_padding_mask);
  torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& bias,
                              const torch::Tensor& key_padding_mask);
  torch::Tensor forward_blocked(const torch::Tensor& x, const torch::Tensor& bias,
                                const torch::Tensor& key_padding_mask);
  torch::Tensor fused_qkv(const torch::Tensor& x, double scale);  // [B,T,3D]
  torch::Tensor project_out(const torch::Tensor& context);        // the output linear, [B,T,D]
  Forward forward_ = &SelfAttentionImpl::forward_fused;
};
TORCH_MODULE(SelfAttention);

struct FeedForwardOptions {
  FeedForwardOptions(int64_t dim, int64_t hidden_dim) : dim_(dim), hidden_dim_(hidden_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, hidden_dim);
  /// Dropout after the GELU. Default 0.
  TORCH_ARG(double, activation_dropout) = 0.0;
  /// GELU through nn::gelu_erf (nn/gelu.h: a vectorised erf accurate to fp32 rounding) instead
  /// of torch::gelu; only for CPU fp32 tensors (others take torch::gelu). Default false: it does
  /// not pay yet (BENCHMARKS.md).
  TORCH_ARG(bool, fast_gelu) = false;
  /// The GEMM library of fc1 and fc2. Default: oneDNN where the build has it (nn/gemm.h).
  TORCH_ARG(GemmLibrary, gemm) = default_gemm_library();
};

// Linear(D, hidden) -> GELU -> dropout -> Linear(hidden, D).
class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const FeedForwardOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [B,T,D] -> [B,T,D]

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout activation_dropout{nullptr};

 private:
  bool fast_gelu_ = false;
  GemmLibrary gemm_ = GemmLibrary::kTorch;
};
TORCH_MODULE(FeedForward);

struct BlockOptions {
  BlockOptions(int64_t dim, int64_t num_heads, int64_t mlp_dim)
      : dim_(dim), num_heads_(num_heads), mlp_dim_(mlp_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(int64_t, mlp_dim);
  /// Layer-norm epsilon. Default 1e-5 (BEiT: 1e-6).
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  /// Initial value of the layer-scale vectors; 0 disables layer scale. Default 0.
  TORCH_ARG(double, layer_scale_init) = 0.0;
  /// Bias on the key projection. Default true.
  TORCH_ARG(bool, key_bias) = true;
  /// Dropout on the residual branches. Default 0.
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(double, attention_dropout) = 0.0;
  TORCH_ARG(double, activation_dropout) = 0.0;
  /// The fast paths: `attention_kernel`, `fast_gelu`, `gemm`, the layer scale fused into the
  /// residual add and the layer norms through nn::layer_norm. false builds the plain reference
  /// twin (kPlain attention, torch::gelu, LibTorch's linears and layer norms, separate multiply
  /// and add) that the tests and the benchmark's A/B compare against. Default true.
  TORCH_ARG(bool, fast_paths) = true;
  /// The attention kernel when fast_paths is on. Default kAuto (kFused wherever blocked does not
  /// run: other devices, other dtypes, autocast).
  TORCH_ARG(AttentionKernel, attention_kernel) = AttentionKernel::kAuto;
  /// The polynomial GELU (FeedForwardOptions::fast_gelu) when fast_paths is on. Default false.
  TORCH_ARG(bool, fast_gelu) = false;
  /// The GEMM library of the block's linears when fast_paths is on. Default: oneDNN where the
  /// build has it (nn/gemm.h).
  TORCH_ARG(GemmLibrary, gemm) = default_gemm_library();
};

// What one block hands back: its output and its feed-forward result (the data2vec "ffn" layer
// result: before dropout, before the residual add and before any following layer norm).
struct BlockOutput {
  torch::Tensor x;    // [B,T,D]
  torch::Tensor ffn;  // [B,T,D]
};

// Pre-LN block (BEiT / ViT): x += ls1 * attn(ln1(x)); x += ls2 * ffn(ln2(x)).
class PreNormBlockImpl : public torch::nn::Module {
 public:
  explicit PreNormBlockImpl(const BlockOptions& options);
  BlockOutput forward(const torch::Tensor& x, const torch::Tensor& attention_bias,
                      const torch::Tensor& key_padding_mask);

  torch::nn::LayerNorm layernorm_before{nullptr}, layernorm_after{nullptr};
  SelfAttention attention{nullptr};
  FeedForward feed_forward{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::Tensor lambda_1, lambda_2;  // [D] layer scale; undefined when disabled

 private:
  // x + dropout(y * scale) as one node (addcmul forward, a one-pass backward) when dropout is
  // off and layer scale on.
  bool fused_residual_ = false;
  bool fast_norm_ = false;  // the layer norms through nn::layer_norm (fast paths on)
};
TORCH_MODULE(PreNormBlock);

// Post-LN block (wav2vec 2.0 / RoBERTa): x = ln1(x + attn(x)); x = ln2(x + ffn(x)).
class PostNormBlockImpl : public torch::nn::Module {
 public:
  explicit PostNormBlockImpl(const BlockOptions& options);
  BlockOutput forward(const torch::Tensor& x, const torch::Tensor& attention_bias,
                      const torch::Tensor& key_padding_mask);

  SelfAttention attention{nullptr};
  torch::nn::LayerNorm attention_layer_norm{nullptr};
  FeedForward feed_forward{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  bool fast_norm_ = false;  // the layer norms through nn::layer_norm (fast paths on)
};
TORCH_MODULE(PostNormBlock);

}  // namespace data2vec::nn
