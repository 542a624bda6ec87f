// Your own encoder, pretrained the data2vec way through the installed public headers alone.
//
// The encoder reads multichannel sensor sequences [B,T,F] (think accelerometers): a temporal
// convolution makes one token per step, a learned mask embedding replaces the masked steps,
// learned positions are added, and data2vec.cpp's post-LN blocks contextualise them. Two
// capabilities are all data2vec 1.0 asks of it: apply_mask and extract_features.
#include <data2vec/core/data2vec.h>
#include <data2vec/core/encoder.h>
#include <data2vec/nn/transformer.h>

#include <cmath>
#include <iostream>

namespace {

constexpr int64_t kChannels = 6, kSteps = 64, kDim = 48, kLayers = 3, kHeads = 4;

class SensorEncoderImpl : public data2vec::EncoderImpl {
 public:
  SensorEncoderImpl() {
    conv = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(kChannels, kDim, 5)
                                                         .padding(2)));
    mask_embedding = register_parameter("mask_embedding", torch::randn({kDim}) * 0.02);
    positions = register_parameter("positions", torch::randn({kSteps, kDim}) * 0.02);
    auto list = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < kLayers; ++i) {
      blocks.push_back(data2vec::nn::PostNormBlock(data2vec::nn::BlockOptions(kDim, kHeads, 2 * kDim)));
      list->push_back(blocks.back());
    }
  }

  int64_t embed_dim() const override { return kDim; }
  int64_t num_layers() const override { return kLayers; }

  // Spans of 4 steps, about half the sequence, drawn with the generator data2vec hands in.
  data2vec::MaskedInput apply_mask(const data2vec::EncoderInput& input,
                                   at::Generator& generator) override {
    const auto b = input.source.size(0), t = input.source.size(1);
    const auto starts = torch::rand({b, t / 4}, generator) < 0.5;             // [B,T/4]
    auto mask = starts.repeat_interleave(4, 1).slice(1, 0, t).contiguous();  // [B,T]
    return {input, mask};
  }

  data2vec::EncoderOutput extract_features(const data2vec::EncoderInput& input,
                                           const torch::Tensor& mask) override {
    data2vec::EncoderOutput out;
    out.local_features = conv(input.source.transpose(1, 2)).transpose(1, 2);  // [B,T,D]
    auto x = out.local_features;
    if (mask.defined()) x = torch::where(mask.unsqueeze(-1), mask_embedding, x);
    x = x + positions.slice(0, 0, x.size(1));
    out.block_input = x;
    for (auto& block : blocks) {
      const auto y = block->forward(x, /*attention_bias=*/{}, /*key_padding_mask=*/{});
      x = y.x;
      out.layer_results.push_back(y.ffn);  // data2vec's targets: the FFN outputs
    }
    out.x = x;
    return out;
  }

  torch::nn::Conv1d conv{nullptr};
  torch::Tensor mask_embedding, positions;
  std::vector<data2vec::nn::PostNormBlock> blocks;
};

// A batch of noisy multichannel sinusoids.
torch::Tensor sensor_batch(int64_t batch) {
  const auto t = torch::arange(kSteps).to(torch::kFloat32).view({1, kSteps, 1});
  const auto freq = torch::rand({batch, 1, kChannels}) * 0.5 + 0.05;
  const auto phase = torch::rand({batch, 1, kChannels}) * 6.28;
  return torch::sin(t * freq + phase) + 0.1 * torch::randn({batch, kSteps, kChannels});
}

}  // namespace

int main() {
  torch::manual_seed(0);
  auto options = data2vec::Data2VecOptions()
                     .targets(data2vec::TargetOptions()
                                  .top_k_layers(2)
                                  .layer_norm_targets(data2vec::TargetNorm::kInstance)
                                  .final_norm(data2vec::TargetNorm::kNone))
                     .loss(data2vec::LossOptions().beta(0.0).scale(-1.0))
                     .ema(data2vec::EmaOptions().decay_start(0.99).decay_end(0.999).anneal_steps(20));
  data2vec::Data2Vec model([] { return std::make_shared<SensorEncoderImpl>(); }, options);
  model->train();
  torch::optim::AdamW optimizer(model->trainable_parameters(), torch::optim::AdamWOptions(1e-3));
  auto generator = at::make_generator<at::CPUGeneratorImpl>(1);
  for (int64_t step = 0; step < 8; ++step) {
    optimizer.zero_grad();
    const auto out = model->forward({sensor_batch(16), {}}, generator);
    out.loss.backward();
    optimizer.step();
    const double decay = model->ema_step(step);
    const double loss = out.loss.item<double>();
    std::cout << "step " << step << " loss " << loss << " target_std "
              << out.target_std.item<double>() << " ema " << decay << "\n";
    if (!std::isfinite(loss)) return 1;
  }
  std::cout << "custom encoder pretrained with data2vec for 8 steps\n";
  return 0;
}
