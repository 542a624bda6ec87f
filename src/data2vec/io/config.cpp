#include "data2vec/io/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "data2vec/io/files.h"

namespace data2vec::io {

std::vector<ConfigKey> config_keys(Config& c) {
  return {
      {"train.max_steps", &c.train.max_steps},
      {"train.batch_size", &c.train.batch_size},
      {"train.accumulate", &c.train.accumulate},
      {"train.precision", &c.train.precision},
      {"train.seed", &c.train.seed},
      {"train.threads", &c.train.threads},
      {"train.device", &c.train.device},
      {"train.num_workers", &c.train.num_workers},
      {"train.prefetch", &c.train.prefetch},
      {"train.collapse_warmup", &c.train.collapse_warmup},
      {"train.min_target_std", &c.train.min_target_std},
      {"train.min_pred_std", &c.train.min_pred_std},
      {"train.mask_group", &c.train.mask_group},
      {"train.dist_backend", &c.train.dist_backend},
      {"train.dist_timeout_s", &c.train.dist_timeout_s},
      {"train.bucket_mb", &c.train.bucket_mb},
      {"model.modality", &c.model.modality},
      {"model.preset", &c.model.preset},
      {"model.hf_config", &c.model.hf_config},
      {"model.algorithm", &c.model.algorithm},
      {"model.top_k_layers", &c.model.top_k_layers},
      {"model.layer_result", &c.model.layer_result},
      {"model.target_layer_norm", &c.model.target_layer_norm},
      {"model.target_final_norm", &c.model.target_final_norm},
      {"model.loss_beta", &c.model.loss_beta},
      {"model.loss_scale", &c.model.loss_scale},
      {"model.head_hidden_mult", &c.model.head_hidden_mult},
      {"model.mask_ratio", &c.model.mask_ratio},
      {"model.mask_prob", &c.model.mask_prob},
      {"model.mask_length", &c.model.mask_length},
      {"model.pos_conv_kernel", &c.model.pos_conv_kernel},
      {"model.dropout", &c.model.dropout},
      {"model.layer_scale_init", &c.model.layer_scale_init},
      {"model.clone_batch", &c.model.clone_batch},
      {"model.decoder_dim", &c.model.decoder_dim},
      {"model.decoder_kernel", &c.model.decoder_kernel},
      {"model.decoder_groups", &c.model.decoder_groups},
      {"model.decoder_layers", &c.model.decoder_layers},
      {"model.cls_loss", &c.model.cls_loss},
      {"ema.decay_start", &c.ema.decay_start},
      {"ema.decay_end", &c.ema.decay_end},
      {"ema.anneal_steps", &c.ema.anneal_steps},
      {"optim.name", &c.optim.name},
      {"optim.lr", &c.optim.lr},
      {"optim.beta1", &c.optim.beta1},
      {"optim.beta2", &c.optim.beta2},
      {"optim.eps", &c.optim.eps},
      {"optim.weight_decay", &c.optim.weight_decay},
      {"optim.schedule", &c.optim.schedule},
      {"optim.warmup_steps", &c.optim.warmup_steps},
      {"optim.final_lr_scale", &c.optim.final_lr_scale},
      {"optim.tri_stage_warmup", &c.optim.tri_stage_warmup},
      {"optim.tri_stage_hold", &c.optim.tri_stage_hold},
      {"optim.tri_stage_decay", &c.optim.tri_stage_decay},
      {"optim.clip_grad_norm", &c.optim.clip_grad_norm},
      {"data.dataset", &c.data.dataset},
      {"data.root", &c.data.root},
      {"data.tokenizer", &c.data.tokenizer},
      {"data.image_size", &c.data.image_size},
      {"data.augment", &c.data.augment},
      {"data.crop_scale_min", &c.data.crop_scale_min},
      {"data.max_samples", &c.data.max_samples},
      {"data.pack", &c.data.pack},
      {"data.max_tokens", &c.data.max_tokens},
      {"data.limit", &c.data.limit},
      {"log.every", &c.log.every},
      {"log.tensorboard", &c.log.tensorboard},
      {"log.progress_seconds", &c.log.progress_seconds},
      {"checkpoint.every", &c.checkpoint.every},
      {"checkpoint.keep", &c.checkpoint.keep},
      {"eval.knn_every", &c.eval.knn_every},
      {"eval.knn_k", &c.eval.knn_k},
      {"eval.knn_train_size", &c.eval.knn_train_size},
      {"eval.knn_test_size", &c.eval.knn_test_size},
      {"eval.tasks", &c.eval.tasks},
      {"eval.probe_train_limit", &c.eval.probe_train_limit},
      {"eval.probe_layer", &c.eval.probe_layer},
      {"eval.batch_size", &c.eval.batch_size},
  };
}

namespace {

[[noreturn]] void config_error(const std::string& source, const YAML::Mark& mark,
                               const std::string& message) {
  std::ostringstream out;
  out << source;
  if (!mark.is_null()) out << ":" << (mark.line + 1);
  out << ": " << message;
  throw std::invalid_argument(out.str());
}

const char* type_name(const FieldRef& field) {
  switch (field.index()) {
    case 0: return "an integer";
    case 1: return "a number";
    case 2: return "true or false";
    default: return "a string";
  }
}

// Sets one field from a YAML scalar, or explains why the value does not fit.
void assign(const ConfigKey& key, const YAML::Node& value, const std::string& source) {
  if (!value.IsScalar()) {
    config_error(source, value.Mark(), "key '" + key.name + "' expects " + type_name(key.field) +
                                           ", got a " + (value.IsMap() ? "map" : "list"));
  }
  try {
    std::visit(
        [&](auto* field) {
          using T = std::remove_pointer_t<decltype(field)>;
          *field = value.as<T>();
        },
        key.field);
  } catch (const YAML::BadConversion&) {
    config_error(source, value.Mark(),
                 "key '" + key.name + "' expects " + type_name(key.field) + ", got '" +
                     value.Scalar() + "'");
  }
}

std::string nearest_keys_hint(const std::string& name, std::vector<ConfigKey>& keys) {
  const auto section = name.substr(0, name.find('.'));
  std::string hint;
  for (const auto& k : keys) {
    if (k.name.rfind(section + ".", 0) == 0) hint += (hint.empty() ? "" : ", ") + k.name;
  }
  return hint.empty() ? "" : " (keys of '" + section + "': " + hint + ")";
}

void apply_node(Config& config, const YAML::Node& node, const std::string& prefix,
                const std::string& source, std::vector<ConfigKey>& keys, ConfigOrigins* origins) {
  for (const auto& item : node) {
    if (!item.first.IsScalar()) {  // `? [a, b]: 1` (found by fuzz/fuzz_config)
      config_error(source, item.first.Mark(), "a key must be a plain name, not a list or map");
    }
    const auto name = prefix + item.first.as<std::string>();
    const YAML::Node& value = item.second;
    if (value.IsMap()) {
      apply_node(config, value, name + ".", source, keys, origins);
      continue;
    }
    auto it = std::find_if(keys.begin(), keys.end(),
                           [&](const ConfigKey& k) { return k.name == name; });
    if (it == keys.end()) {
      config_error(source, item.first.Mark(),
                   "unknown key '" + name + "'" + nearest_keys_hint(name, keys));
    }
    assign(*it, value, source);
    if (origins != nullptr) {
      const auto mark = value.Mark();
      (*origins)[name] = mark.is_null() ? source : source + ":" + std::to_string(mark.line + 1);
    }
  }
}

void apply_file(Config& config, const std::string& path, std::set<std::string>& visited,
                ConfigOrigins* origins) {
  const auto canonical = std::filesystem::weakly_canonical(path).string();
  if (!visited.insert(canonical).second) {
    throw std::invalid_argument(path + ": 'base' chain includes this file twice");
  }
  if (!std::filesystem::exists(path)) throw std::invalid_argument("config file not found: " + path);
  YAML::Node root;
  try {
    root = YAML::Load(read_file(path));
  } catch (const YAML::ParserException& e) {
    config_error(path, e.mark, "YAML syntax error: " + e.msg);
  }
  // An empty file (or one of comments only) is a mistake, not a request for every default: a
  // truncated copy or the wrong path would otherwise train something nobody asked for.
  if (root.IsNull()) {
    config_error(path, YAML::Mark::null_mark(),
                 "the file holds no keys (empty, or comments only); a configuration sets at least "
                 "model.modality and data.dataset (presets are in configs/)");
  }
  if (!root.IsMap()) config_error(path, root.Mark(), "expected a map of sections at top level");
  if (root["base"]) {
    const auto base = std::filesystem::path(path).parent_path() / root["base"].as<std::string>();
    apply_file(config, base.string(), visited, origins);
    root.remove("base");
  }
  auto keys = config_keys(config);
  apply_node(config, root, "", path, keys, origins);
}

}  // namespace

void apply_yaml(Config& config, const std::string& yaml_text, const std::string& source,
                ConfigOrigins* origins) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    config_error(source, e.mark, "YAML syntax error: " + e.msg);
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) config_error(source, root.Mark(), "expected a map of sections at top level");
  auto keys = config_keys(config);
  apply_node(config, root, "", source, keys, origins);
}

