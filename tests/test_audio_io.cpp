// Audio files: reading, resampling, normalisation, bad files, manifests and the dataset.
#include <gtest/gtest.h>
#include <sndfile.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "data2vec/audio/data.h"
#include "data2vec/audio/io.h"
#include "support.h"

using namespace data2vec;
using namespace data2vec::audio;
using data2vec::testing::make_temp_dir;
using data2vec::testing::tensors_close;
namespace fs = std::filesystem;

namespace {

// A sine of `hz` Hz, `samples` long at `rate`, amplitude 0.5.
torch::Tensor sine(double hz, int64_t samples, int64_t rate) {
  return 0.5 *
         torch::sin(torch::arange(samples, torch::kFloat64) * (2.0 * M_PI * hz / double(rate)))
             .to(torch::kFloat32);
}

// A 32-bit float WAV at 16 kHz of `frames` [S,C] (C channels interleaved).
void write_float_wav(const std::string& path, const torch::Tensor& frames) {
  SF_INFO info{};
  info.samplerate = 16000;
  info.channels = int(frames.size(1));
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(file, nullptr) << sf_strerror(nullptr);
  const auto data = frames.to(torch::kFloat32).contiguous();
  sf_writef_float(file, data.data_ptr<float>(), data.size(0));
  sf_close(file);
}

std::string expect_bad_sample(const std::string& path) {
  try {
    read_audio(path);
  } catch (const BadSample& e) {
    return e.what();
  }
  ADD_FAILURE() << "no BadSample for " << path;
  return "";
}

}  // namespace

TEST(AudioIo, WavAndFlacAt8kReadBackAt16k) {
  const auto dir = make_temp_dir("audio_io");
  for (const std::string ext : {"wav", "flac"}) {
    const std::string path = dir + "/tone." + ext;
    write_audio(path, sine(440.0, 8000, 8000), 8000);
    const auto info = read_audio_info(path);
    EXPECT_EQ(info.frames, 8000);
    EXPECT_EQ(info.sample_rate, 8000);
    const auto wave = read_audio(path, 16000);
    ASSERT_EQ(wave.sizes(), torch::IntArrayRef({16000})) << ext;
    // Away from the edges the resampled tone is the same tone sampled at 16 kHz (16-bit PCM and
    // the sinc filter's ripple stay well under 1e-2).
    EXPECT_TRUE(tensors_close(ext + " resampled tone", wave.slice(0, 1000, 15000),
                              sine(440.0, 16000, 16000).slice(0, 1000, 15000), 1e-2));
    const auto normed = normalize_waveform(wave);
    EXPECT_NEAR(normed.mean().item<double>(), 0.0, 1e-5);
    EXPECT_NEAR(normed.var(/*unbiased=*/false).item<double>(), 1.0, 1e-3);
  }
}

TEST(AudioIo, OggAndSameRate) {
  const auto dir = make_temp_dir("audio_io");
  write_audio(dir + "/tone.ogg", sine(300.0, 22050, 22050), 22050);
  EXPECT_EQ(read_audio(dir + "/tone.ogg", 16000).size(0), resampled_length(22050, 22050, 16000));
  EXPECT_EQ(resampled_length(22050, 22050, 16000), 16000);
  // At the model's rate nothing is resampled: the samples come back as written (16-bit PCM).
  const auto tone = sine(1000.0, 4000, 16000);
  write_audio(dir + "/same.wav", tone, 16000);
  EXPECT_TRUE(tensors_close("16 kHz wav", read_audio(dir + "/same.wav", 16000), tone, 1.0 / 32000));
}

TEST(AudioIo, StereoIsMixedDown) {
  const auto dir = make_temp_dir("audio_io");
  const std::string path = dir + "/stereo.wav";
  const auto left = sine(200.0, 1600, 16000), right = sine(700.0, 1600, 16000) * 0.5;
  write_float_wav(path, torch::stack({left, right}, 1));  // [S,2]
  EXPECT_TRUE(tensors_close("mixdown", read_audio(path, 16000), (left + right) / 2, 1e-6));
}

