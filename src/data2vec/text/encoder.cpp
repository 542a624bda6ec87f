#include "data2vec/text/encoder.h"

#include <map>

#include "data2vec/core/masking.h"
#include "data2vec/nn/layer_norm.h"

namespace data2vec::text {

std::vector<int64_t> special_ids(const TextEncoderOptions& options) {
  return {options.bos_id(), options.pad_id(), options.eos_id(), options.unk_id(),
          options.mask_id()};
}

TextEncoderOptions text_preset(const std::string& name, int64_t vocab_size) {
  struct Size {
    int64_t depth, dim, mlp_dim, num_heads;
  };
  static const std::map<std::string, Size> presets = {
      {"mini", {4, 128, 512, 2}},    {"tiny", {12, 192, 768, 3}},     {"small", {12, 384, 1536, 6}},
      {"base", {12, 768, 3072, 12}}, {"large", {24, 1024, 4096, 16}},
  };
  const auto it = presets.find(name);
  if (it == presets.end()) {
    std::string known;
    for (const auto& [key, size] : presets) known += " " + key;
    TORCH_CHECK(false, "unknown text encoder preset '", name, "'; known:", known);
  }
  const auto& s = it->second;
  return TextEncoderOptions(vocab_size)
      .depth(s.depth)
      .dim(s.dim)
      .mlp_dim(s.mlp_dim)
      .num_heads(s.num_heads);
}

TextEmbeddingsImpl::TextEmbeddingsImpl(const TextEncoderOptions& options)
    : roberta_positions_(options.roberta_positions()), pad_id_(options.pad_id()) {
  const auto d = options.dim();
  TORCH_CHECK(options.type_vocab_size() >= 1, "text encoder: type_vocab_size must be >= 1, got ",
              options.type_vocab_size());
  const auto position_rows =
      options.max_positions() + (roberta_positions_ ? options.pad_id() + 1 : 0);
  word_embeddings = register_module(
      "word_embeddings",
      torch::nn::Embedding(
          torch::nn::EmbeddingOptions(options.vocab_size(), d).padding_idx(options.pad_id())));
  position_embeddings =
      register_module("position_embeddings", torch::nn::Embedding(position_rows, d));
  token_type_embeddings =
      register_module("token_type_embeddings", torch::nn::Embedding(options.type_vocab_size(), d));
  layer_norm = register_module(
      "LayerNorm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(options.layer_norm_eps())));
}

torch::Tensor TextEmbeddingsImpl::position_ids(const torch::Tensor& ids) const {
  if (!roberta_positions_) return torch::arange(ids.size(1), ids.options());  // [T]
  const auto real = ids.ne(pad_id_).to(torch::kLong);                         // [B,T]
  return real.cumsum(1) * real + pad_id_;                                     // [B,T]
}

torch::Tensor TextEmbeddingsImpl::forward(const torch::Tensor& ids,
                                          const torch::Tensor& token_type_ids) {
  const auto types = token_type_ids.defined() ? token_type_embeddings(token_type_ids)    // [B,T,D]
                                              : token_type_embeddings->weight[0];        // [D]
  const auto x = word_embeddings(ids) + position_embeddings(position_ids(ids)) + types;  // [B,T,D]
  return nn::layer_norm(x, layer_norm);
}

TextEncoderImpl::TextEncoderImpl(const TextEncoderOptions& options)
    : options_(options), special_ids_(special_ids(options)) {
  TORCH_CHECK(options.vocab_size() > 0, "text encoder: vocab_size must be set, got ",
              options.vocab_size());
  for (const auto id : special_ids_) {
    TORCH_CHECK(id >= 0 && id < options.vocab_size(), "text encoder: special id ", id,
                " outside the vocabulary of ", options.vocab_size());
  }
  embeddings = register_module("embeddings", TextEmbeddings(options));
  embedding_dropout = register_module("embedding_dropout", torch::nn::Dropout(options.dropout()));
  auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
  auto layer_list = encoder->register_module("layer", torch::nn::ModuleList());
  const auto block_options = nn::BlockOptions(options.dim(), options.num_heads(), options.mlp_dim())
                                 .layer_norm_eps(options.layer_norm_eps())
                                 .dropout(options.dropout())
                                 .attention_dropout(options.attention_dropout())
                                 .activation_dropout(options.activation_dropout())
                                 .gemm(options.gemm());
  for (int64_t i = 0; i < options.depth(); ++i) {
    layers.push_back(nn::PostNormBlock(block_options));
    layer_list->push_back(layers.back());
  }
  if (options.pooler()) {
    auto pooler = register_module("pooler", std::make_shared<torch::nn::Module>());
    pooler_dense =
        pooler->register_module("dense", torch::nn::Linear(options.dim(), options.dim()));
  }

  // BERT's init (fairseq init_bert_params, HF _init_weights): N(0, init_std) weights, zero
  // biases, a zero padding row. Post-LN stacks train poorly from PyTorch's default init.
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* linear = module->as<torch::nn::Linear>()) {
      linear->weight.normal_(0.0, options.init_std());
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* embedding = module->as<torch::nn::Embedding>()) {
      embedding->weight.normal_(0.0, options.init_std());
    }
  }
  embeddings->word_embeddings->weight[options.pad_id()].zero_();
}

