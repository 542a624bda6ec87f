// Pretrained task models at work: transcribe (CTC) and classify (image classification) on the
// Hugging Face-layout fixtures with heads (tests/fixtures/hf_options/audio_ctc, vision_classifier:
// written by scripts/hf_reference.py, a transcription of Hugging Face's classes). Transcripts are
// checked against a greedy decode of the reference's own logits, done here independently.
#include <gtest/gtest.h>
#include <sndfile.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data2vec/app/hf.h"
#include "data2vec/app/pretrained.h"
#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::fixture_path;
using data2vec::testing::last_command_output;
using data2vec::testing::make_temp_dir;
using data2vec::testing::run_command;
using data2vec::testing::write_png;

namespace {

// A copy of a fixture folder with a preprocessor_config.json.
std::string with_preprocessor(const std::string& fixture, const nlohmann::json& preprocessor) {
  const auto dir = make_temp_dir("d2v-pre");
  for (const auto& entry : fs::directory_iterator(fixture_path(fixture))) {
    fs::copy_file(entry.path(), fs::path(dir) / entry.path().filename());
  }
  std::ofstream(dir + "/preprocessor_config.json") << preprocessor.dump(2);
  return dir;
}

// 32-bit float WAV, so the samples reach the model unchanged.
void write_float_wav(const std::string& path, const torch::Tensor& wave, int rate) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(file, nullptr);
  const auto data = wave.contiguous();
  sf_write_float(file, data.data_ptr<float>(), data.numel());
  sf_close(file);
}

// Greedy CTC by hand: argmax per frame, drop repeats and <pad> (0), skip <...>, | -> space.
std::string reference_decode(const torch::Tensor& logits, const std::string& vocab_path) {
  const auto vocab = nlohmann::json::parse(io::read_file(vocab_path));
  std::map<int64_t, std::string> token;
  for (const auto& [t, id] : vocab.items()) token[id.get<int64_t>()] = t;
  std::string text;
  int64_t previous = -1;
  for (int64_t t = 0; t < logits.size(0); ++t) {
    const auto id = logits[t].argmax().item<int64_t>();
    if (id != previous && id != 0 && token[id].front() != '<')
      text += token[id] == "|" ? " " : token[id];
    previous = id;
  }
  while (!text.empty() && text.front() == ' ') text.erase(0, 1);
  while (!text.empty() && text.back() == ' ') text.pop_back();
  std::string collapsed;
  for (char c : text) {
    if (!(c == ' ' && !collapsed.empty() && collapsed.back() == ' ')) collapsed += c;
  }
  return collapsed;
}

}  // namespace

