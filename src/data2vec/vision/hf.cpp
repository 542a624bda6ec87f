#include "data2vec/vision/hf.h"

#include <regex>

#include "data2vec/vision/masking.h"

namespace data2vec::vision {

VisionEncoderOptions vision_options_from_hf(const io::HfConfig& c) {
  c.require_one_of("hidden_act", {"gelu"}, "gelu");
  int64_t image_size = 224;
  if (c.has("image_size") && c.json().at("image_size").is_array()) {
    const auto sides = c.get_int_list("image_size", {});
    if (sides.size() != 2 || sides[0] != sides[1]) {
      c.unsupported("image_size", "this port implements square images");
    }
    image_size = sides[0];
  } else {
    image_size = c.get_int("image_size", 224);
  }
  auto patch = c.get_int("patch_size", 16);
  if (c.has("patch_size") && c.json().at("patch_size").is_array()) {
    const auto sides = c.get_int_list("patch_size", {});
    if (sides.size() != 2 || sides[0] != sides[1]) {
      c.unsupported("patch_size", "this port implements square patches");
    }
    patch = sides[0];
  }
  if (patch <= 0 || image_size % patch != 0) {
    c.unsupported("patch_size", "image_size must be a multiple of it");
  }
  const auto [dim, heads] = c.width_and_heads();
  const double hidden_dropout = c.get_double("hidden_dropout_prob", 0.0);
  VisionEncoderOptions o;
  o.image_size(image_size)
      .patch_size(patch)
      .in_channels(c.get_int("num_channels", 3))
      .dim(dim)
      .depth(c.get_int("num_hidden_layers", 12))
      .num_heads(heads)
      .mlp_dim(c.get_int("intermediate_size", 3072))
      .layer_scale_init(c.get_double("layer_scale_init_value", 0.1))
      .layer_norm_eps(c.get_double("layer_norm_eps", 1e-12))
      .shared_relative_position_bias(c.get_bool("use_shared_relative_position_bias", false))
      .layer_relative_position_bias(c.get_bool("use_relative_position_bias", false))
      .absolute_position_embeddings(c.get_bool("use_absolute_position_embeddings", false))
      .use_mask_token(c.get_bool("use_mask_token", false))
      .mean_pooling(c.get_bool("use_mean_pooling", true))
      .pooler(c.get_bool("add_pooling_layer", false))
      .dropout(hidden_dropout)
      .attention_dropout(c.get_double("attention_probs_dropout_prob", 0.0));
  o.min_mask_patches(scaled_min_mask_patches(o.num_patches()));
  return o;
}

nlohmann::json hf_vision_config(const VisionEncoderOptions& o) {
  auto config = io::hf_transformer_config("data2vec-vision", "Data2VecVisionModel", o.dim(),
                                          o.depth(), o.num_heads(), o.mlp_dim());
  config.update(nlohmann::json{
      {"hidden_dropout_prob", o.dropout()},
      {"attention_probs_dropout_prob", o.attention_dropout()},
      {"layer_norm_eps", o.layer_norm_eps()},
      {"image_size", o.image_size()},
      {"patch_size", o.patch_size()},
      {"num_channels", o.in_channels()},
      {"use_mask_token", o.use_mask_token()},
      {"use_absolute_position_embeddings", o.absolute_position_embeddings()},
      {"use_relative_position_bias", o.layer_relative_position_bias()},
      {"use_shared_relative_position_bias", o.shared_relative_position_bias()},
      {"layer_scale_init_value", o.layer_scale_init()},
      {"drop_path_rate", 0.0},
      {"use_mean_pooling", o.mean_pooling()},
      {"add_pooling_layer", o.pooler()},
  });
  return config;
}

io::NameTable hf_vision_names() {
  io::NameTable table;
  table.to_hf = [](const std::string& ours) -> std::string {
    static const std::regex index_buffer(R"(.*relative_position_index$)");
    if (std::regex_match(ours, index_buffer)) return "";  // computed from the grid
    static const std::regex layer_table(
        R"(encoder\.layer_relative_position_bias\.(\d+)\.relative_position_bias_table)");
    std::smatch m;
    if (std::regex_match(ours, m, layer_table)) {
      return "encoder.layer." + m[1].str() +
             ".attention.attention.relative_position_bias.relative_position_bias_table";
    }
    static const std::vector<std::pair<std::regex, std::string>> renames{
        {std::regex(R"(\.attention\.(query|key|value)\.)"), ".attention.attention.$1."},
        {std::regex(R"(\.attention\.output\.)"), ".attention.output.dense."},
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
    return hf.size() >= 23 && hf.compare(hf.size() - 23, 23, "relative_position_index") == 0;
  };
  return table;
}

}  // namespace data2vec::vision