MaskedInput TextEncoderImpl::apply_mask(const EncoderInput& input, at::Generator& generator) {
  auto masked = bert_mask(input.source, input.padding_mask, special_ids_, options_.mask_id(),
                          options_.vocab_size(), options_.masking(), generator);
  return {EncoderInput{masked.ids, input.padding_mask}, masked.mask};
}

EncoderOutput TextEncoderImpl::extract_features(const EncoderInput& input,
                                                const torch::Tensor& /*mask: in the ids*/) {
  return encode(input, /*token_type_ids=*/{});
}

torch::Tensor TextEncoderImpl::pool(const torch::Tensor& x) {
  TORCH_CHECK(pooler_dense, "text encoder: this encoder has no pooler");
  return torch::tanh(pooler_dense(x.select(1, 0)));
}

EncoderOutput TextEncoderImpl::encode(const EncoderInput& input,
                                      const torch::Tensor& token_type_ids) {
  const auto& ids = input.source;  // [B,T]
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kLong,
              "text encoder: expects token ids [B,T] int64, got ", ids.sizes(), " ",
              ids.scalar_type());
  TORCH_CHECK(ids.size(1) <= options_.max_positions(), "text encoder: sequence of ", ids.size(1),
              " tokens > max_positions ", options_.max_positions(),
              "; cut blocks shorter (data max_tokens)");
  EncoderOutput out;
  out.padding_mask = input.padding_mask;
  if (token_type_ids.defined()) {
    TORCH_CHECK(token_type_ids.sizes() == ids.sizes(), "text encoder: token_type_ids ",
                token_type_ids.sizes(), " must match input_ids ", ids.sizes());
    TORCH_CHECK(token_type_ids.numel() == 0 ||
                    (token_type_ids.min().item<int64_t>() >= 0 &&
                     token_type_ids.max().item<int64_t>() < options_.type_vocab_size()),
                "text encoder: token_type_ids outside [0, ", options_.type_vocab_size(), ")");
  }
  out.local_features = embeddings->forward(ids, token_type_ids);  // [B,T,D]
  auto x = embedding_dropout(out.local_features);
  out.block_input = x;
  const bool ffn = options_.layer_result() == LayerResultKind::kFfn;
  for (auto& layer : layers) {
    auto block = layer->forward(x, /*attention_bias=*/{}, input.padding_mask);
    x = block.x;
    out.layer_results.push_back(ffn ? block.ffn : block.x);
  }
  out.x = x;
  return out;
}

torch::Tensor TextEncoderImpl::v2_mask(const EncoderInput& input, int64_t clones,
                                       at::Generator& generator) {
  const auto& ids = input.source;  // [B,T]
  TORCH_CHECK(ids.dim() == 2, "text encoder: expects token ids [B,T], got ", ids.sizes());
  const auto padding = input.padding_mask.defined()
                           ? input.padding_mask.cpu().repeat_interleave(clones, 0)
                           : torch::Tensor();  // [B*M,T]
  const auto mask = random_mask_same_count(ids.size(0) * clones, ids.size(1),
                                           options_.masking().mask_prob(), padding, generator);
  return mask.to(ids.device());
}

EncoderOutput TextEncoderImpl::extract_kept_features(const EncoderInput& input,
                                                     const torch::Tensor& ids_keep,
                                                     int64_t clones) {
  const auto& ids = input.source;  // [B,T]
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kLong,
              "text encoder: expects token ids [B,T] int64, got ", ids.sizes(), " ",
              ids.scalar_type());
  TORCH_CHECK(ids.size(1) <= options_.max_positions(), "text encoder: sequence of ", ids.size(1),
              " tokens > max_positions ", options_.max_positions());
  EncoderOutput out;
  out.local_features = embeddings(ids);  // [B,T,D], positions included
  auto x = embedding_dropout(gather_copies(out.local_features, ids_keep, clones));  // [B*M,Tk,D]
  if (input.padding_mask.defined()) {
    out.padding_mask = gather_copies(input.padding_mask, ids_keep, clones);  // [B*M,Tk]
  }
  for (auto& layer : layers) x = layer->forward(x, /*attention_bias=*/{}, out.padding_mask).x;
  out.x = x;
  return out;
}

DecoderOptions TextEncoderImpl::default_decoder_options() const {
  // fairseq config/v2/base_text_only_task.yaml: decoder_residual false, projection_layers 2.
  const auto blocks = DecoderOptions().dim(768).kernel(9).groups(1).layers(5).residual(false);
  return DecoderOptions(blocks).projection_layers(2).gemm(options_.gemm());
}

std::shared_ptr<TextEncoderImpl> make_text_encoder(const TextEncoderOptions& options) {
  return std::make_shared<TextEncoderImpl>(options);
}

}  // namespace data2vec::text
