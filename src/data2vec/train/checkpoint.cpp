#include "data2vec/train/checkpoint.h"

#include <spdlog/spdlog.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/train/optimizer.h"

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

// checkpoint.json must be what save_checkpoint writes: a version, and for each file (a plain name
// in the directory) its size and CRC-32 as unsigned integers. Anything else is named here, not
// left to surface later as a JSON library's type error.
void check_manifest(const nlohmann::json& manifest, const std::string& path) {
  auto bad = [&](const std::string& what) {
    throw std::runtime_error("checkpoint manifest '" + path + "': " + what);
  };
  if (!manifest.is_object()) bad("expected a JSON object");
  if (!manifest.contains("version")) bad("no 'version' field");
  if (!manifest["version"].is_number_integer()) bad("field 'version' is not an integer");
  if (!manifest.contains("files")) bad("no 'files' table (the size and CRC-32 of each file)");
  if (!manifest["files"].is_object()) bad("field 'files' is not a table of files");
  for (const auto& [name, info] : manifest["files"].items()) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      bad("'" + name + "' in 'files' is not a file name in the checkpoint directory");
    for (const char* field : {"bytes", "crc32"}) {
      if (!info.is_object() || !info.contains(field) || !info[field].is_number_unsigned())
        bad("field 'files." + name + "." + field + "' is missing or not a non-negative integer");
    }
  }
}

// trainer_state.json: a JSON object whose step and data_position are integers (what resume
// needs); named when it is not.
nlohmann::json parse_trainer_state(const std::string& text, const std::string& path) {
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("checkpoint file '" + path + "' is corrupt: " + e.what());
  }
  for (const char* field : {"step", "data_position"}) {
    if (!state.is_object() || !state.contains(field) || !state[field].is_number_integer()) {
      throw std::runtime_error("checkpoint file '" + path + "': field '" + field +
                               "' is missing or not an integer");
    }
  }
  return state;
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

  // A failed write (a full disk, a file-size limit) takes the partial directory with it: left
  // behind it would hold the space that is missing until someone removed it by hand.
  try {
    std::map<std::string, std::string> files;
    files["model.safetensors"] = io::safetensors_bytes(
        sorted_named(contents.model), {{"format", "data2vec.cpp"}, {"step", std::to_string(step)}});
    files["optimizer.pt"] = contents.optimizer;
    files["rng.safetensors"] = io::safetensors_bytes(sorted_named(contents.rng));
    files["trainer_state.json"] = contents.trainer_state.dump(2) + "\n";
    files["config.yaml"] = contents.config_yaml;

    nlohmann::json manifest = {{"format", "data2vec.cpp checkpoint"},
                               {"version", kCheckpointFormatVersion},
                               {"step", step}};
    for (const auto& [name, bytes] : files) {
      io::write_file_atomically((tmp_dir / name).string(), bytes);
      manifest["files"][name] = {{"bytes", bytes.size()}, {"crc32", crc32_of(bytes)}};
    }
    // The manifest goes last: a directory without it was never finished.
    io::write_file_atomically((tmp_dir / "checkpoint.json").string(), manifest.dump(2) + "\n");
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp_dir, ignored);
    throw;
  }

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

void remove_stale_temporaries(const std::string& run_dir) {
  std::error_code ignored;
  fs::remove(fs::path(run_dir) / "config.yaml.tmp", ignored);
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root)) return;
  for (const auto& entry : fs::directory_iterator(root)) {
    const auto name = entry.path().filename().string();
    const bool ours = name == "last.tmp" || (name.rfind("step_", 0) == 0 && name.size() > 4 &&
                                             name.compare(name.size() - 4, 4, ".tmp") == 0);
    if (!ours) continue;
    spdlog::info("removing {}, left by an interrupted or failed checkpoint write",
                 entry.path().string());
    fs::remove_all(entry.path(), ignored);
  }
}

