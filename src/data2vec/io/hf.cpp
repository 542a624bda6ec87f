#include "data2vec/io/hf.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"

namespace data2vec::io {

namespace fs = std::filesystem;

// ---- config.json ----------------------------------------------------------------------------

HfConfig::HfConfig(nlohmann::json json, std::string source)
    : json_(std::move(json)), source_(std::move(source)) {
  if (!json_.is_object()) throw std::invalid_argument(source_ + ": not a JSON object");
}

HfConfig HfConfig::load(const std::string& path) {
  const auto file = fs::is_directory(path) ? (fs::path(path) / "config.json").string() : path;
  if (!fs::exists(file)) throw std::invalid_argument("no config.json at '" + file + "'");
  try {
    return HfConfig(nlohmann::json::parse(read_file(file)), file);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(file + ": not valid JSON (" + e.what() + ")");
  }
}

bool HfConfig::has(const std::string& key) const {
  return json_.contains(key) && !json_.at(key).is_null();
}

void HfConfig::bad_type(const std::string& key, const char* expected) const {
  throw std::invalid_argument(source_ + ": key '" + key + "' = " + json_.at(key).dump() +
                              ": expected " + expected);
}

void HfConfig::unsupported(const std::string& key, const std::string& why) const {
  const std::string value = json_.contains(key) ? json_.at(key).dump() : "(absent)";
  throw std::invalid_argument(source_ + ": key '" + key + "' = " + value +
                              " is not supported: " + why);
}

int64_t HfConfig::get_int(const std::string& key, int64_t fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (!v.is_number_integer()) bad_type(key, "an integer");
  return v.get<int64_t>();
}

double HfConfig::get_double(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (!v.is_number()) bad_type(key, "a number");
  return v.get<double>();
}

bool HfConfig::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (!v.is_boolean()) bad_type(key, "true or false");
  return v.get<bool>();
}

std::string HfConfig::get_string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (!v.is_string()) bad_type(key, "a string");
  return v.get<std::string>();
}

std::vector<int64_t> HfConfig::get_int_list(const std::string& key,
                                            const std::vector<int64_t>& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = json_.at(key);
  if (!v.is_array()) bad_type(key, "a list of integers");
  std::vector<int64_t> out;
  for (const auto& item : v) {
    if (!item.is_number_integer()) bad_type(key, "a list of integers");
    out.push_back(item.get<int64_t>());
  }
  return out;
}

