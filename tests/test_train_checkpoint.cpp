#include <sys/resource.h>
#include <sys/stat.h>
#include <zlib.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "data2vec/core/data2vec.h"
#include "data2vec/core/toy_encoder.h"
#include "data2vec/io/files.h"
#include "data2vec/train/checkpoint.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::error_of;

namespace {

Data2Vec make_model(uint64_t seed) {
  torch::manual_seed(seed);
  return Data2Vec([] { return std::make_shared<ToyEncoderImpl>(ToyEncoderOptions().depth(2)); },
                  Data2VecOptions().targets(TargetOptions().top_k_layers(2)));
}

train::CheckpointContents contents_of(Data2Vec& model, int64_t step) {
  train::CheckpointContents c;
  c.model = train::module_state(*model);
  c.trainer_state = {{"step", step}, {"data_position", step}};
  c.config_yaml = "train:\n  max_steps: 10\n";
  c.rng["cpu_default"] = at::detail::getDefaultCPUGenerator().get_state();
  return c;
}

}  // namespace

TEST(Checkpoint, RoundTripRestoresStudentTeacherHeadExactly) {
  const auto run = data2vec::testing::make_temp_dir("ckpt");
  auto model = make_model(1);
  {  // make the teacher differ from the student so both are really checked
    torch::NoGradGuard no_grad;
    for (auto& p : model->student()->parameters()) p.add_(0.01);
  }
  const auto dir = train::save_checkpoint(run, 5, contents_of(model, 5), 3);
  EXPECT_TRUE(fs::exists(fs::path(run) / "checkpoints" / "last" / "checkpoint.json"));
  auto loaded = train::read_checkpoint(run);  // a run directory means checkpoints/last
  EXPECT_EQ(loaded.trainer_state.at("step"), 5);
  auto other = make_model(2);
  train::load_module_state(*other, loaded.model);
  const auto a = train::module_state(*model), b = train::module_state(*other);
  ASSERT_EQ(a.size(), b.size());
  int teacher = 0, head = 0;
  for (const auto& [name, t] : a) {
    EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
    teacher += name.rfind("teacher.", 0) == 0;
    head += name.rfind("head.", 0) == 0;
  }
  EXPECT_GT(teacher, 0);
  EXPECT_GT(head, 0);
}

