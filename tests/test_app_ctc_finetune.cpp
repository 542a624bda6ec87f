// finetune-ctc end to end on a few WAVs written here: transcript lists, the saved run that
// transcribe reads, and its export as a Data2VecAudioForCTC folder that reloads with identical
// logits.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data2vec/app/finetune_ctc.h"
#include "data2vec/app/hf.h"
#include "data2vec/app/pretrained.h"
#include "data2vec/audio/io.h"
#include "data2vec/io/hf.h"
#include "data2vec/io/safetensors.h"
#include "pretrain_support.h"
#include "support.h"

namespace data2vec {
namespace {

namespace fs = std::filesystem;
using testing::make_temp_dir;

// A transcript list of `n` tone clips (0.5 s) in `dir`, at 8 kHz (read back resampled to 16).
std::string write_list(const std::string& dir, int n) {
  std::ofstream list(dir + "/list.tsv");
  for (int i = 0; i < n; ++i) {
    const auto t = torch::arange(4000, torch::kFloat) / 8000.0;
    const auto wave = 0.3 * torch::sin(t * (2 * M_PI * (300.0 + 100.0 * i)));
    const auto name = "clip" + std::to_string(i) + ".wav";
    audio::write_audio(dir + "/" + name, wave, 8000);
    list << name << "\t" << (i % 2 ? "it's a tone" : "Tea, too!") << "\n";
  }
  return dir + "/list.tsv";
}

io::Config mini_audio() {
  io::Config config;
  config.model.modality = "audio";
  config.model.preset = "mini";
  config.model.layer_result = "ffn";
  config.model.top_k_layers = 4;
  config.train.threads = 1;
  return config;
}

TEST(AppCtcFinetune, TranscriptListsNormaliseAndNameBadLines) {
  const auto dir = make_temp_dir("d2v-ctc-list");
  const auto list = write_list(dir, 2);
  const auto utterances = app::read_transcripts(list);
  ASSERT_EQ(utterances.size(), 2u);
  EXPECT_EQ(utterances[0].text, "TEA TOO");
  EXPECT_EQ(utterances[1].text, "IT'S A TONE");
  EXPECT_EQ(utterances[0].wave.size(0), 8000);  // 0.5 s at 16 kHz
  EXPECT_NEAR(utterances[0].wave.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(utterances[0].wave.std(/*unbiased=*/false).item<double>(), 1.0, 1e-3);
  std::ofstream(dir + "/bad.tsv") << "clip0.wav\tok\nno-tab-here\n";
  const auto error = testing::error_of([&] { app::read_transcripts(dir + "/bad.tsv"); });
  EXPECT_NE(error.find("bad.tsv:2"), std::string::npos) << error;
}

TEST(AppCtcFinetune, SavedRunTranscribesAndExportsAsDataVecAudioForCtc) {
  const auto dir = make_temp_dir("d2v-ctc-app");
  const auto list = write_list(dir, 4);
  const auto run = testing::untrained_run(mini_audio());
  app::FinetuneCtcOptions options;
  options.checkpoint = run;
  options.train = list;
  options.tests = {list};
  options.out_dir = dir + "/ctc";
  options.baseline = true;
  options.finetune.steps(3).batch_size(2).lr(1e-3);
  const auto rows = app::finetune_ctc(options);
  ASSERT_EQ(rows.size(), 2u);  // random init, data2vec
  EXPECT_EQ(rows[0].method, "random init");
  EXPECT_EQ(rows[1].method, "data2vec");
  EXPECT_EQ(rows[1].score.words.reference_length, 2 * (2 + 3));
  EXPECT_NE(app::ctc_rows_to_markdown(rows).find("| list | data2vec |"), std::string::npos);

  // The run: transcribe reads it (head and vocab.json found), one line per file.
  app::TranscribeOptions transcribe;
  transcribe.model = options.out_dir;
  transcribe.inputs = {dir + "/clip0.wav", dir + "/clip1.wav"};
  const auto transcripts = app::transcribe(transcribe);
  ASSERT_EQ(transcripts.size(), 2u);
  EXPECT_TRUE(transcripts[0].error.empty());
  EXPECT_GT(transcripts[0].frames, 0);

  // export-hf: Data2VecAudioForCTC's names and config, and the same logits when read back.
  const auto exported = dir + "/exported";
  app::export_hf({options.out_dir, exported, false});
  const auto tensors = io::load_safetensors(exported + "/model.safetensors").tensors;
  ASSERT_EQ(tensors.count("lm_head.weight"), 1u);
  EXPECT_EQ(tensors.at("lm_head.weight").sizes(), torch::IntArrayRef({32, 128}));
  EXPECT_EQ(tensors.count("data2vec_audio.feature_projection.projection.weight"), 1u);
  const auto config = io::HfConfig::load(exported).json();
  EXPECT_EQ(config.at("vocab_size").get<int64_t>(), 32);
  EXPECT_EQ(config.at("pad_token_id").get<int64_t>(), 0);

  auto ours = app::load_hf_model(options.out_dir);
  auto theirs = app::load_hf_model(exported);
  ours.encoder->eval();
  theirs.encoder->eval();
  torch::NoGradGuard no_grad;
  const auto wave = torch::randn({2, 12000});
  const auto logits = [&](app::HfModel& m) {
    return torch::linear(m.encoder->extract_features({wave, {}}, {}).x,
                         m.head.at("lm_head.weight"), m.head.at("lm_head.bias"));  // [B,T,V]
  };
  const auto a = logits(ours), b = logits(theirs);
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_EQ((a - b).abs().max().item<double>(), 0.0);
  EXPECT_GT(a.abs().max().item<double>(), 0.0);
}

}  // namespace
}  // namespace data2vec
