// The command line as a Unix tool: --version, exit codes (documented in --help), usage errors,
// a run directory that already holds a run, a file-size limit, and `data2vec config` making the
// checks `pretrain` makes.
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "data2vec/app/builders.h"
#include "data2vec/io/config.h"
#include "pretrain_support.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::last_command_output;
using data2vec::testing::make_temp_dir;
using data2vec::testing::toy_run_config;

namespace {

const std::string kBinary = DATA2VEC_BINARY;

// Runs `command` through the shell; its exit code (-1 when a signal ended it).
int exit_code(const std::string& command) {
  const int status = data2vec::testing::run_command(command);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A configuration file of the toy run (seconds per run) with `max_steps` steps.
std::string toy_config_file(const std::string& dir, int64_t max_steps) {
  const auto path = dir + "/toy.yaml";
  std::ofstream(path) << io::to_yaml(toy_run_config(max_steps));
  return path;
}

}  // namespace

TEST(Cli, VersionNamesTheBuildTorchBlasAndCpuFeatures) {
  // stdout alone: the version is a result.
  ASSERT_EQ(exit_code("(" + kBinary + " --version 2>/dev/null)"), 0) << last_command_output();
  const auto out = last_command_output();
  EXPECT_NE(out.find(std::string("data2vec ") + DATA2VEC_VERSION), std::string::npos) << out;
  EXPECT_NE(out.find(std::string("LibTorch ") + TORCH_VERSION), std::string::npos) << out;
  EXPECT_NE(out.find("BLAS "), std::string::npos) << out;
  EXPECT_NE(out.find("CPU features"), std::string::npos) << out;
}

TEST(Cli, UsageErrorsExitTwoAndAnUnknownCommandIsNamed) {
  EXPECT_EQ(exit_code(kBinary + " pretrian --out x"), 2);
  EXPECT_NE(last_command_output().find("unknown command 'pretrian'"), std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " pretrain"), 2) << last_command_output();  // no --out
  EXPECT_EQ(exit_code(kBinary + " pretrain --out x --stop-at -5"), 2) << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " pretrain --out x --resume --overwrite"), 2)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary), 2) << last_command_output();
  // An option before any command is named, not reported as a missing command.
  EXPECT_EQ(exit_code(kBinary + " --bogus"), 2);
  EXPECT_NE(last_command_output().find("unknown option '--bogus'"), std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " --max-steps=5 pretrain"), 2);
  EXPECT_NE(last_command_output().find("unknown option '--max-steps'"), std::string::npos)
      << last_command_output();
  // A path that does not exist is a usage error for every command that takes one.
  for (const char* command :
       {" probe --checkpoint /nonexistent", " evaluate --checkpoint /nonexistent",
        " embed --checkpoint /nonexistent --input . --output x.safetensors",
        " export-hf /nonexistent --out x", " plot /nonexistent"}) {
    EXPECT_EQ(exit_code(kBinary + command), 2) << command << ": " << last_command_output();
    EXPECT_NE(last_command_output().find("/nonexistent"), std::string::npos)
        << last_command_output();
  }
  // --help-all shows the options of every command, a command's commands included.
  ASSERT_EQ(exit_code(kBinary + " --help-all"), 0);
  for (const char* option : {"--vocab-size", "--input", "--label-fraction", "--nproc", "--top-k"})
    EXPECT_NE(last_command_output().find(option), std::string::npos) << option;
  // The codes are documented where a user looks.
  ASSERT_EQ(exit_code(kBinary + " --help"), 0);
  for (const char* code :
       {"Exit codes", "1 runtime error", "2 usage error", "3 pretraining", "130"})
    EXPECT_NE(last_command_output().find(code), std::string::npos) << last_command_output();
}

TEST(Cli, ARunDirectoryIsNotStartedOverByMistake) {
  const auto work = make_temp_dir("cli-existing");
  const auto run = work + "/run";
  ASSERT_EQ(
      exit_code(kBinary + " pretrain --config " + toy_config_file(work, 10) + " --out " + run), 0)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " pretrain --config " + work + "/toy.yaml --out " + run), 1);
  EXPECT_NE(last_command_output().find("--resume"), std::string::npos) << last_command_output();
  // --overwrite starts clean: none of the first run's checkpoints or log records stay.
  ASSERT_EQ(exit_code(kBinary + " pretrain --config " + toy_config_file(work, 5) + " --out " + run +
                      " --overwrite"),
            0)
      << last_command_output();
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step_10"));
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step_5"));
  std::ifstream log(run + "/metrics.jsonl");
  std::string line;
  while (std::getline(log, line)) EXPECT_LE(nlohmann::json::parse(line).at("step"), 5) << line;
}