TEST(AudioIo, BadFilesThrowBadSampleNamingThem) {
  const auto dir = make_temp_dir("audio_io");
  const std::string wav = dir + "/cut.wav";
  write_audio(wav, sine(440.0, 8000, 8000), 8000);
  fs::resize_file(wav, 44 + 4000);  // header + a quarter of the data
  auto message = expect_bad_sample(wav);
  EXPECT_NE(message.find(wav), std::string::npos) << message;
  EXPECT_NE(message.find("should be"), std::string::npos) << message;

  const std::string flac = dir + "/cut.flac";
  write_audio(flac, sine(440.0, 8000, 8000), 8000);
  fs::resize_file(flac, fs::file_size(flac) / 2);
  message = expect_bad_sample(flac);
  EXPECT_NE(message.find(flac), std::string::npos) << message;

  const std::string junk = dir + "/junk.wav";
  std::ofstream(junk) << "this is not audio";
  message = expect_bad_sample(junk);
  EXPECT_NE(message.find(junk), std::string::npos) << message;
  EXPECT_NE(message.find("cannot open"), std::string::npos) << message;

  message = expect_bad_sample(dir + "/missing.wav");
  EXPECT_NE(message.find("missing.wav"), std::string::npos) << message;
}

TEST(AudioIo, NonFiniteSamplesAreABadSample) {
  // A float WAV can hold NaN or infinity; read as audio it turned a fine-tuning loss into NaN,
  // a pretraining run into a "lower optim.lr" stop and an embedding into NaN, naming no file.
  const auto dir = make_temp_dir("audio_io_nan");
  for (const float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    const std::string path = dir + "/bad.wav";
    auto samples = sine(300.0, 1600, 16000);
    samples[1000] = bad;
    write_float_wav(path, samples.unsqueeze(1));
    const auto message = expect_bad_sample(path);
    EXPECT_NE(message.find(path + ": sample 1000 is not a finite number"), std::string::npos)
        << message;
  }
}

TEST(AudioIo, RandomCrop) {
  const auto wave = torch::arange(1000, torch::kFloat32);
  auto a = at::detail::createCPUGenerator(1), b = at::detail::createCPUGenerator(1);
  const auto crop_a = random_crop(wave, 100, a), crop_b = random_crop(wave, 100, b);
  EXPECT_EQ(crop_a.size(0), 100);
  EXPECT_TRUE(torch::equal(crop_a, crop_b));
  const int64_t start = crop_a[0].item<int64_t>();
  EXPECT_TRUE(torch::equal(crop_a, torch::arange(start, start + 100, torch::kFloat32)));
  std::set<int64_t> starts;
  for (int i = 0; i < 20; ++i) starts.insert(random_crop(wave, 100, a)[0].item<int64_t>());
  EXPECT_GT(starts.size(), 10u);
  EXPECT_EQ(random_crop(wave, 2000, a).size(0), 1000);
}

namespace {

// en/a.wav (8 kHz, 0.5 s), en/sub/b.flac (16 kHz, 1 s), fr/c.ogg (22.05 kHz, 0.25 s), fr/d.wav
// (8 kHz, 0.1 s: shorter than min_samples), plus a text file and a corrupt WAV.
std::string make_corpus() {
  const auto dir = make_temp_dir("audio_corpus");
  fs::create_directories(dir + "/en/sub");
  fs::create_directories(dir + "/fr");
  write_audio(dir + "/en/a.wav", sine(300.0, 4000, 8000), 8000);
  write_audio(dir + "/en/sub/b.flac", sine(500.0, 16000, 16000), 16000);
  write_audio(dir + "/fr/c.ogg", sine(400.0, 5513, 22050), 22050);
  write_audio(dir + "/fr/d.wav", sine(400.0, 800, 8000), 8000);
  std::ofstream(dir + "/en/notes.txt") << "not audio";
  std::ofstream(dir + "/fr/broken.wav") << "RIFF garbage";
  return dir;
}

}  // namespace

TEST(AudioData, ManifestRoundTrip) {
  const auto dir = make_corpus();
  const auto file = make_temp_dir("audio_manifest") + "/train.tsv";
  const auto written = write_manifest(dir, file);
  const auto read = read_manifest(file);
  EXPECT_EQ(read.root, fs::canonical(dir).string());
  EXPECT_EQ(read.root, written.root);
  ASSERT_EQ(read.entries.size(), 4u);  // broken.wav and notes.txt left out
  const std::vector<std::pair<std::string, int64_t>> expected{
      {"en/a.wav", 8000}, {"en/sub/b.flac", 16000}, {"fr/c.ogg", 4000}, {"fr/d.wav", 1600}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(read.entries[i].path, expected[i].first);
    EXPECT_EQ(read.entries[i].num_samples, expected[i].second) << expected[i].first;
    EXPECT_EQ(written.entries[i].path, read.entries[i].path);
    // The stored length is the length read_audio returns.
    EXPECT_EQ(read_audio(read.root + "/" + read.entries[i].path).size(0), expected[i].second);
  }
  std::ofstream(file, std::ios::app) << "no_tab_here\n";
  EXPECT_THROW(read_manifest(file), c10::Error);
}

