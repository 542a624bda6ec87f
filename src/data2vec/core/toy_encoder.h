// A small transformer over vectors: the example of how to plug an encoder into Data2Vec, and the
// encoder the core's tests run on.
//
//   source [B,T,F] -> Linear(F,D) -> mask token at masked steps -> + learned positions
//   -> L pre-LN blocks -> LayerNorm -> x [B,T,D]
#pragma once

#include <torch/torch.h>

#include "data2vec/core/encoder.h"
#include "data2vec/nn/transformer.h"

namespace data2vec {

struct ToyEncoderOptions {
  /// Input feature size F.
  TORCH_ARG(int64_t, input_dim) = 16;
  /// Width D.
  TORCH_ARG(int64_t, dim) = 32;
  /// Layers L.
  TORCH_ARG(int64_t, depth) = 4;
  TORCH_ARG(int64_t, num_heads) = 4;
  TORCH_ARG(int64_t, mlp_dim) = 64;
  /// Longest sequence (size of the position table).
  TORCH_ARG(int64_t, max_len) = 64;
  /// Fraction of real steps masked per example. Default 0.5.
  TORCH_ARG(double, mask_ratio) = 0.5;
  /// Which tensor of each block is its layer result. Default ffn.
  TORCH_ARG(LayerResultKind, layer_result) = LayerResultKind::kFfn;
};

class ToyEncoderImpl : public EncoderImpl {
 public:
  explicit ToyEncoderImpl(const ToyEncoderOptions& options);

  int64_t embed_dim() const override { return options_.dim(); }
  int64_t num_layers() const override { return options_.depth(); }
  MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) override;
  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) override;

  // data2vec 2.0: random masks of each row's own share with equal kept counts
  // (random_mask_same_count), kept steps only through the blocks, 1-D decoder.
  bool supports_kept_encoding() const override { return true; }
  torch::Tensor v2_mask(const EncoderInput& input, int64_t clones,
                        at::Generator& generator) override;
  EncoderOutput extract_kept_features(const EncoderInput& input, const torch::Tensor& ids_keep,
                                      int64_t clones) override;

  const ToyEncoderOptions& options() const { return options_; }

  torch::nn::Linear embed{nullptr};      // F -> D
  torch::Tensor mask_token;              // [D]
  torch::Tensor position_embeddings;     // [max_len, D]
  std::vector<nn::PreNormBlock> layers;  // L blocks
  torch::nn::LayerNorm final_norm{nullptr};

 private:
  ToyEncoderOptions options_;
};
TORCH_MODULE(ToyEncoder);

}  // namespace data2vec
