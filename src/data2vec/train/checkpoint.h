// Checkpoints that never corrupt and resume exactly.
//
// Layout: RUN/checkpoints/step_<N>/ and RUN/checkpoints/last -> step_<N> (a symlink), each with
//   model.safetensors   every parameter and buffer of the model under its module path
//                       (Data2Vec: student.*, teacher.*, head.*)
//   optimizer.pt        optimizer state (LibTorch archive)
//   rng.safetensors     random generator states
//   trainer_state.json  step, data position, counters
//   config.yaml         the resolved configuration
//   checkpoint.json     format version and the size and CRC-32 of every file above, written last
// A checkpoint is written into step_<N>.tmp, each file fsync'd, then renamed: a kill at any
// moment leaves the previous checkpoint intact. Loading verifies every size and CRC first and
// refuses a damaged checkpoint before touching the model.
#pragma once

#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace data2vec::train {

inline constexpr int kCheckpointFormatVersion = 1;

struct CheckpointContents {
  std::map<std::string, torch::Tensor> model;  // name -> tensor (CPU)
  std::string optimizer;                       // serialized optimizer archive (empty: none)
  std::map<std::string, torch::Tensor> rng;    // generator name -> state
  nlohmann::json trainer_state;
  std::string config_yaml;
};

// Writes `contents` as RUN/checkpoints/step_<step>, points `last` at it, and removes the oldest
// step_* directories beyond `keep` (0 keeps all). Returns the checkpoint directory.
std::string save_checkpoint(const std::string& run_dir, int64_t step,
                            const CheckpointContents& contents, int64_t keep);

// Reads and verifies a checkpoint directory (a step_<N> or `last`, or a run directory, which
// means its checkpoints/last). Throws, naming the file, when anything is missing or damaged.
CheckpointContents read_checkpoint(const std::string& path);

// Removes what an interrupted or failed write leaves in a run directory (RUN/config.yaml.tmp,
// RUN/checkpoints/step_<N>.tmp and last.tmp); a run starting or resuming there calls it first.
void remove_stale_temporaries(const std::string& run_dir);

// The checkpoint directory a path names (see read_checkpoint), or nullopt when there is none.
std::optional<std::string> resolve_checkpoint_dir(const std::string& path);

// Every parameter and buffer of `module`, by name, detached.
std::map<std::string, torch::Tensor> module_state(const torch::nn::Module& module);

// Copies `state` into `module`. Names and shapes are all checked before anything is copied;
// with `strict`, a missing or unexpected name is an error. With `prefix`, only entries under it
// are used and the prefix is removed (e.g. "student." to load an encoder).
void load_module_state(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& state,
                       bool strict = true, const std::string& prefix = "");

// Optimizer state to bytes and back (LibTorch's archive format). The bytes are a function of the
// state alone: two identical runs write identical files. `source` names the bytes (e.g. the
// checkpoint's optimizer.pt) in the error thrown when they are not an archive this optimizer
// can load.
std::string optimizer_bytes(const torch::optim::Optimizer& optimizer);
void load_optimizer_bytes(torch::optim::Optimizer& optimizer, const std::string& bytes,
                          const std::string& source = "optimizer state");

}  // namespace data2vec::train
