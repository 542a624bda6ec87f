// data2vec_bench: times one data2vec training step, feature extraction, or a large GEMM, and
// prints one JSON line per run. bench/reference.py times the same things in plain PyTorch;
// bench/run.sh interleaves the two and bench/table.py merges their lines into one table.
//
//   data2vec_bench --config vision-tiny --mode train --batch 16 --dtype fp32 --threads 2 --reps 3
//   data2vec_bench --mode gemm --dtype fp32 --threads 2
//   data2vec_bench --config text-tiny --mode layers --tokens 512 --batch 8 --kernel blocked
//   data2vec_bench --config text-tiny --mode train --tokens 1024 --batch 4     (scaling table)
//   data2vec_bench --config vision-tiny --batch 2 --dump parity.safetensors   (parity fixture)
//   data2vec_bench --yaml configs/vision/fmnist-tiny-v2.yaml --batch 32   (a training config's
//                  model, e.g. data2vec 2.0; --set KEY=VALUE overrides as in `pretrain`)
//
// A training step, as the trainer runs it (train/trainer.cpp): draw the mask -> student forward
// (under bf16 autocast when --dtype bf16) -> teacher forward (no grad) -> targets -> loss ->
// backward -> clip -> optimizer step -> EMA update; the loss and the logged statistics are read
// back (.item()) as the trainer does. Inputs are random tensors made before the clock starts:
// data loading is not timed.
//
// Model FLOPs (matmul and convolution multiply-adds x 2; elementwise ops not counted):
//   forward of one transformer layer over T tokens:  2 T (4 D^2 + 2 D F) + 4 T^2 D
//   train step = 3 x student forward (backward = 2 x forward) + teacher forward
//              + 3 x head over the masked positions;   extract = 1 x forward.
// The per-modality front ends (patch conv, audio CNN, positional convs) are counted the same way.
// data2vec 2.0 (--yaml with model.algorithm v2): the student runs on the kept patches (+ CLS) of
// clone_batch copies of each image, the decoder on every grid position of every copy:
//   train step = 3 x (student over the kept tokens + decoder) + teacher forward over all tokens,
//   decoder forward = 2 x (its conv and linear weights) x copies x grid positions.
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data2vec/app/builders.h"
#include "data2vec/app/hf.h"
#include "data2vec/audio/encoder.h"
#include "data2vec/core/data2vec.h"
#include "data2vec/io/config.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/nn/gemm.h"
#include "data2vec/nn/transformer.h"
#include "data2vec/text/encoder.h"
#include "data2vec/train/device.h"
#include "data2vec/train/optimizer.h"
#include "data2vec/vision/encoder.h"