void HfConfig::require_one_of(const std::string& key, const std::vector<std::string>& allowed,
                              const std::string& fallback) const {
  const auto value = get_string(key, fallback);
  for (const auto& a : allowed) {
    if (value == a) return;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  unsupported(key, "this port implements " + list);
}

std::pair<int64_t, int64_t> HfConfig::width_and_heads() const {
  const auto dim = get_int("hidden_size", 768), heads = get_int("num_attention_heads", 12);
  if (dim <= 0 || heads <= 0 || dim % heads != 0) {
    unsupported("num_attention_heads", "hidden_size must divide into the heads");
  }
  return {dim, heads};
}

nlohmann::json hf_transformer_config(const std::string& model_type, const std::string& architecture,
                                     int64_t dim, int64_t depth, int64_t heads, int64_t mlp_dim) {
  return {{"model_type", model_type},     {"architectures", {architecture}},
          {"torch_dtype", "float32"},     {"hidden_size", dim},
          {"num_hidden_layers", depth},   {"num_attention_heads", heads},
          {"intermediate_size", mlp_dim}, {"hidden_act", "gelu"},
          {"initializer_range", 0.02}};
}

std::string HfConfig::architecture() const {
  if (!has("architectures")) return "";
  const auto& v = json_.at("architectures");
  if (!v.is_array() || v.empty() || !v.at(0).is_string()) {
    bad_type("architectures", "a list of class names");
  }
  return v.at(0).get<std::string>();
}

// ---- pytorch_model.bin ----------------------------------------------------------------------

namespace {

[[noreturn]] void bad_pickle(const std::string& path, const std::string& why) {
  throw std::runtime_error("'" + path + "' is not a readable PyTorch state dict: " + why);
}

// LibTorch 1.13's unpickler turns `collections.OrderedDict` into None (it only expects one as a
// tensor's empty backward-hook table) and has no SETITEM, but `model.state_dict()` is an
// OrderedDict with a `_metadata` attribute, and pickle writes SETITEM for a batch of one entry.
// This pass rewrites the protocol-2 opcode stream so that the unpickler sees plain dicts:
//   OrderedDict()  (the class by GLOBAL or from the memo, EMPTY_TUPLE, REDUCE) -> EMPTY_DICT
//   BUILD          (sets `_metadata` on the dict)  -> removed, with the state it would set
//   key value SETITEM                                          -> MARK key value SETITEMS
// To place that MARK it follows where each stack item began in the output. Memo slots are
// numbered, not byte offsets, so inserting a byte moves nothing else.
std::string plain_dict_pickle(const std::string& in, const std::string& path) {
  std::string out;
  out.reserve(in.size() + 64);
  size_t pos = 0;
  auto need = [&](size_t n) {
    if (pos + n > in.size()) bad_pickle(path, "data.pkl ends inside an opcode");
  };
  auto uint_le = [&](size_t at, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(uint8_t(in[at + i])) << (8 * i);
    return v;
  };
  auto line_end = [&](size_t from) {
    const auto nl = in.find('\n', from);
    if (nl == std::string::npos) bad_pickle(path, "data.pkl: unterminated GLOBAL");
    return nl + 1;
  };
  // LibTorch's unpickler grows its memo table to the slot number: a damaged LONG_BINPUT to
  // slot 2^31 asks for 32 GiB. pickle numbers slots 0, 1, 2, ... as it memoizes, so a slot
  // past the pickle's size is damage (found by fuzz/fuzz_torch_state_dict).
  auto memo_slot = [&](size_t at, size_t n) {
    const auto slot = uint_le(at, n);
    if (slot > in.size()) {
      bad_pickle(path, "data.pkl memoizes to slot " + std::to_string(slot) +
                           ", more slots than the pickle has bytes");
    }
    return slot;
  };
  // Output offset where each stack item's opcodes begin; kMark entries are MARKs.
  constexpr size_t kMark = size_t(-1);
  std::vector<std::pair<size_t, size_t>> stack;  // (start offset, kMark or 0)
  auto pop = [&](size_t n) {
    if (stack.size() < n) bad_pickle(path, "data.pkl pops an empty stack");
    size_t start = stack[stack.size() - n].first;
    stack.resize(stack.size() - n);
    return start;
  };
  auto pop_to_mark = [&]() {
    while (!stack.empty() && stack.back().second != kMark) stack.pop_back();
    if (stack.empty()) bad_pickle(path, "data.pkl has no MARK to pop to");
    const auto start = stack.back().first;
    stack.pop_back();
    return start;
  };
  std::set<uint64_t> ordered_dict_memo;         // memo slots holding the OrderedDict class
  std::map<uint64_t, size_t> memo_offset;       // memo slot -> output offset of its BINPUT
  std::set<uint64_t> removed_memo;              // slots whose BINPUT was removed with a state
  auto ordered_dict_call = [&](size_t start) {  // the class is read: expect `)` `R`
    if (pos + 2 <= in.size() && in[pos] == ')' && in[pos + 1] == 'R') {
      pos += 2;
      out += '}';
      stack.push_back({start, 0});
      return;
    }
    bad_pickle(path, "data.pkl uses collections.OrderedDict other than as OrderedDict()");
  };
  while (pos < in.size()) {
    const char op = in[pos];
    const size_t start = pos++;
    const size_t at = out.size();  // where this opcode lands in the output
    size_t arg = 0;                // bytes of argument after the opcode
    int pops = 0;                  // stack items consumed (-1: to the mark)
    bool pushes = false;
    switch (op) {
      case 'c': {  // GLOBAL module\nname\n
        const auto name_end = line_end(line_end(pos));
        const std::string global = in.substr(pos, name_end - pos);
        pos = name_end;
        if (global != "collections\nOrderedDict\n") {
          out.append(in, start, pos - start);
          stack.push_back({at, 0});
          continue;
        }
        if (pos < in.size() && (in[pos] == 'q' || in[pos] == 'r')) {  // memoized right away
          const size_t n = in[pos] == 'q' ? 1 : 4;
          need(1 + n);
          ordered_dict_memo.insert(memo_slot(pos + 1, n));
          pos += 1 + n;
        }
        ordered_dict_call(at);
        continue;
      }
      case 'h':
      case 'j': {  // BINGET / LONG_BINGET
        const size_t n = op == 'h' ? 1 : 4;
        need(n);
        const auto slot = uint_le(pos, n);
        pos += n;
        if (removed_memo.count(slot)) {
          bad_pickle(path, "data.pkl reuses an object of a dropped _metadata state");
        }
        if (ordered_dict_memo.count(slot)) {
          ordered_dict_call(at);
        } else {
          out.append(in, start, pos - start);
          stack.push_back({at, 0});
        }
        continue;
      }
      case 'b': {  // BUILD: drop it and the state it would set (OrderedDict._metadata)
        const auto state_start = pop(1);
        for (const auto& [slot, offset] : memo_offset) {
          if (offset >= state_start) removed_memo.insert(slot);
        }
        out.erase(state_start);
        continue;
      }
      case 's': {  // SETITEM -> MARK before the key, SETITEMS
        const auto key_start = pop(2);
        out.insert(key_start, 1, '(');
        out += 'u';
        continue;
      }
      case '(':
        out += '(';
        stack.push_back({at, kMark});
        continue;
      case '\x80':
        arg = 1;
        break;   // PROTO
      case 'q':  // BINPUT
      case 'r':  // LONG_BINPUT
        arg = op == 'q' ? 1 : 4;
        need(arg);
        memo_offset[memo_slot(pos, arg)] = at;
        break;
      case 'K':
      case 'U':
      case 'C':
        arg = 1;
        pushes = true;
        break;
      case 'M':
        arg = 2;
        pushes = true;
        break;
      case 'J':
        arg = 4;
        pushes = true;
        break;
      case 'G':
        arg = 8;
        pushes = true;
        break;
      case 'X':
      case 'T':
      case 'B':  // 4-byte length + data
        need(4);
        arg = 4 + uint_le(pos, 4);
        pushes = true;
        break;
      case '\x8a':
      case '\x8c':  // LONG1, SHORT_BINUNICODE: 1-byte length + data
        need(1);
        arg = 1 + uint_le(pos, 1);
        pushes = true;
        break;
      case '\x8b':  // LONG4
        need(4);
        arg = 4 + uint_le(pos, 4);
        pushes = true;
        break;
      case '\x95':
      case '\x8d':
      case '\x8e':  // FRAME, BINUNICODE8, BINBYTES8
        bad_pickle(path, "pickle protocol 4+ (torch.save uses protocol 2)");
      case '}':
      case ')':
      case ']':
      case 'N':
      case '\x88':
      case '\x89':
      case '2':
        pushes = true;
        break;
      case 't':  // TUPLE: the mark's items -> one item that began at the mark
        stack.push_back({pop_to_mark(), 0});
        out += op;
        continue;
      case '\x85':
      case '\x86':
      case '\x87': {  // TUPLE1..3
        const auto first = pop(size_t(op - '\x85' + 1));
        stack.push_back({first, 0});
        out += op;
        continue;
      }
      case 'R':
      case '\x81':
      case 'a':
      case '0':
        pops = 1;
        break;     // args / item / popped
      case 'Q': {  // BINPERSID: the id -> the object, same start
        const auto id_start = pop(1);
        stack.push_back({id_start, 0});
        out += op;
        continue;
      }
      case 'u':
      case 'e':
      case '1':
        pops = -1;
        break;
      case '.':
        break;
      default:
        bad_pickle(path, "data.pkl has an unexpected opcode " +
                             std::to_string(int(static_cast<unsigned char>(op))));
    }
    need(arg);
    pos += arg;
    out.append(in, start, pos - start);
    if (pops == -1) pop_to_mark();
    if (pops > 0) pop(size_t(pops));
    if (pushes) stack.push_back({at, 0});
  }
  return out;
}

// LibTorch's unpickler takes a tensor's sizes, strides and offset from the pickle and its
// storage size from the pickle too, without checking them against the bytes the archive holds.
// Returns why `tensor` would read outside the `available` bytes of its record ("" when it fits),
// counted in 64 bits with every product checked for overflow.
std::string storage_overrun(const torch::Tensor& tensor, size_t available) {
  const auto sizes = tensor.sizes();
  const auto strides = tensor.strides();
  if (tensor.storage_offset() < 0) return "has a negative storage offset";
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] < 0 || strides[d] < 0) return "has a negative size or stride";
    if (sizes[d] == 0) return "";  // no elements: nothing is read
  }
  int64_t last = tensor.storage_offset();  // index of the furthest element
  for (size_t d = 0; d < sizes.size(); ++d) {
    int64_t step = 0;
    if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return "has a shape whose element count overflows 64 bits";
    }
  }
  int64_t end = 0;
  if (__builtin_add_overflow(last, 1, &last) ||
      __builtin_mul_overflow(last, int64_t(tensor.dtype().itemsize()), &end)) {
    return "has a shape whose byte size overflows 64 bits";
  }
  if (uint64_t(end) > available) {
    return "needs " + std::to_string(end) + " bytes of storage but the archive holds " +
           std::to_string(available);
  }
  return "";
}

}  // namespace

