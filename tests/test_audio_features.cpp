// The mean log-mel baseline's features: the filterbank's shape, the spectrogram against a DFT
// computed by hand in double precision, tones landing in the right band, and padding left out.
#include <cmath>

#include "data2vec/audio/features.h"
#include "support.h"

using namespace data2vec;
using data2vec::testing::tensors_close;

namespace {

torch::Tensor tone(double hz, int64_t samples, double rate = 16000.0) {
  return torch::sin(torch::arange(samples, torch::kFloat64) * (2 * M_PI * hz / rate))
      .to(torch::kFloat32);
}

}  // namespace

TEST(AudioFeatures, FilterbankIsTriangularWithRisingCentres) {
  const auto options = audio::LogMelOptions().n_mels(40);
  const auto bank = audio::mel_filterbank(options);  // [F,M]
  ASSERT_EQ(bank.sizes(), (std::vector<int64_t>{201, 40}));
  EXPECT_GE(bank.min().item<double>(), 0.0);
  EXPECT_LE(bank.max().item<double>(), 1.0 + 1e-6);
  const auto centres = bank.argmax(0);  // the FFT bin where each filter peaks
  for (int64_t m = 1; m < 40; ++m)
    EXPECT_GE(centres[m].item<int64_t>(), centres[m - 1].item<int64_t>());
  EXPECT_GT(centres[39].item<int64_t>(), centres[0].item<int64_t>() + 100);
}

TEST(AudioFeatures, SpectrogramMatchesADftByHand) {
  const auto options = audio::LogMelOptions().n_mels(24);
  torch::manual_seed(0);
  const auto wave = torch::randn({1, 400 + 160 * 3});               // 4 frames
  const auto features = audio::log_mel_spectrogram(wave, options);  // [1,4,24]
  ASSERT_EQ(features.sizes(), (std::vector<int64_t>{1, 4, 24}));
  // Periodic Hann window, DFT of each frame as explicit cosine and sine sums, in double.
  const int64_t n = 400;
  auto k = torch::arange(201, torch::kFloat64).unsqueeze(1);
  auto t = torch::arange(n, torch::kFloat64).unsqueeze(0);
  auto window = 0.5 - 0.5 * torch::cos(2 * M_PI * torch::arange(n, torch::kFloat64) / n);
  auto cos_basis = torch::cos(2 * M_PI * k * t / n), sin_basis = torch::sin(2 * M_PI * k * t / n);
  const auto bank = audio::mel_filterbank(options).to(torch::kFloat64);
  for (int64_t f = 0; f < 4; ++f) {
    auto frame = wave[0].slice(0, f * 160, f * 160 + n).to(torch::kFloat64) * window;
    auto power = torch::matmul(cos_basis, frame).pow(2) + torch::matmul(sin_basis, frame).pow(2);
    auto expected = torch::log(torch::matmul(power, bank) + 1e-6);
    EXPECT_TRUE(tensors_close("frame " + std::to_string(f), features[0][f].to(torch::kFloat64),
                              expected, 1e-3));
  }
}

TEST(AudioFeatures, TonesLandInTheirBands) {
  const auto options = audio::LogMelOptions();
  const auto bank = audio::mel_filterbank(options);
  for (double hz : {300.0, 1000.0, 4000.0}) {
    const auto band =
        audio::mean_log_mel(tone(hz, 8000).unsqueeze(0), torch::Tensor(), options)[0].argmax();
    const auto bin = int64_t(std::lround(hz / 40.0));  // 16000 / 400 = 40 Hz per FFT bin
    EXPECT_EQ(band.item<int64_t>(), bank[bin].argmax().item<int64_t>()) << hz << " Hz";
  }
}

TEST(AudioFeatures, PaddingIsLeftOutOfTheMean) {
  torch::manual_seed(1);
  const auto a = torch::randn({3000}), b = torch::randn({5000});
  auto batch = torch::zeros({2, 5000});
  batch[0].slice(0, 0, 3000).copy_(a);
  batch[1].copy_(b);
  auto padding = torch::zeros({2, 5000}, torch::kBool);
  padding[0].slice(0, 3000).fill_(true);
  const auto pooled = audio::mean_log_mel(batch, padding);
  EXPECT_TRUE(tensors_close("padded", pooled[0],
                            audio::mean_log_mel(a.unsqueeze(0), torch::Tensor())[0], 1e-4));
  EXPECT_TRUE(tensors_close("full", pooled[1],
                            audio::mean_log_mel(b.unsqueeze(0), torch::Tensor())[0], 1e-4));
  // Without the mask the silent tail drags the mean down: the mask is what keeps them equal.
  EXPECT_GT((audio::mean_log_mel(batch, torch::Tensor())[0] - pooled[0]).abs().max().item<double>(),
            1.0);
  // Frames counted: (3000 - 400) / 160 + 1 = 17 of (5000 - 400) / 160 + 1 = 29.
  EXPECT_EQ(audio::real_frames(padding, 5000, 29, audio::LogMelOptions()).sum(1)[0].item<int64_t>(),
            17);
}
