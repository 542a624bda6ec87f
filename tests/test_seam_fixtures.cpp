// Per-seam reference fixtures (llm.c's test_gpt2.c): tests/fixtures/seams/, written by
// scripts/make_seam_fixtures.py from plain PyTorch (never by this code), compared seam by seam:
//   - one data2vec 1.0 step of a tiny vision, audio and text encoder (3 layers x 32): the patch /
//     frame / token embeddings, what enters the first block, every block's output (student on
//     the masked input, teacher on the whole input), the final output, the targets, the head's
//     predictions, the loss, and the gradient of every parameter after the backward pass;
//   - data2vec 2.0's CNN decoder (1-D with a residual, 1-D text-style with a two-layer
//     projection, 2-D over a patch grid): output and gradients of the weights and the input;
//   - log-mel features against torchaudio's MelSpectrogram and filterbank;
//   - bilinear resized crops against torchvision's resized_crop.
// Each failure prints the seam's label, the first values and the max difference.
#include <gtest/gtest.h>

#include <filesystem>

#include "data2vec/app/builders.h"
#include "data2vec/app/hf.h"
#include "data2vec/audio/features.h"
#include "data2vec/core/data2vec.h"
#include "data2vec/core/decoder.h"
#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/vision/augment.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::fixture_path;
using data2vec::testing::make_temp_dir;
using data2vec::testing::tensors_close;

