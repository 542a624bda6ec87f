#include "data2vec/audio/hf.h"

namespace data2vec::audio {

AudioEncoderOptions audio_options_from_hf(const io::HfConfig& c) {
  c.require_one_of("hidden_act", {"gelu"}, "gelu");
  c.require_one_of("feat_extract_activation", {"gelu"}, "gelu");
  if (c.get_bool("add_adapter", false)) c.unsupported("add_adapter", "no adapter in this port");
  const auto dims = c.get_int_list("conv_dim", {512, 512, 512, 512, 512, 512, 512});
  const auto kernels = c.get_int_list("conv_kernel", {10, 3, 3, 3, 3, 2, 2});
  const auto strides = c.get_int_list("conv_stride", {5, 2, 2, 2, 2, 2, 2});
  if (dims.empty()) c.unsupported("conv_dim", "at least one conv layer");
  for (const auto& [key, list] : {std::pair{"conv_kernel", &kernels}, {"conv_stride", &strides}}) {
    if (list->size() != dims.size()) {
      c.unsupported(key, "needs one entry per conv layer, as conv_dim has (" +
                             std::to_string(dims.size()) + ")");
    }
  }
  if (c.has("num_feat_extract_layers") &&
      c.get_int("num_feat_extract_layers", 0) != int64_t(dims.size())) {
    c.unsupported("num_feat_extract_layers", "must equal the length of conv_dim");
  }
  std::vector<ConvLayerSpec> layers;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] <= 0 || kernels[i] <= 0 || strides[i] <= 0) {
      c.unsupported("conv_dim", "every conv dim, kernel and stride must be positive");
    }
    layers.push_back({dims[i], kernels[i], strides[i]});
  }
  const auto [dim, heads] = c.width_and_heads();
  const auto groups = c.get_int("num_conv_pos_embedding_groups", 16);
  if (groups <= 0 || dim % groups != 0) {
    c.unsupported("num_conv_pos_embedding_groups", "hidden_size must divide into the groups");
  }
  if (c.get_int("num_conv_pos_embeddings", 5) < 1) {
    c.unsupported("num_conv_pos_embeddings", "at least one positional conv layer");
  }
  return AudioEncoderOptions()
      .conv_layers(layers)
      .conv_bias(c.get_bool("conv_bias", false))
      .dim(dim)
      .depth(c.get_int("num_hidden_layers", 12))
      .num_heads(heads)
      .mlp_dim(c.get_int("intermediate_size", 3072))
      .dropout(c.get_double("hidden_dropout", 0.1))
      .attention_dropout(c.get_double("attention_dropout", 0.1))
      .activation_dropout(c.get_double("activation_dropout", 0.1))
      .feature_dropout(c.get_double("feat_proj_dropout", 0.0))
      .layerdrop(c.get_double("layerdrop", 0.1))
      .pos_conv_depth(c.get_int("num_conv_pos_embeddings", 5))
      .pos_conv_kernel(c.get_int("conv_pos_kernel_size", 19))
      .pos_conv_groups(groups)
      .layer_norm_eps(c.get_double("layer_norm_eps", 1e-5));
}

nlohmann::json hf_audio_config(const AudioEncoderOptions& o) {
  std::vector<int64_t> dims, kernels, strides;
  for (const auto& layer : o.conv_layers()) {
    dims.push_back(layer.dim);
    kernels.push_back(layer.kernel);
    strides.push_back(layer.stride);
  }
  auto config = io::hf_transformer_config("data2vec-audio", "Data2VecAudioModel", o.dim(),
                                          o.depth(), o.num_heads(), o.mlp_dim());
  config.update(nlohmann::json{
      {"hidden_dropout", o.dropout()},
      {"activation_dropout", o.activation_dropout()},
      {"attention_dropout", o.attention_dropout()},
      {"feat_proj_dropout", o.feature_dropout()},
      {"final_dropout", 0.1},
      {"layerdrop", o.layerdrop()},
      {"layer_norm_eps", o.layer_norm_eps()},
      {"feat_extract_activation", "gelu"},
      {"conv_dim", dims},
      {"conv_kernel", kernels},
      {"conv_stride", strides},
      {"conv_bias", o.conv_bias()},
      {"num_feat_extract_layers", int64_t(dims.size())},
      {"num_conv_pos_embeddings", o.pos_conv_depth()},
      {"conv_pos_kernel_size", o.pos_conv_kernel()},
      {"num_conv_pos_embedding_groups", o.pos_conv_groups()},
      // masked_spec_embed exists in HF's model only when one of the two is > 0.
      {"mask_time_prob", 0.05},
      {"mask_time_length", 10},
      {"mask_feature_prob", 0.0},
      {"add_adapter", false},
      {"vocab_size", 32},
      {"pad_token_id", 0},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  });
  return config;
}

io::NameTable hf_audio_names(bool with_masked_spec_embed) {
  io::NameTable table;
  table.to_hf = [with_masked_spec_embed](const std::string& ours) {
    if (ours == "masked_spec_embed" && !with_masked_spec_embed) return std::string();
    return hf_audio_name(ours);
  };
  return table;
}

bool hf_has_masked_spec_embed(const io::HfConfig& c) {
  return c.get_double("mask_time_prob", 0.05) > 0 || c.get_double("mask_feature_prob", 0.0) > 0;
}

}  // namespace data2vec::audio
