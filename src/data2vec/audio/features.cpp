#include "data2vec/audio/features.h"

#include <cmath>

namespace data2vec::audio {

namespace {

double hz_to_mel(double hz) {
  return 2595.0 * std::log10(1.0 + hz / 700.0);
}
double mel_to_hz(double mel) {
  return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0);
}

}  // namespace

torch::Tensor mel_filterbank(const LogMelOptions& o) {
  const int64_t n_freqs = o.n_fft() / 2 + 1;
  const double f_max = o.f_max() > 0 ? o.f_max() : o.sample_rate() / 2.0;
  TORCH_CHECK(o.n_mels() > 0 && o.f_min() >= 0 && o.f_min() < f_max,
              "mel_filterbank: need n_mels > 0 and 0 <= f_min < f_max, got ", o.n_mels(), ", ",
              o.f_min(), ", ", f_max);
  auto freqs = torch::linspace(0.0, o.sample_rate() / 2.0, n_freqs, torch::kFloat64);  // [F]
  auto mels =
      torch::linspace(hz_to_mel(o.f_min()), hz_to_mel(f_max), o.n_mels() + 2, torch::kFloat64);
  auto edges = mels.clone();
  for (int64_t i = 0; i < edges.size(0); ++i) edges[i] = mel_to_hz(mels[i].item<double>());
  auto lower = edges.slice(0, 0, o.n_mels()), centre = edges.slice(0, 1, o.n_mels() + 1),
       upper = edges.slice(0, 2, o.n_mels() + 2);  // [M] each
  auto f = freqs.unsqueeze(1);                     // [F,1]
  auto rising = (f - lower) / (centre - lower);    // [F,M]
  auto falling = (upper - f) / (upper - centre);
  return torch::clamp_min(torch::minimum(rising, falling), 0.0).to(torch::kFloat32);
}

torch::Tensor log_mel_spectrogram(const torch::Tensor& waveforms, const LogMelOptions& o) {
  TORCH_CHECK(waveforms.dim() == 2, "log_mel_spectrogram: expected waveforms [B,S], got ",
              waveforms.sizes());
  TORCH_CHECK(waveforms.size(1) >= o.n_fft(), "log_mel_spectrogram: ", waveforms.size(1),
              " samples is shorter than one window of ", o.n_fft());
  const auto x = waveforms.to(torch::kFloat32);
  auto window = torch::hann_window(o.n_fft(), x.options());
  auto spectrum = torch::stft(x, o.n_fft(), o.hop_length(), o.n_fft(), window, /*center=*/false,
                              "reflect", /*normalized=*/false, /*onesided=*/true,
                              /*return_complex=*/true);               // [B,F,T]
  auto power = torch::abs(spectrum).pow(2).transpose(1, 2);           // [B,T,F]
  auto mel = torch::matmul(power, mel_filterbank(o).to(x.device()));  // [B,T,M]
  return torch::log(mel + o.eps());
}

torch::Tensor real_frames(const torch::Tensor& padding_mask, int64_t num_samples,
                          int64_t num_frames, const LogMelOptions& o) {
  if (!padding_mask.defined()) return torch::ones({1, num_frames}, torch::kBool);
  TORCH_CHECK(padding_mask.dim() == 2 && padding_mask.size(1) == num_samples,
              "real_frames: padding mask ", padding_mask.sizes(), " does not match ", num_samples,
              " samples");
  auto lengths = (~padding_mask).sum(1, /*keepdim=*/true).cpu();                          // [B,1]
  auto frame_end = torch::arange(num_frames, torch::kLong) * o.hop_length() + o.n_fft();  // [T]
  return frame_end.unsqueeze(0) <= lengths;                                               // [B,T]
}

torch::Tensor mean_log_mel(const torch::Tensor& waveforms, const torch::Tensor& padding_mask,
                           const LogMelOptions& options) {
  auto features = log_mel_spectrogram(waveforms, options);  // [B,T,M]
  auto keep = real_frames(padding_mask, waveforms.size(1), features.size(1), options)
                  .to(features.device(), features.scalar_type())
                  .expand({features.size(0), features.size(1)})
                  .unsqueeze(2);  // [B,T,1]
  return (features * keep).sum(1) / keep.sum(1).clamp_min(1.0);
}

}  // namespace data2vec::audio
