#include "data2vec/io/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "data2vec/io/files.h"
#include "data2vec/io/probe_layers.h"

namespace data2vec::io {

std::vector<ConfigKey> config_keys(Config& c) {
  const std::vector<std::string> norms = {"instance_norm", "layer_norm", "none"};
  return {
      {"train.max_steps", &c.train.max_steps, "optimizer steps in the whole run"},
      {"train.batch_size", &c.train.batch_size, "examples per micro-batch (per process)"},
      {"train.accumulate", &c.train.accumulate, "micro-batches per optimizer step"},
      {"train.precision", &c.train.precision,
       "autocast precision; weights, EMA and targets stay fp32", {"fp32", "bf16"}},
      {"train.seed", &c.train.seed,
       "seeds init, masks, dropout, data order and augmentation"},
      {"train.threads", &c.train.threads, "intra-op threads; 0 = all cores"},
      {"train.device", &c.train.device, "auto = cuda when available", {"cpu", "cuda", "auto"}},
      {"train.num_workers", &c.train.num_workers, "background data-loading threads"},
      {"train.prefetch", &c.train.prefetch, "batches loaded ahead of the step"},
      {"train.collapse_warmup", &c.train.collapse_warmup,
       "steps before the collapse check starts"},
      {"train.min_target_std", &c.train.min_target_std,
       "collapse when the target std falls below (fairseq min_target_var)"},
      {"train.min_pred_std", &c.train.min_pred_std,
       "collapse when the prediction std falls below (fairseq min_pred_var)"},
      {"train.mask_group", &c.train.mask_group,
       "examples per mask draw (seeded by their global position); 0 = the micro-batch"},
      {"train.dist_backend", &c.train.dist_backend,
       "several processes: auto = nccl on cuda, gloo on cpu", {"auto", "gloo", "nccl"}},
      {"train.dist_timeout_s", &c.train.dist_timeout_s,
       "a collective waiting longer than this fails the run"},
      {"train.bucket_mb", &c.train.bucket_mb, "gradient all-reduce bucket size (MB)"},
      {"model.modality", &c.model.modality, "the encoder family",
       {"toy", "vision", "audio", "text"}},
      {"model.preset", &c.model.preset,
       "encoder size preset of the modality; hf = built from model.hf_config"},
      {"model.hf_config", &c.model.hf_config,
       "preset hf: the Hugging Face config.json (JSON text) the encoder is built from "
       "(import-hf writes it)"},
      {"model.algorithm", &c.model.algorithm, "v1 = data2vec 1.0, v2 = data2vec 2.0",
       {"v1", "v2"}},
      {"model.top_k_layers", &c.model.top_k_layers,
       "K: targets average the LAST K layer results"},
      {"model.layer_result", &c.model.layer_result,
       "which tensor is a layer result: the feed-forward output or the block's (v2 default ffn)",
       {"ffn", "block"}},
      {"model.target_layer_norm", &c.model.target_layer_norm,
       "normalisation of each of the K layers (v2 default instance_norm)", norms},
      {"model.target_final_norm", &c.model.target_final_norm,
       "normalisation of their average (v2 default: layer_norm for images, else none)", norms},
      {"model.loss_beta", &c.model.loss_beta,
       "0 = squared error, > 0 = smooth L1 with this beta (v2 default 0)"},
      {"model.loss_scale", &c.model.loss_scale,
       "per-position loss scale; 0 = 1/sqrt(D) (v2 default: text 1, else 0)"},
      {"model.head_hidden_mult", &c.model.head_hidden_mult,
       "v1 head: 0 = Linear(D,D); m = Linear(D,mD)-GELU-Linear(mD,D)"},
      {"model.mask_ratio", &c.model.mask_ratio,
       "vision: masked patch fraction; text: selected token fraction (v2: 0.8 images, 0.48 text)"},
      {"model.mask_prob", &c.model.mask_prob, "audio: span start probability"},
      {"model.mask_length", &c.model.mask_length, "audio: span length in frames"},
      {"model.pos_conv_kernel", &c.model.pos_conv_kernel,
       "audio: kernel of each positional conv layer; unset = the preset's (19)"},
      {"model.dropout", &c.model.dropout, "encoder dropout; unset = the preset's"},
      {"model.layer_scale_init", &c.model.layer_scale_init,
       "vision layer scale (0 = none); unset = the preset's"},
      {"model.position_encoding", &c.model.position_encoding,
       "vision: relative (BEiT's shared relative bias, data2vec 1.0) or sincos (fixed 2-D sin-cos "
       "added to the patches, data2vec 2.0)",
       {"relative", "sincos"}},
      {"model.depth_scaled_init", &c.model.depth_scaled_init,
       "vision: divide layer l's residual output projections by sqrt(2 l) at init (BEiT, "
       "data2vec 1.0; 2.0 does not)"},
      {"model.gemm", &c.model.gemm,
       "matrix products of the transformer blocks (CPU fp32): auto = onednn where built with it; "
       "torch = LibTorch's BLAS. Same parameters, results equal to fp32 rounding",
       {"auto", "torch", "onednn"}},
      {"model.clone_batch", &c.model.clone_batch,
       "v2: masked copies per example; unset = images 16, audio / text 8, toy 4"},
      {"model.decoder_dim", &c.model.decoder_dim,
       "v2: CNN decoder width; unset = images / text 768, audio 384"},
      {"model.decoder_kernel", &c.model.decoder_kernel,
       "v2: decoder conv kernel (odd); unset = images 3, audio 7, text 9"},
      {"model.decoder_groups", &c.model.decoder_groups,
       "v2: decoder conv groups; unset = images / audio 16, text 1"},
      {"model.decoder_layers", &c.model.decoder_layers,
       "v2: decoder conv blocks; unset = images 6, audio 4, text 5"},
      {"model.cls_loss", &c.model.cls_loss,
       "v2: CLS loss weight; unset = 0.01 for images, else 0"},
      {"ema.decay_start", &c.ema.decay_start, "teacher decay tau at step 0"},
      {"ema.decay_end", &c.ema.decay_end, "tau after the anneal; 1 freezes the teacher"},
      {"ema.anneal_steps", &c.ema.anneal_steps,
       "steps from decay_start to decay_end; unset = train.max_steps"},
      {"optim.name", &c.optim.name,
       "adam (fairseq's, with decoupled decay) or adamw: the same update", {"adam", "adamw"}},
      {"optim.lr", &c.optim.lr, "peak learning rate"},
      {"optim.beta1", &c.optim.beta1, "Adam beta1"},
      {"optim.beta2", &c.optim.beta2, "Adam beta2"},
      {"optim.eps", &c.optim.eps, "Adam epsilon"},
      {"optim.weight_decay", &c.optim.weight_decay,
       "not applied to biases, norms, layer scales, tokens, positions"},
      {"optim.schedule", &c.optim.schedule, "learning-rate schedule",
       {"cosine", "linear", "tri_stage", "constant"}},
      {"optim.warmup_steps", &c.optim.warmup_steps,
       "linear warm-up from 0 (cosine, linear, constant)"},
      {"optim.final_lr_scale", &c.optim.final_lr_scale,
       "lr at the end of cosine / linear / tri-stage decay, x peak"},
      {"optim.tri_stage_warmup", &c.optim.tri_stage_warmup,
       "tri_stage: warm-up fraction of max_steps"},
      {"optim.tri_stage_hold", &c.optim.tri_stage_hold, "tri_stage: hold fraction of max_steps"},
      {"optim.tri_stage_decay", &c.optim.tri_stage_decay,
       "tri_stage: decay fraction of max_steps"},
      {"optim.clip_grad_norm", &c.optim.clip_grad_norm, "0 = no clipping"},
      {"data.dataset", &c.data.dataset, "the modality's reader (see configs/ and README)"},
      {"data.root", &c.data.root, "where the data lives"},
      {"data.tokenizer", &c.data.tokenizer, "text: SentencePiece model directory"},
      {"data.image_size", &c.data.image_size, "vision: input size"},
      {"data.augment", &c.data.augment,
       "vision: random resized crop + flip during pretraining"},
      {"data.crop_scale_min", &c.data.crop_scale_min, "vision: smallest crop area fraction"},
      {"data.max_samples", &c.data.max_samples,
       "audio: random crop length in samples (16 kHz)"},
      {"data.pack", &c.data.pack, "audio pretraining: join short utterances into max_samples"},
      {"data.max_tokens", &c.data.max_tokens, "text: tokens per block"},
      {"data.limit", &c.data.limit, "use only the first N examples; 0 = all"},
      {"log.every", &c.log.every, "steps between metrics.jsonl records"},
      {"log.tensorboard", &c.log.tensorboard, "write TensorBoard event files to DIR/tb"},
      {"log.progress_seconds", &c.log.progress_seconds,
       "plain progress line interval when not on a terminal"},
      {"checkpoint.every", &c.checkpoint.every,
       "steps between checkpoints (and one at the end)"},
      {"checkpoint.keep", &c.checkpoint.keep, "step_<N> checkpoints kept (the newest)"},
      {"eval.knn_every", &c.eval.knn_every, "steps between k-NN monitor runs; 0 = off"},
      {"eval.knn_k", &c.eval.knn_k, "neighbours of the k-NN monitor"},
      {"eval.knn_train_size", &c.eval.knn_train_size,
       "examples from the train split used as the k-NN memory"},
      {"eval.knn_test_size", &c.eval.knn_test_size, "examples from the test split scored"},
      {"eval.tasks", &c.eval.tasks,
       "comma-separated labelled tasks to evaluate; empty = data.dataset's"},
      {"eval.probe_train_limit", &c.eval.probe_train_limit,
       "train examples the linear probes fit on; 0 = all"},
      {"eval.probe_layer", &c.eval.probe_layer,
       "what the probes pool: final, 0 (local features), k (block k) or a list (1,2,3,4) "
       "concatenated"},
      {"eval.pool", &c.eval.pool,
       "how probes and fine-tuning heads pool the encoder output: mean, cls, or grid (the 2 x 2 "
       "quadrant means of an image's patches)"},
      {"eval.batch_size", &c.eval.batch_size, "examples per evaluation batch"},
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
    case 3: return "a string";
    case 4: return "an integer, or null for the default";
    default: return "a number, or null for the default";
  }
}

// A YAML null: `~`, `null`, nothing after the colon, or `--set key=` with nothing after the `=`.
bool is_null(const YAML::Node& value) {
  if (value.IsNull()) return true;
  const auto& text = value.Scalar();
  return value.IsScalar() && (text.empty() || text == "~" || text == "null");
}

// Sets one field from a YAML scalar, or explains why the value does not fit. An optional field
// takes null as "unset"; configurations written before these keys became optional spelt unset
// as 0 (integers) or -1 (numbers), and those values still read as unset.
void assign(const ConfigKey& key, const YAML::Node& value, const std::string& source) {
  if (!value.IsNull() && !value.IsScalar()) {
    config_error(source, value.Mark(), "key '" + key.name + "' expects " + type_name(key.field) +
                                           ", got a " + (value.IsMap() ? "map" : "list"));
  }
  try {
    std::visit(
        [&](auto* field) {
          using T = std::remove_pointer_t<decltype(field)>;
          if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
            field->reset();
            if (is_null(value)) return;
            const auto v = value.as<int64_t>();
            if (v != 0) *field = v;
          } else if constexpr (std::is_same_v<T, std::optional<double>>) {
            field->reset();
            if (is_null(value)) return;
            const auto v = value.as<double>();
            if (v != -1.0) *field = v;
          } else {
            if (value.IsNull()) throw YAML::BadConversion(value.Mark());
            *field = value.as<T>();
          }
        },
        key.field);
  } catch (const YAML::BadConversion&) {
    config_error(source, value.Mark(),
                 "key '" + key.name + "' expects " + type_name(key.field) + ", got '" +
                     (value.IsNull() ? std::string("null") : value.Scalar()) + "'");
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

// Why `name` is no key: a section written as if it were one (`train: 5`), or a name unknown.
std::string not_a_key_message(const std::string& name, std::vector<ConfigKey>& keys) {
  const bool section = std::any_of(keys.begin(), keys.end(), [&](const ConfigKey& k) {
    return k.name.rfind(name + ".", 0) == 0;
  });
  if (section) {
    return "'" + name + "' is a section, not a key: its keys go under it, indented" +
           nearest_keys_hint(name, keys);
  }
  return "unknown key '" + name + "'" + nearest_keys_hint(name, keys);
}

void apply_node(Config& config, const YAML::Node& node, const std::string& prefix,
                const std::string& source, std::vector<ConfigKey>& keys, ConfigOrigins* origins) {
  // yaml-cpp keeps both of two equal keys and readers disagree on which one counts, so a key
  // given twice is refused with both lines.
  std::map<std::string, int> first_line;
  for (const auto& item : node) {
    if (!item.first.IsScalar()) {  // `? [a, b]: 1` (found by fuzz/fuzz_config)
      config_error(source, item.first.Mark(), "a key must be a plain name, not a list or map");
    }
    const auto name = prefix + item.first.as<std::string>();
    const auto [first, is_new] = first_line.emplace(name, item.first.Mark().line + 1);
    if (!is_new) {
      config_error(source, item.first.Mark(),
                   "duplicate key '" + name + "' (first on line " + std::to_string(first->second) +
                       ")");
    }
    const YAML::Node& value = item.second;
    if (value.IsMap()) {
      apply_node(config, value, name + ".", source, keys, origins);
      continue;
    }
    auto it = std::find_if(keys.begin(), keys.end(),
                           [&](const ConfigKey& k) { return k.name == name; });
    if (it == keys.end()) {
      config_error(source, item.first.Mark(), not_a_key_message(name, keys));
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
  if (std::filesystem::is_directory(path))
    throw std::invalid_argument("config file '" + path + "' is a directory");
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
    if (!std::filesystem::is_regular_file(base))  // named here, with the line that names it
      config_error(path, root["base"].Mark(),
                   "base: '" + base.string() + "' is not a config file (missing, or a folder)");
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
      throw std::invalid_argument("--set: " + not_a_key_message(name, keys));
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
  // Every key that takes one of a few words, from the key table: the one place they are listed.
  Config copy = c;
  for (const auto& key : config_keys(copy)) {
    if (!key.choices.empty()) check.one_of(key.name, *std::get<std::string*>(key.field), key.choices);
    // `.nan` and `.inf` are YAML numbers; no key of ours means anything by them.
    const double* number = nullptr;
    if (auto* const* plain = std::get_if<double*>(&key.field)) number = *plain;
    if (auto* const* optional = std::get_if<std::optional<double>*>(&key.field); optional && **optional)
      number = &***optional;
    if (number && !std::isfinite(*number))
      check.fail(key.name, "must be a finite number, got " + Checker::number(*number));
  }
  check.positive("train.dist_timeout_s", c.train.dist_timeout_s);
  check.positive("train.bucket_mb", c.train.bucket_mb);
  check.non_negative("train.mask_group", c.train.mask_group);
  check.positive("train.max_steps", c.train.max_steps);
  check.positive("train.batch_size", c.train.batch_size);
  check.positive("train.accumulate", c.train.accumulate);
  check.positive("optim.lr", c.optim.lr);
  check.positive("optim.eps", c.optim.eps);
  for (const auto& [key, value] : {std::pair<const char*, double>{"optim.beta1", c.optim.beta1},
                                   {"optim.beta2", c.optim.beta2}}) {
    if (value < 0 || value >= 1) check.fail(key, "must be in [0, 1), got " + Checker::number(value));
  }
  for (const auto& [key, value] :
       {std::pair<const char*, double>{"optim.weight_decay", c.optim.weight_decay},
        {"optim.clip_grad_norm", c.optim.clip_grad_norm},
        {"optim.final_lr_scale", c.optim.final_lr_scale}}) {
    if (value < 0) check.fail(key, "must be >= 0, got " + Checker::number(value));
  }
  check.positive("log.every", c.log.every);
  check.positive("checkpoint.every", c.checkpoint.every);
  check.positive("model.top_k_layers", c.model.top_k_layers);
  check.non_negative("train.threads", c.train.threads, " (0 = every core)");
  for (const auto& [key, value] :
       {std::pair<const char*, double>{"ema.decay_start", c.ema.decay_start},
        {"ema.decay_end", c.ema.decay_end}}) {
    if (value < 0 || value > 1) check.fail(key, "must be in [0, 1], got " + Checker::number(value));
  }
  // Optional keys: unset is the modality's default; a value given must be usable.
  for (const auto& [key, value] :
       {std::pair<const char*, std::optional<int64_t>>{"model.clone_batch", c.model.clone_batch},
        {"model.decoder_dim", c.model.decoder_dim},
        {"model.decoder_kernel", c.model.decoder_kernel},
        {"model.decoder_groups", c.model.decoder_groups},
        {"model.decoder_layers", c.model.decoder_layers},
        {"model.pos_conv_kernel", c.model.pos_conv_kernel},
        {"ema.anneal_steps", c.ema.anneal_steps}}) {
    if (value) check.positive(key, *value);
  }
  if (c.model.decoder_kernel && *c.model.decoder_kernel % 2 == 0) {
    check.fail("model.decoder_kernel",
               "must be odd (same padding), got " + std::to_string(*c.model.decoder_kernel));
  }
  if (c.model.dropout && (*c.model.dropout < 0 || *c.model.dropout >= 1)) {
    check.fail("model.dropout", "must be in [0, 1), got " + Checker::number(*c.model.dropout));
  }
  for (const auto& [key, value] :
       {std::pair<const char*, std::optional<double>>{"model.layer_scale_init",
                                                      c.model.layer_scale_init},
        {"model.cls_loss", c.model.cls_loss}}) {
    if (value && *value < 0) check.fail(key, "must be >= 0, got " + Checker::number(*value));
  }
  if (c.model.mask_ratio <= 0 || c.model.mask_ratio >= 1) {
    check.fail("model.mask_ratio", "must be in (0, 1), got " + Checker::number(c.model.mask_ratio));
  }
  if (c.data.pack && c.data.max_samples <= 0) {
    check.fail("data.pack", "needs data.max_samples > 0 (the packed length)");
  }
  const auto& pool = c.eval.pool;
  if (pool != "mean" && pool != "cls" && pool != "grid") {
    check.fail("eval.pool", "is '" + pool + "': expected mean, cls or grid");
  }
  try {
    parse_probe_layers(c.eval.probe_layer);
  } catch (const std::invalid_argument& e) {
    check.fail("eval.probe_layer", "is '" + c.eval.probe_layer + "': " + e.what());
  }
}

std::string to_yaml(const Config& config) {
  Config copy = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  // The shortest decimal that reads back as the same double: 0.8, not 0.80000000000000004.
  const auto number = [](double value) {
    char buffer[64];
    const auto end = std::to_chars(buffer, buffer + sizeof buffer, value).ptr;
    std::string text(buffer, end);
    // YAML 1.1 readers (PyYAML) take "3e+01" for a string; "3.0e+01" is a float everywhere.
    const auto exponent = text.find('e');
    if (exponent != std::string::npos && text.find('.') == std::string::npos)
      text.insert(exponent, ".0");
    return text;
  };
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
            out << number(*field);
          } else if constexpr (std::is_same_v<T, std::optional<double>>) {
            if (*field) {
              out << number(**field);
            } else {
              out << YAML::Null;
            }
          } else if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
            if (*field) {
              out << **field;
            } else {
              out << YAML::Null;
            }
          } else {
            out << *field;
          }
        },
        key.field);
    std::string help = key.help;
    if (!key.choices.empty()) {
      std::string list;
      for (const auto& choice : key.choices) list += (list.empty() ? "" : " | ") + choice;
      help = list + ": " + help;
    }
    out << YAML::Comment(help);
  }
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::vector<std::string> differing_keys(const Config& a, const Config& b) {
  Config left = a, right = b;
  const auto left_keys = config_keys(left);
  const auto right_keys = config_keys(right);
  std::vector<std::string> names;
  for (size_t i = 0; i < left_keys.size(); ++i) {
    const bool same = std::visit(
        [&](auto* field) {
          using Pointer = decltype(field);
          return *field == *std::get<Pointer>(right_keys[i].field);
        },
        left_keys[i].field);
    if (!same) names.push_back(left_keys[i].name);
  }
  return names;
}

}  // namespace data2vec::io