namespace {

using Clock = std::chrono::steady_clock;
using data2vec::Data2Vec;
using data2vec::Data2VecOptions;
using data2vec::EncoderInput;

struct Args {
  std::string config = "vision-tiny";
  std::string mode = "train";  // train | extract | gemm | layers
  int64_t batch = 16;
  std::string dtype = "fp32";  // fp32 | bf16
  int threads = 0;             // 0 = all cores
  int warmup = 1;
  int reps = 3;
  int64_t seed = 0;
  int64_t gemm_size = 0;  // 0 = 2048 (fp32) / 1024 (bf16)
  std::string dump;       // parity fixture path (train mode, fp32, dropout off)
  std::string profile;    // chrome trace of the timed steps (bench/profile.py sums it by op)
  std::string kernel = "auto";  // --mode layers: plain | fused | blocked | auto
  std::string gelu = "torch";      // --mode layers: torch | poly (nn::gelu_erf; not with plain)
  int64_t tokens = 128;            // text: tokens per example
  double seconds = 2.0;            // audio: seconds per clip (16 kHz)
  std::string hf;  // extract with the encoder of this Hugging Face folder (import-hf's reader)
  std::string yaml;               // the model of this training config (vision)
  std::vector<std::string> sets;  // --set KEY=VALUE overrides of --yaml
  std::string malloc = "kept";    // kept: train::keep_freed_memory(), as `data2vec` runs; glibc
  std::string gemm = "auto";      // the blocks' GEMM library (nn/gemm.h): auto | torch | onednn
};

[[noreturn]] void usage(const std::string& error) {
  std::cerr << "data2vec_bench: " << error << "\n"
            << "usage: data2vec_bench [--config vision-{tiny,small,base} | text-{tiny,base} |\n"
               "                       audio-{tiny,base}] [--mode train|extract|gemm]\n"
               "                      [--batch N] [--dtype fp32|bf16] [--threads N (0 = all)]\n"
               "                      [--warmup N] [--reps N] [--seed N] [--gemm-size N]\n"
               "                      [--dump FILE.safetensors] [--tokens N] [--seconds S]\n"
               "                      [--kernel plain|fused|blocked|auto] [--gelu torch|poly]\n"
               "                      (--kernel, --gelu: --mode layers)\n"
               "                      [--profile FILE.trace] [--malloc kept|glibc]\n"
               "                      [--gemm auto|torch|onednn] (the blocks' GEMM library;\n"
               "                      --mode gemm: time that library's sgemm)\n"
               "       data2vec_bench --hf HF_DIR --config NAME [--batch N] ...   (extract only)\n"
               "       data2vec_bench --yaml CONFIG.yaml [--set KEY=VALUE ...] [--mode train|extract] ...\n";
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage("help");
    if (flag == "--plain")
      usage("--plain is gone: the plain twin is a build option of the blocks now; time it with "
            "--mode layers --kernel plain");
    if (i + 1 >= argc) usage("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--config")
      a.config = value;
    else if (flag == "--mode")
      a.mode = value;
    else if (flag == "--batch")
      a.batch = std::stoll(value);
    else if (flag == "--dtype")
      a.dtype = value;
    else if (flag == "--threads")
      a.threads = std::stoi(value);
    else if (flag == "--warmup")
      a.warmup = std::stoi(value);
    else if (flag == "--reps")
      a.reps = std::stoi(value);
    else if (flag == "--seed")
      a.seed = std::stoll(value);
    else if (flag == "--gemm-size")
      a.gemm_size = std::stoll(value);
    else if (flag == "--dump")
      a.dump = value;
    else if (flag == "--profile")
      a.profile = value;
    else if (flag == "--hf")
      a.hf = value;
    else if (flag == "--kernel")
      a.kernel = value;
    else if (flag == "--gelu")
      a.gelu = value;
    else if (flag == "--tokens")
      a.tokens = std::stoll(value);
    else if (flag == "--seconds")
      a.seconds = std::stod(value);
    else if (flag == "--yaml")
      a.yaml = value;
    else if (flag == "--set")
      a.sets.push_back(value);
    else if (flag == "--malloc")
      a.malloc = value;
    else if (flag == "--gemm")
      a.gemm = value;
    else
      usage("unknown flag " + flag);
  }
  if (a.mode != "train" && a.mode != "extract" && a.mode != "gemm" && a.mode != "layers")
    usage("bad --mode " + a.mode);
  if (a.kernel != "plain" && a.kernel != "fused" && a.kernel != "blocked" && a.kernel != "auto")
    usage("bad --kernel " + a.kernel);
  if (a.dtype != "fp32" && a.dtype != "bf16") usage("bad --dtype " + a.dtype);
  if (a.malloc != "kept" && a.malloc != "glibc") usage("bad --malloc " + a.malloc);
  if (a.reps < 1 || a.batch < 1) usage("--reps and --batch must be >= 1");
  if (!a.sets.empty() && a.yaml.empty()) usage("--set needs --yaml");
  if (a.gemm != "auto" && a.gemm != "torch" && a.gemm != "onednn") usage("bad --gemm " + a.gemm);
  if (!a.yaml.empty() && a.mode != "train" && a.mode != "extract")
    usage("--yaml times train or extract");
  return a;
}

// ---- the benchmark configurations (bench/reference.py holds the same table) ----

// Sequence sizes of the synthetic inputs.
int64_t g_text_tokens = 128;              // tokens per text example (--tokens)
constexpr int64_t kTextVocab = 8000;      // the brown-tiny tokenizer's size
int64_t g_audio_samples = 32000;          // 2 s at 16 kHz -> 99 frames (--seconds)

