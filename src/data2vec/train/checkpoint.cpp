#include "data2vec/train/checkpoint.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"

namespace fs = std::filesystem;

namespace data2vec::train {

namespace {

uint32_t crc32_of(const std::string& bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t offset = 0;
  while (offset < bytes.size()) {  // zlib takes uInt lengths
    const auto chunk = static_cast<uInt>(std::min<size_t>(bytes.size() - offset, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + offset), chunk);
    offset += chunk;
  }
  return static_cast<uint32_t>(crc);
}

io::NamedTensors sorted_named(const std::map<std::string, torch::Tensor>& tensors) {
  return io::NamedTensors(tensors.begin(), tensors.end());
}

int64_t step_of(const fs::path& dir) {
  const auto name = dir.filename().string();
  if (name.rfind("step_", 0) != 0 || name.size() <= 5) return -1;
  try {
    size_t used = 0;
    const auto step = std::stoll(name.substr(5), &used);
    return used == name.size() - 5 ? step : -1;
  } catch (...) {
    return -1;
  }
}

void remove_old_checkpoints(const fs::path& root, int64_t keep, const fs::path& newest) {
  if (keep <= 0) return;
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const auto& entry : fs::directory_iterator(root)) {
    const auto step = step_of(entry.path());
    if (entry.is_directory() && step >= 0) steps.emplace_back(step, entry.path());
  }
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + size_t(keep) < steps.size(); ++i) {
    if (steps[i].second != newest) fs::remove_all(steps[i].second);
  }
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, int64_t step,
                            const CheckpointContents& contents, int64_t keep) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  fs::create_directories(root);
  const fs::path final_dir = root / ("step_" + std::to_string(step));
  const fs::path tmp_dir = root / ("step_" + std::to_string(step) + ".tmp");
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);

  std::map<std::string, std::string> files;
  files["model.safetensors"] = io::safetensors_bytes(
      sorted_named(contents.model), {{"format", "data2vec.cpp"}, {"step", std::to_string(step)}});
  files["optimizer.pt"] = contents.optimizer;
  files["rng.safetensors"] = io::safetensors_bytes(sorted_named(contents.rng));
  files["trainer_state.json"] = contents.trainer_state.dump(2) + "\n";
  files["config.yaml"] = contents.config_yaml;

  nlohmann::json manifest = {
      {"format", "data2vec.cpp checkpoint"}, {"version", kCheckpointFormatVersion}, {"step", step}};
  for (const auto& [name, bytes] : files) {
    io::write_file_atomically((tmp_dir / name).string(), bytes);
    manifest["files"][name] = {{"bytes", bytes.size()}, {"crc32", crc32_of(bytes)}};
  }
  // The manifest goes last: a directory without it was never finished.
  io::write_file_atomically((tmp_dir / "checkpoint.json").string(), manifest.dump(2) + "\n");

  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  io::fsync_path(root.string());

  const fs::path link_tmp = root / "last.tmp";
  fs::remove(link_tmp);
  fs::create_directory_symlink(final_dir.filename(), link_tmp);
  fs::rename(link_tmp, root / "last");  // atomic replacement of the old link
  io::fsync_path(root.string());

  remove_old_checkpoints(root, keep, final_dir);
  return final_dir.string();
}

std::optional<std::string> resolve_checkpoint_dir(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "checkpoint.json")) return p.string();
  if (fs::exists(p / "checkpoints" / "last" / "checkpoint.json")) {
    return fs::canonical(p / "checkpoints" / "last").string();
  }
  return std::nullopt;
}

