// Reading and writing the safetensors format (Hugging Face):
//   [8 bytes: little-endian u64 header length N][N bytes: JSON header][raw tensor bytes]
// header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//          "__metadata__": {"key": "string value"}}
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace data2vec::io {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct SafetensorsContent {
  std::map<std::string, torch::Tensor> tensors;     // CPU, contiguous
  std::map<std::string, std::string> metadata;      // "__metadata__" entries
};

// Serialises to bytes. Tensors are written in the order given (deterministic output for a given
// input); each is moved to CPU and made contiguous first.
std::string safetensors_bytes(const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Writes atomically (temporary file, fsync, rename): a crash leaves the old file or the new one.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates the whole file; any inconsistency (short file, bad JSON, unknown dtype,
// offsets out of range or overlapping, size not matching the shape) throws an error naming the
// file and what is wrong. Nothing is returned half-read.
SafetensorsContent load_safetensors(const std::string& path);
SafetensorsContent parse_safetensors(const std::string& bytes, const std::string& name);

}  // namespace data2vec::io
