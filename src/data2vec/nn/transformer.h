// Shared transformer blocks: self-attention, feed-forward, and the pre-LN (BEiT / ViT) and
// post-LN (wav2vec 2.0 / RoBERTa) blocks built from them.
//
// Shapes: B batch, T time steps, D width, H heads, Dh = D / H.
#pragma once

#include <torch/torch.h>

namespace data2vec::nn {

// The fast paths of these blocks (fused q/k/v GEMM with the softmax scale folded into the query
// weights, layer scale fused into the residual add) are on by default.
// Blocks read the switch when they are constructed; the plain paths stay as the reference the
// tests compare against (tests/test_nn_fast_paths.cpp) and as the benchmark's A/B baseline.
void set_fast_paths(bool enabled);
bool fast_paths();

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
};

// Multi-head self-attention with separate q/k/v projections (the Hugging Face layout).
class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const AttentionOptions& options);
  // x [B,T,D]; bias [H,T,T] or [B,H,T,T] added to the logits (undefined: none);
  // key_padding_mask [B,T] bool, true = padding (undefined: none). Returns [B,T,D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias,
                        const torch::Tensor& key_padding_mask);

  AttentionOptions options;
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};  // D -> D each
  torch::nn::Linear output{nullptr};                               // D -> D

 private:
  // The two implementations of forward (same math; `fused_` chosen at construction).
  torch::Tensor forward_plain(const torch::Tensor& x, const torch::Tensor& bias,
                              const torch::Tensor& key_padding_mask);
  torch::Tensor forward_fused(const torch::Tensor& x, const torch::Tensor& bias,
                              const torch::Tensor& key_padding_mask);
  bool fused_ = true;
};
TORCH_MODULE(SelfAttention);

struct FeedForwardOptions {
  FeedForwardOptions(int64_t dim, int64_t hidden_dim) : dim_(dim), hidden_dim_(hidden_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, hidden_dim);
  /// Dropout after the GELU. Default 0.
  TORCH_ARG(double, activation_dropout) = 0.0;
};

// Linear(D, hidden) -> GELU -> dropout -> Linear(hidden, D).
class FeedForwardImpl : public torch::nn::Module {
 public:
  explicit FeedForwardImpl(const FeedForwardOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [B,T,D] -> [B,T,D]

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout activation_dropout{nullptr};
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
  // x + dropout(y * scale) as one addcmul when dropout is off and layer scale on.
  bool fused_residual_ = false;
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
};
TORCH_MODULE(PostNormBlock);

}  // namespace data2vec::nn