TEST(AudioData, DatasetReadsCropsLabelsAndCollates) {
  const auto dir = make_corpus();
  const auto file = make_temp_dir("audio_manifest") + "/train.tsv";
  write_manifest(dir, file);
  AudioManifestDataset data(file, AudioDatasetOptions().max_samples(6000).min_samples(2000),
                            label_from_component(0));
  ASSERT_EQ(data.size(), 3u);
  EXPECT_EQ(data.num_skipped(), 1u);
  EXPECT_EQ(data.class_names(), (std::vector<std::string>{"en", "fr"}));
  EXPECT_EQ(data.num_classes(), 2);
  EXPECT_EQ(data.lengths(), (std::vector<int64_t>{6000, 6000, 4000}));
  EXPECT_NE(data.describe(1).find("en/sub/b.flac"), std::string::npos);

  const auto a = data.get(1, 7), b = data.get(1, 7);
  EXPECT_EQ(a.source.size(0), 6000);
  EXPECT_EQ(a.label, 0);
  EXPECT_TRUE(torch::equal(a.source, b.source)) << "same (index, seed), same crop";
  std::set<double> firsts;
  for (uint64_t seed = 0; seed < 8; ++seed)
    firsts.insert(data.get(1, seed).source[0].item<double>());
  EXPECT_GT(firsts.size(), 1u) << "the crop never moved";

  const auto c = data.get(2, 0);  // 4000 samples: not cropped, normalised as a whole
  EXPECT_EQ(c.label, 1);
  EXPECT_NEAR(c.source.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(c.source.var(false).item<double>(), 1.0, 1e-3);

  const auto batch = data.collate({a, c});
  EXPECT_EQ(batch.input.source.sizes(), torch::IntArrayRef({2, 6000}));
  ASSERT_TRUE(batch.input.padding_mask.defined());
  EXPECT_EQ(batch.input.padding_mask.sum(1)[0].item<int64_t>(), 0);
  EXPECT_EQ(batch.input.padding_mask.sum(1)[1].item<int64_t>(), 2000);
  EXPECT_TRUE(batch.input.padding_mask[1].slice(0, 4000).all().item<bool>());
  EXPECT_TRUE(
      tensors_close("collated example", batch.input.source[1].slice(0, 0, 4000), c.source, 0.0));
  EXPECT_EQ(batch.input.source[1].slice(0, 4000).abs().sum().item<double>(), 0.0) << "zero padding";
  EXPECT_EQ(batch.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(batch.labels[1].item<int64_t>(), 1);
  EXPECT_FALSE(data.collate({a, b}).input.padding_mask.defined()) << "equal lengths need no mask";

  EXPECT_EQ(label_from_component(-1)("en/sub/b.flac"), "b");
  EXPECT_EQ(label_from_component(-2)("en/sub/b.flac"), "sub");
  EXPECT_EQ(label_from_component(5)("en/sub/b.flac"), "");
}

TEST(AudioData, CorruptFileInDatasetThrowsBadSample) {
  const auto dir = make_corpus();
  const auto file = make_temp_dir("audio_manifest") + "/train.tsv";
  write_manifest(dir, file);
  fs::resize_file(dir + "/en/a.wav", 100);
  AudioManifestDataset data(file, AudioDatasetOptions());
  try {
    data.get(0, 0);
    ADD_FAILURE() << "no BadSample";
  } catch (const BadSample& e) {
    EXPECT_NE(std::string(e.what()).find("a.wav"), std::string::npos) << e.what();
  }
}

TEST(AudioData, LengthBucketedBatches) {
  std::vector<int64_t> lengths;
  for (int i = 0; i < 103; ++i) lengths.push_back((i * 37) % 50);
  const auto batches = length_bucketed_batches(lengths, 8, 3);
  ASSERT_EQ(batches.size(), 13u);
  std::vector<int> seen(lengths.size(), 0);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const auto& batch : batches) {
    int64_t lo = 1 << 30, hi = -1;
    for (const size_t i : batch) {
      ++seen[i];
      lo = std::min(lo, lengths[i]);
      hi = std::max(hi, lengths[i]);
    }
    ranges.emplace_back(lo, hi);
  }
  for (const int count : seen) EXPECT_EQ(count, 1);
  // Batches are consecutive runs of the sorted lengths: their ranges overlap at most at an end.
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) EXPECT_LE(ranges[i - 1].second, ranges[i].first);
  EXPECT_EQ(length_bucketed_batches(lengths, 8, 3), batches);
  EXPECT_NE(length_bucketed_batches(lengths, 8, 4), batches);
}