TEST(Cli, FinetuneFlagsAreCheckedBeforeAnyWork) {
  const auto work = make_temp_dir("cli-finetune-flags");
  const auto run = work + "/run";
  ASSERT_EQ(exit_code(kBinary + " pretrain --config " + toy_config_file(work, 2) + " --out " + run),
            0)
      << last_command_output();
  const auto finetune = kBinary + " finetune --checkpoint " + run + " --label-fraction 0.5";
  for (const char* bad : {" --label-smoothing 1", " --label-smoothing -0.1",
                          " --label-smoothing abc", " --mixup -1", " --shift -1", " --shift 0.5",
                          " --layer-decay 0", " --layer-decay 1.5", " --weight-decay -0.1"}) {
    EXPECT_EQ(exit_code(finetune + bad), 2) << bad << ": " << last_command_output();
    const std::string flag = std::string(bad).substr(1, std::string(bad).find(' ', 1) - 1);
    EXPECT_NE(last_command_output().find(flag), std::string::npos) << last_command_output();
  }
  // Mixup blends images: a toy (vector) run is refused before any fine-tuning epoch runs.
  EXPECT_EQ(exit_code(finetune + " --mixup 0.8"), 1) << last_command_output();
  EXPECT_NE(last_command_output().find("--mixup blends images"), std::string::npos)
      << last_command_output();
  EXPECT_EQ(last_command_output().find("finetune: epoch"), std::string::npos)
      << last_command_output();
  // So does --shift, which moves images.
  EXPECT_EQ(exit_code(finetune + " --shift 1"), 1) << last_command_output();
  EXPECT_NE(last_command_output().find("--shift moves images"), std::string::npos)
      << last_command_output();
  EXPECT_EQ(last_command_output().find("finetune: epoch"), std::string::npos)
      << last_command_output();
  // A layer decay below 1 is used and named in the report's detail column.
  ASSERT_EQ(exit_code(finetune + " --epochs 1 --layer-decay 0.5 --weight-decay 0"), 0)
      << last_command_output();
  EXPECT_NE(last_command_output().find("layer decay 0.5"), std::string::npos)
      << last_command_output();
}

TEST(Cli, AFileSizeLimitFailsTheWriteAndNamesTheFile) {
  // Without SIGXFSZ ignored the kernel kills the process silently (the shell sees 128 + 25).
  const auto work = make_temp_dir("cli-fsize");
  const auto run = work + "/run";
  const auto config = toy_config_file(work, 5);
  // 100 blocks (51 or 102 kB, as the shell counts): the config, the log and the output fit, the
  // weights (170 kB) do not.
  EXPECT_EQ(
      exit_code("ulimit -f 100; " + kBinary + " pretrain --config " + config + " --out " + run), 1);
  EXPECT_NE(last_command_output().find("model.safetensors.tmp"), std::string::npos)
      << last_command_output();
  EXPECT_NE(last_command_output().find("File too large"), std::string::npos)
      << last_command_output();
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step_5.tmp"));
}

TEST(Cli, ConfigErrorsNameTheFileLineAndValue) {
  const auto work = make_temp_dir("cli-config");
  const auto path = work + "/bad.yaml";
  std::ofstream(path) << "model:\n  modality: toy\ntrain:\n  max_steps: 10\n  batch_size: -4\n";
  EXPECT_EQ(exit_code(kBinary + " config --config " + path), 1);
  auto out = last_command_output();
  EXPECT_NE(out.find(path + ":5: config key 'train.batch_size' must be > 0, got -4"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("-4.0"), std::string::npos) << out;
  EXPECT_EQ(exit_code(kBinary + " config --set train.batch_size=-4"), 1);
  EXPECT_NE(last_command_output().find("--set train.batch_size=-4: "), std::string::npos)
      << last_command_output();

  const auto empty = work + "/empty.yaml";
  std::ofstream(empty) << "# nothing but a comment\n";
  EXPECT_EQ(exit_code(kBinary + " config --config " + empty), 1);
  EXPECT_NE(last_command_output().find(empty + ": the file holds no keys"), std::string::npos)
      << last_command_output();
}

TEST(Cli, ConfigRejectsWhatPretrainRejects) {
  // The toy micro encoder has 2 layers: averaging the top 99 is refused when the model is built.
  const auto config = toy_config_file(make_temp_dir("cli-config-model"), 10);
  EXPECT_EQ(exit_code(kBinary + " config --config " + config + " --set model.top_k_layers=99"), 1);
  EXPECT_NE(last_command_output().find(
                "config key 'model.top_k_layers' = 99: the encoder (model.preset 'micro') has "
                "only 2 layers"),
            std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " config --config " + config + " --set model.top_k_layers=2"), 0)
      << last_command_output();
  // What the model's construction rejects names the config key too, not the encoder's argument.
  const std::string vision = std::string(DATA2VEC_SOURCE_DIR) + "/configs/vision/fmnist-tiny.yaml";
  EXPECT_EQ(exit_code(kBinary + " config --config " + vision + " --set data.image_size=30"), 1);
  EXPECT_NE(last_command_output().find("config key 'data.image_size' = 30: must be a multiple of "
                                       "the patch size, 4 in model.preset 'fmnist-mini'"),
            std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " config --config " + vision + " --set model.preset=huge"), 1);
  EXPECT_NE(last_command_output().find("config key 'model.preset' = 'huge': "), std::string::npos)
      << last_command_output();
  EXPECT_NE(last_command_output().find("fmnist-tiny"), std::string::npos)  // the known ones
      << last_command_output();
}

