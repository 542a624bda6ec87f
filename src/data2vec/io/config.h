// The run configuration: one struct tree, one table of keys (name, field, default, help), YAML in
// and out. Presets live under configs/; `--set a.b=value` overrides any key.
//
// Every key is checked: an unknown key, or a value of the wrong type, is an error that names the
// key and the file and line it came from.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <utility>
#include <vector>

namespace data2vec::io {

// The sections of the configuration. Each field's help text, its choices and what an unset
// optional means are in the key table (config_keys() in config.cpp), declared there once; the
// defaults are here. `data2vec config` prints the resolved values with the help as comments.
// std::optional fields: unset (YAML null, or no key) means the modality's or preset's default.

struct TrainConfig {
  int64_t max_steps = 1000;
  int64_t batch_size = 64;
  int64_t accumulate = 1;
  std::string precision = "fp32";
  int64_t seed = 1;
  int64_t threads = 0;
  std::string device = "auto";
  int64_t num_workers = 2;
  int64_t prefetch = 4;
  int64_t collapse_warmup = 5000;
  double min_target_std = 0.1;
  double min_pred_std = 0.01;
  int64_t mask_group = 0;
  std::string dist_backend = "auto";
  int64_t dist_timeout_s = 300;
  double bucket_mb = 25.0;
};

struct ModelConfig {
  std::string modality = "vision";
  // The defaults together are a run: this preset reads data's default 28 x 28 Fashion-MNIST.
  std::string preset = "fmnist-tiny";
  std::string hf_config = "";
  std::string algorithm = "v1";
  int64_t top_k_layers = 6;
  // The defaults of the next six keys are the vision 1.0 recipe's; with algorithm v2, load_config
  // gives the keys a file or --set leaves unset 2.0's instead (apply_algorithm_defaults).
  std::string layer_result = "block";
  std::string target_layer_norm = "layer_norm";
  std::string target_final_norm = "layer_norm";
  double loss_beta = 2.0;
  double loss_scale = 1.0;
  int64_t head_hidden_mult = 0;
  double mask_ratio = 0.6;
  double mask_prob = 0.65;
  int64_t mask_length = 10;
  std::optional<int64_t> pos_conv_kernel;
  std::optional<double> dropout;
  std::optional<double> layer_scale_init;
  std::string position_encoding = "relative";
  bool depth_scaled_init = true;
  std::string gemm = "auto";
  // data2vec 2.0 (algorithm v2, arXiv 2212.07525)
  std::optional<int64_t> clone_batch;
  std::optional<int64_t> decoder_dim;
  std::optional<int64_t> decoder_kernel;
  std::optional<int64_t> decoder_groups;
  std::optional<int64_t> decoder_layers;
  std::optional<double> cls_loss;
};

struct EmaConfig {
  double decay_start = 0.9998;
  double decay_end = 0.9999;
  std::optional<int64_t> anneal_steps;
};

struct OptimConfig {
  std::string name = "adamw";
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.05;
  std::string schedule = "cosine";
  int64_t warmup_steps = 100;
  double final_lr_scale = 0.0;
  double tri_stage_warmup = 0.03;
  double tri_stage_hold = 0.9;
  double tri_stage_decay = 0.07;
  double clip_grad_norm = 3.0;
};

struct DataConfig {
  std::string dataset = "fashion-mnist";
  std::string root = "data/fashion-mnist";
  std::string tokenizer = "";
  int64_t image_size = 28;
  bool augment = true;
  double crop_scale_min = 0.35;
  int64_t max_samples = 250000;
  bool pack = false;
  int64_t max_tokens = 512;
  int64_t limit = 0;
};

struct LogConfig {
  int64_t every = 10;
  bool tensorboard = true;
  double progress_seconds = 30;
};

struct CheckpointConfig {
  int64_t every = 500;
  int64_t keep = 3;
};

struct EvalConfig {
  int64_t knn_every = 0;
  int64_t knn_k = 20;
  int64_t knn_train_size = 5000;
  int64_t knn_test_size = 2000;
  int64_t batch_size = 256;
  std::string tasks = "";
  int64_t probe_train_limit = 0;
  std::string probe_layer = "final";
  std::string pool = "mean";
};

struct Config {
  TrainConfig train;
  ModelConfig model;
  EmaConfig ema;
  OptimConfig optim;
  DataConfig data;
  LogConfig log;
  CheckpointConfig checkpoint;
  EvalConfig eval;
};

// One key of the table: a dotted name bound to a field of a Config, with its help text and,
// for a key that takes one of a few words, the words it accepts (checked by validate(), the
// one place enum values are checked; the modules parse them again into their enums).
using FieldRef = std::variant<int64_t*, double*, bool*, std::string*, std::optional<int64_t>*,
                              std::optional<double>*>;
struct ConfigKey {
  ConfigKey(std::string name_, FieldRef field_, std::string help_,
            std::vector<std::string> choices_ = {})
      : name(std::move(name_)), field(field_), help(std::move(help_)),
        choices(std::move(choices_)) {}
  std::string name;  // e.g. "train.max_steps"
  FieldRef field;
  std::string help;                  // one line; an optional key says what unset means
  std::vector<std::string> choices;  // empty: any value of the field's type
};

// Every key of `config`, bound to its fields, in documentation order.
std::vector<ConfigKey> config_keys(Config& config);

// Loads `path` over the defaults, then applies `overrides` ("a.b=value"). A file may name a
// preset it builds on with a top-level `base: other.yaml` (resolved relative to the file).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Where each key got its value: "FILE:LINE", or "--set key=value". The functions below record
// it when given a map, and validate() names it in its errors.
using ConfigOrigins = std::map<std::string, std::string>;

// Applies one YAML document (already read from `source`, used in messages) over `config`.
void apply_yaml(Config& config, const std::string& yaml_text, const std::string& source,
                ConfigOrigins* origins = nullptr);

// Applies "a.b=value" overrides.
void apply_overrides(Config& config, const std::vector<std::string>& overrides,
                     ConfigOrigins* origins = nullptr);

// Semantic checks across keys (enums, ranges); errors name the key, and with `origins` the file
// and line or the --set that set it.
void validate(const Config& config, const ConfigOrigins* origins = nullptr);

// data2vec 2.0's own defaults (arXiv 2212.07525; fairseq examples/data2vec/config/v2/*.yaml) for
// the keys whose defaults above are the vision 1.0 recipe's: with model.algorithm v2, every one
// of them that `origins` does not name (no file or --set gave it a value) becomes
//   layer_result ffn, target_layer_norm instance_norm, loss_beta 0 (squared error),
//   target_final_norm layer_norm for images and none otherwise,
//   loss_scale 1 for text and 0 (1/sqrt(D)) otherwise, mask_ratio 0.8 for images, 0.48 for text.
// Keys set explicitly keep their values. load_config applies it; v1 configs are left alone.
void apply_algorithm_defaults(Config& config, const ConfigOrigins& origins);

// The resolved configuration as YAML (every key, each with its help as a comment; an unset
// optional key as null), readable by load_config.
std::string to_yaml(const Config& config);

// The keys whose values differ between `a` and `b`, in documentation order.
std::vector<std::string> differing_keys(const Config& a, const Config& b);

}  // namespace data2vec::io