TEST(AppPretrained, TranscribeDecodesTheReferenceLogits) {
  const auto dir = with_preprocessor("hf_options/audio_ctc",
                                     {{"do_normalize", false}, {"sampling_rate", 16000}});
  // The fixture's random head says <unk> almost everywhere (its hidden states vary little over
  // time); in this copy a head that reads the variation around the clip's mean state makes a
  // transcript worth comparing. Its logits come from the reference.
  auto weights = io::load_safetensors(dir + "/model.safetensors").tensors;
  const auto hidden = io::load_safetensors(dir + "/outputs.safetensors")
                          .tensors.at("nopad.last_hidden_state")[0];  // [T,D]
  torch::manual_seed(2);
  const auto head = torch::randn(weights.at("lm_head.weight").sizes()) * 30.0;
  weights["lm_head.weight"] = head;
  weights["lm_head.bias"] = -torch::mv(head, hidden.mean(0));
  io::save_safetensors(dir + "/model.safetensors", io::NamedTensors(weights.begin(), weights.end()),
                       {{"format", "pt"}});
  const auto inputs = io::load_safetensors(dir + "/inputs.safetensors").tensors;
  const auto wav = make_temp_dir("d2v-wav") + "/clip.wav";
  write_float_wav(wav, inputs.at("nopad.input_values")[0], 16000);
  const auto io_dir = make_temp_dir("d2v-io");
  ASSERT_EQ(run_command(std::string("/usr/bin/python3 ") + DATA2VEC_SOURCE_DIR +
                        "/scripts/hf_reference.py forward " + dir + " --inputs " + dir +
                        "/inputs.safetensors --output " + io_dir + "/out.safetensors"),
            0)
      << last_command_output();
  const auto expected = io::load_safetensors(io_dir + "/out.safetensors").tensors;
  const auto want = reference_decode(expected.at("nopad.logits")[0], dir + "/vocab.json");
  ASSERT_GE(want.size(), 3u) << want;

  const auto whole = app::transcribe({dir, {wav}, 20.0, 2.0});
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0].text, want);
  EXPECT_EQ(whole[0].frames, expected.at("nopad.logits").size(1));

  // Windows of 0.1 s overlapping by 0.02 s: every frame of the file still decoded once.
  const auto windowed = app::transcribe({dir, {wav}, 0.1, 0.02});
  EXPECT_NEAR(double(windowed[0].frames), double(whole[0].frames), 2.0);
  EXPECT_FALSE(windowed[0].text.empty());

  // From the run import-hf makes (vocab.json travels in RUN/hf/), through the program: stdout
  // holds the transcript alone; an unreadable file is named, skipped, and the exit code is 1.
  const auto run = make_temp_dir("d2v-run") + "/run";
  app::import_hf({dir, run, "", {}});
  const auto empty = make_temp_dir("d2v-bad") + "/empty.wav";
  std::ofstream(empty).put('x');
  const auto out = make_temp_dir("d2v-out") + "/stdout.txt";
  EXPECT_NE(run_command("{ " + std::string(DATA2VEC_BINARY) + " transcribe " + run + " " + wav +
                        " " + empty + " > " + out + "; }"),
            0);
  EXPECT_NE(last_command_output().find("empty.wav"), std::string::npos) << last_command_output();
  EXPECT_EQ(io::read_file(out), want + "\n\n");

  EXPECT_THROW(app::transcribe({fixture_path("hf/data2vec_audio"), {wav}, 20, 2}),
               std::invalid_argument);  // no CTC head / vocabulary
  EXPECT_THROW(app::transcribe({dir, {wav}, 1.0, 0.5}), std::invalid_argument);
}

TEST(AppPretrained, ClassifyPreprocessesAsTheConfigSaysAndRanksTheLogits) {
  const auto dir =
      with_preprocessor("hf_options/vision_classifier", {{"do_resize", true},
                                                         {"size", {{"height", 32}, {"width", 32}}},
                                                         {"do_normalize", true},
                                                         {"image_mean", {0.5, 0.5, 0.5}},
                                                         {"image_std", {0.5, 0.5, 0.5}},
                                                         {"do_rescale", true}});
  torch::manual_seed(5);
  const auto image = torch::randint(0, 256, {32, 32, 3}, torch::kUInt8).contiguous();
  const auto png = make_temp_dir("d2v-png") + "/x.png";
  ASSERT_TRUE(write_png(png, image));

  // The expected ranking: the reference model's logits on (u / 255 - 0.5) / 0.5.
  const auto pixels = (image.permute({2, 0, 1}).to(torch::kFloat32) / 255.0 - 0.5) / 0.5;
  const auto io_dir = make_temp_dir("d2v-io");
  io::save_safetensors(io_dir + "/in.safetensors", {{"x.pixel_values", pixels.unsqueeze(0)}},
                       {{"variants", "x"}});
  ASSERT_EQ(run_command(std::string("/usr/bin/python3 ") + DATA2VEC_SOURCE_DIR +
                        "/scripts/hf_reference.py forward " + dir + " --inputs " + io_dir +
                        "/in.safetensors --output " + io_dir + "/out.safetensors"),
            0)
      << last_command_output();
  const auto logits = io::load_safetensors(io_dir + "/out.safetensors").tensors.at("x.logits")[0];
  const auto probs = torch::softmax(logits, 0);
  const auto order = probs.argsort(0, /*descending=*/true);
  const auto labels = nlohmann::json::parse(io::read_file(dir + "/config.json")).at("id2label");

  const auto predictions = app::classify({dir, {png}, 3});
  ASSERT_EQ(predictions.size(), 1u);
  ASSERT_EQ(predictions[0].top.size(), 3u);
  for (int64_t i = 0; i < 3; ++i) {
    const auto index = order[i].item<int64_t>();
    EXPECT_EQ(predictions[0].top[size_t(i)].first,
              labels.at(std::to_string(index)).get<std::string>());
    EXPECT_NEAR(predictions[0].top[size_t(i)].second, probs[index].item<double>(), 1e-4);
  }
  // A base model has no classifier; an audio model is not an image model.
  EXPECT_THROW(app::classify({fixture_path("hf/data2vec_vision_shared"), {png}, 5}),
               std::invalid_argument);
  EXPECT_THROW(app::classify({fixture_path("hf/data2vec_audio"), {png}, 5}), std::invalid_argument);
}