void apply_overrides(Config& config, const std::vector<std::string>& overrides,
                     ConfigOrigins* origins) {
  auto keys = config_keys(config);
  for (const auto& item : overrides) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::invalid_argument("--set '" + item + "': expected key=value, e.g. train.max_steps=100");
    }
    const auto name = item.substr(0, eq);
    auto it = std::find_if(keys.begin(), keys.end(),
                           [&](const ConfigKey& k) { return k.name == name; });
    if (it == keys.end()) {
      throw std::invalid_argument("--set: unknown key '" + name + "'" + nearest_keys_hint(name, keys));
    }
    YAML::Node value;
    try {
      value = YAML::Load(item.substr(eq + 1));
    } catch (const YAML::ParserException& e) {
      throw std::invalid_argument("--set " + name + ": cannot parse the value: " + e.msg);
    }
    if (value.IsNull()) value = YAML::Node(std::string());
    assign(*it, value, "--set " + item);
    if (origins != nullptr) (*origins)[name] = "--set " + item;
  }
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config config;
  ConfigOrigins origins;
  std::set<std::string> visited;
  apply_file(config, path, visited, &origins);
  apply_overrides(config, overrides, &origins);
  apply_algorithm_defaults(config, origins);
  validate(config, &origins);
  return config;
}