std::optional<std::string> resolve_checkpoint_dir(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "checkpoint.json")) return p.string();
  if (fs::exists(p / "checkpoints" / "last" / "checkpoint.json")) {
    return fs::canonical(p / "checkpoints" / "last").string();
  }
  // `last` missing or dangling (its step deleted by hand, say, to fall back from a damaged
  // one): the run's newest complete step_<N> is still its checkpoint.
  const fs::path root = p / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return std::nullopt;
  std::optional<std::pair<int64_t, fs::path>> newest;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const auto name = entry.path().filename().string();
    if (name.rfind("step_", 0) != 0 || name.size() == 5 || name.size() > 23) continue;
    if (name.find_first_not_of("0123456789", 5) != std::string::npos) continue;
    if (!fs::exists(entry.path() / "checkpoint.json", ec)) continue;
    const int64_t step = std::stoll(name.substr(5));
    if (!newest || step > newest->first) newest = {step, entry.path()};
  }
  if (!newest) return std::nullopt;
  spdlog::warn("{} is missing or broken; using the run's newest checkpoint, {}",
               (root / "last").string(), newest->second.string());
  return newest->second.string();
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
  check_manifest(manifest, manifest_path);
  if (manifest.at("version").get<int>() != kCheckpointFormatVersion) {
    throw std::runtime_error("checkpoint '" + dir.string() + "' has format version " +
                             std::to_string(manifest.at("version").get<int>()) +
                             "; this build reads " + std::to_string(kCheckpointFormatVersion));
  }
  std::map<std::string, std::string> files;
  for (const auto& [name, info] : manifest.at("files").items()) {
    const auto file = (dir / name).string();
    if (!fs::exists(file)) throw std::runtime_error("checkpoint file missing: " + file);
    auto bytes = io::read_file(file);
    if (bytes.size() != info.at("bytes").get<uint64_t>()) {
      throw std::runtime_error("checkpoint file '" + file + "' is truncated or altered: " +
                               std::to_string(bytes.size()) + " bytes, expected " +
                               std::to_string(info.at("bytes").get<uint64_t>()));
    }
    if (crc32_of(bytes) != info.at("crc32").get<uint64_t>()) {
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
  contents.trainer_state =
      parse_trainer_state(files["trainer_state.json"], (dir / "trainer_state.json").string());
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
  // LibTorch's Optimizer::save keys each parameter's state by the address of its TensorImpl and
  // writes the states in hash-map order, so two identical runs give different bytes. This writes
  // the same archive layout (torch/optim/serialize.h) with the keys "<group>.<index>" in
  // parameter order: identical state, identical bytes. load_optimizer_bytes maps keys to
  // parameters by position, so it reads these archives and address-keyed ones alike.
  torch::serialize::OutputArchive archive;
  archive.write("pytorch_version", c10::IValue("1.5.0"));
  torch::serialize::OutputArchive state(archive.compilation_unit());
  torch::serialize::OutputArchive groups(archive.compilation_unit());
  const auto& param_groups = optimizer.param_groups();
  groups.write("param_groups/size", torch::tensor(int64_t(param_groups.size())));
  for (size_t g = 0; g < param_groups.size(); ++g) {
    torch::serialize::OutputArchive group(archive.compilation_unit());
    const auto& params = param_groups[g].params();
    group.write("params/size", torch::tensor(int64_t(params.size())));
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string key = std::to_string(g) + "." + std::to_string(i);
      group.write("params/" + std::to_string(i), c10::IValue(key));
      const auto* found = parameter_state(optimizer, params[i]);
      if (found == nullptr) continue;  // no step taken yet
      torch::serialize::OutputArchive param_state(archive.compilation_unit());
      found->serialize(param_state);
      state.write(key, param_state);
    }
    torch::serialize::OutputArchive options(archive.compilation_unit());
    param_groups[g].options().serialize(options);
    group.write("options", options);
    groups.write("param_groups/" + std::to_string(g), group);
  }
  archive.write("state", state);
  archive.write("param_groups", groups);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

namespace {

// Optimizer::load of LibTorch 2.x parses every state key as an address (std::stoull): the
// "<group>.<index>" keys above would collide there ("0.1" and "0.2" both read as 0). This reads
// the same layout by key string and parameter position on every LibTorch, so archives written
// by optimizer_bytes, by Optimizer::save of any version, and by the Adam of older runs (the same
// fields) all load.
void load_adamw_archive(torch::optim::AdamW& optimizer, torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive states;
  torch::serialize::InputArchive groups;
  archive.read("state", states);
  archive.read("param_groups", groups);
  torch::Tensor count;
  groups.read("param_groups/size", count);
  auto& param_groups = optimizer.param_groups();
  if (count.item<int64_t>() != int64_t(param_groups.size())) {
    throw std::runtime_error(std::to_string(count.item<int64_t>()) + " parameter groups, not " +
                             std::to_string(param_groups.size()));
  }
  for (size_t g = 0; g < param_groups.size(); ++g) {
    torch::serialize::InputArchive group;
    groups.read("param_groups/" + std::to_string(g), group);
    const auto& params = param_groups[g].params();
    group.read("params/size", count);
    if (count.item<int64_t>() != int64_t(params.size())) {
      throw std::runtime_error("group " + std::to_string(g) + " has " +
                               std::to_string(count.item<int64_t>()) + " parameters, not " +
                               std::to_string(params.size()));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      c10::IValue key;
      group.read("params/" + std::to_string(i), key);
      torch::serialize::InputArchive saved;
      if (!states.try_read(key.toStringRef(), saved)) continue;  // no step taken yet
      auto state = std::make_unique<torch::optim::AdamWParamState>();
      state->serialize(saved);
      set_parameter_state(optimizer, params[i], std::move(state));
    }
    torch::serialize::InputArchive options;
    group.read("options", options);
    static_cast<torch::optim::AdamWOptions&>(param_groups[g].options()).serialize(options);
  }
}

}  // namespace

void load_optimizer_bytes(torch::optim::Optimizer& optimizer, const std::string& bytes,
                          const std::string& source) {
  try {
    std::istringstream in(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    if (auto* adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer)) {
      load_adamw_archive(*adamw, archive);
    } else {
      optimizer.load(archive);
    }
  } catch (const std::exception& e) {
    const auto* error = dynamic_cast<const c10::Error*>(&e);
    throw std::runtime_error(source + ": not an optimizer state this optimizer can load (" +
                             (error ? error->what_without_backtrace() : e.what()) + ")");
  }
}

}  // namespace data2vec::train
