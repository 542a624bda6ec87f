// The audio modality end to end through the builders and the command line: the speech corpora
// (what pretraining reads and what each evaluation task trains and tests on), `data2vec
// manifest`, and a short pretrain + evaluate + embed run on generated tone "words".
#include <filesystem>
#include <fstream>
#include <random>

#include "data2vec/app/audio_builders.h"
#include "data2vec/app/builders.h"
#include "data2vec/audio/data.h"
#include "data2vec/audio/io.h"
#include "data2vec/io/config.h"
#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"
#include "pretrain_support.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::last_command_output;
using data2vec::testing::run_command;

namespace {

// A clip of `seconds` at 16 kHz: a tone of `hz` with a little noise, peak 0.5.
torch::Tensor clip(double hz, double seconds, uint64_t seed) {
  const auto n = int64_t(seconds * 16000);
  auto t = torch::arange(n, torch::kFloat64) / 16000.0;
  torch::manual_seed(seed);
  return (0.5 * torch::sin(2 * M_PI * hz * t) + 0.05 * torch::randn({n}, torch::kFloat64))
      .to(torch::kFloat32);
}

void write(const fs::path& path, const torch::Tensor& wave, int64_t rate = 16000) {
  fs::create_directories(path.parent_path());
  audio::write_audio(path.string(), wave, rate);
}

// data.root with the layout of scripts/fetch-data.sh speech + spoken-digits, in miniature: two
// "words" (tones), Asterisk packages for five languages with an English digit recording, and
// klettres with en_GB, fr and de.
std::string make_speech_root() {
  const fs::path root = data2vec::testing::make_temp_dir("d2v-speech");
  const std::vector<std::pair<std::string, double>> words{{"one", 400.0}, {"two", 1200.0}};
  uint64_t seed = 1;
  for (const auto& [word, hz] : words) {
    for (int v = 0; v < 8; ++v) {
      write(root / "spoken-digits/train" / word / ("voice" + std::to_string(v) + ".wav"),
            clip(hz * (1 + 0.03 * v), 0.5 + 0.05 * v, seed++));
    }
    write(root / "spoken-digits/test-voices" / word / "held-out.wav", clip(hz * 1.1, 0.6, seed++));
    write(root / "spoken-digits/test-engines" / word / "other.wav", clip(hz * 0.9, 0.6, seed++));
    write(root / "spoken-digits/test-real" / word / "asterisk.wav", clip(hz * 0.95, 0.7, seed++));
  }
  int i = 0;
  for (const std::string lang : {"en", "es", "fr", "it", "ru"}) {
    const auto dir = root / ("asterisk-core-sounds-" + lang + "-wav") /
                     "usr/share/asterisk/sounds" / (lang == "en" ? "en_US_f_Allison" : lang);
    write(dir / "hello.wav", clip(200.0 + 150.0 * i, 0.8, seed++), 8000);
    write(dir / "digits/12.wav", clip(210.0 + 150.0 * i, 0.8, seed++), 8000);
    if (lang == "en") write(dir / "digits/3.wav", clip(220.0, 0.8, seed++), 8000);
    ++i;
  }
  for (const std::string lang : {"en_GB", "fr", "de"}) {
    const auto dir = root / "klettres-data/usr/share/klettres" / lang / "alpha";
    fs::create_directories(dir);
    audio::write_audio((dir / "a.ogg").string(), clip(300.0, 0.6, seed++), 22050);
  }
  return root.string();
}

const std::string& speech_root() {
  static const std::string root = make_speech_root();
  return root;
}

io::Config audio_config(const std::string& root) {
  io::Config c;
  c.model.modality = "audio";
  c.model.preset = "mini";
  c.model.top_k_layers = 4;
  c.model.layer_result = "ffn";
  c.model.target_layer_norm = "instance_norm";
  c.model.target_final_norm = "none";
  c.model.loss_beta = 0;
  c.model.loss_scale = 0;
  c.data.dataset = "asterisk,spoken-digits";
  c.data.root = root;
  c.data.max_samples = 16000;
  c.eval.tasks = "digits,language";
  c.train.device = "cpu";
  c.train.threads = 1;
  return c;
}

std::vector<std::string> described(const Dataset& data) {
  std::vector<std::string> paths;
  for (size_t i = 0; i < data.size(); ++i) paths.push_back(data.describe(i));
  return paths;
}

}  // namespace