// A clip shorter than one frame decodes to nothing: that is a failure to name, not an empty
// transcript that exits 0; window lengths that cannot work are refused before any file is read;
// results arrive file by file, in order.
TEST(AppPretrained, TranscribeNamesClipsShorterThanAFrameAndChecksItsWindow) {
  const auto dir = with_preprocessor("hf_options/audio_ctc",
                                     {{"do_normalize", false}, {"sampling_rate", 16000}});
  const auto wavs = make_temp_dir("d2v-wavs");
  torch::manual_seed(3);
  write_float_wav(wavs + "/long.wav", torch::randn({16000}) * 0.1, 16000);
  write_float_wav(wavs + "/tiny.wav", torch::randn({10}) * 0.1, 16000);
  std::vector<std::string> order;
  const auto results =
      app::transcribe({dir, {wavs + "/long.wav", wavs + "/tiny.wav"}, 20.0, 2.0},
                      [&](const app::Transcript& t) { order.push_back(t.file); });
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(order, (std::vector<std::string>{wavs + "/long.wav", wavs + "/tiny.wav"}));
  EXPECT_TRUE(results[0].error.empty()) << results[0].error;
  EXPECT_GT(results[0].frames, 0);
  EXPECT_NE(results[1].error.find("tiny.wav: 10 samples"), std::string::npos) << results[1].error;
  EXPECT_NE(results[1].error.find("shorter than one frame"), std::string::npos);

  const std::string binary = DATA2VEC_BINARY;
  EXPECT_EQ(run_command(binary + " transcribe " + dir + " " + wavs + "/tiny.wav") >> 8, 1);
  EXPECT_NE(last_command_output().find("shorter than one frame"), std::string::npos)
      << last_command_output();
  for (const char* window : {"nan", "inf", "-1", "0"}) {
    EXPECT_EQ(run_command(binary + " transcribe " + dir + " " + wavs + "/long.wav --window " +
                          window) >> 8,
              2)
        << window << ": " << last_command_output();
    EXPECT_NE(last_command_output().find("--window"), std::string::npos) << last_command_output();
  }
  // A day at most: a window's samples stay far from overflow. Shorter than a frame: nothing.
  EXPECT_THROW(app::transcribe({dir, {wavs + "/long.wav"}, 1e15, 0}), std::invalid_argument);
  EXPECT_THROW(app::transcribe({dir, {wavs + "/long.wav"}, 0.0001, 0}), std::invalid_argument);
}

TEST(AppPretrained, ClassifyNamesAnUnreadablePathAndGoesOn) {
  const auto dir = with_preprocessor("hf_options/vision_classifier", {{"do_resize", true}});
  torch::manual_seed(5);
  const auto images = make_temp_dir("d2v-images");
  ASSERT_TRUE(write_png(images + "/a.png",
                        torch::randint(0, 256, {32, 32, 3}, torch::kUInt8).contiguous()));
  fs::create_directories(images + "/folder");
  const auto results = app::classify({dir, {images + "/folder", images + "/a.png"}, 2});
  ASSERT_EQ(results.size(), 2u);
  EXPECT_NE(results[0].error.find(images + "/folder"), std::string::npos) << results[0].error;
  EXPECT_NE(results[0].error.find("is a directory"), std::string::npos) << results[0].error;
  EXPECT_TRUE(results[1].error.empty()) << results[1].error;
  EXPECT_EQ(results[1].top.size(), 2u);
}