TEST(Cli, AOneChannelModelReadsAnImageFolderAsGrey) {
  // The Fashion-MNIST presets' model on an image folder failed at its first image with
  // "normalize: std has 3 values for 1 channels": ImageNet's statistics are per RGB channel.
  const auto root = make_temp_dir("cli-grey-folder");
  for (const char* path : {"/train/a/1.png", "/train/b/2.png", "/val/a/3.png"}) {
    fs::create_directories(fs::path(root + path).parent_path());
    const auto grey = torch::full({32, 32, 3}, 200).to(torch::kUInt8);
    ASSERT_TRUE(data2vec::testing::write_png(root + path, grey));
  }
  const auto config = std::string(DATA2VEC_SOURCE_DIR) + "/configs/vision/fmnist-tiny.yaml";
  auto c = io::load_config(config, {"data.dataset=image-folder", "data.root=" + root});
  const auto splits = app::make_eval_datasets(c);
  const auto image = splits.test->get(0, 0).source;
  ASSERT_EQ(image.sizes(), (std::vector<int64_t>{1, 28, 28}));
  // 200/255 normalised by the luma-weighted ImageNet mean and std.
  EXPECT_NEAR(image.mean().item<double>(), (200.0 / 255.0 - 0.45897) / 0.22561, 1e-3);
}

TEST(Cli, EmbedWithNoReadableInputFails) {
  io::Config vision;
  vision.model.modality = "vision";
  vision.model.preset = "fmnist-mini";
  vision.model.top_k_layers = 4;
  const auto run = data2vec::testing::untrained_run(vision);
  const auto images = make_temp_dir("cli-embed-broken");
  std::ofstream(images + "/a.png") << "not a png";
  std::ofstream(images + "/b.png") << "not a png either";
  const auto out = images + "/features.safetensors";
  EXPECT_EQ(
      exit_code(kBinary + " embed --checkpoint " + run + " --input " + images + " --output " + out),
      1);
  EXPECT_NE(last_command_output().find("none of the 2 files"), std::string::npos)
      << last_command_output();
  EXPECT_FALSE(fs::exists(out));
  // An --output that cannot be written is named before any image is read.
  EXPECT_EQ(exit_code(kBinary + " embed --checkpoint " + run + " --input " + images +
                      " --output " + images + "/missing/f.safetensors"),
            1);
  EXPECT_NE(last_command_output().find("--output '" + images + "/missing/f.safetensors'"),
            std::string::npos)
      << last_command_output();
  EXPECT_EQ(last_command_output().find("a.png"), std::string::npos) << last_command_output();
}

// The newest checkpoint damaged, the user deletes it to fall back to the one before: `last`
// dangles. --resume must continue from the newest step_N left, keeping the run's history, not
// take the directory for an empty one and start over (which rewrote metrics.jsonl from step 0).
TEST(Cli, ResumeWithABrokenLastLinkContinuesFromTheNewestCheckpointLeft) {
  const auto work = make_temp_dir("cli-resume-fallback");
  const auto run = work + "/run";
  const auto config = toy_config_file(work, 6);
  ASSERT_EQ(exit_code(kBinary + " pretrain --config " + config + " --out " + run +
                      " --set checkpoint.every=1 --set log.every=1 --set checkpoint.keep=0"),
            0)
      << last_command_output();
  fs::remove_all(run + "/checkpoints/step_6");
  ASSERT_EQ(exit_code("(" + kBinary + " pretrain --out " + run +
                      " --resume --set train.max_steps=8 2>&1)"),
            0)
      << last_command_output();
  const auto out = last_command_output();
  EXPECT_NE(out.find("using the run's newest checkpoint"), std::string::npos) << out;
  EXPECT_NE(out.find("checkpoints/step_5 at step 5"), std::string::npos) << out;
  EXPECT_NE(out.find("steps 8,"), std::string::npos) << out;
  std::vector<int64_t> steps;
  std::ifstream log(run + "/metrics.jsonl");
  for (std::string line; std::getline(log, line);)
    steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(fs::read_symlink(run + "/checkpoints/last").string(), "step_8");
}

