// The Hugging Face commands end to end through the program, as a user runs them: import-hf, then
// embed, probe, pretrain --init and export-hf on the imported run; and our own encoders exported
// to Hugging Face's layout, checked by scripts/hf_reference.py (a PyTorch transcription of
// Hugging Face's classes that loads strictly: no missing or unexpected key passes).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data2vec/app/builders.h"
#include "data2vec/app/hf.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/text/hf.h"
#include "data2vec/train/checkpoint.h"
#include "pretrain_support.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::fixture_path;
using data2vec::testing::last_command_output;
using data2vec::testing::make_temp_dir;
using data2vec::testing::run_command;
using data2vec::testing::write_png;

namespace {

const std::string kBinary = DATA2VEC_BINARY;

// scripts/hf_reference.py check: strict load + outputs within atol = rtol = 1e-4.
int reference_check(const std::string& dir, const std::string& inputs, const std::string& outputs,
                    const std::string& extra = "") {
  return run_command(std::string("/usr/bin/python3 ") + DATA2VEC_SOURCE_DIR +
                     "/scripts/hf_reference.py check " + dir + " --inputs " + inputs +
                     " --outputs " + outputs + extra);
}

// root/{train,val}/{a,b}/*.png: 32x32 RGB images, class b brighter.
std::string image_folder(int per_class) {
  const auto root = make_temp_dir("d2v-images");
  torch::manual_seed(3);
  for (const char* split : {"train", "val"}) {
    for (int c = 0; c < 2; ++c) {
      const auto dir = fs::path(root) / split / (c == 0 ? "a" : "b");
      fs::create_directories(dir);
      for (int i = 0; i < per_class; ++i) {
        auto pixels = (torch::rand({32, 32, 3}) * 120 + 100 * c).to(torch::kUInt8).contiguous();
        const auto file = (dir / (std::to_string(i) + ".png")).string();
        EXPECT_TRUE(write_png(file, pixels));
      }
    }
  }
  return root;
}

}  // namespace

TEST(AppHf, ImportEmbedProbePretrainAndExportThroughTheProgram) {
  const auto work = make_temp_dir("d2v-app-hf");
  const auto run = work + "/imported";
  ASSERT_EQ(run_command(kBinary + " import-hf " + fixture_path("hf/data2vec_vision_shared") +
                        " --out " + run),
            0)
      << last_command_output();
  EXPECT_NE(last_command_output().find(run + "/checkpoints/step_0"), std::string::npos);

  const auto images = image_folder(4);
  ASSERT_EQ(run_command(kBinary + " embed --checkpoint " + run + " --input " + images +
                        "/val --output " + work + "/features.safetensors"),
            0)
      << last_command_output();
  const auto features = io::load_safetensors(work + "/features.safetensors").tensors.at("features");
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{8, 64}));

  const std::string data = " --set data.dataset=image-folder --set data.root=" + images;
  ASSERT_EQ(run_command(kBinary + " probe --checkpoint " + run + data), 0) << last_command_output();
  EXPECT_NE(last_command_output().find("data2vec student"), std::string::npos)
      << last_command_output();

  // Few labels: the raw input's linear model on the same labelled subset sits beside the two
  // fine-tuned rows (2 classes x 4 images, half of the labels: 4 labels each).
  ASSERT_EQ(run_command(kBinary + " finetune --checkpoint " + run + data +
                        " --label-fraction 0.5 --epochs 1"),
            0)
      << last_command_output();
  const auto table = last_command_output();
  for (const std::string method : {"raw pixels, linear, 50.00% labels",
                                   "random init, fine-tune 50.00% labels",
                                   "data2vec, fine-tune 50.00% labels"}) {
    const auto at = table.find("| " + method + " |");
    ASSERT_NE(at, std::string::npos) << method << " missing from:\n" << table;
    const auto line = table.substr(at, table.find('\n', at) - at);
    EXPECT_NE(line.find("| 4 labels (50.00%)"), std::string::npos) << line;
  }

  // Continued pretraining: student and teacher start from the import (the teacher moves by
  // 1 - 0.9998 per step, so after 2 steps it is still the imported encoder to ~1e-3).
  const auto continued = work + "/continued";
  ASSERT_EQ(run_command(kBinary + " pretrain --init " + run + " --out " + continued + data +
                        " --set train.max_steps=2 --set train.batch_size=4 --set log.every=1"
                        " --set checkpoint.every=2 --set data.augment=false"
                        " --set log.tensorboard=false --set train.num_workers=0"),
            0)
      << last_command_output();
  const auto imported = train::read_checkpoint(run).model;
  const auto after = train::read_checkpoint(continued).model;
  const std::string w = "encoder.layer.1.feed_forward.fc1.weight";
  EXPECT_LT((after.at("teacher." + w) - imported.at("student." + w)).abs().max().item<double>(),
            1e-2);
  EXPECT_GT((after.at("student." + w) - imported.at("student." + w)).abs().max().item<double>(),
            0.0);

  // The continued run exports to a folder Hugging Face's layout loads strictly, same outputs.
  const auto exported = work + "/exported";
  ASSERT_EQ(run_command(kBinary + " export-hf " + continued + " --out " + exported), 0)
      << last_command_output();
  const auto inputs = fixture_path("hf/data2vec_vision_shared/inputs.safetensors");
  ASSERT_EQ(run_command(kBinary + " hf-forward " + exported + " --inputs " + inputs + " --output " +
                        work + "/ours.safetensors"),
            0)
      << last_command_output();
  EXPECT_EQ(reference_check(exported, inputs, work + "/ours.safetensors"), 0)
      << last_command_output();
}

