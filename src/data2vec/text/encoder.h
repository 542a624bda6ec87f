// The text encoder (RoBERTa-style, arXiv 2202.03555 and fairseq's data2vec configs text column):
//
//   ids [B,T] -> word + position + token-type embeddings -> LayerNorm -> dropout
//   -> L post-LN blocks (key padding mask) -> x [B,T,D]
//
// Masking happens in the token ids, not in the features: apply_mask() substitutes <mask> /
// random / kept tokens (text/masking.h) and hands the student those ids with the same padding
// mask. extract_features(input, mask) therefore IGNORES `mask`: the ids already carry it. The
// teacher reads the original ids through the default teacher_features().
//
// Registered names follow Hugging Face's Data2VecText (RoBERTa) closely; import is a name table
// (text/hf.h applies it):
//   ours                                          Hugging Face Data2VecTextModel
//   embeddings.word_embeddings.weight             embeddings.word_embeddings.weight
//   embeddings.position_embeddings.weight         embeddings.position_embeddings.weight
//       with roberta_positions (imported models): the same table [P + pad_id + 1, D], real
//       tokens numbered from pad_id + 1 and padding at row pad_id, as RoBERTa does.
//       without (our own models): [P,D], positions 0..T-1, so ours[i] = hf[i + pad_id + 1]
//       (the same numbers for right-padded batches; export prepends pad_id + 1 zero rows)
//   embeddings.token_type_embeddings.weight       embeddings.token_type_embeddings.weight
//   embeddings.LayerNorm.{weight,bias}            embeddings.LayerNorm.{weight,bias}
//   encoder.layer.{i}.attention.query             encoder.layer.{i}.attention.self.query
//   encoder.layer.{i}.attention.key               encoder.layer.{i}.attention.self.key
//   encoder.layer.{i}.attention.value             encoder.layer.{i}.attention.self.value
//   encoder.layer.{i}.attention.output            encoder.layer.{i}.attention.output.dense
//   encoder.layer.{i}.layer_norm                  encoder.layer.{i}.attention.output.LayerNorm
//   encoder.layer.{i}.feed_forward.fc1            encoder.layer.{i}.intermediate.dense
//   encoder.layer.{i}.feed_forward.fc2            encoder.layer.{i}.output.dense
//   encoder.layer.{i}.final_layer_norm            encoder.layer.{i}.output.LayerNorm
//   pooler.dense                                  pooler.dense (with the pooler option)
// (HF's vocabulary is RoBERTa's BPE; its <s> 0, <pad> 1, </s> 2, <unk> 3 match ours, <mask> is
// its last id.)
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
  /// Longest sequence, <s> and </s> included. Default 512.
  TORCH_ARG(int64_t, max_positions) = 512;
  /// RoBERTa's position numbering (Hugging Face checkpoints): real tokens from pad_id + 1, padding
  /// at pad_id; the table has max_positions + pad_id + 1 rows. Default false (0..T-1).
  TORCH_ARG(bool, roberta_positions) = false;
  /// Token-type (segment) vocabulary. Default 1.
  TORCH_ARG(int64_t, type_vocab_size) = 1;
  /// BERT's pooler (tanh(Linear(D,D)) of the first token), for Hugging Face checkpoints that
  /// have one. Default false.
  TORCH_ARG(bool, pooler) = false;
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
  /// The GEMM library of the transformer blocks' linears (nn/gemm.h). Default: oneDNN where
  /// the build has it. The parameters and the checkpoint are the same either way.
  TORCH_ARG(nn::GemmLibrary, gemm) = nn::default_gemm_library();
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
  // ids [B,T] int64, token_type_ids [B,T] or undefined (all 0) -> [B,T,D] embeddings (after
  // LayerNorm, before dropout).
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& token_type_ids = {});
  // Rows of the position table for ids [B,T]: [T] (0..T-1) or [B,T] (RoBERTa numbering).
  torch::Tensor position_ids(const torch::Tensor& ids) const;

  torch::nn::Embedding word_embeddings{nullptr};        // [V,D]
  torch::nn::Embedding position_embeddings{nullptr};    // [P,D] or [P + pad_id + 1, D]
  torch::nn::Embedding token_type_embeddings{nullptr};  // [type_vocab_size,D]
  torch::nn::LayerNorm layer_norm{nullptr};             // registered as "LayerNorm" (HF)

 private:
  bool roberta_positions_;
  int64_t pad_id_;
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
  // The same with token types [B,T] (undefined: all 0), as Hugging Face's forward takes them.
  EncoderOutput encode(const EncoderInput& input, const torch::Tensor& token_type_ids);
  // BERT's pooled output tanh(pooler.dense(x[:,0])) [B,D]; requires the pooler option.
  torch::Tensor pool(const torch::Tensor& x);
  // The teacher averages the transformer layers and copies the embeddings (arXiv 2202.03555 and fairseq's data2vec configs).
  std::vector<std::string> ema_copied_prefixes() const override { return {"embeddings."}; }

  // data2vec 2.0: random masks with masking().mask_prob() of each row's real tokens (padding kept
  // or dropped to equal the kept counts), no token substitution; the embeddings (positions
  // included) once per example, then only the kept tokens through the blocks; a 1-D decoder
  // (768, k 9, g 1, 5 blocks, no residual, a two-layer projection).
  bool supports_kept_encoding() const override { return true; }
  torch::Tensor v2_mask(const EncoderInput& input, int64_t clones,
                        at::Generator& generator) override;
  EncoderOutput extract_kept_features(const EncoderInput& input, const torch::Tensor& ids_keep,
                                      int64_t clones) override;
  DecoderOptions default_decoder_options() const override;

  const TextEncoderOptions& options() const { return options_; }

  TextEmbeddings embeddings{nullptr};
  torch::nn::Dropout embedding_dropout{nullptr};
  std::vector<nn::PostNormBlock> layers;    // L blocks, registered as encoder.layer.{i}
  torch::nn::Linear pooler_dense{nullptr};  // "pooler.dense", only with the pooler option

 private:
  TextEncoderOptions options_;
  std::vector<int64_t> special_ids_;
};
TORCH_MODULE(TextEncoder);

// A fresh encoder for Data2Vec's EncoderFactory: [options] { return make_text_encoder(options); }
std::shared_ptr<TextEncoderImpl> make_text_encoder(const TextEncoderOptions& options);

}  // namespace data2vec::text