// The recipe's optimizer: AdamW as train::make_optimizer builds it (optim.name adam, fairseq's
// Adam, is the same update there).
struct OptimSpec {
  double lr, beta1, beta2, eps, weight_decay, clip;
};

struct Model {
  std::string modality;  // vision | text | audio
  Data2Vec model{nullptr};
  OptimSpec optim{};
  int64_t dim = 0, depth = 0, mlp = 0, tokens = 0;  // tokens T seen by the transformer
  double front_flops = 0;                           // forward FLOPs of the local encoder / example
  double teacher_front_flops = 0;                   // ... of the part the teacher runs too
  int64_t head_mult = 0;
  int64_t image_size = 224, in_channels = 3;        // vision inputs
  bool v2 = false;                                  // data2vec 2.0 (--yaml)
  int64_t decoder_weights = 0;                      // conv + linear weights of the 2.0 decoder
};

std::pair<std::string, std::string> split_config(const std::string& config) {
  const auto dash = config.find('-');
  if (dash == std::string::npos) usage("bad --config " + config);
  return {config.substr(0, dash), config.substr(dash + 1)};
}

Model build(const std::string& config, bool no_dropout, data2vec::nn::GemmLibrary gemm) {
  const auto [modality, size] = split_config(config);
  Model m;
  m.modality = modality;
  Data2VecOptions options;
  if (modality == "vision") {
    auto o = data2vec::vision::vision_preset(size).gemm(gemm);
    const auto g = o.grid_size();
    m.tokens = 1 + g * g;
    m.front_flops = 2.0 * double(g * g) *
                    double(o.in_channels() * o.patch_size() * o.patch_size()) * double(o.dim());
    m.teacher_front_flops = m.front_flops;
    m.dim = o.dim(), m.depth = o.depth(), m.mlp = o.mlp_dim();
    options
        .targets(data2vec::TargetOptions()
                     .top_k_layers(6)
                     .layer_norm_targets(data2vec::TargetNorm::kLayer)
                     .final_norm(data2vec::TargetNorm::kLayer))
        .loss(data2vec::LossOptions().beta(2.0).scale(1.0))
        .ema(data2vec::EmaOptions().decay_start(0.9998).decay_end(0.9999).anneal_steps(300000));
    m.optim = {2e-3, 0.9, 0.999, 1e-8, 0.05, 3.0};
    m.model = Data2Vec([o] { return data2vec::vision::make_vision_encoder(o); }, options);
  } else if (modality == "text") {
    auto o = data2vec::text::text_preset(size, kTextVocab).gemm(gemm);
    o.max_positions(std::max(o.max_positions(), g_text_tokens));
    if (no_dropout) o.dropout(0).attention_dropout(0);
    m.tokens = g_text_tokens;
    m.dim = o.dim(), m.depth = o.depth(), m.mlp = o.mlp_dim();
    options
        .targets(data2vec::TargetOptions()
                     .top_k_layers(10)
                     .layer_norm_targets(data2vec::TargetNorm::kLayer)
                     .final_norm(data2vec::TargetNorm::kNone))
        .loss(data2vec::LossOptions().beta(4.0).scale(1.0))
        .ema(data2vec::EmaOptions().decay_start(0.999).decay_end(0.9999).anneal_steps(100000))
        .head_hidden_mult(2);
    m.head_mult = 2;
    m.optim = {2e-4, 0.9, 0.98, 1e-6, 0.01, 5.0};
    m.model = Data2Vec([o] { return data2vec::text::make_text_encoder(o); }, options);
  } else if (modality == "audio") {
    // Layerdrop off on both sides: a skipped block would make step times a lottery.
    auto o = data2vec::audio::audio_preset(size).layerdrop(0.0).gemm(gemm);
    if (no_dropout) o.dropout(0).attention_dropout(0);
    m.dim = o.dim(), m.depth = o.depth(), m.mlp = o.mlp_dim();
    int64_t length = g_audio_samples, in_dim = 1;
    for (const auto& c : o.conv_layers()) {
      length = (length - c.kernel) / c.stride + 1;
      m.front_flops += 2.0 * double(length) * double(c.dim * in_dim * c.kernel);
      in_dim = c.dim;
    }
    m.tokens = length;
    m.front_flops += 2.0 * double(length) * double(in_dim * o.dim());  // projection
    m.teacher_front_flops = 2.0 * double(length) * double(o.dim()) *
                            double(o.dim() / o.pos_conv_groups() * o.pos_conv_kernel()) *
                            double(o.pos_conv_depth());  // the teacher runs the pos convs
    m.front_flops += m.teacher_front_flops;
    options
        .targets(data2vec::TargetOptions()
                     .top_k_layers(8)
                     .layer_norm_targets(data2vec::TargetNorm::kInstance)
                     .final_norm(data2vec::TargetNorm::kNone))
        .loss(data2vec::LossOptions().beta(0.0).scale(-1.0))
        .ema(data2vec::EmaOptions().decay_start(0.999).decay_end(0.9999).anneal_steps(30000));
    m.optim = {5e-4, 0.9, 0.98, 1e-6, 0.01, 0.0};
    m.model = Data2Vec([o] { return data2vec::audio::make_audio_encoder(o); }, options);
  } else {
    usage("unknown modality in --config " + config);
  }
  return m;
}