TEST(Cli, ResumeSaysWhatItIgnoresAndRefusesADirectoryWithoutARun) {
  const auto work = make_temp_dir("cli-resume-config");
  const auto run = work + "/run";
  ASSERT_EQ(exit_code(kBinary + " pretrain --config " + toy_config_file(work, 5) + " --out " + run),
            0)
      << last_command_output();
  // The first command line again with --resume and an edited file: the run continues with its
  // checkpoint's configuration and the warning names the key the file changes.
  std::ofstream(work + "/edited.yaml") << io::to_yaml(toy_run_config(7));
  ASSERT_EQ(exit_code("(" + kBinary + " pretrain --config " + work + "/edited.yaml --out " + run +
                      " --resume 2>&1)"),
            0)
      << last_command_output();
  EXPECT_NE(last_command_output().find("which differs in train.max_steps"), std::string::npos)
      << last_command_output();
  EXPECT_NE(last_command_output().find("steps 5, last loss none (no step run)"),
            std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " pretrain --out " + work + "/nothing-here --resume"), 1);
  EXPECT_NE(last_command_output().find("holds no run to continue"), std::string::npos)
      << last_command_output();
  EXPECT_FALSE(fs::exists(work + "/nothing-here/metrics.jsonl"));
}

TEST(Cli, ResultsThatCannotBeWrittenToStdoutFailTheCommand) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full here";
  // In a subshell: the test's own redirection of the output would come after, and win.
  EXPECT_EQ(exit_code("(" + kBinary + " config > /dev/full)"), 1) << last_command_output();
  EXPECT_NE(last_command_output().find("could not write the results to standard output"),
            std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code("(" + kBinary + " --help > /dev/full)"), 1) << last_command_output();
  EXPECT_EQ(exit_code("(" + kBinary + " config > /dev/null)"), 0) << last_command_output();
}

TEST(Cli, TheConfigCommandPrintsAConfigurationItReadsBack) {
  // `data2vec config > my.yaml`, edited, is how a user starts a configuration of their own.
  const auto work = make_temp_dir("cli-config-defaults");
  ASSERT_EQ(exit_code("(" + kBinary + " config > " + work + "/defaults.yaml)"), 0)
      << last_command_output();
  ASSERT_EQ(exit_code("(" + kBinary + " config --config " + work + "/defaults.yaml > " + work +
                      "/again.yaml)"),
            0)
      << last_command_output();
  std::ifstream first(work + "/defaults.yaml"), second(work + "/again.yaml");
  const std::string a{std::istreambuf_iterator<char>(first), {}};
  const std::string b{std::istreambuf_iterator<char>(second), {}};
  EXPECT_EQ(a, b);
  // The same for a preset with the algorithm's own defaults filled in.
  const std::string v2 = std::string(DATA2VEC_SOURCE_DIR) + "/configs/vision/fmnist-tiny-v2.yaml";
  ASSERT_EQ(exit_code("(" + kBinary + " config --config " + v2 + " > " + work + "/v2.yaml)"), 0);
  ASSERT_EQ(exit_code("(" + kBinary + " config --config " + work + "/v2.yaml > " + work +
                      "/v2-again.yaml)"),
            0)
      << last_command_output();
  std::ifstream third(work + "/v2.yaml"), fourth(work + "/v2-again.yaml");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(third), {}),
            std::string(std::istreambuf_iterator<char>(fourth), {}));
}

TEST(Cli, AnOutputPathThatCannotBeWrittenIsRefusedBeforeTheWork) {
  // embed, hf-forward and manifest did all their work, then failed to create '<path>.tmp'.
  const auto work = make_temp_dir("cli-output-path");
  const std::string fixture = std::string(DATA2VEC_SOURCE_DIR) + "/tests/fixtures/hf/data2vec_text";
  EXPECT_EQ(exit_code(kBinary + " hf-forward " + fixture + " --inputs " + fixture +
                      "/inputs.safetensors --output " + work + "/missing/out.safetensors"),
            1);
  EXPECT_NE(last_command_output().find("--output '" + work + "/missing/out.safetensors': the "
                                       "folder '" + work + "/missing' does not exist"),
            std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " manifest " + work + " --out " + work + "/missing/m.tsv"), 1);
  EXPECT_NE(last_command_output().find("--out '" + work + "/missing/m.tsv'"), std::string::npos)
      << last_command_output();
  EXPECT_EQ(exit_code(kBinary + " manifest " + work + " --out " + work), 1);  // a folder
  EXPECT_NE(last_command_output().find("is a directory"), std::string::npos)
      << last_command_output();
}
