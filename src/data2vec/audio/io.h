// Reading and writing audio files (libsndfile) and resampling (libsamplerate).
//
//   read_audio(path, rate) -> mono waveform [S] at `rate` -> normalize_waveform -> random_crop
//
// Every failure to read a file throws data2vec::BadSample naming the file and libsndfile's error.
#pragma once

#include <torch/torch.h>

#include <string>

namespace data2vec::audio {

// libsamplerate converters, best to fastest. The default is kFastest (SRC_SINC_FASTEST, 97 dB
// SNR, ample for speech): measured on this project's speech data (one loaded core, decode
// included), fastest reads 8 kHz WAV at ~270x real time and 44.1 kHz Ogg at ~50x, medium
// (SRC_SINC_MEDIUM_QUALITY, 121 dB) at ~90x and ~17x -- slow enough to rival a tiny model's step.
enum class ResampleQuality { kBest, kMedium, kFastest, kLinear };

ResampleQuality parse_resample_quality(const std::string& name);  // best|medium|fastest|linear
std::string to_string(ResampleQuality quality);

// What a file's header says, without decoding it.
struct AudioInfo {
  int64_t frames = 0;  // samples per channel at the file's own rate
  int64_t sample_rate = 0;
  int64_t channels = 0;
};

AudioInfo read_audio_info(const std::string& path);

// Samples after resampling `frames` from `from_rate` to `to_rate`: floor(frames * to / from).
// read_audio returns exactly this many, whatever the converter's own rounding.
int64_t resampled_length(int64_t frames, int64_t from_rate, int64_t to_rate);

// The file as a mono waveform [S] float32 at `sample_rate` (channels averaged), values as
// stored (not normalised). Throws BadSample for unreadable, empty, corrupt or truncated files
// (libsndfile opens a WAV whose data chunk runs past the end of the file and silently shortens
// it; its log reveals that, and we reject the file).
torch::Tensor read_audio(const std::string& path, int64_t sample_rate = 16000,
                         ResampleQuality quality = ResampleQuality::kFastest);

// Resamples a mono waveform [S] from `from_rate` to `to_rate`: [resampled_length(S, from, to)].
torch::Tensor resample(const torch::Tensor& waveform, int64_t from_rate, int64_t to_rate,
                       ResampleQuality quality = ResampleQuality::kFastest);

// Zero mean, unit variance over the whole utterance (fairseq: layer_norm over the waveform,
// biased variance, eps 1e-5).
torch::Tensor normalize_waveform(const torch::Tensor& waveform, double eps = 1e-5);

// A random window of `max_samples` of a waveform [S] (start uniform in [0, S - max_samples]);
// unchanged when S <= max_samples or max_samples <= 0.
torch::Tensor random_crop(const torch::Tensor& waveform, int64_t max_samples,
                          at::Generator& generator);

// Writes a mono waveform [S] (values in [-1, 1]) as 16-bit PCM; the format follows the
// extension: .wav, .flac (PCM 16) or .ogg (Vorbis). For tests and synthetic data.
void write_audio(const std::string& path, const torch::Tensor& waveform, int64_t sample_rate);

}  // namespace data2vec::audio
