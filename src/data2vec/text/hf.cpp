#include "data2vec/text/hf.h"

#include <regex>

namespace data2vec::text {

TextEncoderOptions text_options_from_hf(const io::HfConfig& c) {
  c.require_one_of("hidden_act", {"gelu"}, "gelu");
  c.require_one_of("position_embedding_type", {"absolute"}, "absolute");
  if (c.get_bool("is_decoder", false)) c.unsupported("is_decoder", "encoders only");
  if (c.get_bool("add_cross_attention", false)) {
    c.unsupported("add_cross_attention", "encoders only");
  }
  const auto vocab = c.get_int("vocab_size", 30522);
  const auto pad = c.get_int("pad_token_id", 1);
  const auto max_positions = c.get_int("max_position_embeddings", 512) - (pad + 1);
  if (max_positions < 1) {
    c.unsupported("max_position_embeddings", "must exceed pad_token_id + 1 (RoBERTa numbering)");
  }
  const auto [dim, heads] = c.width_and_heads();
  if (vocab < 5) c.unsupported("vocab_size", "at least the 5 special ids");
  const auto dropout = c.get_double("hidden_dropout_prob", 0.1);
  auto o = TextEncoderOptions(vocab)
               .max_positions(max_positions)
               .roberta_positions(true)
               .type_vocab_size(c.get_int("type_vocab_size", 2))
               .pooler(c.get_bool("add_pooling_layer", true))
               .dim(dim)
               .depth(c.get_int("num_hidden_layers", 12))
               .num_heads(heads)
               .mlp_dim(c.get_int("intermediate_size", 3072))
               .dropout(dropout)
               .attention_dropout(c.get_double("attention_probs_dropout_prob", 0.1))
               .layer_norm_eps(c.get_double("layer_norm_eps", 1e-12))
               .bos_id(c.get_int("bos_token_id", 0))
               .pad_id(pad)
               .eos_id(c.get_int("eos_token_id", 2))
               .mask_id(vocab - 1);
  o.unk_id(std::min<int64_t>(3, vocab - 1));
  return o;
}

nlohmann::json hf_text_config(const TextEncoderOptions& o) {
  const int64_t offset = o.pad_id() + 1;
  auto config = io::hf_transformer_config("data2vec-text", "Data2VecTextModel", o.dim(), o.depth(),
                                          o.num_heads(), o.mlp_dim());
  config.update(nlohmann::json{
      {"vocab_size", o.vocab_size()},
      {"hidden_dropout_prob", o.dropout()},
      {"attention_probs_dropout_prob", o.attention_dropout()},
      {"max_position_embeddings", o.max_positions() + offset},
      {"type_vocab_size", o.type_vocab_size()},
      {"layer_norm_eps", o.layer_norm_eps()},
      {"pad_token_id", o.pad_id()},
      {"bos_token_id", o.bos_id()},
      {"eos_token_id", o.eos_id()},
      {"position_embedding_type", "absolute"},
      {"use_cache", true},
      {"classifier_dropout", nullptr},
      {"add_pooling_layer", o.pooler()},
  });
  return config;
}

io::NameTable hf_text_names() {
  io::NameTable table;
  table.to_hf = [](const std::string& ours) {
    static const std::vector<std::pair<std::regex, std::string>> renames{
        {std::regex(R"(\.attention\.(query|key|value)\.)"), ".attention.self.$1."},
        {std::regex(R"(\.attention\.output\.)"), ".attention.output.dense."},
        {std::regex(R"(^(encoder\.layer\.\d+)\.layer_norm\.)"), "$1.attention.output.LayerNorm."},
        {std::regex(R"(^(encoder\.layer\.\d+)\.final_layer_norm\.)"), "$1.output.LayerNorm."},
        {std::regex(R"(\.feed_forward\.fc1\.)"), ".intermediate.dense."},
        {std::regex(R"(\.feed_forward\.fc2\.)"), ".output.dense."},
    };
    std::string name = ours;
    for (const auto& [pattern, replacement] : renames) {
      name = std::regex_replace(name, pattern, replacement);
    }
    return name;
  };
  table.ignorable = [](const std::string& hf) {
    return hf == "embeddings.position_ids" || hf == "embeddings.token_type_ids";
  };
  return table;
}

io::StateDict text_state_to_hf(const io::StateDict& ours, const TextEncoderOptions& o,
                               const std::string& prefix) {
  auto state = io::state_to_hf(ours, hf_text_names(), prefix);
  if (!o.roberta_positions()) {
    auto& table = state.at(prefix + "embeddings.position_embeddings.weight");  // [P,D]
    table = torch::cat({torch::zeros({o.pad_id() + 1, table.size(1)}, table.options()), table});
  }
  return state;
}

}  // namespace data2vec::text