TEST(Checkpoint, TruncatedOrCorruptFilesAreRefused) {
  const auto run = data2vec::testing::make_temp_dir("ckpt");
  auto model = make_model(1);
  const auto dir = train::save_checkpoint(run, 1, contents_of(model, 1), 3);
  const auto weights = dir + "/model.safetensors";
  auto bytes = io::read_file(weights);

  std::ofstream(weights, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size() / 2);
  auto message = error_of([&] { train::read_checkpoint(dir); });
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;

  bytes[bytes.size() - 3] ^= 0x5a;
  std::ofstream(weights, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
  message = error_of([&] { train::read_checkpoint(dir); });
  EXPECT_NE(message.find("CRC"), std::string::npos) << message;

  fs::remove(dir + "/checkpoint.json");  // an unfinished checkpoint
  message = error_of([&] { train::read_checkpoint(dir); });
  EXPECT_NE(message.find("no checkpoint"), std::string::npos) << message;
}

TEST(Checkpoint, ShapeMismatchIsRefusedBeforeAnyCopy) {
  auto model = make_model(1);
  auto state = train::module_state(*model);
  const auto before = train::module_state(*make_model(3));
  auto target = make_model(3);
  state["head.0.weight"] = torch::zeros({3, 3});
  const auto message = error_of([&] { train::load_module_state(*target, state); });
  EXPECT_NE(message.find("head.0.weight"), std::string::npos) << message;
  for (const auto& [name, t] : train::module_state(*target)) {
    EXPECT_TRUE(torch::equal(t, before.at(name))) << name << " was changed by a refused load";
  }
  state.erase("head.0.weight");
  EXPECT_NE(error_of([&] { train::load_module_state(*target, state); }).find("missing tensor 'head.0.weight'"),
            std::string::npos);
}

TEST(Checkpoint, KeepsTheNewestAndMovesLast) {
  const auto run = data2vec::testing::make_temp_dir("ckpt");
  auto model = make_model(1);
  for (int64_t step : {10, 20, 30, 40}) train::save_checkpoint(run, step, contents_of(model, step), 2);
  const auto root = fs::path(run) / "checkpoints";
  EXPECT_FALSE(fs::exists(root / "step_10"));
  EXPECT_FALSE(fs::exists(root / "step_20"));
  EXPECT_TRUE(fs::exists(root / "step_30"));
  EXPECT_TRUE(fs::exists(root / "step_40"));
  EXPECT_EQ(fs::read_symlink(root / "last").string(), "step_40");
  EXPECT_EQ(train::read_checkpoint(run).trainer_state.at("step"), 40);
}

TEST(Checkpoint, AnInterruptedWriteLeavesThePreviousCheckpoint) {
  const auto run = data2vec::testing::make_temp_dir("ckpt");
  auto model = make_model(1);
  train::save_checkpoint(run, 10, contents_of(model, 10), 3);
  // What a kill in the middle of the next save leaves behind: a partial temporary directory.
  const auto partial = fs::path(run) / "checkpoints" / "step_20.tmp";
  fs::create_directories(partial);
  std::ofstream(partial / "model.safetensors") << "partial";
  EXPECT_EQ(train::read_checkpoint(run).trainer_state.at("step"), 10);
  train::save_checkpoint(run, 20, contents_of(model, 20), 3);  // and the next save still works
  EXPECT_EQ(train::read_checkpoint(run).trainer_state.at("step"), 20);
  EXPECT_FALSE(fs::exists(partial));
}

TEST(Checkpoint, AFailedWriteLeavesNoTemporaries) {
  // A full disk, simulated by a file-size limit: it holds for root too, where a read-only
  // directory would not. With SIGXFSZ ignored the write fails with EFBIG (as main() arranges).
  const auto run = data2vec::testing::make_temp_dir("ckpt");
  auto model = make_model(1);
  const auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit previous{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &previous), 0);
  rlimit tiny = previous;
  tiny.rlim_cur = 4096;  // config.yaml fits, model.safetensors does not
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &tiny), 0);
  const auto message = error_of([&] { train::save_checkpoint(run, 5, contents_of(model, 5), 3); });
  const auto config_message =
      error_of([&] { io::write_file_atomically(run + "/config.yaml", std::string(8192, 'x')); });
  setrlimit(RLIMIT_FSIZE, &previous);
  std::signal(SIGXFSZ, previous_handler);

  EXPECT_NE(message.find("model.safetensors.tmp"), std::string::npos) << message;
  EXPECT_NE(config_message.find("config.yaml.tmp"), std::string::npos) << config_message;
  EXPECT_FALSE(fs::exists(fs::path(run) / "checkpoints" / "step_5.tmp"));
  EXPECT_FALSE(fs::exists(fs::path(run) / "config.yaml.tmp"));
  EXPECT_FALSE(fs::exists(fs::path(run) / "checkpoints" / "last"));
}

TEST(Checkpoint, DamagedManifestAndTrainerStateNameTheFileAndField) {
  const auto run = data2vec::testing::make_temp_dir("ckpt");
  auto model = make_model(1);
  const auto dir = train::save_checkpoint(run, 1, contents_of(model, 1), 3);
  const auto manifest_path = dir + "/checkpoint.json";
  const auto manifest = nlohmann::json::parse(io::read_file(manifest_path));
  auto damaged = [&](const std::function<void(nlohmann::json&)>& change) {
    auto copy = manifest;
    change(copy);
    std::ofstream(manifest_path, std::ios::trunc) << copy.dump(2);
    return error_of([&] { train::read_checkpoint(dir); });
  };
  auto message = damaged([](nlohmann::json& m) { m.erase("files"); });
  EXPECT_NE(message.find(manifest_path), std::string::npos) << message;
  EXPECT_NE(message.find("'files'"), std::string::npos) << message;
  message = damaged([](nlohmann::json& m) { m["files"]["model.safetensors"]["bytes"] = "many"; });
  EXPECT_NE(message.find(manifest_path), std::string::npos) << message;
  EXPECT_NE(message.find("files.model.safetensors.bytes"), std::string::npos) << message;
  message = damaged([](nlohmann::json& m) { m["version"] = "one"; });
  EXPECT_NE(message.find("'version'"), std::string::npos) << message;

  // trainer_state.json that is not JSON, saved with a matching size and CRC.
  auto contents = contents_of(model, 2);
  const auto second = train::save_checkpoint(run, 2, contents, 3);
  std::ofstream(second + "/trainer_state.json", std::ios::trunc) << "{\"step\": ";
  auto second_manifest = nlohmann::json::parse(io::read_file(second + "/checkpoint.json"));
  const auto bytes = io::read_file(second + "/trainer_state.json");
  second_manifest["files"]["trainer_state.json"] = {
      {"bytes", bytes.size()},
      {"crc32", crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()),
                      uInt(bytes.size()))}};
  std::ofstream(second + "/checkpoint.json", std::ios::trunc) << second_manifest.dump(2);
  message = error_of([&] { train::read_checkpoint(second); });
  EXPECT_NE(message.find(second + "/trainer_state.json"), std::string::npos) << message;
  EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
}

