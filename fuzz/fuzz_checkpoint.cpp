// A checkpoint directory as read_checkpoint reads it. The first byte picks which file the rest
// of the input becomes; the other files are a small valid checkpoint, and checkpoint.json lists
// the true size and CRC-32 of each (so the fuzzed file gets past the checksums):
//   0: checkpoint.json itself   1: trainer_state.json   2: model.safetensors   3: rng.safetensors
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "data2vec/io/safetensors.h"
#include "data2vec/train/checkpoint.h"
#include "fuzz_support.h"

namespace {

uint32_t crc_of(const std::string& bytes) {
  return uint32_t(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()),
                        uInt(bytes.size())));
}

const std::map<std::string, std::string>& valid_files() {
  static const std::map<std::string, std::string> files = {
      {"model.safetensors",
       data2vec::io::safetensors_bytes({{"student.w", torch::arange(6, torch::kFloat32)}})},
      {"rng.safetensors",
       data2vec::io::safetensors_bytes({{"data", torch::zeros({4}, torch::kUInt8)}})},
      {"trainer_state.json", R"({"step": 3, "data_position": 12, "elapsed_seconds": 1.5})"},
      {"config.yaml", "train:\n  max_steps: 3\n"},
  };
  return files;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  namespace fs = std::filesystem;
  static const char* kFuzzed[] = {"checkpoint.json", "trainer_state.json", "model.safetensors",
                                  "rng.safetensors"};
  const std::string fuzzed = kFuzzed[data[0] % 4];
  const std::string input(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto dir = data2vec::fuzz::scratch_dir() + "/step_3";
  fs::create_directories(dir);
  std::string manifest = R"({"version": 1, "files": {)";
  for (auto [name, bytes] : valid_files()) {
    if (name == fuzzed) bytes = input;
    data2vec::fuzz::write_bytes(dir + "/" + name, bytes.data(), bytes.size());
    if (manifest.back() != '{') manifest += ", ";
    manifest += "\"" + name + "\": {\"bytes\": " + std::to_string(bytes.size()) +
                ", \"crc32\": " + std::to_string(crc_of(bytes)) + "}";
  }
  manifest += "}}";
  if (fuzzed == "checkpoint.json") manifest = input;
  data2vec::fuzz::write_bytes(dir + "/checkpoint.json", manifest.data(), manifest.size());
  data2vec::fuzz::expect_named_refusal([&] { data2vec::train::read_checkpoint(dir); }, dir);
  return 0;
}