// The model a training config builds (app::make_model, as `pretrain` does); vision only.
Model build_from_yaml(const Args& a) {
  auto sets = a.sets;  // --gemm as the config key (not in the row's name: the "gemm" field)
  sets.push_back("model.gemm=" + a.gemm);
  const auto config = data2vec::io::load_config(a.yaml, sets);
  if (config.model.modality != "vision") usage("--yaml: only vision configs are timed");
  Model m;
  m.modality = "vision";
  const auto o = data2vec::vision::vision_preset(config.model.preset);
  const auto g = o.grid_size();
  m.tokens = 1 + g * g;
  m.image_size = o.image_size(), m.in_channels = o.in_channels();
  m.front_flops = 2.0 * double(g * g) *
                  double(o.in_channels() * o.patch_size() * o.patch_size()) * double(o.dim());
  m.teacher_front_flops = m.front_flops;
  m.dim = o.dim(), m.depth = o.depth(), m.mlp = o.mlp_dim();
  const auto& op = config.optim;
  m.optim = {op.lr, op.beta1, op.beta2, op.eps, op.weight_decay,
             op.clip_grad_norm};
  m.model = data2vec::app::make_model(config);
  m.v2 = config.model.algorithm == "v2";
  m.head_mult = config.model.head_hidden_mult;
  for (const auto& p : m.model->named_parameters()) {
    if (p.key().rfind("decoder.", 0) == 0 && p.value().dim() >= 2)
      m.decoder_weights += p.value().numel();
  }
  return m;
}

// FLOPs of one data2vec 2.0 step (see the top of the file) for the drawn `mask` [B*copies, 1+G]
// (the CLS column first, never masked).
double v2_step_flops(const Model& m, int64_t batch, const torch::Tensor& mask) {
  const double d = double(m.dim), f = double(m.mlp);
  const auto patches = mask.narrow(1, 1, mask.size(1) - 1);                         // [R,G]
  const auto kept_per_row = patches.logical_not().sum(1).to(torch::kDouble) + 1.0;  // + CLS
  const double tokens = kept_per_row.sum().item<double>();
  const double squares = kept_per_row.pow(2).sum().item<double>();
  const double rows = double(patches.size(0)), grid = double(patches.size(1));
  const double student =
      double(m.depth) * (2.0 * tokens * (4.0 * d * d + 2.0 * d * f) + 4.0 * squares * d) +
      rows * m.front_flops;
  const double decoder = 2.0 * double(m.decoder_weights) * rows * grid;
  const double t = double(m.tokens);
  const double teacher =
      double(batch) *
      (double(m.depth) * (2.0 * t * (4.0 * d * d + 2.0 * d * f) + 4.0 * t * t * d) +
       m.teacher_front_flops);
  return 3.0 * (student + decoder) + teacher;
}