// The language task's clips in path order: Asterisk en (digits/12, hello), es, fr, it, ru (two
// each), then klettres en_GB and fr; every 5th (fr/digits/12.wav and ru/hello.wav) is held out.
TEST(AppAudio, PretrainingReadsNoTestClip) {
  const auto config = audio_config(speech_root());
  const auto data = app::make_pretrain_dataset(config);
  // 5 languages x 2 prompts, minus the 2 held-out language clips (the English digit 3 is the
  // digits task's real test clip), + 16 training voices.
  EXPECT_EQ(data->size(), 8u + 16u);
  for (const auto& path : described(*data)) {
    EXPECT_EQ(path.find("digits/3.wav"), std::string::npos) << path;
    EXPECT_EQ(path.find("sounds/fr/digits/12.wav"), std::string::npos) << path;
    EXPECT_EQ(path.find("sounds/ru/hello.wav"), std::string::npos) << path;
    EXPECT_EQ(path.find("test-"), std::string::npos) << path;
    EXPECT_EQ(path.find("klettres"), std::string::npos) << path;
  }
  const auto batch = data->collate({data->get(0, 1), data->get(20, 1)});
  EXPECT_EQ(batch.input.source.dim(), 2);
  EXPECT_LE(batch.input.source.size(1), config.data.max_samples);
}

TEST(AppAudio, PackAndPositionalKernelKeys) {
  auto config = audio_config(speech_root());
  EXPECT_EQ(app::audio_encoder_options(config).pos_conv_kernel(), 19) << "the preset's";
  config.model.pos_conv_kernel = 7;
  EXPECT_EQ(app::audio_encoder_options(config).pos_conv_kernel(), 7);

  config.data.pack = true;
  const auto packed = app::make_pretrain_dataset(config);
  ASSERT_NE(dynamic_cast<const audio::PackedAudioDataset*>(packed.get()), nullptr);
  EXPECT_EQ(packed->size(), 8u + 16u) << "one packed example per utterance";
  for (size_t i = 0; i < packed->size(); ++i) {
    EXPECT_EQ(packed->get(i, 3).source.size(0), config.data.max_samples) << packed->describe(i);
    EXPECT_EQ(packed->describe(i).find("test-"), std::string::npos) << "nothing held out is packed";
  }
}

TEST(AppAudio, EvaluationTasksTrainAndTestOnTheRightClips) {
  const auto tasks = app::make_eval_tasks(audio_config(speech_root()));
  ASSERT_EQ(tasks.size(), 4u);
  EXPECT_EQ(tasks[0].name, "spoken digits, held-out voices");
  EXPECT_EQ(tasks[1].name, "spoken digits, other synthesisers");
  EXPECT_EQ(tasks[2].name, "spoken digits, real speaker");
  EXPECT_EQ(tasks[3].name, "language, seen speakers");
  EXPECT_EQ(tasks[0].splits.train->size(), 16u);
  EXPECT_EQ(tasks[0].splits.train->num_classes(), 2);
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(tasks[t].splits.train, tasks[0].splits.train)
        << "the digits tasks share one train split";
    EXPECT_EQ(tasks[t].splits.test->size(), 2u);
  }
  // Labels come from the word's directory, in sorted order: one -> 0, two -> 1.
  EXPECT_EQ(tasks[0].splits.test->get(1, 0).label, 1);
  // Language: 12 clips of the five languages (klettres de left out), 10 train, 2 held out.
  const auto& language = tasks[3];
  EXPECT_EQ(language.splits.train->size(), 10u);
  EXPECT_EQ(language.splits.train->num_classes(), 5);
  ASSERT_EQ(language.splits.test->size(), 2u);
  // The test split numbers its classes as the train split does (en 0, es 1, fr 2, it 3, ru 4),
  // although it holds only fr and ru.
  EXPECT_EQ(language.splits.test->num_classes(), 5);
  EXPECT_EQ(language.splits.test->get(0, 0).label, 2);
  EXPECT_EQ(language.splits.test->get(1, 0).label, 4);
  for (const auto& path : described(*language.splits.train)) {
    EXPECT_EQ(path.find("/de/"), std::string::npos) << path;
    EXPECT_EQ(path.find("digits/3.wav"), std::string::npos) << path;
  }
}