void apply_algorithm_defaults(Config& config, const ConfigOrigins& origins) {
  auto& m = config.model;
  if (m.algorithm != "v2") return;
  const bool images = m.modality == "vision", text = m.modality == "text";
  const auto unset = [&](const char* key) { return origins.count(key) == 0; };
  if (unset("model.layer_result")) m.layer_result = "ffn";
  if (unset("model.target_layer_norm")) m.target_layer_norm = "instance_norm";
  if (unset("model.target_final_norm")) m.target_final_norm = images ? "layer_norm" : "none";
  if (unset("model.loss_beta")) m.loss_beta = 0.0;
  if (unset("model.loss_scale")) m.loss_scale = text ? 1.0 : 0.0;
  // Inverse block masking keeps 20% of the patches; text masks 48% of its tokens at random.
  // (Audio's 2.0 mask is its own: blocks of 5 frames, 50%.)
  if (unset("model.mask_ratio") && (images || text)) m.mask_ratio = images ? 0.8 : 0.48;
}

namespace {

// Throws the semantic errors of validate(): each names the key and, when known, the file and
// line (or the --set) that gave it its value, as the type errors of apply_node do.
class Checker {
 public:
  explicit Checker(const ConfigOrigins* origins) : origins_(origins) {}

  [[noreturn]] void fail(const std::string& key, const std::string& message) const {
    std::string where;
    if (origins_ != nullptr) {
      const auto it = origins_->find(key);
      if (it != origins_->end()) where = it->second + ": ";
    }
    throw std::invalid_argument(where + "config key '" + key + "' " + message);
  }

  void one_of(const std::string& key, const std::string& value,
              const std::vector<std::string>& allowed) const {
    if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    fail(key, "= '" + value + "': expected one of " + list);
  }

  // Integers print as integers ("got -4", not "-4.000000").
  void positive(const std::string& key, int64_t value) const {
    if (value <= 0) fail(key, "must be > 0, got " + std::to_string(value));
  }
  void positive(const std::string& key, double value) const {
    if (!(value > 0)) fail(key, "must be > 0, got " + number(value));
  }
  void non_negative(const std::string& key, int64_t value, const std::string& note = "") const {
    if (value < 0) fail(key, "must be >= 0" + note + ", got " + std::to_string(value));
  }

  static std::string number(double value) {
    std::ostringstream out;
    out << value;
    return out.str();
  }

 private:
  const ConfigOrigins* origins_;
};

}  // namespace

