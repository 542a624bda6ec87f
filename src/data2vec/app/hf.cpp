#include "data2vec/app/hf.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "data2vec/app/builders.h"
#include "data2vec/audio/hf.h"
#include "data2vec/eval/ctc.h"
#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/text/bpe_tokenizer.h"
#include "data2vec/text/hf.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/vision/hf.h"

namespace data2vec::app {

namespace fs = std::filesystem;

namespace {

constexpr const char* kHeadPrefix = "hf_head.";  // task-head tensors in our checkpoints

std::string modality_of(const io::HfConfig& c) {
  const auto type = c.model_type();
  if (type == "data2vec-vision") return "vision";
  if (type == "data2vec-audio") return "audio";
  if (type == "data2vec-text") return "text";
  c.unsupported("model_type", "expected data2vec-vision, data2vec-audio or data2vec-text");
}

// HF's task models nest the base model under this prefix (Data2VecAudioForCTC: data2vec_audio.).
std::string nested_prefix(const std::string& modality) {
  return "data2vec_" + modality + ".";
}

// The task head tensors of a modality's supported task models (top-level HF names).
bool is_head_tensor(const std::string& modality, const std::string& name) {
  if (modality == "audio") return name.rfind("lm_head.", 0) == 0;  // Data2VecAudioForCTC
  // Data2VecVisionForImageClassification; Data2VecTextForSequenceClassification
  return name.rfind("classifier.", 0) == 0;
}

io::NameTable encoder_names(const std::string& modality, const io::HfConfig& hf) {
  if (modality == "vision") return vision::hf_vision_names();
  if (modality == "audio") return audio::hf_audio_names(audio::hf_has_masked_spec_embed(hf));
  return text::hf_text_names();
}

// data2vec 1.0's target and loss settings per modality (arXiv 2202.03555; fairseq's data2vec
// configs), for a run that starts from an imported encoder without a --config.
void data2vec_defaults(io::Config& c, const std::string& modality) {
  auto& m = c.model;
  if (modality == "vision") {
    m.top_k_layers = 6, m.layer_result = "block", m.target_layer_norm = "layer_norm";
    m.target_final_norm = "layer_norm", m.loss_beta = 2.0, m.loss_scale = 1.0;
    m.head_hidden_mult = 0, m.mask_ratio = 0.6;
  } else if (modality == "audio") {
    m.top_k_layers = 8, m.layer_result = "ffn", m.target_layer_norm = "instance_norm";
    m.target_final_norm = "none", m.loss_beta = 0.0, m.loss_scale = 0.0;
    m.head_hidden_mult = 0;
  } else {
    m.top_k_layers = 10, m.layer_result = "ffn", m.target_layer_norm = "layer_norm";
    m.target_final_norm = "none", m.loss_beta = 4.0, m.loss_scale = 1.0;
    m.head_hidden_mult = 2, m.mask_ratio = 0.15;
  }
}

// An HF folder: encoder options from config.json (with the constructor arguments the weights
// imply), weights mapped by the modality's table, the task head checked against the encoder.
HfModel read_hf_folder(const std::string& dir, io::Config config) {
  const auto hf = io::HfConfig::load(dir);
  HfModel model;
  model.files_dir = dir;
  model.hf_config = hf.json();
  model.modality = modality_of(hf);
  const auto weights = io::read_hf_weights(dir);
  const auto nested = nested_prefix(model.modality);
  bool is_nested = false;
  for (const auto& [name, tensor] : weights) is_nested |= name.rfind(nested, 0) == 0;
  const std::string prefix = is_nested ? nested : "";

  auto json = hf.json();
  if (model.modality == "vision") {
    json["add_pooling_layer"] = weights.count(prefix + "pooler.layernorm.weight") > 0;
  } else if (model.modality == "text") {
    json["add_pooling_layer"] = weights.count(prefix + "pooler.dense.weight") > 0;
  }
  // Read the options from the file first, so that errors cite config.json by name.
  const io::HfConfig described(json, hf.source());
  if (model.modality == "vision") {
    config.data.image_size = vision::vision_options_from_hf(described).image_size();
  } else if (model.modality == "audio") {
    audio::audio_options_from_hf(described);
  } else {
    config.data.max_tokens =
        std::min(config.data.max_tokens, text::text_options_from_hf(described).max_positions());
  }
  config.model.modality = model.modality;
  config.model.preset = "hf";
  config.model.hf_config = json.dump();
  io::validate(config);
  model.config = config;
  model.encoder = make_encoder_factory(config)();

  const auto source = fs::exists(fs::path(dir) / "model.safetensors")
                          ? (fs::path(dir) / "model.safetensors").string()
                          : (fs::path(dir) / "pytorch_model.bin").string();
  const auto ours = train::module_state(*model.encoder);
  const auto names = encoder_names(model.modality, hf);
  const auto state = io::state_from_hf(ours, weights, names, prefix, source);
  train::load_module_state(*model.encoder, state, /*strict=*/false);

  const auto width = model.encoder->embed_dim();
  for (const auto& [name, tensor] : weights) {
    if (!is_nested || name.rfind(prefix, 0) == 0) continue;  // checked by state_from_hf
    if (!is_head_tensor(model.modality, name)) {
      throw std::invalid_argument(source + ": unexpected tensor '" + name +
                                  "' (not part of the encoder or a supported task head)");
    }
    const bool weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    const bool square = name == "classifier.dense.weight";
    if (weight &&
        (tensor.dim() != 2 || tensor.size(1) != width || (square && tensor.size(0) != width))) {
      throw std::invalid_argument(source + ": task head tensor '" + name + "' has shape " +
                                  c10::str(tensor.sizes()) + ", the encoder's width is " +
                                  std::to_string(width));
    }
    model.head[name] = tensor.to(torch::kFloat32).contiguous();
  }
  return model;
}

// A run or checkpoint directory: the encoder from its config, its weights and task head.
HfModel read_run(const std::string& path, bool teacher, bool block_results) {
  const auto ckpt = train::read_checkpoint(path);
  HfModel model;
  io::apply_yaml(model.config, ckpt.config_yaml, path + " (config.yaml)");
  if (block_results) model.config.model.layer_result = "block";
  model.modality = model.config.model.modality;
  if (model.modality == "toy") {
    throw std::invalid_argument("'" + path +
                                "' holds a toy encoder: it has no Hugging Face "
                                "counterpart");
  }
  model.encoder = make_encoder_factory(model.config)();
  train::load_module_state(*model.encoder, ckpt.model, /*strict=*/true,
                           teacher ? "teacher." : "student.");
  for (const auto& [name, tensor] : ckpt.model) {
    if (name.rfind(kHeadPrefix, 0) == 0) {
      model.head[name.substr(std::string(kHeadPrefix).size())] = tensor;
    }
  }
  // import-hf copied the folder's small files to RUN/hf; a checkpoint is RUN/checkpoints/X.
  for (const auto& candidate : {fs::path(path) / "hf", fs::path(path) / ".." / ".." / "hf"}) {
    if (fs::exists(candidate / "config.json")) {
      model.files_dir = candidate.lexically_normal().string();
      break;
    }
  }
  if (model.config.model.preset == "hf") model.hf_config = hf_model_config(model.config).json();
  return model;
}

HfModel read_model(const std::string& dir, bool block_results) {
  if (fs::exists(fs::path(dir) / "config.json")) {
    io::Config config;
    if (block_results) config.model.layer_result = "block";
    return read_hf_folder(dir, config);
  }
  return read_run(dir, /*teacher=*/false, block_results);
}

// The config.json of an encoder: the imported one's as it was, or one made from our options.
nlohmann::json hf_config_json(const HfModel& model) {
  if (model.config.model.preset == "hf") return hf_model_config(model.config).json();
  if (auto* v = dynamic_cast<vision::VisionEncoderImpl*>(model.encoder.get())) {
    return vision::hf_vision_config(v->options());
  }
  if (auto* a = dynamic_cast<audio::AudioEncoderImpl*>(model.encoder.get())) {
    return audio::hf_audio_config(a->options());
  }
  if (auto* t = dynamic_cast<text::TextEncoderImpl*>(model.encoder.get())) {
    return text::hf_text_config(t->options());
  }
  throw std::invalid_argument("this encoder has no Hugging Face counterpart");
}

// The folder's vocabulary, tokenizer and preprocessor files (.json, .txt, .model up to 64 MiB),
// `except` one file name.
void copy_small_files(const std::string& from, const std::string& to,
                      const std::string& except = "") {
  for (const auto& entry : fs::directory_iterator(from)) {
    const auto ext = entry.path().extension().string();
    if (!entry.is_regular_file() || entry.file_size() > (64u << 20)) continue;
    if (ext != ".json" && ext != ".txt" && ext != ".model") continue;
    if (entry.path().filename() == except) continue;
    fs::create_directories(to);
    io::write_file_atomically((fs::path(to) / entry.path().filename()).string(),
                              io::read_file(entry.path().string()));
  }
}

// Data2VecAudioForCTC's config.json keys for a run with a CTC head: the architecture, vocab_size
// (the head's rows), pad_token_id (the blank of the run's vocab.json) and the CTC settings the
// run recorded in RUN/hf/config.json (finetune-ctc: ctc_loss_reduction "mean", ctc_zero_infinity
// true, as it trained); a vocab.json of another size than the head is refused.
void set_ctc_config(nlohmann::json& json, const HfModel& model, const std::string& source) {
  const auto weight = model.head.find("lm_head.weight");
  if (weight == model.head.end()) return;
  const int64_t rows = weight->second.size(0);
  json["architectures"] = {"Data2VecAudioForCTC"};
  if (model.files_dir.empty()) {
    spdlog::warn(
        "{} has no RUN/hf/vocab.json: the export has no CTC vocabulary (transcribe and "
        "Hugging Face's tokenizer need one)",
        source);
    json["vocab_size"] = rows;
    return;
  }
  const auto saved = io::HfConfig::load((fs::path(model.files_dir) / "config.json").string());
  for (const char* key : {"pad_token_id", "bos_token_id", "eos_token_id", "ctc_loss_reduction",
                          "ctc_zero_infinity", "final_dropout"}) {
    if (saved.has(key)) json[key] = saved.json().at(key);
  }
  json["vocab_size"] = rows;
  const auto vocab_path = fs::path(model.files_dir) / "vocab.json";
  if (fs::exists(vocab_path)) {
    const auto vocabulary = eval::CtcVocabulary::load(vocab_path.string());
    if (vocabulary.size() != rows) {
      throw std::invalid_argument(vocab_path.string() + " has " +
                                  std::to_string(vocabulary.size()) + " tokens but lm_head of " +
                                  source + " has " + std::to_string(rows) + " rows");
    }
    json["pad_token_id"] = vocabulary.blank();
  }
}

}  // namespace

std::string import_hf(const ImportHfOptions& options) {
  if (fs::exists(fs::path(options.out_dir) / "checkpoints") ||
      fs::exists(fs::path(options.out_dir) / "config.yaml")) {
    throw std::invalid_argument("'" + options.out_dir +
                                "' already holds a run; choose a new --out");
  }
  io::Config config;
  const auto modality = modality_of(io::HfConfig::load(options.hf_dir));
  // The keys config.json decides would be overwritten: a --set of one is a mistake to name.
  for (const auto& item : options.overrides) {
    const auto key = item.substr(0, item.find('='));
    if (key == "model.modality" || key == "model.preset" || key == "model.hf_config" ||
        (key == "data.image_size" && modality == "vision")) {
      throw std::invalid_argument("import-hf: --set " + item + ": " + key + " comes from " +
                                  (fs::path(options.hf_dir) / "config.json").string() +
                                  " (a " + modality + " model); drop this --set");
    }
  }
  if (!options.config_path.empty()) {
    config = io::load_config(options.config_path);
  } else {
    data2vec_defaults(config, modality);
  }
  io::apply_overrides(config, options.overrides);
  auto model = read_hf_folder(options.hf_dir, config);
  const auto depth = model.encoder->num_layers();
  if (options.config_path.empty() && model.config.model.top_k_layers > depth) {
    spdlog::info("model.top_k_layers {} -> {}: the imported encoder has {} layers",
                 model.config.model.top_k_layers, depth, depth);
    model.config.model.top_k_layers = depth;
  }

  // An imported text model reads text with its own tokenizer (RoBERTa's BPE), copied to RUN/hf.
  if (model.modality == "text" && text::ByteLevelBpeTokenizer::present(options.hf_dir)) {
    model.config.data.tokenizer = fs::absolute(fs::path(options.out_dir) / "hf").string();
  }
  train::CheckpointContents contents;
  for (const auto& [name, tensor] : train::module_state(*model.encoder)) {
    contents.model["student." + name] = tensor;
    contents.model["teacher." + name] = tensor;
  }
  for (const auto& [name, tensor] : model.head) contents.model[kHeadPrefix + name] = tensor;
  contents.trainer_state = {{"step", 0},
                            {"data_position", 0},
                            {"bad_samples", 0},
                            {"elapsed_s", 0.0},
                            {"imported_from", fs::absolute(options.hf_dir).string()}};
  contents.config_yaml = io::to_yaml(model.config);
  fs::create_directories(options.out_dir);
  const auto dir = train::save_checkpoint(options.out_dir, 0, contents, /*keep=*/0);
  io::write_file_atomically((fs::path(options.out_dir) / "config.yaml").string(),
                            contents.config_yaml);
  copy_small_files(options.hf_dir, (fs::path(options.out_dir) / "hf").string());
  spdlog::info("imported {} ({} encoder, {} parameters{}) -> {}", options.hf_dir, modality,
               model.encoder->parameters().size(),
               model.head.empty()
                   ? ""
                   : ", task head " + std::to_string(model.head.size() / 2) + " layer(s)",
               dir);
  return dir;
}

void export_hf(const ExportHfOptions& options) {
  const fs::path out(options.out_dir);
  const std::vector<std::string> model_files = {
      "config.json", "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
      "pytorch_model.bin.index.json"};
  std::string held;
  for (const auto& name : model_files)
    if (fs::exists(out / name)) held += (held.empty() ? "" : ", ") + name;
  if (!held.empty() && !options.overwrite) {
    throw std::invalid_argument("export-hf: '" + options.out_dir + "' already holds a model (" +
                                held + "); choose a new --out, or replace it with --overwrite");
  }
  const auto model = read_run(options.checkpoint, options.teacher, /*block_results=*/false);
  auto json = hf_config_json(model);
  const auto hf = io::HfConfig(json, options.checkpoint + " (model config)");
  const std::string prefix = model.head.empty() ? "" : nested_prefix(model.modality);
  if (model.head.empty()) {
    const std::string base = model.modality == "vision"  ? "Data2VecVisionModel"
                             : model.modality == "audio" ? "Data2VecAudioModel"
                                                         : "Data2VecTextModel";
    json["architectures"] = {base};
  } else if (model.modality == "audio") {
    set_ctc_config(json, model, options.checkpoint);
  }
  const auto ours = train::module_state(*model.encoder);
  io::StateDict state;
  if (auto* t = dynamic_cast<text::TextEncoderImpl*>(model.encoder.get())) {
    state = text::text_state_to_hf(ours, t->options(), prefix);
  } else {
    state = io::state_to_hf(ours, encoder_names(model.modality, hf), prefix);
  }
  for (const auto& [name, tensor] : model.head) state[name] = tensor;
  io::NamedTensors tensors(state.begin(), state.end());  // sorted by name
  fs::create_directories(options.out_dir);
  if (options.overwrite) {
    for (const auto& name : model_files) fs::remove(out / name);
  }
  // What the run kept beside its weights (import-hf's copy of the folder, finetune-ctc's
  // vocab.json, tokenizer and preprocessor configs) travels with the export.
  if (!model.files_dir.empty()) copy_small_files(model.files_dir, options.out_dir, "config.json");
  io::write_file_atomically((fs::path(options.out_dir) / "config.json").string(),
                            json.dump(2) + "\n");
  io::save_safetensors((fs::path(options.out_dir) / "model.safetensors").string(), tensors,
                       {{"format", "pt"}});
  spdlog::info("exported the {} of {} ({} tensors) -> {}", options.teacher ? "teacher" : "student",
               options.checkpoint, tensors.size(), options.out_dir);
}

HfModel load_hf_model(const std::string& dir) {
  return read_model(dir, /*block_results=*/false);
}

std::shared_ptr<EncoderImpl> load_hf_encoder(const std::string& dir) {
  return load_hf_model(dir).encoder;
}

int64_t hf_forward(const std::string& model_dir, const std::string& inputs_path,
                   const std::string& output) {
  auto model = read_model(model_dir, /*block_results=*/true);
  model.encoder->eval();
  torch::NoGradGuard no_grad;
  const auto inputs = io::load_safetensors(inputs_path);
  const auto variants_it = inputs.metadata.find("variants");
  if (variants_it == inputs.metadata.end()) {
    throw std::invalid_argument("'" + inputs_path + "' has no 'variants' in its metadata");
  }
  auto input = [&](const std::string& variant, const std::string& name,
                   bool required) -> torch::Tensor {
    const auto it = inputs.tensors.find(variant + "." + name);
    if (it != inputs.tensors.end()) return it->second;
    if (required) {
      throw std::invalid_argument("'" + inputs_path + "' has no tensor '" + variant + "." + name +
                                  "'");
    }
    return {};
  };
  // An input the model cannot read is named with what it holds and what the model reads, before
  // LibTorch fails somewhere inside the forward.
  auto refuse = [&](const std::string& variant, const std::string& name, const std::string& has,
                    const std::string& wants) {
    throw std::invalid_argument("'" + inputs_path + "': tensor '" + variant + "." + name + "' " +
                                has + "; this model reads " + wants);
  };
  auto shape_of = [](const torch::Tensor& t) { return "has shape " + c10::str(t.sizes()); };
  auto linear = [&](const torch::Tensor& x, const std::string& layer) {
    return torch::linear(x, model.head.at(layer + ".weight"), model.head.at(layer + ".bias"));
  };
  const auto variants = split_list(variants_it->second);
  if (variants.empty()) {
    throw std::invalid_argument("'" + inputs_path + "': its 'variants' metadata names no variant");
  }
  // A mask must cover its inputs position by position.
  auto check_mask = [&](const std::string& variant, const std::string& name,
                        const torch::Tensor& mask, const torch::Tensor& inputs) {
    if (mask.defined() && mask.sizes() != inputs.sizes()) {
      refuse(variant, name, shape_of(mask), "the shape of its inputs, " + c10::str(inputs.sizes()));
    }
  };
  io::NamedTensors outputs;
  for (const auto& variant : variants) {
    auto put = [&](const std::string& name, const torch::Tensor& t) {
      outputs.emplace_back(variant + "." + name, t.contiguous());
    };
    EncoderOutput out;
    torch::Tensor pooled;
    if (auto* v = dynamic_cast<vision::VisionEncoderImpl*>(model.encoder.get())) {
      const auto pixels = input(variant, "pixel_values", true).to(torch::kFloat32);
      const auto& o = v->options();
      if (pixels.dim() != 4 || pixels.size(1) != o.in_channels() ||
          pixels.size(2) != o.image_size() || pixels.size(3) != o.image_size()) {
        refuse(variant, "pixel_values", shape_of(pixels),
               fmt::format("[B, {}, {}, {}]", o.in_channels(), o.image_size(), o.image_size()));
      }
      torch::Tensor mask;
      if (auto bmp = input(variant, "bool_masked_pos", false); bmp.defined()) {
        mask = torch::cat({torch::zeros({bmp.size(0), 1}, torch::kBool), bmp.to(torch::kBool)}, 1);
      }
      out = v->extract_features({pixels, {}}, mask);
      if (v->options().pooler() || !model.head.empty()) pooled = v->pool(out.x);
      if (!model.head.empty()) put("logits", linear(pooled, "classifier"));
    } else if (auto* a = dynamic_cast<audio::AudioEncoderImpl*>(model.encoder.get())) {
      const auto values = input(variant, "input_values", true).to(torch::kFloat32);
      if (values.dim() != 2) refuse(variant, "input_values", shape_of(values), "[B, samples]");
      const auto& layers = a->options().conv_layers();
      if (audio::conv_output_length(values.size(1), layers) < 1) {
        refuse(variant, "input_values", fmt::format("holds {} samples", values.size(1)),
               fmt::format("at least {} (one frame)", audio::conv_receptive_field(layers)));
      }
      torch::Tensor padding;
      if (auto m = input(variant, "attention_mask", false); m.defined()) {
        check_mask(variant, "attention_mask", m, values);
        padding = m.eq(0);
      }
      out = a->extract_features({values, padding}, {});
      put("extract_features",
          a->feature_projection->layer_norm(a->feature_extractor(values).transpose(1, 2)));
      if (!model.head.empty()) put("logits", linear(out.x, "lm_head"));
    } else if (auto* t = dynamic_cast<text::TextEncoderImpl*>(model.encoder.get())) {
      const auto ids = input(variant, "input_ids", true).to(torch::kLong);
      const auto& o = t->options();
      if (ids.dim() != 2 || ids.size(1) < 1 || ids.size(1) > o.max_positions()) {
        refuse(variant, "input_ids", shape_of(ids),
               fmt::format("[B, T] with 1 <= T <= {}", o.max_positions()));
      }
      const auto lowest = ids.numel() > 0 ? ids.min().item<int64_t>() : 0;
      const auto highest = ids.numel() > 0 ? ids.max().item<int64_t>() : 0;
      if (lowest < 0 || highest >= o.vocab_size()) {
        refuse(variant, "input_ids", fmt::format("holds ids from {} to {}", lowest, highest),
               fmt::format("ids 0 to {} (vocab_size {})", o.vocab_size() - 1, o.vocab_size()));
      }
      torch::Tensor padding, types;
      if (auto m = input(variant, "attention_mask", false); m.defined()) {
        check_mask(variant, "attention_mask", m, ids);
        padding = m.eq(0);
      }
      if (auto ty = input(variant, "token_type_ids", false); ty.defined()) {
        check_mask(variant, "token_type_ids", ty, ids);
        types = ty.to(torch::kLong);
      }
      out = t->encode({ids, padding}, types);
      if (t->options().pooler()) pooled = t->pool(out.x);
      if (!model.head.empty()) {
        put("logits", linear(torch::tanh(linear(out.x.select(1, 0), "classifier.dense")),
                             "classifier.out_proj"));
      }
    }
    put("hidden_states.0", out.block_input);
    for (size_t i = 0; i < out.layer_results.size(); ++i) {
      put("hidden_states." + std::to_string(i + 1), out.layer_results[i]);
    }
    put("last_hidden_state", out.x);
    if (pooled.defined()) put("pooler_output", pooled);
  }
  io::save_safetensors(output, outputs, {{"format", "pt"}, {"variants", variants_it->second}});
  return int64_t(outputs.size());
}

}  // namespace data2vec::app