TEST(AppHf, CommandErrorsNameTheFolder) {
  const auto empty = make_temp_dir("d2v-empty");
  EXPECT_NE(run_command(kBinary + " import-hf " + empty + " --out " + empty + "/run"), 0);
  EXPECT_NE(last_command_output().find(empty + "/config.json"), std::string::npos)
      << last_command_output();
}

// Exporting into a folder that holds another model would leave a mismatched pair behind (the
// old pytorch_model.bin beside our model.safetensors): refused unless --overwrite, which removes
// the weight files it does not write.
TEST(AppHf, ExportRefusesAFolderHoldingAModelUnlessOverwrite) {
  const auto work = make_temp_dir("app-hf-export-over");
  const auto run = work + "/run";
  app::import_hf({fixture_path("hf/data2vec_vision_shared"), run, "", {}});
  const auto folder = work + "/folder";
  fs::create_directories(folder);
  std::ofstream(folder + "/pytorch_model.bin") << "another model";
  std::ofstream(folder + "/README.md") << "mine";
  EXPECT_EQ(run_command(kBinary + " export-hf " + run + " --out " + folder) >> 8, 1);
  EXPECT_NE(last_command_output().find("already holds a model (pytorch_model.bin)"),
            std::string::npos)
      << last_command_output();
  EXPECT_FALSE(fs::exists(folder + "/model.safetensors"));
  ASSERT_EQ(run_command(kBinary + " export-hf " + run + " --out " + folder + " --overwrite"), 0)
      << last_command_output();
  EXPECT_TRUE(fs::exists(folder + "/model.safetensors"));
  EXPECT_TRUE(fs::exists(folder + "/config.json"));
  EXPECT_FALSE(fs::exists(folder + "/pytorch_model.bin"));
  EXPECT_TRUE(fs::exists(folder + "/README.md"));
  EXPECT_EQ(run_command(kBinary + " export-hf " + run + " --out " + folder) >> 8, 1);
}