// Synthetic batch, made before timing. Text: example i has T - 8 (i mod 4) real tokens.
EncoderInput make_input(const Model& m, int64_t batch) {
  EncoderInput in;
  if (m.modality == "vision") {
    in.source = torch::randn({batch, m.in_channels, m.image_size, m.image_size});
  } else if (m.modality == "text") {
    in.source = torch::randint(5, kTextVocab, {batch, g_text_tokens}, torch::kLong);
    auto pad = torch::zeros({batch, g_text_tokens}, torch::kBool);
    for (int64_t i = 0; i < batch; ++i) {
      const int64_t real = g_text_tokens - 8 * (i % 4);
      pad[i].slice(0, real).fill_(true);
      in.source[i].slice(0, real).fill_(1);  // <pad>
    }
    in.source.select(1, 0).fill_(0);  // <s>
    in.padding_mask = pad;
  } else {
    in.source = torch::randn({batch, g_audio_samples});
  }
  return in;
}

double forward_flops(const Model& m, bool teacher) {
  const double t = double(m.tokens), d = double(m.dim), f = double(m.mlp);
  const double layer = 2.0 * t * (4.0 * d * d + 2.0 * d * f) + 4.0 * t * t * d;
  return double(m.depth) * layer + (teacher ? m.teacher_front_flops : m.front_flops);
}

double head_flops(const Model& m) {
  const double d = double(m.dim);
  return m.head_mult > 0 ? 2.0 * 2.0 * d * double(m.head_mult) * d : 2.0 * d * d;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(Model& m) {
  // The trainer's groups (no weight decay on biases, norms, scales, tokens, position tables) and
  // optimizer (train/optimizer.h).
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& p : m.model->named_parameters()) named.emplace_back(p.key(), p.value());
  data2vec::io::OptimConfig config;
  config.name = "adamw";
  config.lr = m.optim.lr, config.beta1 = m.optim.beta1, config.beta2 = m.optim.beta2;
  config.eps = m.optim.eps, config.weight_decay = m.optim.weight_decay;
  return data2vec::train::make_optimizer(data2vec::train::split_parameter_groups(named), config);
}