StateDict read_torch_state_dict(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader zip(path);
    if (!zip.hasRecord("data.pkl")) bad_pickle(path, "no data.pkl in the archive");
    const auto [pkl_ptr, pkl_size] = zip.getRecord("data.pkl");
    const std::string pickle =
        plain_dict_pickle(std::string(static_cast<const char*>(pkl_ptr.get()), pkl_size), path);
    size_t offset = 0;
    auto reader = [&](char* buffer, size_t n) -> size_t {
      const size_t take = std::min(n, pickle.size() - offset);
      std::memcpy(buffer, pickle.data() + offset, take);
      offset += take;
      return take;
    };
    std::map<const void*, size_t> record_bytes;  // storage data -> bytes the archive holds
    auto read_record = [&](const std::string& name) {
      const std::string record = "data/" + name;
      if (!zip.hasRecord(record)) bad_pickle(path, "missing tensor data '" + record + "'");
      auto [data, bytes] = zip.getRecord(record);
      record_bytes[data.get()] = bytes;
      return std::move(data);
    };
    torch::jit::Unpickler unpickler(reader, nullptr, nullptr, read_record, c10::Device("cpu"));
    const auto value = unpickler.parse_ivalue();
    if (!value.isGenericDict()) bad_pickle(path, "the pickle is not a dict");
    StateDict state;
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString()) bad_pickle(path, "a key is not a string");
      if (!entry.value().isTensor()) {
        bad_pickle(path, "entry '" + entry.key().toStringRef() + "' is not a tensor");
      }
      const auto& tensor = entry.value().toTensor();
      const auto it = record_bytes.find(tensor.storage().data());
      const auto why = storage_overrun(tensor, it == record_bytes.end() ? 0 : it->second);
      if (!why.empty()) bad_pickle(path, "tensor '" + entry.key().toStringRef() + "' " + why);
      state[entry.key().toStringRef()] = tensor.contiguous();
    }
    return state;
  } catch (const c10::Error& e) {
    bad_pickle(path, e.what_without_backtrace());
  } catch (const std::logic_error& e) {  // the unpickler's vector::at on a damaged pickle
    bad_pickle(path, e.what());          // (found by fuzz/fuzz_torch_state_dict)
  }
}