TEST(AppAudio, UnknownCorpusAndMissingDataNameTheKey) {
  auto config = audio_config(speech_root());
  config.data.dataset = "asterisk,librispeech";
  try {
    app::make_pretrain_dataset(config);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("data.dataset"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("librispeech"), std::string::npos) << e.what();
  }
  config.data.dataset = "spoken-digits";
  config.data.root = data2vec::testing::make_temp_dir("d2v-speech-empty");
  try {
    app::make_pretrain_dataset(config);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fetch-data.sh spoken-digits"), std::string::npos)
        << e.what();
  }
}

TEST(AppAudio, ManifestCommandSkipsAndCountsBadFiles) {
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-manifest");
  write(dir / "a/1.wav", clip(300, 0.5, 1));
  write(dir / "b/2.flac", clip(300, 0.25, 2), 8000);
  std::ofstream(dir / "b/broken.wav") << "RIFF this is not a wav file";
  // A macOS copy leaves "._" resource forks beside each file: not audio, not a bad clip either.
  std::ofstream(dir / "a/._1.wav") << "\x00\x05\x16\x07 Mac OS X";
  // A folder linked in (corpora spread over disks) is read as `find -L` reads it; a link back
  // up the tree is not a loop.
  const fs::path elsewhere = data2vec::testing::make_temp_dir("d2v-manifest-elsewhere");
  write(elsewhere / "3.wav", clip(300, 0.25, 3));
  fs::create_directory_symlink(elsewhere, dir / "c");
  fs::create_directory_symlink(dir, dir / "b" / "up");
  const auto out = (dir / "train.tsv").string();
  ASSERT_EQ(
      run_command(std::string(DATA2VEC_BINARY) + " manifest " + dir.string() + " --out " + out), 0)
      << last_command_output();
  EXPECT_NE(last_command_output().find("broken.wav"), std::string::npos) << last_command_output();
  EXPECT_NE(last_command_output().find("1 unreadable"), std::string::npos) << last_command_output();
  const auto manifest = audio::read_manifest(out);
  EXPECT_EQ(manifest.root, fs::canonical(dir).string());
  ASSERT_EQ(manifest.entries.size(), 3u);
  EXPECT_EQ(manifest.entries[0].path, "a/1.wav");
  EXPECT_EQ(manifest.entries[0].num_samples, 8000);
  EXPECT_EQ(manifest.entries[1].path, "b/2.flac");
  EXPECT_EQ(manifest.entries[1].num_samples, 8000);  // 4000 samples at 8 kHz, counted at 16 kHz
  EXPECT_EQ(manifest.entries[2].path, "c/3.wav");
  // A manifest is a corpus for pretraining.
  auto config = audio_config(speech_root());
  config.data.dataset = out;
  config.data.root = dir.string();
  EXPECT_EQ(app::make_pretrain_dataset(config)->size(), 3u);
}

TEST(AppAudio, ManifestOfAFolderWithoutAudioFailsAndWritesNothing) {
  // A wrong folder (or one of unreadable files only) is an error, not an empty corpus that a
  // pretraining run would only refuse later.
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-manifest-empty");
  std::ofstream(dir / "notes.txt") << "no audio here\n";
  const auto out = (dir / "train.tsv").string();
  const auto manifest =
      std::string(DATA2VEC_BINARY) + " manifest " + dir.string() + " --out " + out;
  EXPECT_EQ(run_command(manifest) >> 8, 1) << last_command_output();
  EXPECT_NE(last_command_output().find("no readable .wav/.flac/.ogg file under '" + dir.string()),
            std::string::npos)
      << last_command_output();
  EXPECT_FALSE(fs::exists(out));
  std::ofstream(dir / "broken.wav") << "RIFF this is not a wav file";
  EXPECT_EQ(run_command(manifest) >> 8, 1) << last_command_output();
  EXPECT_NE(last_command_output().find("(1 unreadable)"), std::string::npos)
      << last_command_output();
  EXPECT_FALSE(fs::exists(out));
}

TEST(AppAudio, ManifestSkipsAWavThatPromisesMoreDataThanItHolds) {
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-manifest-truncated");
  write(dir / "whole.wav", clip(300, 0.5, 1));
  write(dir / "cut.wav", clip(300, 0.5, 2));
  fs::resize_file(dir / "cut.wav", fs::file_size(dir / "cut.wav") / 2);  // a copy cut short
  const auto out = (dir / "train.tsv").string();
  ASSERT_EQ(
      run_command(std::string(DATA2VEC_BINARY) + " manifest " + dir.string() + " --out " + out), 0)
      << last_command_output();
  EXPECT_NE(last_command_output().find("cut.wav: truncated"), std::string::npos)
      << last_command_output();
  const auto manifest = audio::read_manifest(out);
  ASSERT_EQ(manifest.entries.size(), 1u);
  EXPECT_EQ(manifest.entries[0].path, "whole.wav");
}

