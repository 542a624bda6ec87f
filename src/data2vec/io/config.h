// The run configuration: one struct tree, one table of keys (name, field, default, help), YAML in
// and out. Presets live under configs/; `--set a.b=value` overrides any key.
//
// Every key is checked: an unknown key, or a value of the wrong type, is an error that names the
// key and the file and line it came from.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace data2vec::io {

struct TrainConfig {
  int64_t max_steps = 1000;      // optimizer steps in the whole run
  int64_t batch_size = 64;       // examples per micro-batch (per process)
  int64_t accumulate = 1;        // micro-batches per optimizer step
  std::string precision = "fp32";  // fp32 | bf16 (autocast; weights, EMA and targets stay fp32)
  int64_t seed = 1;              // seeds init, masks, dropout, data order and augmentation
  int64_t threads = 0;           // intra-op threads; 0 = all cores
  std::string device = "auto";   // cpu | cuda | auto (cuda when available)
  int64_t num_workers = 2;       // background data-loading threads
  int64_t prefetch = 4;          // batches loaded ahead of the step
  int64_t collapse_warmup = 5000;  // steps before the collapse check starts
  double min_target_std = 0.1;   // collapse when the target std falls below (fairseq min_target_var)
  double min_pred_std = 0.01;    // collapse when the prediction std falls below (min_pred_var)
  int64_t mask_group = 0;        // examples per mask draw (seeded by their global position); 0 = the micro-batch
  std::string dist_backend = "auto";  // several processes: auto (nccl on cuda, gloo on cpu) | gloo | nccl
  int64_t dist_timeout_s = 300;  // a collective waiting longer than this fails the run
  double bucket_mb = 25.0;       // gradient all-reduce bucket size
};

struct ModelConfig {
  std::string modality = "vision";  // toy | vision | audio | text
  std::string preset = "tiny";      // encoder size preset of the modality; hf = model.hf_config
  std::string hf_config = "";       // preset hf: the Hugging Face config.json (JSON text) the encoder is built from (import-hf writes it)
  std::string algorithm = "v1";     // v1 (data2vec) | v2 (data2vec 2.0)
  int64_t top_k_layers = 6;         // K: targets average the LAST K layer results
  // The defaults of the next six keys are the vision 1.0 recipe's; with algorithm v2, load_config
  // gives the keys a file or --set leaves unset 2.0's instead (apply_algorithm_defaults).
  std::string layer_result = "block";        // ffn | block: which tensor is a layer result
  std::string target_layer_norm = "layer_norm";  // per-layer: instance_norm | layer_norm | none
  std::string target_final_norm = "layer_norm";  // of the average: instance_norm | layer_norm | none
  double loss_beta = 2.0;           // 0 = squared error, > 0 = smooth L1 with this beta
  double loss_scale = 1.0;          // per-position loss scale; 0 = 1/sqrt(D)
  int64_t head_hidden_mult = 0;     // 0: Linear(D,D) head; m: Linear(D,mD)-GELU-Linear(mD,D)
  double mask_ratio = 0.6;          // vision: masked patch fraction; text: selected token fraction
  double mask_prob = 0.65;          // audio: span start probability
  int64_t mask_length = 10;         // audio: span length in frames
  int64_t pos_conv_kernel = 0;     // audio: kernel of each positional conv layer; 0 = the preset's (19)
  double dropout = -1;              // encoder dropout; < 0 = the preset's
  double layer_scale_init = -1;     // vision layer scale; < 0 = the preset's
  // data2vec 2.0 (algorithm v2); 0 / < 0 = the modality's default (data2vec 2.0, arXiv 2212.07525)
  int64_t clone_batch = 0;          // masked copies per example; 0 = image 16, audio / text 8, toy 4
  int64_t decoder_dim = 0;          // CNN decoder width; 0 = image / text 768, audio 384
  int64_t decoder_kernel = 0;       // decoder conv kernel (odd); 0 = image 3, audio 7, text 9
  int64_t decoder_groups = 0;       // decoder conv groups; 0 = image / audio 16, text 1
  int64_t decoder_layers = 0;       // decoder conv blocks; 0 = image 6, audio 4, text 5
  double cls_loss = -1;             // CLS loss weight; < 0 = 0.01 for images, else 0
};

struct EmaConfig {
  double decay_start = 0.9998;  // tau at step 0
  double decay_end = 0.9999;    // tau after the anneal; 1 freezes the teacher
  int64_t anneal_steps = 0;     // steps from start to end; 0 = the run's max_steps
};

struct OptimConfig {
  std::string name = "adamw";   // adam (fairseq's: decoupled decay) | adamw (the same update)
  double lr = 1e-3;             // peak learning rate
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.05;   // not applied to biases, norms, layer scales, tokens, positions
  std::string schedule = "cosine";  // cosine | linear | tri_stage | constant
  int64_t warmup_steps = 100;   // linear warm-up from 0 (cosine, linear, constant)
  double final_lr_scale = 0.0;  // lr at the end of cosine / linear / tri-stage decay, x peak
  double tri_stage_warmup = 0.03;  // tri-stage fractions of max_steps: warm-up, hold, decay
  double tri_stage_hold = 0.9;
  double tri_stage_decay = 0.07;
  double clip_grad_norm = 3.0;  // 0 = no clipping
};

struct DataConfig {
  std::string dataset = "fashion-mnist";  // the modality's reader (see configs/ and README)
  std::string root = "data/fashion-mnist";  // where the data lives
  std::string tokenizer = "";    // text: SentencePiece model directory
  int64_t image_size = 28;       // vision: input size
  bool augment = true;           // vision: random resized crop + flip during pretraining
  double crop_scale_min = 0.35;  // vision: smallest crop area fraction
  int64_t max_samples = 250000;  // audio: random crop length in samples (16 kHz)
  bool pack = false;             // audio pretraining: join short utterances into max_samples
  int64_t max_tokens = 512;      // text: tokens per block
  int64_t limit = 0;             // use only the first N examples; 0 = all
};

struct LogConfig {
  int64_t every = 10;            // steps between metrics.jsonl records
  bool tensorboard = true;       // write TensorBoard event files to DIR/tb
  double progress_seconds = 30;  // plain progress line interval when not on a terminal
};

struct CheckpointConfig {
  int64_t every = 500;  // steps between checkpoints (and one at the end)
  int64_t keep = 3;     // step_<N> checkpoints kept (the newest)
};

struct EvalConfig {
  int64_t knn_every = 0;        // steps between k-NN monitor runs; 0 = off
  int64_t knn_k = 20;
  int64_t knn_train_size = 5000;  // examples from the train split used as the k-NN memory
  int64_t knn_test_size = 2000;   // examples from the test split scored
  int64_t batch_size = 256;
  std::string tasks = "";         // comma-separated labelled tasks to evaluate; empty = data.dataset's
  int64_t probe_train_limit = 0;  // train examples the linear probes fit on; 0 = all
  std::string probe_layer = "final";  // what the probes pool: final | 0 (local features) | k (block k)
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

// One key of the table: a dotted name bound to a field of a Config.
using FieldRef = std::variant<int64_t*, double*, bool*, std::string*>;
struct ConfigKey {
  std::string name;  // e.g. "train.max_steps"
  FieldRef field;
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

// The resolved configuration as YAML (every key), readable by load_config.
std::string to_yaml(const Config& config);

}  // namespace data2vec::io