int64_t count_parameters(torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

nlohmann::json header(const Args& a, int threads) {
  std::string config = a.config;  // the sequence length in the name when not the default
  if (a.config.rfind("text", 0) == 0 && a.tokens != 128) config += " T" + std::to_string(a.tokens);
  if (a.config.rfind("audio", 0) == 0 && a.seconds != 2.0) {
    std::ostringstream s;
    s << " " << a.seconds << "s";
    config += s.str();
  }
  const std::string layers_impl = "cpp-" + a.kernel + (a.gelu == "poly" ? "-polygelu" : "");
  return {{"impl", a.mode == "layers" ? layers_impl : "cpp"},
          {"config", config},
          {"mode", a.mode},
          {"batch", a.batch},
          {"dtype", a.dtype},
          {"threads", threads},
          {"torch", TORCH_VERSION},
          {"blas", data2vec::train::blas_library()},
          {"malloc", a.malloc},
          {"gemm", data2vec::nn::to_string(data2vec::nn::parse_gemm_library(a.gemm))}};
}

// Forward passes of `encoder` on `input` (the first a.warmup untimed), under inference mode.
std::vector<double> time_extraction(data2vec::EncoderImpl& encoder, const EncoderInput& input,
                                    const Args& a, const std::function<void(int)>& start_profile) {
  const torch::Device device(torch::kCPU);
  std::vector<double> times;
  for (int i = 0; i < a.warmup + a.reps; ++i) {
    start_profile(i);
    const auto t0 = Clock::now();
    {
      c10::InferenceMode inference;
      data2vec::train::AutocastGuard autocast(device, a.dtype);
      const auto out = encoder.extract_features(input, torch::Tensor());
      // Read one value back, as a caller would before using the features.
      (void)out.x.sum().item<double>();
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i >= a.warmup) times.push_back(s);
  }
  return times;
}

// Seconds of audio in the --hf rows (10 s, the length issue 14's table asks for).
constexpr int64_t kHfAudioSamples = 160000;

// Extraction with an imported Hugging Face encoder (bench/run.sh --hf): the same synthetic input
// and the same FLOP count as the Python row (scripts/hf_reference.py bench --flops).
int run_hf_extract(const Args& a, int threads) {
  if (a.mode != "extract") usage("--hf times extraction only (--mode extract)");
  auto encoder = data2vec::app::load_hf_encoder(a.hf);
  encoder->eval();
  Model m;
  EncoderInput input;
  if (auto* v = dynamic_cast<data2vec::vision::VisionEncoderImpl*>(encoder.get())) {
    const auto& o = v->options();
    input.source = torch::randn({a.batch, o.in_channels(), o.image_size(), o.image_size()});
    m.tokens = 1 + o.num_patches(), m.dim = o.dim(), m.depth = o.depth(), m.mlp = o.mlp_dim();
    m.front_flops = 2.0 * double(o.num_patches()) *
                    double(o.in_channels() * o.patch_size() * o.patch_size()) * double(o.dim());
  } else if (auto* au = dynamic_cast<data2vec::audio::AudioEncoderImpl*>(encoder.get())) {
    const auto& o = au->options();
    input.source = torch::randn({a.batch, kHfAudioSamples});
    int64_t length = kHfAudioSamples, in_dim = 1;
    for (const auto& c : o.conv_layers()) {
      length = (length - c.kernel) / c.stride + 1;
      m.front_flops += 2.0 * double(length) * double(c.dim * in_dim * c.kernel);
      in_dim = c.dim;
    }
    m.tokens = length, m.dim = o.dim(), m.depth = o.depth(), m.mlp = o.mlp_dim();
    m.front_flops += 2.0 * double(length) * double(in_dim * o.dim()) +
                     2.0 * double(length) * double(o.dim()) *
                         double(o.dim() / o.pos_conv_groups() * o.pos_conv_kernel()) *
                         double(o.pos_conv_depth());
  } else {
    usage("--hf: vision and audio models only");
  }
  auto j = header(a, threads);
  j["hf"] = a.hf;
  j["params"] = count_parameters(*encoder);
  j["flops_per_example"] = forward_flops(m, /*teacher=*/false);
  j["flops"] = double(a.batch) * forward_flops(m, /*teacher=*/false);
  const auto times = time_extraction(*encoder, input, a, [](int) {});
  j["times_s"] = times;
  j["median_s"] = median(times);
  j["samples_per_s"] = double(a.batch) / median(times);
  j["gflops"] = j["flops"].get<double>() / median(times) / 1e9;
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}

int run_gemm(const Args& a, int threads) {
  const bool bf16 = a.dtype == "bf16";
  const int64_t n = a.gemm_size > 0 ? a.gemm_size : (bf16 ? 1024 : 2048);
  const auto dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  const auto x = torch::randn({n, n}).to(dtype), y = torch::randn({n, n}).to(dtype);
  auto out = torch::empty({n, n}, dtype);
  const auto library = data2vec::nn::parse_gemm_library(a.gemm);
  const bool own = !bf16 && library != data2vec::nn::GemmLibrary::kTorch;
  std::vector<double> times;
  for (int i = 0; i < a.warmup + a.reps; ++i) {
    const auto t0 = Clock::now();
    if (own)  // the library the blocks call (nn/gemm.h), on the same square product
      data2vec::nn::sgemm(library, false, false, n, n, n, x.data_ptr<float>(), n,
                          y.data_ptr<float>(), n, 0.0f, out.data_ptr<float>(), n);
    else
      torch::mm_out(out, x, y);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i >= a.warmup) times.push_back(s);
  }
  const double flops = 2.0 * double(n) * double(n) * double(n);
  auto j = header(a, threads);
  j["config"] = "gemm-" + std::to_string(n);
  if (!own) j["gemm"] = "torch";
  j["batch"] = n;
  j["flops"] = flops;
  j["times_s"] = times;
  j["median_s"] = median(times);
  j["gflops"] = flops / median(times) / 1e9;
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}

