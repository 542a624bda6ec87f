#include "data2vec/audio/io.h"

#include <samplerate.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "data2vec/core/dataset.h"

namespace data2vec::audio {

namespace {

struct SndfileCloser {
  void operator()(SNDFILE* file) const { sf_close(file); }
};
using SndfileHandle = std::unique_ptr<SNDFILE, SndfileCloser>;

SndfileHandle open_for_reading(const std::string& path, SF_INFO& info) {
  std::memset(&info, 0, sizeof(info));
  SndfileHandle file(sf_open(path.c_str(), SFM_READ, &info));
  if (!file) {
    throw BadSample(path + ": cannot open audio file: " + sf_strerror(nullptr) +
                    " (is it a WAV, FLAC or Ogg file, and readable?)");
  }
  return file;
}

std::string sndfile_log(SNDFILE* file) {
  std::vector<char> log(16384, '\0');
  sf_command(file, SFC_GET_LOG_INFO, log.data(), static_cast<int>(log.size()));
  return std::string(log.data());
}

// libsndfile logs "data : <declared> (should be <actual>)" when a WAV's data chunk claims more
// bytes than the file holds, then reads only what is there. Returns that line, or "" when the
// header and the file agree.
std::string truncated_data_chunk(const std::string& log) {
  size_t at = 0;
  while ((at = log.find("data : ", at)) != std::string::npos) {
    const size_t end = log.find('\n', at);
    const std::string line =
        log.substr(at, end == std::string::npos ? std::string::npos : end - at);
    long long declared = 0, actual = 0;
    if (std::sscanf(line.c_str(), "data : %lld (should be %lld)", &declared, &actual) == 2 &&
        declared > actual) {
      return line;
    }
    at += 7;
  }
  return "";
}

// Refuses a file with no audio at all, or whose header promises more data than the file holds
// (libsndfile would read what is there and say nothing).
void check_complete(const std::string& path, const SF_INFO& info, SNDFILE* file) {
  if (info.frames <= 0 || info.channels <= 0) {
    throw BadSample(path + ": no audio (" + std::to_string(info.frames) + " frames, " +
                    std::to_string(info.channels) + " channels)");
  }
  const std::string truncated = truncated_data_chunk(sndfile_log(file));
  if (!truncated.empty()) {
    throw BadSample(path + ": truncated file: libsndfile reports '" + truncated +
                    "' (the header promises more data than the file holds; re-copy or drop it)");
  }
}

int converter_type(ResampleQuality quality) {
  switch (quality) {
    case ResampleQuality::kBest:
      return SRC_SINC_BEST_QUALITY;
    case ResampleQuality::kMedium:
      return SRC_SINC_MEDIUM_QUALITY;
    case ResampleQuality::kFastest:
      return SRC_SINC_FASTEST;
    case ResampleQuality::kLinear:
      return SRC_LINEAR;
  }
  return SRC_SINC_MEDIUM_QUALITY;
}

}  // namespace

ResampleQuality parse_resample_quality(const std::string& name) {
  if (name == "best") return ResampleQuality::kBest;
  if (name == "medium") return ResampleQuality::kMedium;
  if (name == "fastest") return ResampleQuality::kFastest;
  if (name == "linear") return ResampleQuality::kLinear;
  TORCH_CHECK(false, "unknown resample quality '", name,
              "' (expected best, medium, fastest or linear)");
}

std::string to_string(ResampleQuality quality) {
  switch (quality) {
    case ResampleQuality::kBest:
      return "best";
    case ResampleQuality::kMedium:
      return "medium";
    case ResampleQuality::kFastest:
      return "fastest";
    case ResampleQuality::kLinear:
      return "linear";
  }
  return "?";
}

AudioInfo read_audio_info(const std::string& path) {
  SF_INFO info;
  auto file = open_for_reading(path, info);
  // The same refusals as read_audio's, so that a manifest never lists a file training would skip.
  check_complete(path, info, file.get());
  return {static_cast<int64_t>(info.frames), info.samplerate, info.channels};
}

int64_t resampled_length(int64_t frames, int64_t from_rate, int64_t to_rate) {
  TORCH_CHECK(from_rate > 0 && to_rate > 0, "resampled_length: bad rates ", from_rate, " -> ",
              to_rate);
  return frames * to_rate / from_rate;
}

torch::Tensor resample(const torch::Tensor& waveform, int64_t from_rate, int64_t to_rate,
                       ResampleQuality quality) {
  TORCH_CHECK(waveform.dim() == 1, "resample: expected a mono waveform [S], got shape ",
              waveform.sizes());
  const auto in = waveform.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t out_length = resampled_length(in.size(0), from_rate, to_rate);
  if (from_rate == to_rate) return in.clone();
  // Headroom: the converter may produce a few more samples than floor(S * ratio).
  auto out = torch::zeros({out_length + 64}, torch::kFloat32);
  SRC_DATA data;
  std::memset(&data, 0, sizeof(data));
  data.data_in = in.data_ptr<float>();
  data.input_frames = static_cast<long>(in.size(0));
  data.data_out = out.data_ptr<float>();
  data.output_frames = static_cast<long>(out.size(0));
  data.src_ratio = double(to_rate) / double(from_rate);
  data.end_of_input = 1;
  const int error = src_simple(&data, converter_type(quality), /*channels=*/1);
  TORCH_CHECK(error == 0, "resample ", from_rate, " -> ", to_rate,
              " Hz failed: ", src_strerror(error));
  // Exactly out_length samples: zeros pad a converter that stopped a sample short.
  return out.slice(0, 0, out_length).clone();
}

torch::Tensor read_audio(const std::string& path, int64_t sample_rate, ResampleQuality quality) {
  SF_INFO info;
  auto file = open_for_reading(path, info);
  check_complete(path, info, file.get());
  // libsamplerate converts ratios within [1/256, 256] (a damaged header found by fuzz/fuzz_audio
  // announced 16203136 Hz).
  if (info.samplerate <= 0 || int64_t(info.samplerate) > 256 * sample_rate ||
      sample_rate > 256 * int64_t(info.samplerate)) {
    throw BadSample(path + ": sample rate " + std::to_string(info.samplerate) +
                    " Hz cannot be resampled to " + std::to_string(sample_rate) +
                    " Hz (at most a factor of 256)");
  }
  // Read in blocks, not into one buffer of the size the header announces: a damaged header that
  // claims billions of frames (found by fuzz/fuzz_audio) then fails as truncated instead of
  // allocating gigabytes.
  const int64_t channels = info.channels;
  const sf_count_t block = std::max<sf_count_t>(1, (sf_count_t(1) << 20) / channels);
  std::vector<float> samples;
  sf_count_t read = 0;
  while (read < info.frames) {
    const sf_count_t want = std::min(block, info.frames - read);
    samples.resize(size_t((read + want) * channels));
    const sf_count_t got = sf_readf_float(file.get(), samples.data() + read * channels, want);
    read += std::max<sf_count_t>(got, 0);
    if (got < want) break;
  }
  if (read != info.frames || sf_error(file.get()) != SF_ERR_NO_ERROR) {
    std::string log = sndfile_log(file.get());
    const size_t error_at = log.find("ERROR");
    std::string detail = error_at != std::string::npos
                             ? log.substr(error_at, log.find('\n', error_at) - error_at)
                             : std::string(sf_strerror(file.get()));
    throw BadSample(path + ": corrupt or truncated: read " + std::to_string(read) + " of " +
                    std::to_string(info.frames) + " frames (libsndfile: " + detail + ")");
  }
  // Float WAVs can hold NaN or infinity, which no normalisation survives: a bad sample, named.
  const auto non_finite = std::find_if(samples.begin(), samples.end(),
                                       [](float value) { return !std::isfinite(value); });
  if (non_finite != samples.end()) {
    throw BadSample(path + ": sample " + std::to_string((non_finite - samples.begin()) / channels) +
                    " is not a finite number (" + std::to_string(*non_finite) + ")");
  }
  const auto interleaved = torch::from_blob(samples.data(), {int64_t(read), channels});
  // [S]; resample copies, so nothing returned points into `samples`.
  auto mono = channels == 1 ? interleaved.view({-1}) : interleaved.mean(/*dim=*/1);
  return resample(mono, info.samplerate, sample_rate, quality);
}

torch::Tensor normalize_waveform(const torch::Tensor& waveform, double eps) {
  return torch::layer_norm(waveform, {waveform.size(-1)}, /*weight=*/{}, /*bias=*/{}, eps);
}

torch::Tensor random_crop(const torch::Tensor& waveform, int64_t max_samples,
                          at::Generator& generator) {
  const int64_t length = waveform.size(0);
  if (max_samples <= 0 || length <= max_samples) return waveform;
  const int64_t start =
      torch::randint(length - max_samples + 1, {1}, generator, torch::kLong).item<int64_t>();
  return waveform.slice(0, start, start + max_samples);
}

void write_audio(const std::string& path, const torch::Tensor& waveform, int64_t sample_rate) {
  TORCH_CHECK(waveform.dim() == 1, "write_audio: expected a mono waveform [S], got shape ",
              waveform.sizes());
  const auto dot = path.find_last_of('.');
  const std::string ext = dot == std::string::npos ? "" : path.substr(dot + 1);
  int format = 0;
  if (ext == "wav") format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  if (ext == "flac") format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  if (ext == "ogg") format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
  TORCH_CHECK(format != 0, "write_audio: ", path, ": unknown extension (use .wav, .flac or .ogg)");
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = static_cast<int>(sample_rate);
  info.channels = 1;
  info.format = format;
  SndfileHandle file(sf_open(path.c_str(), SFM_WRITE, &info));
  TORCH_CHECK(file, "write_audio: cannot create ", path, ": ", sf_strerror(nullptr));
  const auto data = waveform.to(torch::kCPU, torch::kFloat32).contiguous();
  const sf_count_t written = sf_writef_float(file.get(), data.data_ptr<float>(), data.size(0));
  TORCH_CHECK(written == data.size(0), "write_audio: ", path, ": wrote ", written, " of ",
              data.size(0), " samples: ", sf_strerror(file.get()));
}

}  // namespace data2vec::audio