StateDict read_hf_weights(const std::string& dir) {
  const auto safetensors = (fs::path(dir) / "model.safetensors").string();
  const auto bin = (fs::path(dir) / "pytorch_model.bin").string();
  if (fs::exists(safetensors)) return load_safetensors(safetensors).tensors;
  if (fs::exists(bin)) return read_torch_state_dict(bin);
  if (fs::exists(fs::path(dir) / "model.safetensors.index.json") ||
      fs::exists(fs::path(dir) / "pytorch_model.bin.index.json")) {
    throw std::invalid_argument("'" + dir +
                                "' holds a sharded checkpoint (*.index.json); this importer reads "
                                "one model.safetensors or pytorch_model.bin");
  }
  throw std::invalid_argument("'" + dir + "' has neither model.safetensors nor pytorch_model.bin");
}

// ---- name tables ----------------------------------------------------------------------------

namespace {

std::string shape_string(const torch::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

}  // namespace

StateDict state_from_hf(const StateDict& ours, const StateDict& hf, const NameTable& names,
                        const std::string& prefix, const std::string& source) {
  StateDict state;
  std::set<std::string> used;
  std::vector<std::string> problems;
  for (const auto& [name, target] : ours) {
    const auto hf_name = names.to_hf(name);
    if (hf_name.empty()) continue;  // computed, not stored
    const auto it = hf.find(prefix + hf_name);
    if (it == hf.end()) {
      problems.push_back("missing tensor '" + prefix + hf_name + "' (for " + name + ", shape " +
                         shape_string(target) + ")");
      continue;
    }
    used.insert(it->first);
    if (!it->second.sizes().equals(target.sizes())) {
      problems.push_back("tensor '" + it->first + "' has shape " + shape_string(it->second) +
                         ", the model expects " + shape_string(target));
      continue;
    }
    if (!it->second.is_floating_point() && target.is_floating_point()) {
      problems.push_back("tensor '" + it->first + "' is not floating point");
      continue;
    }
    state[name] = it->second.to(target.scalar_type());
  }
  for (const auto& [name, tensor] : hf) {
    if (name.rfind(prefix, 0) != 0 || used.count(name)) continue;
    if (names.ignorable(name.substr(prefix.size()))) continue;
    problems.push_back("unexpected tensor '" + name + "' " + shape_string(tensor));
  }
  if (!problems.empty()) {
    std::string message = source + ": the weights do not fit the model built from config.json:";
    for (const auto& p : problems) message += "\n  " + p;
    throw std::invalid_argument(message);
  }
  return state;
}

StateDict state_to_hf(const StateDict& ours, const NameTable& names, const std::string& prefix) {
  StateDict hf;
  for (const auto& [name, tensor] : ours) {
    const auto hf_name = names.to_hf(name);
    if (!hf_name.empty()) hf[prefix + hf_name] = tensor;
  }
  return hf;
}

}  // namespace data2vec::io
