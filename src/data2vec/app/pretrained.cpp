#include "data2vec/app/pretrained.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "data2vec/app/hf.h"
#include "data2vec/audio/encoder.h"
#include "data2vec/audio/io.h"
#include "data2vec/core/dataset.h"
#include "data2vec/eval/ctc.h"
#include "data2vec/io/files.h"
#include "data2vec/io/hf.h"
#include "data2vec/vision/augment.h"
#include "data2vec/vision/datasets.h"
#include "data2vec/vision/encoder.h"

namespace data2vec::app {

namespace fs = std::filesystem;

namespace {

// The folder's preprocessor_config.json (Hugging Face's feature extractor), or {} when absent.
io::HfConfig preprocessor_config(const HfModel& model) {
  const auto path = fs::path(model.files_dir) / "preprocessor_config.json";
  if (model.files_dir.empty() || !fs::exists(path))
    return io::HfConfig(nlohmann::json::object(), "defaults");
  return io::HfConfig::load(path.string());
}

torch::Tensor head_linear(const HfModel& model, const torch::Tensor& x, const std::string& layer,
                          const std::string& task) {
  const auto w = model.head.find(layer + ".weight"), b = model.head.find(layer + ".bias");
  if (w == model.head.end() || b == model.head.end()) {
    throw std::invalid_argument(
        "the model has no " + task + " head ('" + layer + ".weight'): import a task checkpoint (" +
        (task == "CTC" ? "Data2VecAudioForCTC" : "Data2VecVisionForImageClassification") + ")");
  }
  return torch::linear(x, w->second, b->second);
}

}  // namespace

torch::Tensor hf_normalize(const torch::Tensor& waveform) {
  const auto mean = waveform.mean();
  const auto var = (waveform - mean).pow(2).mean();
  return (waveform - mean) / torch::sqrt(var + 1e-7);
}

std::vector<Transcript> transcribe(const TranscribeOptions& options,
                                   const std::function<void(const Transcript&)>& each) {
  auto model = load_hf_model(options.model);
  auto* encoder = dynamic_cast<audio::AudioEncoderImpl*>(model.encoder.get());
  if (!encoder) throw std::invalid_argument("'" + options.model + "' is not an audio model");
  if (model.files_dir.empty() || !fs::exists(fs::path(model.files_dir) / "vocab.json")) {
    throw std::invalid_argument("'" + options.model + "' has no vocab.json (the CTC vocabulary)");
  }
  const auto vocabulary =
      eval::CtcVocabulary::load((fs::path(model.files_dir) / "vocab.json").string());
  const auto pre = preprocessor_config(model);
  const auto rate = pre.get_int("sampling_rate", 16000);
  const bool normalize = pre.get_bool("do_normalize", true);
  if (!(options.window_s > 0) || !(options.overlap_s >= 0) ||
      options.overlap_s * 2 >= options.window_s) {
    throw std::invalid_argument("transcribe: need --window > 2 x --overlap >= 0, got --window " +
                                fmt::format("{}", options.window_s) + " --overlap " +
                                fmt::format("{}", options.overlap_s));
  }
  constexpr double kMaxWindowS = 24 * 3600;  // a day; a window's samples stay far from overflow
  if (options.window_s > kMaxWindowS) {
    throw std::invalid_argument(fmt::format("transcribe: --window is at most {} s, got {}",
                                            kMaxWindowS, options.window_s));
  }
  const int64_t window = int64_t(options.window_s * double(rate));
  const int64_t overlap = int64_t(options.overlap_s * double(rate));
  const int64_t field = audio::conv_receptive_field(encoder->options().conv_layers());
  int64_t stride = 1;  // samples per frame
  for (const auto& layer : encoder->options().conv_layers()) stride *= layer.stride;
  if (window - overlap < field) {
    throw std::invalid_argument(fmt::format(
        "transcribe: --window {} s minus --overlap {} s is shorter than one frame of this model "
        "({} samples, {:.4f} s at {} Hz)",
        options.window_s, options.overlap_s, field, double(field) / double(rate), rate));
  }

  model.encoder->eval();
  torch::NoGradGuard no_grad;
  std::vector<Transcript> out;
  for (size_t f = 0; f < options.inputs.size(); ++f) {
    const auto& file = options.inputs[f];
    Transcript t{file, "", 0, ""};
    torch::Tensor wave;
    try {
      wave = audio::read_audio(file, rate, audio::ResampleQuality::kBest);  // [S]
    } catch (const BadSample& e) {
      t.error = e.what();
    }
    if (t.error.empty() && wave.size(0) < field) {
      t.error = fmt::format("{}: {} samples at {} Hz, shorter than one frame of this model ({})",
                            file, wave.size(0), rate, field);
    }
    if (!t.error.empty()) {
      spdlog::error("{}", t.error);
      if (each) each(t);
      out.push_back(t);
      continue;
    }
    if (normalize) wave = hf_normalize(wave);
    const int64_t samples = wave.size(0);
    // Windows of `window` samples every window - overlap; each keeps the frames whose centre
    // lies in its middle part (half the overlap trimmed at inner edges), so every frame of the
    // file is decoded once and with context on both sides.
    std::vector<torch::Tensor> kept;
    for (int64_t start = 0;; start += window - overlap) {
      const int64_t end = std::min(samples, start + window);
      const bool first = start == 0, last = end == samples;
      const auto chunk = wave.slice(0, start, end).unsqueeze(0);  // [1,S']
      if (chunk.size(1) < field) break;                           // shorter than one frame
      const auto logits = head_linear(model, model.encoder->extract_features({chunk, {}}, {}).x[0],
                                      "lm_head", "CTC");  // [T,V]
      const double lo = first ? -1e300 : double(start + overlap / 2);
      const double hi = last ? 1e300 : double(end - overlap / 2);
      std::vector<int64_t> rows;
      for (int64_t j = 0; j < logits.size(0); ++j) {
        const double centre = double(start + j * stride) + 0.5 * double(field);
        if (centre >= lo && centre < hi) rows.push_back(j);
      }
      if (!rows.empty()) kept.push_back(logits.index_select(0, torch::tensor(rows)));
      if (last) break;
    }
    if (!kept.empty()) {
      const auto logits = torch::cat(kept);  // [T,V], every frame of the file once
      t.frames = logits.size(0);
      t.text = vocabulary.decode(eval::ctc_greedy_ids(logits, vocabulary.blank()));
    }
    spdlog::info("[{}/{}] {}: {:.1f} s, {} window(s)", f + 1, options.inputs.size(), file,
                 double(samples) / double(rate), kept.size());
    if (each) each(t);
    out.push_back(t);
  }
  return out;
}

namespace {

// A size entry of preprocessor_config.json: an int, {"height","width"} or {"shortest_edge"}.
std::pair<int64_t, int64_t> size_entry(const io::HfConfig& pre, const std::string& key,
                                       int64_t fallback) {
  if (!pre.has(key)) return {fallback, fallback};
  const auto& v = pre.json().at(key);
  if (v.is_number_integer()) return {v.get<int64_t>(), v.get<int64_t>()};
  if (v.is_object() && v.contains("height") && v.contains("width")) {
    return {v.at("height").get<int64_t>(), v.at("width").get<int64_t>()};
  }
  if (v.is_object() && v.contains("shortest_edge")) {
    return {v.at("shortest_edge").get<int64_t>(), v.at("shortest_edge").get<int64_t>()};
  }
  pre.unsupported(key, "expected an integer or {height, width}");
}

std::vector<double> doubles(const io::HfConfig& pre, const std::string& key,
                            std::vector<double> fallback) {
  if (!pre.has(key)) return fallback;
  const auto& v = pre.json().at(key);
  if (v.is_number()) return {v.get<double>()};
  if (!v.is_array()) pre.unsupported(key, "expected a number or a list");
  std::vector<double> out;
  for (const auto& x : v) out.push_back(x.get<double>());
  return out;
}

// BeitImageProcessor's eval transform: resize (bilinear, antialiased as PIL does), optional
// centre crop, rescale to [0,1], normalise. uint8 [C,H,W] -> float [C,h,w].
torch::Tensor preprocess_image(const torch::Tensor& image, const io::HfConfig& pre,
                               int64_t model_size) {
  auto x = vision::to_float_image(image).unsqueeze(0);  // [1,C,H,W] in [0,1]
  if (!pre.get_bool("do_rescale", true)) x = x * 255.0;
  if (pre.get_bool("do_resize", true)) {
    const auto [h, w] = size_entry(pre, "size", model_size);
    namespace F = torch::nn::functional;
    auto resize = F::InterpolateFuncOptions()
                      .size(std::vector<int64_t>{h, w})
                      .align_corners(false)
                      .antialias(true);
    if (pre.get_int("resample", 2) == 3) {  // PIL.Image.BICUBIC
      resize.mode(torch::kBicubic);
    } else {
      resize.mode(torch::kBilinear);
    }
    x = F::interpolate(x, resize);
  }
  if (pre.get_bool("do_center_crop", false)) {
    const auto [ch, cw] = size_entry(pre, "crop_size", model_size);
    const int64_t top = (x.size(2) - ch) / 2, left = (x.size(3) - cw) / 2;
    x = x.slice(2, top, top + ch).slice(3, left, left + cw);
  }
  if (pre.get_bool("do_normalize", true)) {
    x = vision::normalize(x[0], doubles(pre, "image_mean", {0.5, 0.5, 0.5}),
                          doubles(pre, "image_std", {0.5, 0.5, 0.5}))
            .unsqueeze(0);
  }
  return x[0].contiguous();
}

std::string label_of(const nlohmann::json& config, int64_t index) {
  const auto key = std::to_string(index);
  if (config.contains("id2label") && config.at("id2label").contains(key)) {
    return config.at("id2label").at(key).get<std::string>();
  }
  return "LABEL_" + key;
}

}  // namespace

std::vector<Prediction> classify(const ClassifyOptions& options,
                                 const std::function<void(const Prediction&)>& each) {
  auto model = load_hf_model(options.model);
  auto* encoder = dynamic_cast<vision::VisionEncoderImpl*>(model.encoder.get());
  if (!encoder) throw std::invalid_argument("'" + options.model + "' is not an image model");
  const auto pre = preprocessor_config(model);
  const auto& o = encoder->options();
  model.encoder->eval();
  torch::NoGradGuard no_grad;
  std::vector<Prediction> out;
  for (const auto& file : options.inputs) {
    Prediction p{file, {}, ""};
    torch::Tensor pixels;
    try {
      pixels =
          preprocess_image(vision::decode_image_file(file, o.in_channels()), pre, o.image_size());
    } catch (const BadSample& e) {
      p.error = e.what();
      spdlog::error("{}", p.error);
      if (each) each(p);
      out.push_back(p);
      continue;
    }
    if (pixels.size(1) != o.image_size() || pixels.size(2) != o.image_size()) {
      throw std::invalid_argument("preprocessor_config.json gives " +
                                  std::to_string(pixels.size(1)) + "x" +
                                  std::to_string(pixels.size(2)) + " images; the model reads " +
                                  std::to_string(o.image_size()));
    }
    const auto x = encoder->extract_features({pixels.unsqueeze(0), {}}, {}).x;
    const auto probs = torch::softmax(
        head_linear(model, encoder->pool(x), "classifier", "image classification")[0], 0);
    const auto k = std::min<int64_t>(options.top_k, probs.size(0));
    const auto [values, indices] = probs.topk(k);
    for (int64_t i = 0; i < k; ++i) {
      p.top.emplace_back(label_of(model.hf_config, indices[i].item<int64_t>()),
                         values[i].item<double>());
    }
    if (each) each(p);
    out.push_back(p);
  }
  return out;
}

}  // namespace data2vec::app