TEST(AppHf, OurOwnEncodersExportToHuggingFacesLayout) {
  // Vision (fmnist-mini, 28x28 grey) and audio (mini) runs as pretrain writes them.
  io::Config vision;
  vision.model.modality = "vision";
  vision.model.preset = "fmnist-mini";
  vision.model.top_k_layers = 4;
  io::Config audio;
  audio.model.modality = "audio";
  audio.model.preset = "mini";
  audio.model.layer_result = "ffn";
  audio.model.top_k_layers = 4;
  torch::manual_seed(11);
  const auto wave = torch::randn({2, 6000});
  struct Case {
    io::Config config;
    io::NamedTensors inputs;
  };
  const Case cases[] = {
      {vision, {{"plain.pixel_values", torch::randn({2, 1, 28, 28})}}},
      {audio,
       {{"pad.input_values", wave},
        {"pad.attention_mask", torch::cat({torch::ones({2, 5000}, torch::kLong),
                                           torch::stack({torch::ones({1000}, torch::kLong),
                                                         torch::zeros({1000}, torch::kLong)})},
                                          1)}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.config.model.modality);
    const auto run = data2vec::testing::untrained_run(c.config);
    const auto exported = make_temp_dir("d2v-export");
    app::export_hf({run, exported, false});
    const auto dir = make_temp_dir("d2v-io");
    const auto variant = c.inputs.front().first.substr(0, c.inputs.front().first.find('.'));
    io::save_safetensors(dir + "/inputs.safetensors", c.inputs, {{"variants", variant}});
    app::hf_forward(run, dir + "/inputs.safetensors", dir + "/ours.safetensors");
    EXPECT_EQ(reference_check(exported, dir + "/inputs.safetensors", dir + "/ours.safetensors"), 0)
        << last_command_output();
  }
}

TEST(AppHf, OurTextEncoderExportsWithRobertaPositions) {
  // Our text encoders number positions from 0; the export shifts the table so that RoBERTa's
  // numbering (from pad_id + 1) reads the same rows.
  auto options =
      text::TextEncoderOptions(40).dim(32).depth(2).num_heads(2).mlp_dim(64).max_positions(16);
  auto encoder = text::make_text_encoder(options);
  encoder->eval();
  const auto dir = make_temp_dir("d2v-text-export");
  auto state = text::text_state_to_hf(train::module_state(*encoder), options, "");
  io::save_safetensors(dir + "/model.safetensors", io::NamedTensors(state.begin(), state.end()),
                       {{"format", "pt"}});
  auto json = text::hf_text_config(options);
  json["add_pooling_layer"] = false;
  std::ofstream(dir + "/config.json") << json.dump(2);
  const auto ids = torch::randint(5, 40, {2, 12}, torch::kLong);
  io::save_safetensors(dir + "/inputs.safetensors", {{"nopad.input_ids", ids}},
                       {{"variants", "nopad"}});
  torch::NoGradGuard no_grad;
  const auto ours = encoder->extract_features({ids, {}}, {});
  io::save_safetensors(dir + "/ours.safetensors", {{"nopad.last_hidden_state", ours.x}},
                       {{"variants", "nopad"}});
  // Without a pooler, Data2VecTextModel is built with add_pooling_layer=False (README).
  EXPECT_EQ(reference_check(dir, dir + "/inputs.safetensors", dir + "/ours.safetensors",
                            " --add-pooling-layer false"),
            0)
      << last_command_output();
}

TEST(AppHf, ImportedTextModelReadsTextWithItsByteLevelBpe) {
  // The text fixture (vocabulary 100) with a matching BPE vocabulary: the specials, Ġ and the
  // printable ASCII symbols (GPT-2 maps those bytes to themselves), <mask> last, two merges.
  const auto hf = make_temp_dir("d2v-text-hf");
  for (const auto& entry : fs::directory_iterator(fixture_path("hf/data2vec_text"))) {
    fs::copy_file(entry.path(), fs::path(hf) / entry.path().filename());
  }
  nlohmann::json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}, {"Ġ", 4}};
  int64_t id = 5;
  for (char c = '!'; c <= '~' && id < 97; ++c) vocab[std::string(1, c)] = id++;
  vocab["Ġt"] = id++;
  vocab["he"] = id++;
  vocab["<mask>"] = id;
  ASSERT_EQ(id, 99);
  std::ofstream(hf + "/vocab.json") << vocab.dump();
  std::ofstream(hf + "/merges.txt") << "#version: 0.2\nĠ t\nh e\n";

  const auto run = make_temp_dir("d2v-run") + "/run";
  app::import_hf({hf, run, "", {}});
  const auto texts = make_temp_dir("d2v-texts");
  std::ofstream(texts + "/a.txt") << "the cat sat on the mat.";
  std::ofstream(texts + "/b.txt") << "Another text, with 12 words or so!";
  ASSERT_EQ(run_command(kBinary + " embed --checkpoint " + run + " --input " + texts +
                        " --output " + texts + "/features.safetensors"),
            0)
      << last_command_output();
  const auto features =
      io::load_safetensors(texts + "/features.safetensors").tensors.at("features");
  EXPECT_EQ(features.sizes(), (std::vector<int64_t>{2, 64}));
  EXPECT_GT((features[0] - features[1]).abs().max().item<double>(), 1e-3);
}
