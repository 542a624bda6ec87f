// Hugging Face checkpoints both ways, against the outputs Hugging Face's own modeling code
// computed (tests/fixtures/hf/, copied from the project's shared fixtures; never edited):
// every hidden state, last_hidden_state and pooler from both weight formats within
// atol = rtol = 1e-4; import -> export is the identity; damaged or mismatched weights are errors
// that name the tensor or file.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "data2vec/app/hf.h"
#include "data2vec/io/files.h"
#include "data2vec/io/hf.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/train/checkpoint.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::fixture_path;
using data2vec::testing::make_temp_dir;

namespace {

const char* kFixtures[] = {"hf/data2vec_vision_shared", "hf/data2vec_audio", "hf/data2vec_text"};

// Every expected tensor is present and within |a - b| <= atol + rtol |b|.
void expect_outputs_match(const std::string& actual_path, const std::string& expected_path,
                          double tolerance = 1e-4) {
  const auto actual = io::load_safetensors(actual_path).tensors;
  const auto expected = io::load_safetensors(expected_path).tensors;
  ASSERT_FALSE(expected.empty());
  for (const auto& [name, want] : expected) {
    const auto it = actual.find(name);
    ASSERT_NE(it, actual.end()) << "missing output " << name;
    ASSERT_EQ(it->second.sizes(), want.sizes()) << name;
    const auto excess = ((it->second - want).abs() - (tolerance + tolerance * want.abs())).max();
    EXPECT_LE(excess.item<double>(), 0.0)
        << name << ": max |diff| " << (it->second - want).abs().max().item<double>();
  }
}

// A copy of a fixture folder with only one weight file, so that format is the one read.
std::string fixture_copy(const std::string& fixture, const std::string& keep_weights) {
  const auto dir = make_temp_dir("d2v-hf");
  for (const auto& entry : fs::directory_iterator(fixture_path(fixture))) {
    const auto name = entry.path().filename().string();
    if ((name == "model.safetensors" || name == "pytorch_model.bin") && name != keep_weights) {
      continue;
    }
    fs::copy_file(entry.path(), fs::path(dir) / name);
  }
  return dir;
}

// Rewrites DIR/model.safetensors after `edit` changed its tensors.
void edit_weights(const std::string& dir,
                  const std::function<void(std::map<std::string, torch::Tensor>&)>& edit) {
  auto tensors = io::load_safetensors(dir + "/model.safetensors").tensors;
  edit(tensors);
  io::save_safetensors(dir + "/model.safetensors", io::NamedTensors(tensors.begin(), tensors.end()),
                       {{"format", "pt"}});
}

std::string import_error(const std::string& dir) {
  try {
    app::import_hf({dir, make_temp_dir("d2v-run") + "/run", "", {}});
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HfCheckpoints, EveryOutputMatchesHuggingFaceFromBothFileFormats) {
  for (const char* fixture : kFixtures) {
    for (const char* weights : {"model.safetensors", "pytorch_model.bin"}) {
      SCOPED_TRACE(std::string(fixture) + " " + weights);
      const auto dir = fixture_copy(fixture, weights);
      const auto out = make_temp_dir("d2v-out") + "/outputs.safetensors";
      app::hf_forward(dir, dir + "/inputs.safetensors", out);
      expect_outputs_match(out, dir + "/outputs.safetensors");
    }
  }
}

TEST(HfCheckpoints, BothFileFormatsReadTheSameTensors) {
  for (const char* fixture : kFixtures) {
    const auto from_bin =
        io::read_torch_state_dict(fixture_path(std::string(fixture) + "/pytorch_model.bin"));
    const auto from_st =
        io::load_safetensors(fixture_path(std::string(fixture) + "/model.safetensors")).tensors;
    ASSERT_EQ(from_bin.size(), from_st.size()) << fixture;
    for (const auto& [name, tensor] : from_st) {
      ASSERT_TRUE(from_bin.count(name)) << name;
      EXPECT_TRUE(from_bin.at(name).equal(tensor)) << name;
    }
  }
}

TEST(HfCheckpoints, ReadsAnOrderedDictStateDictWithMetadataAndViews) {
  // torch.save(model.state_dict()) pickles an OrderedDict with a _metadata attribute, which
  // LibTorch 1.13's unpickler alone turns into None; views keep their offsets and strides.
  const auto state = io::read_torch_state_dict(fixture_path("hf_pickle/pytorch_model.bin"));
  const auto expected =
      io::load_safetensors(fixture_path("hf_pickle/expected.safetensors")).tensors;
  ASSERT_EQ(state.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    ASSERT_TRUE(state.count(name)) << name;
    EXPECT_TRUE(state.at(name).equal(tensor)) << name;
  }
}

TEST(HfCheckpoints, ImportThenExportIsTheIdentity) {
  for (const char* fixture : kFixtures) {
    SCOPED_TRACE(fixture);
    const auto run = make_temp_dir("d2v-run") + "/run";
    app::import_hf({fixture_path(fixture), run, "", {}});
    const auto exported = make_temp_dir("d2v-export");
    app::export_hf({run, exported, false});
    const auto original =
        io::load_safetensors(fixture_path(std::string(fixture) + "/model.safetensors")).tensors;
    const auto written = io::load_safetensors(exported + "/model.safetensors").tensors;
    EXPECT_EQ(written.size(), original.size());
    for (const auto& [name, tensor] : original) {
      ASSERT_TRUE(written.count(name)) << "export lacks " << name;
      EXPECT_TRUE(written.at(name).equal(tensor)) << name;
    }
    // The exported config describes the same model: the outputs match Hugging Face's again.
    const auto out = make_temp_dir("d2v-out") + "/outputs.safetensors";
    app::hf_forward(exported, fixture_path(std::string(fixture) + "/inputs.safetensors"), out);
    expect_outputs_match(out, fixture_path(std::string(fixture) + "/outputs.safetensors"));
    // And so does the run directory itself.
    const auto run_out = make_temp_dir("d2v-out") + "/outputs.safetensors";
    app::hf_forward(run, fixture_path(std::string(fixture) + "/inputs.safetensors"), run_out);
    expect_outputs_match(run_out, fixture_path(std::string(fixture) + "/outputs.safetensors"));
  }
}

TEST(HfCheckpoints, ImportedRunHoldsStudentAndTeacherAndRefusesAnExistingRun) {
  const auto run = make_temp_dir("d2v-run") + "/run";
  app::import_hf({fixture_path("hf/data2vec_audio"), run, "", {}});
  const auto ckpt = train::read_checkpoint(run);
  EXPECT_EQ(ckpt.trainer_state.at("step").get<int64_t>(), 0);
  const auto& student = ckpt.model.at("student.encoder.layers.0.attention.query.weight");
  EXPECT_TRUE(student.equal(ckpt.model.at("teacher.encoder.layers.0.attention.query.weight")));
  const auto hf = io::load_safetensors(fixture_path("hf/data2vec_audio/model.safetensors")).tensors;
  EXPECT_TRUE(student.equal(hf.at("encoder.layers.0.attention.q_proj.weight")));
  EXPECT_NE(ckpt.config_yaml.find("preset: hf"), std::string::npos);
  EXPECT_TRUE(fs::exists(run + "/hf/config.json"));
  EXPECT_THROW(app::import_hf({fixture_path("hf/data2vec_audio"), run, "", {}}),
               std::invalid_argument);
}

TEST(HfCheckpoints, ImportRefusesASetOfWhatConfigJsonDecides) {
  for (const char* set : {"model.modality=text", "model.preset=tiny", "data.image_size=64"}) {
    std::string message;
    try {
      app::import_hf({fixture_path("hf/data2vec_vision_shared"),
                      make_temp_dir("d2v-run") + "/run", "", {set}});
    } catch (const std::exception& e) {
      message = e.what();
    }
    EXPECT_NE(message.find(std::string("--set ") + set), std::string::npos) << message;
    EXPECT_NE(message.find("config.json (a vision model)"), std::string::npos) << message;
  }
  // Training keys still apply.
  const auto run = make_temp_dir("d2v-run") + "/run";
  app::import_hf({fixture_path("hf/data2vec_vision_shared"), run, "", {"train.max_steps=7"}});
  EXPECT_NE(train::read_checkpoint(run).config_yaml.find("max_steps: 7"), std::string::npos);
}

TEST(HfCheckpoints, MismatchedWeightsAreErrorsNamingTheTensor) {
  const auto missing = fixture_copy("hf/data2vec_text", "model.safetensors");
  edit_weights(missing, [](auto& t) { t.erase("encoder.layer.1.output.dense.bias"); });
  auto message = import_error(missing);
  EXPECT_NE(message.find("missing tensor 'encoder.layer.1.output.dense.bias'"), std::string::npos)
      << message;

  const auto extra = fixture_copy("hf/data2vec_text", "model.safetensors");
  edit_weights(extra, [](auto& t) { t["encoder.layer.0.surprise"] = torch::zeros({2}); });
  message = import_error(extra);
  EXPECT_NE(message.find("unexpected tensor 'encoder.layer.0.surprise'"), std::string::npos)
      << message;

  const auto shape = fixture_copy("hf/data2vec_vision_shared", "model.safetensors");
  edit_weights(shape, [](auto& t) { t["layernorm.weight"] = torch::ones({63}); });
  message = import_error(shape);
  EXPECT_NE(message.find("'layernorm.weight' has shape [63], the model expects [64]"),
            std::string::npos)
      << message;

  // Old checkpoints carry buffers HF no longer saves: ignored, not errors.
  const auto old = fixture_copy("hf/data2vec_text", "model.safetensors");
  edit_weights(old, [](auto& t) { t["embeddings.position_ids"] = torch::arange(66).unsqueeze(0); });
  EXPECT_EQ(import_error(old), "");
}

TEST(HfCheckpoints, DamagedFilesAreErrorsNamingTheFile) {
  for (const char* weights : {"model.safetensors", "pytorch_model.bin"}) {
    const auto dir = fixture_copy("hf/data2vec_audio", weights);
    const auto path = dir + "/" + weights;
    const auto bytes = io::read_file(path);
    for (size_t keep : {size_t(0), size_t(7), bytes.size() / 3, bytes.size() - 5}) {
      std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, keep);
      const auto message = import_error(dir);
      EXPECT_NE(message.find(path), std::string::npos) << keep << " bytes: " << message;
    }
  }
  const auto no_weights = fixture_copy("hf/data2vec_audio", "none");
  EXPECT_NE(import_error(no_weights).find("neither model.safetensors nor pytorch_model.bin"),
            std::string::npos);
}

TEST(HfCheckpoints, InputsTheModelCannotReadAreErrorsNamingTheTensor) {
  // hf-forward checks what it reads against the model before the forward, where LibTorch's own
  // messages would name neither the file nor the tensor.
  struct Case {
    const char* fixture;
    const char* tensor;
    torch::Tensor value;
    const char* says;
  };
  const Case cases[] = {
      {"hf/data2vec_vision_shared", "pixel_values", torch::zeros({2, 3, 30, 30}),
       "has shape [2, 3, 30, 30]; this model reads [B, 3, 32, 32]"},
      {"hf/data2vec_vision_shared", "pixel_values", torch::zeros({2, 1, 32, 32}),
       "this model reads [B, 3, 32, 32]"},
      {"hf/data2vec_audio", "input_values", torch::zeros({2, 100}),
       "holds 100 samples; this model reads at least"},
      {"hf/data2vec_audio", "input_values", torch::zeros({4000}), "has shape [4000]"},
      {"hf/data2vec_text", "input_ids", torch::full({2, 12}, 100000, torch::kLong),
       "holds ids from 100000 to 100000; this model reads ids 0 to"},
      {"hf/data2vec_text", "input_ids", torch::full({2, 12}, -1, torch::kLong),
       "holds ids from -1 to -1"},
      {"hf/data2vec_text", "input_ids", torch::zeros({1, 5000}, torch::kLong),
       "has shape [1, 5000]; this model reads [B, T] with 1 <= T <= "},
      {"hf/data2vec_text", "input_ids", torch::zeros({2, 0}, torch::kLong),
       "has shape [2, 0]; this model reads [B, T] with 1 <= T <= "},
  };
  for (const auto& c : cases) {
    const auto dir = make_temp_dir("d2v-hf-bad-inputs");
    const auto inputs = dir + "/inputs.safetensors";
    io::save_safetensors(inputs, {{std::string("bad.") + c.tensor, c.value}},
                         {{"format", "pt"}, {"variants", "bad"}});
    std::string message;
    try {
      app::hf_forward(fixture_path(c.fixture), inputs, dir + "/out.safetensors");
    } catch (const std::exception& e) {
      message = e.what();
    }
    EXPECT_NE(message.find("'" + inputs + "': tensor 'bad." + c.tensor + "' "), std::string::npos)
        << c.fixture << ": " << message;
    EXPECT_NE(message.find(c.says), std::string::npos) << c.fixture << ": " << message;
    EXPECT_FALSE(fs::exists(dir + "/out.safetensors"));
  }
}

TEST(HfCheckpoints, AMaskOfAnotherShapeOrNoVariantIsAnErrorNamingIt) {
  const auto dir = make_temp_dir("d2v-hf-bad-mask");
  const auto inputs = dir + "/inputs.safetensors";
  io::save_safetensors(inputs,
                       {{"v.input_ids", torch::ones({2, 12}, torch::kLong)},
                        {"v.attention_mask", torch::ones({2, 11}, torch::kLong)}},
                       {{"format", "pt"}, {"variants", "v"}});
  const auto model = fixture_path("hf/data2vec_text");
  auto message = data2vec::testing::error_of(
      [&] { app::hf_forward(model, inputs, dir + "/out.safetensors"); });
  EXPECT_NE(message.find("tensor 'v.attention_mask' has shape [2, 11]; this model reads the shape "
                         "of its inputs, [2, 12]"),
            std::string::npos)
      << message;
  io::save_safetensors(inputs, {{"v.input_ids", torch::ones({2, 12}, torch::kLong)}},
                       {{"format", "pt"}, {"variants", ""}});
  message = data2vec::testing::error_of(
      [&] { app::hf_forward(model, inputs, dir + "/out.safetensors"); });
  EXPECT_NE(message.find("names no variant"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir + "/out.safetensors"));
}

TEST(HfCheckpoints, UnsupportedConfigValuesAreErrorsNamingTheKey) {
  struct Case {
    const char* fixture;
    const char* key;
    nlohmann::json value;
  };
  const Case cases[] = {
      {"hf/data2vec_text", "hidden_act", "relu"},
      {"hf/data2vec_text", "position_embedding_type", "relative_key"},
      {"hf/data2vec_audio", "add_adapter", true},
      {"hf/data2vec_audio", "conv_kernel", {10, 3}},
      {"hf/data2vec_vision_shared", "hidden_size", "64"},
      {"hf/data2vec_vision_shared", "model_type", "beit"},
  };
  for (const auto& c : cases) {
    const auto dir = fixture_copy(c.fixture, "model.safetensors");
    auto json = nlohmann::json::parse(io::read_file(dir + "/config.json"));
    json[c.key] = c.value;
    io::write_file_atomically(dir + "/config.json", json.dump());
    const auto message = import_error(dir);
    EXPECT_NE(message.find(std::string("'") + c.key + "'"), std::string::npos)
        << c.key << ": " << message;
    EXPECT_NE(message.find("config.json"), std::string::npos) << message;
  }
}

// ---- options the shared fixtures do not set (tests/fixtures/hf_options/, written by
// scripts/hf_reference.py, a separate PyTorch transcription of Hugging Face's classes checked
// against the shared fixtures): per-layer and shared relative bias together, absolute positions,
// no layer scale, mean pooling with the pooler, no mask token, conv bias, an even positional
// kernel, another conv stack, token types, and the task heads (CTC, image and text
// classification) whose logits must match too.

namespace {

const char* kOptionFixtures[] = {
    "hf_options/vision_perlayer_abs_meanpool",
    "hf_options/vision_both_biases",
    "hf_options/vision_classifier",
    "hf_options/audio_even_bias",
    "hf_options/audio_ctc",
    "hf_options/text_token_types",
    "hf_options/text_classifier",
};

// Runs scripts/hf_reference.py (Debian's python3-torch): `check` strict-loads a folder into
// Hugging Face's module layout and compares its outputs with ours.
int reference_check(const std::string& dir, const std::string& inputs, const std::string& outputs) {
  return data2vec::testing::run_command(std::string("/usr/bin/python3 ") + DATA2VEC_SOURCE_DIR +
                                        "/scripts/hf_reference.py check " + dir + " --inputs " +
                                        inputs + " --outputs " + outputs + " --atol 1e-4");
}

}  // namespace

TEST(HfCheckpoints, EveryOptionAndTaskHeadMatchesTheReference) {
  for (const char* fixture : kOptionFixtures) {
    SCOPED_TRACE(fixture);
    const auto out = make_temp_dir("d2v-out") + "/outputs.safetensors";
    app::hf_forward(fixture_path(fixture),
                    fixture_path(std::string(fixture) + "/inputs.safetensors"), out);
    expect_outputs_match(out, fixture_path(std::string(fixture) + "/outputs.safetensors"));
  }
}

TEST(HfCheckpoints, ExportsLoadStrictlyIntoHuggingFacesLayoutWithTheSameOutputs) {
  std::vector<std::string> fixtures(std::begin(kOptionFixtures), std::end(kOptionFixtures));
  fixtures.insert(fixtures.end(), std::begin(kFixtures), std::end(kFixtures));
  for (const auto& fixture : fixtures) {
    SCOPED_TRACE(fixture);
    const auto run = make_temp_dir("d2v-run") + "/run";
    app::import_hf({fixture_path(fixture), run, "", {}});
    const auto exported = make_temp_dir("d2v-export");
    app::export_hf({run, exported, false});
    const auto inputs = fixture_path(fixture + "/inputs.safetensors");
    const auto ours = make_temp_dir("d2v-out") + "/outputs.safetensors";
    app::hf_forward(exported, inputs, ours);
    EXPECT_EQ(reference_check(exported, inputs, ours), 0)
        << data2vec::testing::last_command_output();
  }
}

TEST(HfCheckpoints, ReadsAStateDictWhoseLastEntryIsASetItem) {
  const auto state = io::read_torch_state_dict(fixture_path("hf_pickle/many_entries.bin"));
  ASSERT_EQ(state.size(), 1001u);
  for (int i : {0, 999, 1000}) {
    char name[16];
    std::snprintf(name, sizeof(name), "w.%04d", i);
    ASSERT_TRUE(state.count(name)) << name;
    EXPECT_EQ(state.at(name).item<float>(), float(i)) << name;
  }
}