void validate(const Config& c, const ConfigOrigins* origins) {
  const Checker check(origins);
  if ((c.model.preset == "hf") != !c.model.hf_config.empty()) {
    check.fail("model.hf_config",
               "must be set exactly when model.preset is 'hf' (data2vec import-hf writes both)");
  }
  check.one_of("train.precision", c.train.precision, {"fp32", "bf16"});
  check.one_of("train.device", c.train.device, {"cpu", "cuda", "auto"});
  check.one_of("train.dist_backend", c.train.dist_backend, {"auto", "gloo", "nccl"});
  check.positive("train.dist_timeout_s", c.train.dist_timeout_s);
  check.positive("train.bucket_mb", c.train.bucket_mb);
  check.non_negative("train.mask_group", c.train.mask_group);
  check.one_of("model.modality", c.model.modality, {"toy", "vision", "audio", "text"});
  check.one_of("model.algorithm", c.model.algorithm, {"v1", "v2"});
  check.one_of("model.layer_result", c.model.layer_result, {"ffn", "block"});
  check.one_of("model.target_layer_norm", c.model.target_layer_norm,
               {"instance_norm", "layer_norm", "none"});
  check.one_of("model.target_final_norm", c.model.target_final_norm,
               {"instance_norm", "layer_norm", "none"});
  check.one_of("optim.name", c.optim.name, {"adam", "adamw"});
  check.one_of("optim.schedule", c.optim.schedule, {"cosine", "linear", "tri_stage", "constant"});
  check.positive("train.max_steps", c.train.max_steps);
  check.positive("train.batch_size", c.train.batch_size);
  check.positive("train.accumulate", c.train.accumulate);
  check.positive("optim.lr", c.optim.lr);
  check.positive("log.every", c.log.every);
  check.positive("checkpoint.every", c.checkpoint.every);
  check.positive("model.top_k_layers", c.model.top_k_layers);
  check.non_negative("train.threads", c.train.threads, " (0 = every core)");
  for (const auto& [key, value] :
       {std::pair<const char*, double>{"ema.decay_start", c.ema.decay_start},
        {"ema.decay_end", c.ema.decay_end}}) {
    if (value < 0 || value > 1) check.fail(key, "must be in [0, 1], got " + Checker::number(value));
  }
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"model.clone_batch", c.model.clone_batch},
                                   {"model.decoder_dim", c.model.decoder_dim},
                                   {"model.decoder_kernel", c.model.decoder_kernel},
                                   {"model.decoder_groups", c.model.decoder_groups},
                                   {"model.decoder_layers", c.model.decoder_layers}}) {
    check.non_negative(key, value, " (0 = the modality's default)");
  }
  if (c.model.decoder_kernel > 0 && c.model.decoder_kernel % 2 == 0) {
    check.fail("model.decoder_kernel",
               "must be odd (same padding), got " + std::to_string(c.model.decoder_kernel));
  }
  if (c.model.mask_ratio <= 0 || c.model.mask_ratio >= 1) {
    check.fail("model.mask_ratio", "must be in (0, 1), got " + Checker::number(c.model.mask_ratio));
  }
  check.non_negative("model.pos_conv_kernel", c.model.pos_conv_kernel, " (0 = the preset's)");
  if (c.data.pack && c.data.max_samples <= 0) {
    check.fail("data.pack", "needs data.max_samples > 0 (the packed length)");
  }
  const auto& layer = c.eval.probe_layer;
  if (layer != "final" && (layer.empty() || layer.find_first_not_of("0123456789") != std::string::npos)) {
    check.fail("eval.probe_layer",
               "is '" + layer + "': expected final, 0 (local features) or a block number 1..L");
  }
}

std::string to_yaml(const Config& config) {
  Config copy = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  for (const auto& key : config_keys(copy)) {
    const auto dot = key.name.find('.');
    const auto key_section = key.name.substr(0, dot);
    if (key_section != section) {
      if (!section.empty()) out << YAML::EndMap;
      out << YAML::Key << key_section << YAML::Value << YAML::BeginMap;
      section = key_section;
    }
    out << YAML::Key << key.name.substr(dot + 1) << YAML::Value;
    std::visit(
        [&](auto* field) {
          using T = std::remove_pointer_t<decltype(field)>;
          if constexpr (std::is_same_v<T, double>) {
            std::ostringstream number;
            number.precision(17);
            number << *field;
            out << number.str();
          } else {
            out << *field;
          }
        },
        key.field);
  }
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace data2vec::io
