// finetune-ctc end to end on a few WAVs written here: transcript lists, the saved run that
// transcribe reads, and its export (data2vec export-hf) as a Data2VecAudioForCTC folder with the
// run's vocabulary and processor files, which transcribes alike, reloads with identical logits
// and passes scripts/hf_reference.py's strict load and logits check.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "data2vec/app/finetune_ctc.h"
#include "data2vec/app/hf.h"
#include "data2vec/app/pretrained.h"
#include "data2vec/audio/io.h"
#include "data2vec/io/files.h"
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
  int updates_seen = 0;  // the caller's hook still runs beside the progress bar
  options.finetune.on_step([&](const eval::CtcStep&) { ++updates_seen; });
  ::testing::internal::CaptureStderr();
  const auto rows = app::finetune_ctc(options);
  const auto progress = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(updates_seen, 2 * 3);
  for (const auto* label : {"ctc random init", "ctc data2vec"}) {
    const auto at = progress.find(label);
    ASSERT_NE(at, std::string::npos) << progress;
    EXPECT_NE(progress.find("3/3", at), std::string::npos) << progress;
  }
  ASSERT_EQ(rows.size(), 2u);  // random init, data2vec
  EXPECT_EQ(rows[0].method, "random init");
  EXPECT_EQ(rows[1].method, "data2vec");
  EXPECT_EQ(rows[1].score.words.reference_length, 2 * (2 + 3));
  EXPECT_NE(app::ctc_rows_to_markdown(rows).find("| list | data2vec |"), std::string::npos);

  // The run: transcribe reads it (head and vocab.json found), one line per file.
  app::TranscribeOptions transcribe;
  transcribe.model = options.out_dir;
  transcribe.inputs = {dir + "/clip0.wav", dir + "/clip1.wav", dir + "/clip2.wav",
                       dir + "/clip3.wav"};
  const auto transcripts = app::transcribe(transcribe);
  ASSERT_EQ(transcripts.size(), 4u);
  EXPECT_TRUE(transcripts[0].error.empty());
  EXPECT_GT(transcripts[0].frames, 0);

  // export-hf through the program: Data2VecAudioForCTC's names, config and files.
  const auto exported = dir + "/exported";
  ASSERT_EQ(testing::run_command(std::string(DATA2VEC_BINARY) + " export-hf " + options.out_dir +
                                 " --out " + exported),
            0)
      << testing::last_command_output();
  const auto tensors = io::load_safetensors(exported + "/model.safetensors").tensors;
  ASSERT_EQ(tensors.count("lm_head.weight"), 1u);
  ASSERT_EQ(tensors.count("lm_head.bias"), 1u);
  EXPECT_EQ(tensors.at("lm_head.weight").sizes(), torch::IntArrayRef({32, 128}));
  EXPECT_EQ(tensors.count("data2vec_audio.feature_projection.projection.weight"), 1u);
  const auto config = io::HfConfig::load(exported).json();
  EXPECT_EQ(config.at("architectures"), nlohmann::json::array({"Data2VecAudioForCTC"}));
  EXPECT_EQ(config.at("model_type"), "data2vec-audio");
  EXPECT_EQ(config.at("vocab_size").get<int64_t>(), 32);
  EXPECT_EQ(config.at("pad_token_id").get<int64_t>(), 0);  // <pad>, the blank
  EXPECT_EQ(config.at("ctc_loss_reduction"), "mean");      // as finetune-ctc trained
  EXPECT_EQ(config.at("ctc_zero_infinity"), true);
  // The run's vocabulary and processor files, as written (Wav2Vec2CTCTokenizer's layout).
  for (const char* file : {"vocab.json", "tokenizer_config.json", "special_tokens_map.json",
                           "preprocessor_config.json"}) {
    ASSERT_TRUE(fs::exists(exported + "/" + file)) << file;
    EXPECT_EQ(io::read_file(exported + "/" + file), io::read_file(options.out_dir + "/hf/" + file))
        << file;
  }
  const auto vocab = nlohmann::json::parse(io::read_file(exported + "/vocab.json"));
  EXPECT_EQ(vocab.size(), 32u);
  EXPECT_EQ(vocab.at("<pad>"), 0);
  EXPECT_EQ(vocab.at("|"), 4);
  EXPECT_EQ(vocab.at("E"), 5);
  EXPECT_EQ(io::read_file(exported + "/vocab.json"), vocab.dump(2) + "\n");  // indent 2, sorted
  const auto tokenizer = nlohmann::json::parse(io::read_file(exported + "/tokenizer_config.json"));
  EXPECT_EQ(tokenizer.at("tokenizer_class"), "Wav2Vec2CTCTokenizer");
  EXPECT_EQ(tokenizer.at("pad_token"), "<pad>");
  EXPECT_EQ(tokenizer.at("word_delimiter_token"), "|");
  const auto pre = nlohmann::json::parse(io::read_file(exported + "/preprocessor_config.json"));
  EXPECT_EQ(pre.at("feature_extractor_type"), "Wav2Vec2FeatureExtractor");
  EXPECT_EQ(pre.at("feature_size"), 1);
  EXPECT_EQ(pre.at("sampling_rate"), 16000);
  EXPECT_EQ(pre.at("do_normalize"), true);
  EXPECT_EQ(pre.at("return_attention_mask"), true);

  // The export transcribes as the run does.
  transcribe.model = exported;
  const auto again = app::transcribe(transcribe);
  ASSERT_EQ(again.size(), transcripts.size());
  for (size_t i = 0; i < again.size(); ++i) {
    EXPECT_TRUE(again[i].error.empty()) << again[i].error;
    EXPECT_EQ(again[i].text, transcripts[i].text) << i;
    EXPECT_EQ(again[i].frames, transcripts[i].frames) << i;
  }
  // Three updates already make blank the best class on most frames, but not on all: the equal
  // transcripts above are not only empty ones.
  EXPECT_TRUE(std::any_of(transcripts.begin(), transcripts.end(),
                          [](const app::Transcript& t) { return !t.text.empty(); }));

  // Reading the export back gives the run's logits exactly.
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

  // A vocab.json that does not fit the head is refused, naming the file.
  const auto vocab_path = options.out_dir + "/hf/vocab.json";
  const auto saved_vocab = io::read_file(vocab_path);
  auto short_vocab = vocab;
  short_vocab.erase("Z");
  std::ofstream(vocab_path) << short_vocab.dump(2);
  const auto error = testing::error_of([&] {
    app::export_hf({options.out_dir, dir + "/bad", false});
  });
  EXPECT_NE(error.find("vocab.json has 31 tokens but lm_head"), std::string::npos) << error;
  std::ofstream(vocab_path) << saved_vocab;

  // scripts/hf_reference.py (Hugging Face's classes transcribed to PyTorch) loads the export
  // strictly as a Data2VecAudioForCTC and reproduces the run's hidden states and logits, padded
  // batch included (atol = rtol = 1e-4). Needs /usr/bin/python3 with torch.
  if (testing::run_command("/usr/bin/python3 -c 'import numpy, torch'") != 0) {
    std::cout << "[ SKIPPED  ] hf_reference.py check: /usr/bin/python3 with torch and numpy "
                 "not found\n";
    return;
  }
  const auto inputs = dir + "/inputs.safetensors", outputs = dir + "/ours.safetensors";
  io::save_safetensors(
      inputs,
      {{"pad.input_values", wave},
       {"pad.attention_mask", torch::cat({torch::ones({2, 9000}, torch::kLong),
                                          torch::stack({torch::ones({3000}, torch::kLong),
                                                        torch::zeros({3000}, torch::kLong)})},
                                         1)}},
      {{"variants", "pad"}});
  EXPECT_GT(app::hf_forward(options.out_dir, inputs, outputs), 0);
  ASSERT_TRUE(io::load_safetensors(outputs).tensors.count("pad.logits"));
  EXPECT_EQ(testing::run_command(std::string("/usr/bin/python3 ") + DATA2VEC_SOURCE_DIR +
                                 "/scripts/hf_reference.py check " + exported + " --inputs " +
                                 inputs + " --outputs " + outputs),
            0)
      << testing::last_command_output();
  EXPECT_NE(testing::last_command_output().find("Data2VecAudioForCTC"), std::string::npos)
      << testing::last_command_output();
}

}  // namespace
}  // namespace data2vec