namespace {

// Utterance k is the constant k + 1 for lengths[k] samples; `bad` throws BadSample.
class ConstantUtterances : public Dataset {
 public:
  ConstantUtterances(std::vector<int64_t> lengths, std::set<size_t> bad = {})
      : lengths_(std::move(lengths)), bad_(std::move(bad)) {}
  size_t size() const override { return lengths_.size(); }
  Example get(size_t index, uint64_t) const override {
    if (bad_.count(index)) throw BadSample(describe(index) + ": unreadable");
    return {torch::full({lengths_[index]}, float(index + 1)), 3};
  }
  std::string describe(size_t index) const override {
    return "utt" + std::to_string(index) + ".wav";
  }

 private:
  std::vector<int64_t> lengths_;
  std::set<size_t> bad_;
};

}  // namespace

TEST(AudioData, PackedExamplesJoinUtterancesToOneLength) {
  const auto utterances =
      std::make_shared<ConstantUtterances>(std::vector<int64_t>{300, 500, 700, 1500});
  PackedAudioDataset packed(utterances, 1000);
  ASSERT_EQ(packed.size(), 4u);
  std::set<float> seen_after_first;
  for (size_t i = 0; i < packed.size(); ++i) {
    for (uint64_t seed = 0; seed < 6; ++seed) {
      const auto example = packed.get(i, seed);
      ASSERT_EQ(example.source.sizes(), torch::IntArrayRef({1000})) << i << "/" << seed;
      EXPECT_EQ(example.label, -1) << "packed examples are unlabelled";
      EXPECT_EQ(example.source[0].item<float>(), float(i + 1))
          << "the window starts inside utterance i";
      EXPECT_TRUE(torch::equal(example.source, packed.get(i, seed).source)) << "same (index, seed)";
      const auto values = std::get<0>(at::_unique(example.source));
      for (int64_t v = 0; v < values.size(0); ++v) {
        const float value = values[v].item<float>();
        EXPECT_TRUE(value >= 1 && value <= 4) << value;
        if (value != float(i + 1)) seen_after_first.insert(value);
      }
      if (i == 3) {  // longer than the window: no other utterance is needed
        EXPECT_EQ(values.size(0), 1);
      }
    }
  }
  EXPECT_GE(seen_after_first.size(), 3u) << "the following utterances are drawn from the corpus";
  std::set<std::string> windows;  // the cut moves with the seed
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const auto s = packed.get(2, seed).source;
    windows.insert(std::to_string((s == 3.0f).sum().item<int64_t>()));
  }
  EXPECT_GT(windows.size(), 1u);
  const auto batch = packed.collate({packed.get(0, 1), packed.get(1, 1)});
  EXPECT_EQ(batch.input.source.sizes(), torch::IntArrayRef({2, 1000}));
  EXPECT_FALSE(batch.input.padding_mask.defined()) << "packed examples need no padding";
  EXPECT_NE(packed.describe(1).find("utt1.wav"), std::string::npos);

  PackedAudioDataset with_bad(
      std::make_shared<ConstantUtterances>(std::vector<int64_t>{300, 500}, std::set<size_t>{1}),
      1000);
  try {
    with_bad.get(1, 0);
    ADD_FAILURE() << "no error";
  } catch (const BadSample& e) {
    EXPECT_NE(std::string(e.what()).find("utt1.wav"), std::string::npos) << e.what();
  }
  EXPECT_THROW(PackedAudioDataset(utterances, 0), c10::Error);
}
