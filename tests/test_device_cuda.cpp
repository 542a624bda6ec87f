// GPU readiness: every modality's Data2Vec pass gives the same numbers on CUDA as on the CPU
// (same weights, same mask, fp32 without TF32), gradients included, and bf16 autocast on CUDA
// stays close. Skipped where LibTorch has no CUDA or no GPU is visible (scripts/gpu-smoke.sh
// runs it on a GPU machine).
#include <ATen/Context.h>

#include "data2vec/audio/encoder.h"
#include "data2vec/core/data2vec.h"
#include "data2vec/core/toy_encoder.h"
#include "data2vec/text/encoder.h"
#include "data2vec/train/device.h"
#include "data2vec/vision/encoder.h"
#include "support.h"

using namespace data2vec;

namespace {

struct Case {
  std::string name;
  EncoderFactory factory;
  EncoderInput input;  // on the CPU
};

std::vector<Case> cases() {
  auto g = at::detail::createCPUGenerator(11);
  std::vector<Case> all;
  all.push_back({"vision fmnist-tiny",
                 [] { return std::make_shared<vision::VisionEncoderImpl>(vision::vision_preset("fmnist-tiny")); },
                 {torch::randn({4, 1, 28, 28}, g), {}}});
  auto wave = torch::randn({3, 8000}, g);
  auto wave_padding = torch::zeros({3, 8000}, torch::kBool);
  wave_padding[2].slice(0, 6000).fill_(true);  // the padding paths too
  all.push_back({"audio tiny",
                 [] { return std::make_shared<audio::AudioEncoderImpl>(audio::audio_preset("tiny")); },
                 {wave, wave_padding}});
  auto ids = torch::randint(5, 1000, {3, 24}, g, torch::kLong);
  auto id_padding = torch::zeros({3, 24}, torch::kBool);
  id_padding[1].slice(0, 18).fill_(true);
  ids.masked_fill_(id_padding, 1);
  all.push_back({"text tiny",
                 [] { return std::make_shared<text::TextEncoderImpl>(text::text_preset("tiny", 1000)); },
                 {ids, id_padding}});
  all.push_back({"toy tiny",
                 [] { return std::make_shared<ToyEncoderImpl>(ToyEncoderOptions().dim(64).depth(4).num_heads(4).mlp_dim(128)); },
                 {torch::randn({4, 32, 16}, g), {}}});
  return all;
}

Data2Vec make(const EncoderFactory& factory) {
  torch::manual_seed(5);
  auto options = Data2VecOptions().targets(TargetOptions().top_k_layers(2));
  Data2Vec model(factory, options);
  model->train();
  return model;
}

class CudaParity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only LibTorch)";
    // Compare true fp32 arithmetic: TF32 would move the GPU numbers by ~1e-3.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
};

}  // namespace

TEST_F(CudaParity, ForwardLossAndGradientsMatchTheCpu) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto cpu = make(c.factory), gpu = make(c.factory);
    gpu->to(torch::kCUDA);
    // Dropout draws differ between devices: compare without it.
    cpu->eval();
    gpu->eval();
    auto generator = at::detail::createCPUGenerator(3);
    const MaskedInput masked = cpu->student()->apply_mask(c.input, generator);
    ASSERT_GT(masked.mask.sum().item<int64_t>(), 0);
    MaskedInput masked_gpu{masked.student.to(torch::kCUDA), masked.mask.to(torch::kCUDA)};

    auto out_cpu = cpu->forward_masked(c.input, masked);
    auto out_gpu = gpu->forward_masked(c.input.to(torch::kCUDA), masked_gpu);
    EXPECT_TRUE(data2vec::testing::tensors_close("targets", out_gpu.targets.cpu(), out_cpu.targets, 1e-3));
    EXPECT_TRUE(data2vec::testing::tensors_close("predictions", out_gpu.predictions.cpu(),
                                                 out_cpu.predictions, 1e-3));
    EXPECT_NEAR(out_gpu.loss.item<double>(), out_cpu.loss.item<double>(),
                1e-4 * std::max(1.0, std::abs(out_cpu.loss.item<double>())));

    out_cpu.loss.backward();
    out_gpu.loss.backward();
    auto cpu_params = cpu->named_parameters();
    auto gpu_params = gpu->named_parameters();
    int compared = 0;
    for (const auto& item : cpu_params) {
      const auto& g_cpu = item.value().grad();
      const auto& g_gpu = gpu_params[item.key()].grad();
      ASSERT_EQ(g_cpu.defined(), g_gpu.defined()) << item.key();
      if (!g_cpu.defined()) continue;
      const double scale = std::max(1e-3, g_cpu.abs().max().item<double>());
      EXPECT_TRUE(data2vec::testing::tensors_close("grad " + item.key(), g_gpu.cpu() / scale,
                                                   g_cpu / scale, 2e-3));
      ++compared;
    }
    EXPECT_GT(compared, 4);
  }
}

TEST_F(CudaParity, Bf16AutocastStaysCloseToFp32) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto gpu = make(c.factory);
    gpu->to(torch::kCUDA);
    gpu->eval();
    auto generator = at::detail::createCPUGenerator(3);
    const auto input = c.input.to(torch::kCUDA);
    const MaskedInput masked = gpu->student()->apply_mask(input, generator);
    const double fp32 = gpu->forward_masked(input, masked).loss.item<double>();
    double bf16 = 0;
    {
      train::AutocastGuard autocast(torch::kCUDA, "bf16");
      auto out = gpu->forward_masked(input, masked);
      EXPECT_EQ(out.targets.scalar_type(), torch::kFloat32) << "targets must stay fp32";
      bf16 = out.loss.item<double>();
    }
    EXPECT_TRUE(std::isfinite(bf16));
    EXPECT_NEAR(bf16, fp32, 0.05 * std::abs(fp32) + 1e-3);
  }
}
