#include "data2vec/io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "data2vec/io/files.h"

namespace data2vec::io {

namespace {

struct DtypeName {
  torch::ScalarType type;
  const char* name;
};

constexpr DtypeName kDtypes[] = {
    {torch::kFloat64, "F64"}, {torch::kFloat32, "F32"}, {torch::kFloat16, "F16"},
    {torch::kBFloat16, "BF16"}, {torch::kInt64, "I64"}, {torch::kInt32, "I32"},
    {torch::kInt16, "I16"},   {torch::kInt8, "I8"},     {torch::kUInt8, "U8"},
    {torch::kBool, "BOOL"},
};

std::string dtype_name(torch::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return d.name;
  }
  throw std::invalid_argument(std::string("safetensors: unsupported dtype ") +
                              c10::toString(type));
}

[[noreturn]] void corrupt(const std::string& name, const std::string& why) {
  throw std::runtime_error("safetensors file '" + name + "' is corrupt or truncated: " + why);
}

torch::ScalarType dtype_from_name(const std::string& dtype, const std::string& file,
                                  const std::string& tensor) {
  for (const auto& d : kDtypes) {
    if (dtype == d.name) return d.type;
  }
  corrupt(file, "tensor '" + tensor + "' has unknown dtype '" + dtype + "'");
}

// A JSON list of integers, strictly: nlohmann would convert 1e30 or -1 to an integer type
// (undefined or wrapped).
template <typename Int>
std::vector<Int> integer_list(const nlohmann::json& list, const std::string& file,
                              const std::string& tensor, const char* field) {
  if (!list.is_array()) corrupt(file, "tensor '" + tensor + "': " + field + " is not a list");
  std::vector<Int> out;
  for (const auto& item : list) {
    const bool ok = std::is_signed_v<Int> ? item.is_number_integer() : item.is_number_unsigned();
    if (!ok) {
      corrupt(file, "tensor '" + tensor + "': " + field + " holds " + item.dump() +
                        ", not a" + (std::is_signed_v<Int> ? "n" : " non-negative") + " integer");
    }
    out.push_back(item.get<Int>());
  }
  return out;
}

}  // namespace

std::string safetensors_bytes(const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TORCH_CHECK(!header.contains(name), "safetensors: duplicate tensor name '", name, "'");
    auto t = tensor.detach().cpu().contiguous();
    const uint64_t size = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + size}}};
    offset += size;
    contiguous.push_back(std::move(t));
  }
  std::string json = header.dump();
  // Pad the header with spaces so tensor data starts 8-byte aligned (as the reference writer does).
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += json;
  for (const auto& t : contiguous) {
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  }
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_file_atomically(path, safetensors_bytes(tensors, metadata));
}

SafetensorsContent parse_safetensors(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 8) corrupt(name, "shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= uint64_t(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (header_len > bytes.size() - 8) {
    corrupt(name, "header length " + std::to_string(header_len) + " exceeds the file size " +
                      std::to_string(bytes.size()));
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    corrupt(name, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) corrupt(name, "header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - header_len;
  const char* data = bytes.data() + 8 + header_len;

  SafetensorsContent content;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) corrupt(name, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) corrupt(name, "__metadata__ value '" + mk + "' is not a string");
        content.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    try {
      const auto type = dtype_from_name(value.at("dtype").get<std::string>(), name, key);
      const auto shape = integer_list<int64_t>(value.at("shape"), name, key, "shape");
      const auto offsets = integer_list<uint64_t>(value.at("data_offsets"), name, key,
                                                  "data_offsets");
      if (offsets.size() != 2 || offsets[0] > offsets[1] || offsets[1] > data_size) {
        corrupt(name, "tensor '" + key + "' has data offsets outside the " +
                          std::to_string(data_size) + " data bytes");
      }
      // Element count and byte size, refused before they can overflow: a shape such as
      // [2^32, 2^32] would otherwise wrap to 0 bytes and pass the size check.
      int64_t numel = 1;
      for (auto s : shape) {
        if (s < 0) corrupt(name, "tensor '" + key + "' has a negative dimension");
        if (__builtin_mul_overflow(numel, s, &numel)) {
          corrupt(name, "tensor '" + key + "' has a shape whose element count overflows 64 bits");
        }
      }
      int64_t signed_bytes = 0;
      if (__builtin_mul_overflow(numel, int64_t(c10::elementSize(type)), &signed_bytes)) {
        corrupt(name, "tensor '" + key + "' has a shape whose byte size overflows 64 bits");
      }
      const auto expected = static_cast<uint64_t>(signed_bytes);
      if (offsets[1] - offsets[0] != expected) {
        corrupt(name, "tensor '" + key + "' holds " + std::to_string(offsets[1] - offsets[0]) +
                          " bytes but its shape needs " + std::to_string(expected));
      }
      auto tensor = torch::empty(shape, torch::TensorOptions().dtype(type));
      if (expected > 0) std::memcpy(tensor.data_ptr(), data + offsets[0], expected);
      ranges.emplace_back(offsets[0], offsets[1]);
      content.tensors.emplace(key, std::move(tensor));
    } catch (const nlohmann::json::exception& e) {
      corrupt(name, "tensor '" + key + "' has a malformed entry (" + e.what() + ")");
    }
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) corrupt(name, "tensor data ranges overlap");
  }
  return content;
}

SafetensorsContent load_safetensors(const std::string& path) {
  return parse_safetensors(read_file(path), path);
}

}  // namespace data2vec::io
