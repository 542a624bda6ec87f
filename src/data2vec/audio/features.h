// Log-mel spectrograms: the raw-input baseline of the audio evaluation (the papers' protocol, arXiv 2202.03555 sec. 4: "a linear
// model on the raw input"), pooled over time.
//
//   waveform [B,S] -> |STFT|^2 (Hann window, no centring) [B,F,T] -> mel filterbank [B,M,T]
//   -> log(. + eps) -> mean over the frames that lie wholly inside the real samples [B,M]
#pragma once

#include <torch/torch.h>

namespace data2vec::audio {

struct LogMelOptions {
  /// Input sample rate, Hz. Default 16000.
  TORCH_ARG(int64_t, sample_rate) = 16000;
  /// FFT size = window length (25 ms at 16 kHz). Default 400.
  TORCH_ARG(int64_t, n_fft) = 400;
  /// Hop between frames (10 ms at 16 kHz). Default 160.
  TORCH_ARG(int64_t, hop_length) = 160;
  /// Mel bands. Default 80.
  TORCH_ARG(int64_t, n_mels) = 80;
  /// Band edges, Hz; f_max <= 0 means sample_rate / 2. Defaults 0 and 0.
  TORCH_ARG(double, f_min) = 0.0;
  TORCH_ARG(double, f_max) = 0.0;
  /// Added before the log. Default 1e-6.
  TORCH_ARG(double, eps) = 1e-6;
};

// Triangular filters on the HTK mel scale (mel = 2595 log10(1 + f / 700)), unnormalised (peak 1):
// [n_fft / 2 + 1, n_mels], so power [.., F] @ filterbank -> mel power [.., M].
torch::Tensor mel_filterbank(const LogMelOptions& options);

// Log-mel spectrogram [B,T,M] of waveforms [B,S] (T = 1 + (S - n_fft) / hop; at least one frame
// when S >= n_fft).
torch::Tensor log_mel_spectrogram(const torch::Tensor& waveforms, const LogMelOptions& options);

// Which frames [B,T] bool lie wholly inside each waveform's real samples, from a sample padding
// mask [B,S] (true = padding; undefined = nothing padded).
torch::Tensor real_frames(const torch::Tensor& padding_mask, int64_t num_samples,
                          int64_t num_frames, const LogMelOptions& options);

// Mean log-mel features [B,M] over the real frames: the baseline's input.
torch::Tensor mean_log_mel(const torch::Tensor& waveforms, const torch::Tensor& padding_mask,
                           const LogMelOptions& options = LogMelOptions());

}  // namespace data2vec::audio