CheckpointContents read_checkpoint(const std::string& path) {
  const auto dir_opt = resolve_checkpoint_dir(path);
  if (!dir_opt) {
    throw std::runtime_error("no checkpoint at '" + path +
                             "' (expected a checkpoint directory with checkpoint.json, or a run "
                             "directory with checkpoints/last)");
  }
  const fs::path dir(*dir_opt);
  const auto manifest_path = (dir / "checkpoint.json").string();
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(io::read_file(manifest_path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("checkpoint manifest '" + manifest_path + "' is corrupt: " + e.what());
  }
  if (manifest.value("version", 0) != kCheckpointFormatVersion) {
    throw std::runtime_error("checkpoint '" + dir.string() + "' has format version " +
                             std::to_string(manifest.value("version", 0)) + "; this build reads " +
                             std::to_string(kCheckpointFormatVersion));
  }
  std::map<std::string, std::string> files;
  for (const auto& [name, info] : manifest.at("files").items()) {
    const auto file = (dir / name).string();
    if (!fs::exists(file)) throw std::runtime_error("checkpoint file missing: " + file);
    auto bytes = io::read_file(file);
    if (bytes.size() != info.at("bytes").get<size_t>()) {
      throw std::runtime_error("checkpoint file '" + file + "' is truncated or altered: " +
                               std::to_string(bytes.size()) + " bytes, expected " +
                               std::to_string(info.at("bytes").get<size_t>()));
    }
    if (crc32_of(bytes) != info.at("crc32").get<uint32_t>()) {
      throw std::runtime_error("checkpoint file '" + file + "' is corrupt (CRC-32 mismatch)");
    }
    files[name] = std::move(bytes);
  }
  for (const char* required : {"model.safetensors", "trainer_state.json", "config.yaml"}) {
    if (!files.count(required)) {
      throw std::runtime_error("checkpoint '" + dir.string() + "' lacks " + required);
    }
  }
  CheckpointContents contents;
  contents.model =
      io::parse_safetensors(files["model.safetensors"], (dir / "model.safetensors").string())
          .tensors;
  if (files.count("rng.safetensors")) {
    contents.rng =
        io::parse_safetensors(files["rng.safetensors"], (dir / "rng.safetensors").string()).tensors;
  }
  contents.optimizer = files["optimizer.pt"];
  contents.trainer_state = nlohmann::json::parse(files["trainer_state.json"]);
  contents.config_yaml = files["config.yaml"];
  return contents;
}

std::map<std::string, torch::Tensor> module_state(const torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> state;
  for (const auto& item : module.named_parameters()) state[item.key()] = item.value().detach();
  for (const auto& item : module.named_buffers()) state[item.key()] = item.value().detach();
  return state;
}

void load_module_state(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& state,
                       bool strict, const std::string& prefix) {
  std::map<std::string, torch::Tensor> targets;
  for (auto& item : module.named_parameters()) targets[item.key()] = item.value();
  for (auto& item : module.named_buffers()) targets[item.key()] = item.value();

  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  std::string problems;
  size_t used = 0;
  for (const auto& [full_name, value] : state) {
    if (full_name.rfind(prefix, 0) != 0) continue;
    const auto name = full_name.substr(prefix.size());
    auto it = targets.find(name);
    if (it == targets.end()) {
      if (strict) problems += "\n  unexpected tensor '" + full_name + "'";
      continue;
    }
    if (it->second.sizes() != value.sizes()) {
      std::ostringstream msg;
      msg << "\n  '" << full_name << "' has shape " << value.sizes() << ", the model expects "
          << it->second.sizes();
      problems += msg.str();
      continue;
    }
    copies.emplace_back(it->second, value);
    ++used;
  }
  if (strict && used != targets.size()) {
    for (const auto& [name, t] : targets) {
      if (!state.count(prefix + name)) problems += "\n  missing tensor '" + prefix + name + "'";
    }
  }
  if (!problems.empty()) {
    throw std::runtime_error(
        "checkpoint does not match the model (was it made with another "
        "config?):" +
        problems);
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, value] : copies) target.copy_(value);
}

std::string optimizer_bytes(const torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

void load_optimizer_bytes(torch::optim::Optimizer& optimizer, const std::string& bytes) {
  std::istringstream in(bytes);
  torch::serialize::InputArchive archive;
  archive.load_from(in);
  optimizer.load(archive);
}

}  // namespace data2vec::train