namespace {

// fp32 through a few layers: differences are summation order only.
constexpr double kForwardTolerance = 2e-5;
constexpr double kGradientTolerance = 2e-5;

struct Fixture {
  std::map<std::string, torch::Tensor> t;
  std::map<std::string, std::string> meta;
  const torch::Tensor& at(const std::string& name) const {
    const auto it = t.find(name);
    if (it == t.end()) throw std::out_of_range("the fixture has no tensor '" + name + "'");
    return it->second;
  }
};

Fixture load(const std::string& name) {
  auto content = io::load_safetensors(fixture_path("seams/" + name));
  return {std::move(content.tensors), std::move(content.metadata)};
}

std::string norm_key(const std::string& fixture_name) {
  if (fixture_name == "layer") return "layer_norm";
  if (fixture_name == "instance") return "instance_norm";
  return "none";
}

// The run configuration of the fixture's step: its encoder (preset hf), block layer results,
// its target and loss options, no dropout.
io::Config step_config(const std::string& modality, const Fixture& f) {
  io::Config c;
  c.model.modality = modality;
  c.model.preset = "hf";
  c.model.hf_config = io::read_file(fixture_path("seams/" + modality + "/config.json"));
  c.model.algorithm = "v1";
  c.model.layer_result = "block";
  c.model.top_k_layers = std::stoll(f.meta.at("top_k"));
  c.model.target_layer_norm = norm_key(f.meta.at("layer_norm"));
  c.model.target_final_norm = norm_key(f.meta.at("final_norm"));
  c.model.loss_beta = std::stod(f.meta.at("loss_beta"));
  c.model.loss_scale = std::stod(f.meta.at("loss_scale"));
  c.model.dropout = 0.0;
  c.data.image_size = 16;  // vision: the fixture's 16 x 16 images
  c.data.max_tokens = 12;  // text: within the fixture's 20 positions
  return c;
}

// `tensors` (Hugging Face names) under our names, through the same import table as the weights:
// written as an HF folder beside the fixture's config.json and read back as an encoder.
std::map<std::string, torch::Tensor> to_our_names(const std::string& modality,
                                                  const io::NamedTensors& tensors) {
  const auto dir = make_temp_dir("d2v-seams");
  fs::copy_file(fixture_path("seams/" + modality + "/config.json"), fs::path(dir) / "config.json");
  io::save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
  auto state = train::module_state(*app::load_hf_encoder(dir));
  fs::remove_all(dir);
  return state;
}

void check_encoder_step(const std::string& modality) {
  const auto f = load(modality + "/seams.safetensors");
  const auto config = step_config(modality, f);
  Data2Vec model = app::make_model(config);
  model->train();
  {
    torch::NoGradGuard no_grad;
    const auto weights =
        train::module_state(*app::load_hf_encoder(fixture_path("seams/" + modality)));
    train::load_module_state(*model->student(), weights);
    train::load_module_state(*model->teacher(), weights);
    for (auto& p : model->head()->named_parameters()) {
      const auto name = p.key().substr(p.key().find('.') + 1);  // "0.weight" -> "weight"
      p.value().copy_(f.at("head." + name));
    }
  }

  const EncoderInput input{f.at("source"), {}};
  const MaskedInput masked{{f.at("student_source"), {}}, f.at("mask")};
  const int64_t layers = model->student()->num_layers();

  {  // the encoder's seams, student (masked input) and teacher (whole input)
    torch::NoGradGuard no_grad;
    const auto student = model->student()->extract_features(masked.student, masked.mask);
    EXPECT_TRUE(tensors_close(modality + " local_features", student.local_features,
                              f.at("local_features"), kForwardTolerance));
    EXPECT_TRUE(tensors_close(modality + " student.hidden_states.0", student.block_input,
                              f.at("student.hidden_states.0"), kForwardTolerance));
    ASSERT_EQ(int64_t(student.layer_results.size()), layers);
    for (int64_t i = 0; i < layers; ++i) {
      const auto key = "student.hidden_states." + std::to_string(i + 1);
      EXPECT_TRUE(tensors_close(modality + " " + key, student.layer_results[size_t(i)], f.at(key),
                                kForwardTolerance));
    }
    EXPECT_TRUE(tensors_close(modality + " student.x", student.x, f.at("student.x"),
                              kForwardTolerance));
    const auto teacher = model->teacher()->teacher_features(input, student);
    for (int64_t i = 0; i < layers; ++i) {
      const auto key = "teacher.hidden_states." + std::to_string(i + 1);
      EXPECT_TRUE(tensors_close(modality + " " + key, teacher.layer_results[size_t(i)], f.at(key),
                                kForwardTolerance));
    }
  }

  // The whole step: targets, predictions, loss, gradients.
  const auto out = model->forward_masked(input, masked);
  EXPECT_TRUE(tensors_close(modality + " targets", out.targets, f.at("targets"), kForwardTolerance));
  EXPECT_TRUE(tensors_close(modality + " predictions", out.predictions, f.at("predictions"),
                            kForwardTolerance));
  EXPECT_TRUE(tensors_close(modality + " loss", out.loss, f.at("loss"), kForwardTolerance));
  out.loss.backward();

  io::NamedTensors hf_grads;
  for (const auto& [name, tensor] : f.t) {
    if (name.rfind("grad.", 0) == 0 && name.rfind("grad.head.", 0) != 0)
      hf_grads.emplace_back(name.substr(5), tensor);
  }
  const auto expected = to_our_names(modality, hf_grads);
  int64_t compared = 0;
  for (const auto& p : model->student()->named_parameters()) {
    const auto it = expected.find(p.key());
    ASSERT_NE(it, expected.end()) << modality << ": no reference gradient for " << p.key();
    // A parameter outside the loss (the text pooler) gets no gradient; its reference is zero.
    const auto grad = p.value().grad().defined() ? p.value().grad() : torch::zeros_like(it->second);
    EXPECT_TRUE(tensors_close(modality + " grad " + p.key(), grad, it->second,
                              kGradientTolerance));
    ++compared;
  }
  EXPECT_EQ(compared, int64_t(hf_grads.size())) << modality;
  for (const auto& p : model->head()->named_parameters()) {
    const auto name = "grad.head." + p.key().substr(p.key().find('.') + 1);
    EXPECT_TRUE(tensors_close(modality + " " + name, p.value().grad(), f.at(name),
                              kGradientTolerance));
  }
  for (const auto& p : model->teacher()->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(SeamFixtures, VisionStepMatchesPyTorch) {
  check_encoder_step("vision");
}

TEST(SeamFixtures, AudioStepMatchesPyTorch) {
  check_encoder_step("audio");
}

TEST(SeamFixtures, TextStepMatchesPyTorch) {
  check_encoder_step("text");
}

void check_decoder(const std::string& name) {
  const auto f = load("decoder_" + name + ".safetensors");
  const auto x_ref = f.at("x");  // [R,T,D]
  DecoderOptions o = DecoderOptions()
                         .dim(std::stoll(f.meta.at("dim")))
                         .kernel(std::stoll(f.meta.at("kernel")))
                         .groups(std::stoll(f.meta.at("groups")))
                         .layers(std::stoll(f.meta.at("layers")))
                         .residual(f.meta.at("residual") == "True")
                         .projection_layers(std::stoll(f.meta.at("proj_layers")));
  if (!f.meta.at("grid").empty()) o.grid({3, 3});
  Decoder decoder(x_ref.size(2), o);
  std::map<std::string, torch::Tensor> weights;
  for (const auto& [key, tensor] : f.t) {
    if (key.rfind("weight.", 0) == 0) weights[key.substr(7)] = tensor;
  }
  {
    torch::NoGradGuard no_grad;
    train::load_module_state(*decoder, weights);
  }
  const auto x = x_ref.clone().requires_grad_();
  const auto out = decoder->forward(x, f.at("padding_mask"));
  EXPECT_TRUE(tensors_close("decoder " + name + " output", out, f.at("output"), kForwardTolerance));
  (out * f.at("probe")).sum().backward();
  EXPECT_TRUE(tensors_close("decoder " + name + " grad x", x.grad(), f.at("grad.x"),
                            kGradientTolerance));
  for (const auto& p : decoder->named_parameters()) {
    EXPECT_TRUE(tensors_close("decoder " + name + " grad " + p.key(), p.value().grad(),
                              f.at("grad." + p.key()), kGradientTolerance));
  }
}

TEST(SeamFixtures, DecoderOneDimensional) {
  check_decoder("1d");
}

// Text's form (no residual, kernel 5, one group): the gradient into block 0 arrives through the
// next block's conv and movedim, strided unlike the GELU's input, the case LibTorch 1.13's fp32
// gelu_backward gets wrong (nn::gelu; tests/test_nn_gelu.cpp). The reference is computed in fp64
// because the fp32 PyTorch run hits the same kernel.
TEST(SeamFixtures, DecoderTextStyleWithTwoLayerProjection) {
  check_decoder("1d_text");
}

TEST(SeamFixtures, DecoderTwoDimensionalOverThePatchGrid) {
  check_decoder("2d");
}

// Our log-mel features are torchaudio's MelSpectrogram(n_fft 400, hop 160, 80 mels, htk, no
// norm, center=False, power 2) followed by log(. + 1e-6).
TEST(SeamFixtures, LogMelMatchesTorchaudio) {
  const auto f = load("log_mel.safetensors");
  const audio::LogMelOptions options;
  // Filter weights are at most 1; torchaudio computes the band edges in fp32 in another order.
  EXPECT_TRUE(tensors_close("mel filterbank", audio::mel_filterbank(options), f.at("filterbank"),
                            1e-5));
  EXPECT_TRUE(tensors_close("log-mel", audio::log_mel_spectrogram(f.at("waveform"), options),
                            f.at("log_mel"), 1e-3));
}

// Our resized crop is torchvision's resized_crop with antialias=False: plain bilinear
// interpolation (align_corners false), torchvision's tensor default before 0.17. With
// antialiasing a downscale averages over the whole footprint and differs.
TEST(SeamFixtures, ResizedCropMatchesTorchvisionWithoutAntialias) {
  const auto f = load("resize.safetensors");
  const auto image = f.at("image");
  for (int i = 0; f.t.count("case" + std::to_string(i) + ".box"); ++i) {
    const auto prefix = "case" + std::to_string(i);
    const auto b = f.at(prefix + ".box");
    const vision::CropBox box{b[0].item<int64_t>(), b[1].item<int64_t>(), b[2].item<int64_t>(),
                              b[3].item<int64_t>()};
    const int64_t size = b[4].item<int64_t>();
    const auto ours = vision::resized_crop(image, box, size);
    EXPECT_TRUE(tensors_close(prefix + " resize", ours, f.at(prefix + ".antialias_false"), 1e-5));
    if (size < box.height && size < box.width) {  // a downscale: antialiasing changes it
      EXPECT_GT((ours - f.at(prefix + ".antialias_true")).abs().max().item<double>(), 1e-3)
          << prefix;
    }
  }
}

}  // namespace
