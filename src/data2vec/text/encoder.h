// The text encoder (RoBERTa-style, SPEC section 2 text column):
//
//   ids [B,T] -> word + position + token-type embeddings -> LayerNorm -> dropout
//   -> L post-LN blocks (key padding mask) -> x [B,T,D]
//
// Masking happens in the token ids, not in the features: apply_mask() substitutes <mask> /
// random / kept tokens (text/masking.h) and hands the student those ids with the same padding
// mask. extract_features(input, mask) therefore IGNORES `mask`: the ids already carry it. The
// teacher reads the original ids through the default teacher_features().
//
// Registered names follow Hugging Face's Data2VecText (RoBERTa) closely; import is a name table:
//   ours                                          Hugging Face Data2VecTextModel
//   embeddings.word_embeddings.weight             embeddings.word_embeddings.weight
//   embeddings.position_embeddings.weight [P,D]   embeddings.position_embeddings.weight [P+2,D]
//       rows offset by padding_idx + 1 = 2: ours[i] = hf[i + 2] (RoBERTa numbers real tokens
//       from padding_idx + 1; its rows 0 and 1 are never used with right padding)
//   embeddings.token_type_embeddings.weight [1,D] embeddings.token_type_embeddings.weight
//   embeddings.LayerNorm.{weight,bias}            embeddings.LayerNorm.{weight,bias}
//   encoder.layer.{i}.attention.query             encoder.layer.{i}.attention.self.query
//   encoder.layer.{i}.attention.key               encoder.layer.{i}.attention.self.key
//   encoder.layer.{i}.attention.value             encoder.layer.{i}.attention.self.value
//   encoder.layer.{i}.attention.output            encoder.layer.{i}.attention.output.dense
//   encoder.layer.{i}.layer_norm                  encoder.layer.{i}.attention.output.LayerNorm
//   encoder.layer.{i}.feed_forward.fc1            encoder.layer.{i}.intermediate.dense
//   encoder.layer.{i}.feed_forward.fc2            encoder.layer.{i}.output.dense
//   encoder.layer.{i}.final_layer_norm            encoder.layer.{i}.output.LayerNorm
// (HF's vocabulary is RoBERTa's BPE; its <s> 0, <pad> 1, </s> 2, <unk> 3 match ours, <mask> is
// its last id. Our positions are 0..T-1 for right-padded batches, as RoBERTa's are for them.)
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "data2vec/core/encoder.h"
#include "data2vec/nn/transformer.h"
#include "data2vec/text/masking.h"
#include "data2vec/text/tokenizer.h"