TEST(AppAudio, EmbedSkipsAndNamesEmptyWavs) {
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-embed-empty");
  write(dir / "a.wav", clip(300, 0.5, 1));
  std::ofstream(dir / "b-zero-bytes.wav").flush();
  write(dir / "c-no-samples.wav", torch::zeros({0}));
  write(dir / "d-too-short.wav", clip(300, 0.01, 2));  // 160 samples: less than one window
  write(dir / "e.wav", clip(600, 0.5, 3));
  const auto run = data2vec::testing::untrained_run(audio_config(speech_root()));
  const auto out = (dir / "features.safetensors").string();
  ASSERT_EQ(run_command(std::string(DATA2VEC_BINARY) + " embed --checkpoint " + run + " --input " +
                        dir.string() + " --output " + out),
            0)
      << last_command_output();
  for (const char* skipped : {"b-zero-bytes.wav", "c-no-samples.wav", "d-too-short.wav"})
    EXPECT_NE(last_command_output().find(skipped), std::string::npos) << last_command_output();
  EXPECT_NE(last_command_output().find("embedded 2 files ->"), std::string::npos)
      << last_command_output();
  const auto file = io::load_safetensors(out);
  EXPECT_EQ(file.tensors.at("features").size(0), 2);
  // Grid pooling cuts an image's patch grid into quadrants; a clip's frames are no grid (a 1 s
  // clip's 49 frames would pass for 7 x 7).
  const auto grid_out = (dir / "grid.safetensors").string();
  EXPECT_EQ(run_command(std::string(DATA2VEC_BINARY) + " embed --checkpoint " + run + " --input " +
                        dir.string() + " --output " + grid_out + " --pool grid") >> 8,
            1);
  EXPECT_NE(last_command_output().find("holds an encoder of audio"), std::string::npos)
      << last_command_output();
  EXPECT_FALSE(fs::exists(grid_out));
}

TEST(AppAudio, PretrainEvaluateAndEmbedThroughTheCommandLine) {
  const auto& root = speech_root();
  auto config = audio_config(root);
  config.train.max_steps = 3;
  config.train.batch_size = 4;
  config.log.every = 1;
  config.log.tensorboard = false;
  config.eval.tasks = "digits";
  config.eval.batch_size = 8;
  const auto config_path = root + "/run.yaml";
  std::ofstream(config_path) << io::to_yaml(config);
  const auto out = data2vec::testing::make_temp_dir("d2v-audio-run");
  const std::string bin = DATA2VEC_BINARY;
  ASSERT_EQ(run_command(bin + " pretrain --config " + config_path + " --out " + out), 0)
      << last_command_output();
  ASSERT_EQ(run_command(bin + " evaluate --checkpoint " + out + " --report " + out + "/report.md"),
            0)
      << last_command_output();
  const auto report = io::read_file(out + "/report.md");
  for (const char* row :
       {"mean log-mel, linear", "random init, linear probe", "data2vec student, linear probe",
        "data2vec teacher, linear probe", "spoken digits, held-out voices",
        "spoken digits, other synthesisers", "spoken digits, real speaker"}) {
    EXPECT_NE(report.find(row), std::string::npos) << row << "\n" << report;
  }
  // The tones are far apart in frequency: the log-mel baseline must get every test clip.
  EXPECT_NE(report.find("| spoken digits, held-out voices | mean log-mel, linear | 100.00"),
            std::string::npos)
      << report;
  // Features of audio files (one row of D = 128 per file, any rate and format).
  ASSERT_EQ(run_command(bin + " embed --checkpoint " + out + " --input " + root +
                        "/spoken-digits/test-real --output " + out + "/features.safetensors"),
            0)
      << last_command_output();
  const auto file = io::load_safetensors(out + "/features.safetensors");
  EXPECT_EQ(file.tensors.at("features").sizes(), (std::vector<int64_t>{2, 128}));
  EXPECT_FALSE(torch::isnan(file.tensors.at("features")).any().item<bool>());
}