// --mode layers: the model's transformer blocks alone (depth blocks of its type over T tokens:
// vision pre-LN with layer scale and a shared [H,T,T] relative position bias, text post-LN with
// key padding, audio post-LN), forward + backward, built with one attention kernel. The A/B of
// the kernels (plain = the reference twin: separate q/k/v, [B,H,T,T] softmax, torch::gelu).
int run_layers(const Args& a, int threads) {
  const Model m = build(a.config, /*no_dropout=*/true, data2vec::nn::parse_gemm_library(a.gemm));
  const bool vision = m.modality == "vision";
  const int64_t heads = m.dim / 64, t = m.tokens, b = a.batch;
  auto options = data2vec::nn::BlockOptions(m.dim, heads, m.mlp);
  if (a.kernel == "plain") options.fast_paths(false);
  options.fast_gelu(a.gelu == "poly");
  using data2vec::nn::AttentionKernel;
  options.attention_kernel(a.kernel == "fused"     ? AttentionKernel::kFused
                           : a.kernel == "blocked" ? AttentionKernel::kBlocked
                                                   : AttentionKernel::kAuto);
  options.gemm(data2vec::nn::parse_gemm_library(a.gemm));
  if (vision) options.layer_scale_init(0.1).key_bias(false).layer_norm_eps(1e-6);
  std::vector<std::function<data2vec::nn::BlockOutput(const torch::Tensor&, const torch::Tensor&,
                                                       const torch::Tensor&)>>
      blocks;
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < m.depth; ++i) {
    if (vision) {
      data2vec::nn::PreNormBlock block(options);
      list->push_back(block);
      blocks.push_back([block](const auto& x, const auto& bias, const auto& pad) mutable {
        return block->forward(x, bias, pad);
      });
    } else {
      data2vec::nn::PostNormBlock block(options);
      list->push_back(block);
      blocks.push_back([block](const auto& x, const auto& bias, const auto& pad) mutable {
        return block->forward(x, bias, pad);
      });
    }
  }
  auto bias = vision ? torch::randn({heads, t, t}).requires_grad_(true) : torch::Tensor();
  torch::Tensor pad;
  if (m.modality == "text") pad = make_input(m, b).padding_mask;
  const auto x0 = torch::randn({b, t, m.dim});
  std::vector<double> times;
  for (int i = 0; i < a.warmup + a.reps; ++i) {
    const auto t0 = Clock::now();
    auto x = x0.clone().requires_grad_(true);
    torch::Tensor h = x;
    for (auto& block : blocks) h = block(h, bias, pad).x;
    h.pow(2).mean().backward();
    (void)x.grad().sum().item<double>();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i >= a.warmup) times.push_back(s);
    list->zero_grad();
    if (bias.defined()) bias.mutable_grad() = torch::Tensor();
  }
  Model layers_only = m;  // forward + backward of the blocks: 3 x their forward
  layers_only.teacher_front_flops = 0;
  auto j = header(a, threads);
  j["params"] = count_parameters(*list);
  j["flops"] = 3.0 * double(b) * forward_flops(layers_only, /*teacher=*/true);
  j["times_s"] = times;
  j["median_s"] = median(times);
  j["samples_per_s"] = double(b) / median(times);
  j["gflops"] = j["flops"].get<double>() / median(times) / 1e9;
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (a.malloc == "kept" && !data2vec::train::keep_freed_memory())
    std::cerr << "data2vec_bench: --malloc kept does not apply here (not glibc)\n";
  const int threads = data2vec::train::set_threads(a.threads);
  torch::manual_seed(a.seed);
  if (a.mode == "gemm") return run_gemm(a, threads);
  if (!a.hf.empty()) return run_hf_extract(a, threads);

  g_text_tokens = a.tokens;
  g_audio_samples = int64_t(std::llround(a.seconds * 16000.0));
  if (a.mode == "layers") return run_layers(a, threads);
  const bool dumping = !a.dump.empty();
  if (dumping && !a.yaml.empty()) usage("--dump times the built-in configs, not --yaml");
  Model m = a.yaml.empty() ? build(a.config, /*no_dropout=*/dumping,
                                   data2vec::nn::parse_gemm_library(a.gemm))
                           : build_from_yaml(a);
  const EncoderInput input = make_input(m, a.batch);
  const torch::Device device(torch::kCPU);
  const std::string precision = a.dtype;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(uint64_t(a.seed) + 1);

  std::unique_ptr<torch::autograd::profiler::RecordProfile> profiler;
  auto start_profile = [&](int i) {
    if (i == a.warmup && !a.profile.empty())
      profiler = std::make_unique<torch::autograd::profiler::RecordProfile>(a.profile);
  };
  auto j = header(a, threads);
  if (!a.yaml.empty()) {
    std::string name = a.yaml.substr(a.yaml.find_last_of('/') + 1);
    for (const auto& set : a.sets) name += " " + set;
    j["config"] = name;
  }
  j["params"] = count_parameters(*m.model->student());
  j["params_total"] = count_parameters(*m.model);
  std::vector<double> times;

  if (a.mode == "extract") {
    auto encoder = m.model->student();
    encoder->eval();
    j["flops"] = double(a.batch) * forward_flops(m, /*teacher=*/false);
    times = time_extraction(*encoder, input, a, start_profile);
  } else {
    m.model->train();
    auto optimizer = make_optimizer(m);
    const auto trainable = m.model->trainable_parameters();
    double masked_positions = 0, v2_flops = 0;
    std::vector<double> losses;
    data2vec::MaskedInput fixed_mask;
    if (dumping) fixed_mask = m.model->apply_mask(input, generator);
    if (dumping) {
      // Weights and inputs before any step; the losses of two steps are appended below.
      data2vec::io::NamedTensors tensors;
      for (const auto& p : m.model->named_parameters()) tensors.emplace_back(p.key(), p.value());
      for (const auto& b : m.model->named_buffers()) tensors.emplace_back(b.key(), b.value());
      tensors.emplace_back("input.source", input.source);
      if (input.padding_mask.defined())
        tensors.emplace_back("input.padding_mask", input.padding_mask);
      tensors.emplace_back("input.student_source", fixed_mask.student.source);
      tensors.emplace_back("input.mask", fixed_mask.mask);
      const auto out = m.model->forward_masked(input, fixed_mask);
      tensors.emplace_back("output.targets", out.targets);
      data2vec::io::save_safetensors(a.dump, tensors, {{"config", a.config}});
    }
    // Wall clock per phase of the step (CPU work is synchronous: no profiler, no distortion).
    const std::vector<std::string> phase_names = {"mask", "forward", "backward", "clip",
                                                  "optimizer", "ema"};
    std::vector<std::vector<double>> phase_times(phase_names.size());
    for (int i = 0; i < a.warmup + a.reps; ++i) {
      start_profile(i);
      const auto t0 = Clock::now();
      auto mark = t0;
      size_t phase = 0;
      auto lap = [&] {
        const auto now = Clock::now();
        if (i >= a.warmup)
          phase_times[phase].push_back(std::chrono::duration<double>(now - mark).count());
        mark = now, ++phase;
      };
      optimizer->zero_grad();
      const auto masked = dumping ? fixed_mask : m.model->apply_mask(input, generator);
      lap();
      data2vec::Data2VecOutput out;
      {
        data2vec::train::AutocastGuard autocast(device, precision);
        out = m.model->forward_masked(input, masked);
      }
      (void)out.loss.item<double>();
      lap();
      out.loss.backward();
      const double loss = out.loss.item<double>();
      (void)out.target_std.item<double>();
      (void)out.pred_std.item<double>();
      (void)out.masked_frac.item<double>();
      lap();
      if (m.optim.clip > 0) data2vec::train::clip_grad_norm(trainable, m.optim.clip);
      lap();
      optimizer->step();
      lap();
      m.model->ema_step(i);
      lap();
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      losses.push_back(loss);
      masked_positions = double(out.predictions.size(0));
      if (m.v2) v2_flops = v2_step_flops(m, a.batch, masked.mask);
      if (i >= a.warmup) times.push_back(s);
    }
    const double student = forward_flops(m, false), teacher = forward_flops(m, true);
    j["flops"] = m.v2 ? v2_flops
                      : double(a.batch) * (3.0 * student + teacher) +
                            3.0 * masked_positions * head_flops(m);
    j["losses"] = losses;
    nlohmann::json phases;
    for (size_t k = 0; k < phase_names.size(); ++k) phases[phase_names[k]] = median(phase_times[k]);
    j["phases_median_s"] = phases;
  }
  profiler.reset();  // writes the trace
  j["times_s"] = times;
  j["median_s"] = median(times);
  j["samples_per_s"] = double(a.batch) / median(times);
  j["gflops"] = j["flops"].get<double>() / median(times) / 1e9;
  j["peak_rss_mb"] = peak_rss_mb();
  std::cout << j.dump() << std::endl;
  return 0;
}