namespace data2vec::text {

struct TextEncoderOptions {
  explicit TextEncoderOptions(int64_t vocab_size) : vocab_size_(vocab_size) {}
  /// Vocabulary size V (the tokenizer's).
  TORCH_ARG(int64_t, vocab_size);
  /// Longest sequence, <s> and </s> included (rows of the position table). Default 512.
  TORCH_ARG(int64_t, max_positions) = 512;
  /// Width D. Default 768 (base).
  TORCH_ARG(int64_t, dim) = 768;
  /// Layers L. Default 12.
  TORCH_ARG(int64_t, depth) = 12;
  /// Attention heads. Default 12.
  TORCH_ARG(int64_t, num_heads) = 12;
  /// Feed-forward hidden width. Default 3072.
  TORCH_ARG(int64_t, mlp_dim) = 3072;
  /// Dropout on the embeddings and on each block's residual branches. Default 0.1.
  TORCH_ARG(double, dropout) = 0.1;
  /// Dropout on the attention probabilities. Default 0.1.
  TORCH_ARG(double, attention_dropout) = 0.1;
  /// Dropout after the feed-forward GELU. Default 0.
  TORCH_ARG(double, activation_dropout) = 0.0;
  /// Epsilon of every LayerNorm. Default 1e-5.
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  /// Which tensor of each block is its layer result. Default ffn.
  TORCH_ARG(LayerResultKind, layer_result) = LayerResultKind::kFfn;
  /// Special ids (the tokenizer's; tokenizer.h). Defaults <s> 0, <pad> 1, </s> 2, <unk> 3,
  /// <mask> 4.
  TORCH_ARG(int64_t, bos_id) = SentencePieceTokenizer::kBosId;
  TORCH_ARG(int64_t, pad_id) = SentencePieceTokenizer::kPadId;
  TORCH_ARG(int64_t, eos_id) = SentencePieceTokenizer::kEosId;
  TORCH_ARG(int64_t, unk_id) = SentencePieceTokenizer::kUnkId;
  TORCH_ARG(int64_t, mask_id) = SentencePieceTokenizer::kMaskId;
  /// BERT masking of the student's ids: 15% selected; 80% <mask>, 10% random, 10% kept.
  TORCH_ARG(TextMaskOptions, masking) = TextMaskOptions();
  /// Std of the normal init of embeddings and linear weights (BERT's init). Default 0.02.
  TORCH_ARG(double, init_std) = 0.02;
};

// Ids never selected for masking nor drawn as random replacements: bos, pad, eos, unk, mask.
std::vector<int64_t> special_ids(const TextEncoderOptions& options);

// Named sizes: "mini" 4x128x512x2h (demos on 2 CPU cores), "tiny" 12x192x768x3h, "small"
// 12x384x1536x6h, "base" 12x768x3072x12h, "large" 24x1024x4096x16h (depth x D x mlp x heads).
TextEncoderOptions text_preset(const std::string& name, int64_t vocab_size);

// embeddings.*: word + learned absolute position + token-type (one type) -> LayerNorm -> dropout.
class TextEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit TextEmbeddingsImpl(const TextEncoderOptions& options);
  // ids [B,T] int64 -> [B,T] D embeddings (after LayerNorm, before dropout).
  torch::Tensor forward(const torch::Tensor& ids);

  torch::nn::Embedding word_embeddings{nullptr};        // [V,D]
  torch::nn::Embedding position_embeddings{nullptr};    // [P,D]
  torch::nn::Embedding token_type_embeddings{nullptr};  // [1,D]
  torch::nn::LayerNorm layer_norm{nullptr};             // registered as "LayerNorm" (HF)
};
TORCH_MODULE(TextEmbeddings);

class TextEncoderImpl : public EncoderImpl {
 public:
  explicit TextEncoderImpl(const TextEncoderOptions& options);

  int64_t embed_dim() const override { return options_.dim(); }
  int64_t num_layers() const override { return options_.depth(); }
  // BERT masking of input.source (ids [B,T]); the student gets the substituted ids and the same
  // padding mask; the mask marks every selected token.
  MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) override;
  // input.source: ids [B,T] int64, right-padded; input.padding_mask [B,T] or undefined.
  // `mask` is ignored: text masking lives in the ids (see apply_mask).
  // local_features = the embeddings' output [B,T,D] for the ids given.
  EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) override;
  // The teacher averages the transformer layers and copies the embeddings (SPEC section 2).
  std::vector<std::string> ema_copied_prefixes() const override { return {"embeddings."}; }

  // data2vec 2.0: random masks with masking().mask_prob() of the real tokens (the same count per
  // row: the shortest row's), no token substitution; the embeddings (positions included) once per
  // example, then only the kept tokens through the blocks; a 1-D decoder (768, k 9, g 1, 5
  // blocks, no residual).
  bool supports_kept_encoding() const override { return true; }
  torch::Tensor v2_mask(const EncoderInput& input, int64_t clones,
                        at::Generator& generator) override;
  EncoderOutput extract_kept_features(const EncoderInput& input, const torch::Tensor& ids_keep,
                                      int64_t clones) override;
  DecoderOptions default_decoder_options() const override;

  const TextEncoderOptions& options() const { return options_; }

  TextEmbeddings embeddings{nullptr};
  torch::nn::Dropout embedding_dropout{nullptr};
  std::vector<nn::PostNormBlock> layers;  // L blocks, registered as encoder.layer.{i}

 private:
  TextEncoderOptions options_;
  std::vector<int64_t> special_ids_;
};
TORCH_MODULE(TextEncoder);

// A fresh encoder for Data2Vec's EncoderFactory: [options] { return make_text_encoder(options); }
std::shared_ptr<TextEncoderImpl> make_text_encoder(const TextEncoderOptions& options);

}  // namespace data2vec::text