TEST(AtomicWrite, FollowsASymbolicLinkAndKeepsIt) {
  const auto dir = data2vec::testing::make_temp_dir("atomic");
  const auto target = fs::path(dir) / "features.safetensors";
  std::ofstream(target) << "old";
  fs::create_directories(fs::path(dir) / "links");
  const auto link = fs::path(dir) / "links" / "features.safetensors";
  fs::create_symlink(target, link);
  io::write_file_atomically(link.string(), "new");
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(link)));
  EXPECT_EQ(io::read_file(target.string()), "new");
  EXPECT_FALSE(fs::exists(fs::path(dir) / "links" / "features.safetensors.tmp"));
  // A dangling link: the file it names is created.
  const auto missing = fs::path(dir) / "later.tsv";
  fs::create_symlink(missing, fs::path(dir) / "links" / "later.tsv");
  io::write_file_atomically((fs::path(dir) / "links" / "later.tsv").string(), "made");
  EXPECT_EQ(io::read_file(missing.string()), "made");
}

TEST(AtomicWrite, WritesIntoAPipeAndRefusesADirectory) {
  const auto dir = data2vec::testing::make_temp_dir("atomic");
  const auto fifo = fs::path(dir) / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string received;
  std::thread reader([&] { received = io::read_file(fifo.string()); });
  io::write_file_atomically(fifo.string(), "through the pipe");
  reader.join();
  EXPECT_EQ(received, "through the pipe");
  EXPECT_EQ(fs::status(fifo).type(), fs::file_type::fifo);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "fifo.tmp"));
  const auto message = error_of([&] { io::write_file_atomically(dir, "x"); });
  EXPECT_NE(message.find("is a directory"), std::string::npos) << message;
  EXPECT_NE(message.find(dir), std::string::npos) << message;
}

TEST(Checkpoint, ARunWhoseLastLinkIsBrokenResolvesToItsNewestStep) {
  // The user deletes a damaged newest checkpoint to fall back to the one before: `last` then
  // dangles, and the run must still be found (resume, probe), not taken for an empty directory.
  const auto run = data2vec::testing::make_temp_dir("ckpt");
  auto model = make_model(1);
  for (int64_t step : {10, 20, 30}) train::save_checkpoint(run, step, contents_of(model, step), 0);
  fs::remove_all(fs::path(run) / "checkpoints" / "step_30");
  ASSERT_TRUE(fs::is_symlink(fs::symlink_status(fs::path(run) / "checkpoints" / "last")));
  const auto dir = train::resolve_checkpoint_dir(run);
  ASSERT_TRUE(dir.has_value());
  EXPECT_EQ(fs::path(*dir).filename(), "step_20");
  EXPECT_EQ(train::read_checkpoint(run).trainer_state.at("step"), 20);
  // step_100 sorts after step_20 by number, not by name; a step_N without its manifest (a
  // damaged copy) is not a checkpoint.
  train::save_checkpoint(run, 100, contents_of(model, 100), 0);
  fs::remove(fs::path(run) / "checkpoints" / "last");
  fs::create_directories(fs::path(run) / "checkpoints" / "step_200");
  EXPECT_EQ(fs::path(*train::resolve_checkpoint_dir(run)).filename(), "step_100");
}
