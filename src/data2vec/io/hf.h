// Hugging Face model folders, the modality-independent part: config.json access with errors
// that name the file and key, the weights in either file format, and matching a state dict to a
// module by a name table. Each modality's hf.h says what its names and options are.
//
// A folder as `save_pretrained` writes it:
//   config.json          model_type, architectures and every attribute of the config class
//   model.safetensors    the state dict (safetensors), or
//   pytorch_model.bin    the same as `torch.save` of a dict {name: tensor} (a zip archive; read
//                        with LibTorch's own unpickler)
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace data2vec::io {

using StateDict = std::map<std::string, torch::Tensor>;

// Read access to one config.json; every error names `source` and the key.
class HfConfig {
 public:
  HfConfig(nlohmann::json json, std::string source);
  // Reads and parses DIR/config.json (or a file path).
  static HfConfig load(const std::string& path);

  bool has(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> get_int_list(const std::string& key,
                                    const std::vector<int64_t>& fallback) const;
  // An error naming the key, for a value the port does not implement.
  [[noreturn]] void unsupported(const std::string& key, const std::string& why) const;
  // Throws unless the key is absent or equals one of `allowed` (strings).
  void require_one_of(const std::string& key, const std::vector<std::string>& allowed,
                      const std::string& fallback) const;

  // hidden_size and num_attention_heads, checked to divide (the same keys in all three classes).
  std::pair<int64_t, int64_t> width_and_heads() const;

  const nlohmann::json& json() const { return json_; }
  const std::string& source() const { return source_; }
  std::string model_type() const { return get_string("model_type", ""); }
  std::string architecture() const;  // architectures[0], or "" when absent

 private:
  [[noreturn]] void bad_type(const std::string& key, const char* expected) const;
  nlohmann::json json_;
  std::string source_;
};

// The keys every Data2Vec config.json shares: model_type, architectures, dtype, the transformer's
// sizes and activation. Each modality adds its own.
nlohmann::json hf_transformer_config(const std::string& model_type, const std::string& architecture,
                                     int64_t dim, int64_t depth, int64_t heads, int64_t mlp_dim);

// The weights of a folder: model.safetensors when present, else pytorch_model.bin. Throws naming
// the folder when neither exists, and the file when it is damaged.
StateDict read_hf_weights(const std::string& dir);

// `torch.save` of a dict {name: tensor} (pytorch_model.bin), through LibTorch's unpickler. Any
// failure (not a zip, truncated, not a dict of tensors) is an error naming the file.
StateDict read_torch_state_dict(const std::string& path);

// How one module's names map to a checkpoint's.
struct NameTable {
  // Our parameter / buffer name -> the checkpoint's name ("" = not in checkpoints, e.g. a buffer
  // computed at construction).
  std::function<std::string(const std::string&)> to_hf;
  // Checkpoint names that may be present and are ignored (e.g. HF's non-persistent buffers that
  // older versions saved).
  std::function<bool(const std::string&)> ignorable = [](const std::string&) { return false; };
};

// Our state (names and tensors, converted to each target's dtype) from `hf` for a module whose
// own state is `ours`. Every one of our tensors must be found with the same shape, and every
// checkpoint tensor under `prefix` must be used or ignorable; otherwise an error lists each
// missing, unexpected or mis-shaped tensor by name (with both shapes), citing `source`.
StateDict state_from_hf(const StateDict& ours, const StateDict& hf, const NameTable& names,
                        const std::string& prefix, const std::string& source);

// The checkpoint's names for our state (buffers without a checkpoint name are left out).
StateDict state_to_hf(const StateDict& ours, const NameTable& names, const std::string& prefix);

}  // namespace data2vec::io
