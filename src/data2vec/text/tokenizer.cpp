#include "data2vec/text/tokenizer.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <filesystem>
#include <mutex>
#include <utility>

#include "plugins/sentencepiece/d2v_sentencepiece.h"

namespace fs = std::filesystem;

namespace data2vec::text {

// The plugin's entry points, resolved once per process.
struct SentencePiecePlugin {
  std::string path;
  void* handle = nullptr;
  decltype(&d2v_spm_api_version) api_version = nullptr;
  decltype(&d2v_spm_train) train = nullptr;
  decltype(&d2v_spm_load) load = nullptr;
  decltype(&d2v_spm_free) free = nullptr;
  decltype(&d2v_spm_encode) encode = nullptr;
  decltype(&d2v_spm_free_ids) free_ids = nullptr;
  decltype(&d2v_spm_decode) decode = nullptr;
  decltype(&d2v_spm_vocab_size) vocab_size = nullptr;
  decltype(&d2v_spm_id_to_piece) id_to_piece = nullptr;
  decltype(&d2v_spm_piece_to_id) piece_to_id = nullptr;
  decltype(&d2v_spm_bos_id) bos_id = nullptr;
  decltype(&d2v_spm_eos_id) eos_id = nullptr;
  decltype(&d2v_spm_pad_id) pad_id = nullptr;
  decltype(&d2v_spm_unk_id) unk_id = nullptr;
};

namespace {

constexpr const char* kPluginName = "libd2v_sentencepiece.so";
constexpr size_t kErrLen = 1024;

std::vector<std::string> plugin_candidates() {
  std::vector<std::string> candidates;
  std::error_code ec;
  const auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back((exe.parent_path() / kPluginName).string());
    candidates.push_back((exe.parent_path().parent_path() / kPluginName).string());
  }
#ifdef D2V_SENTENCEPIECE_PLUGIN_BUILD_PATH
  candidates.push_back(D2V_SENTENCEPIECE_PLUGIN_BUILD_PATH);
#endif
  return candidates;
}

template <typename Fn>
void resolve(const SentencePiecePlugin& plugin, Fn& fn, const char* name) {
  fn = reinterpret_cast<Fn>(dlsym(plugin.handle, name));
  TORCH_CHECK(fn != nullptr, "sentencepiece plugin ", plugin.path, " lacks the symbol ", name,
              ": rebuild it with this version of data2vec (target d2v_sentencepiece)");
}

std::shared_ptr<const SentencePiecePlugin> open_plugin() {
  auto plugin = std::make_shared<SentencePiecePlugin>();
  plugin->path = SentencePieceTokenizer::plugin_path();
  // LOCAL + DEEPBIND: the plugin and its libsentencepiece bind to their own protobuf copy, never
  // to the one libtorch loaded, and leak no symbols into the process's global scope.
  plugin->handle = dlopen(plugin->path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (plugin->handle == nullptr) {
    const char* why = dlerror();
    TORCH_CHECK(false, "cannot load the sentencepiece plugin ", plugin->path, ": ",
                why ? why : "unknown error",
                " (is libsentencepiece0 installed? rebuild target d2v_sentencepiece)");
  }
  // The handle stays open for the life of the process: tokenizers may outlive any one owner.
  resolve(*plugin, plugin->api_version, "d2v_spm_api_version");
  TORCH_CHECK(plugin->api_version() == D2V_SPM_API_VERSION, "sentencepiece plugin ", plugin->path,
              " has API version ", plugin->api_version(), ", expected ", D2V_SPM_API_VERSION,
              ": rebuild target d2v_sentencepiece");
  resolve(*plugin, plugin->train, "d2v_spm_train");
  resolve(*plugin, plugin->load, "d2v_spm_load");
  resolve(*plugin, plugin->free, "d2v_spm_free");
  resolve(*plugin, plugin->encode, "d2v_spm_encode");
  resolve(*plugin, plugin->free_ids, "d2v_spm_free_ids");
  resolve(*plugin, plugin->decode, "d2v_spm_decode");
  resolve(*plugin, plugin->vocab_size, "d2v_spm_vocab_size");
  resolve(*plugin, plugin->id_to_piece, "d2v_spm_id_to_piece");
  resolve(*plugin, plugin->piece_to_id, "d2v_spm_piece_to_id");
  resolve(*plugin, plugin->bos_id, "d2v_spm_bos_id");
  resolve(*plugin, plugin->eos_id, "d2v_spm_eos_id");
  resolve(*plugin, plugin->pad_id, "d2v_spm_pad_id");
  resolve(*plugin, plugin->unk_id, "d2v_spm_unk_id");
  return plugin;
}

std::shared_ptr<const SentencePiecePlugin> plugin() {
  static std::once_flag once;
  static std::shared_ptr<const SentencePiecePlugin> loaded;
  std::call_once(once, [] { loaded = open_plugin(); });
  return loaded;
}

}  // namespace

std::string SentencePieceTokenizer::plugin_path() {
  if (const char* env = std::getenv("D2V_SENTENCEPIECE_PLUGIN"); env != nullptr && *env) {
    TORCH_CHECK(fs::exists(env), "D2V_SENTENCEPIECE_PLUGIN=", env,
                " does not exist: point it at libd2v_sentencepiece.so from the build directory");
    return env;
  }
  const auto candidates = plugin_candidates();
  for (const auto& candidate : candidates) {
    if (fs::exists(candidate)) return candidate;
  }
  std::string tried;
  for (const auto& candidate : candidates) tried += "\n  " + candidate;
  TORCH_CHECK(false, "sentencepiece plugin ", kPluginName, " not found; tried:", tried,
              "\nbuild it (cmake --build BUILD_DIR --target d2v_sentencepiece) and keep it next "
              "to the data2vec binary, or set D2V_SENTENCEPIECE_PLUGIN to its path");
  return {};
}

void SentencePieceTokenizer::train(const std::vector<std::string>& input_files, int64_t vocab_size,
                                   const std::string& out_dir,
                                   const SentencePieceTrainOptions& options) {
  TORCH_CHECK(!input_files.empty(), "tokenizer training: no input files");
  TORCH_CHECK(vocab_size > kMaskId + 1, "tokenizer training: vocab_size ", vocab_size,
              " leaves no room beside the ", kMaskId + 1, " special pieces");
  std::string inputs;
  for (const auto& file : input_files) {
    TORCH_CHECK(fs::is_regular_file(file), "tokenizer training: input file ", file,
                " does not exist");
    TORCH_CHECK(file.find(',') == std::string::npos, "tokenizer training: input path ", file,
                " contains a comma, which SentencePiece reads as a list separator; rename it");
    inputs += (inputs.empty() ? "" : ",") + file;
  }
  fs::create_directories(out_dir);
  const auto prefix = (fs::path(out_dir) / "spm").string();
  const std::vector<std::pair<std::string, std::string>> flags = {
      {"input", inputs},
      {"model_prefix", prefix},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", options.model_type},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"hard_vocab_limit", options.soft_vocab_limit ? "false" : "true"},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(options.num_threads)},
      {"bos_id", std::to_string(kBosId)},
      {"pad_id", std::to_string(kPadId)},
      {"eos_id", std::to_string(kEosId)},
      {"unk_id", std::to_string(kUnkId)},
      {"bos_piece", "<s>"},
      {"pad_piece", "<pad>"},
      {"eos_piece", "</s>"},
      {"unk_piece", "<unk>"},
      // Control symbols follow the four above in id order, so <mask> gets id 4.
      {"control_symbols", "<mask>"},
      {"minloglevel", "1"},
  };
  std::vector<const char*> keys, values;
  for (const auto& [key, value] : flags) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  char err[kErrLen] = {0};
  const auto p = plugin();
  TORCH_CHECK(p->train(keys.data(), values.data(), keys.size(), err, kErrLen) == 0, err,
              " (inputs: ", inputs, "; output: ", out_dir, ")");
}

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_dir) : plugin_(plugin()) {
  model_path_ =
      fs::is_directory(model_dir) ? (fs::path(model_dir) / kModelFile).string() : model_dir;
  TORCH_CHECK(fs::is_regular_file(model_path_), "tokenizer model ", model_path_,
              " does not exist: train one first (SentencePieceTokenizer::train)");
  char err[kErrLen] = {0};
  model_ = plugin_->load(model_path_.c_str(), err, kErrLen);
  TORCH_CHECK(model_ != nullptr, err);
  auto* model = static_cast<const d2v_spm_model*>(model_);
  const bool specials_ok = plugin_->bos_id(model) == kBosId && plugin_->pad_id(model) == kPadId &&
                           plugin_->eos_id(model) == kEosId && plugin_->unk_id(model) == kUnkId &&
                           plugin_->piece_to_id(model, "<mask>") == kMaskId;
  if (!specials_ok) {
    const auto got = "bos " + std::to_string(plugin_->bos_id(model)) + ", pad " +
                     std::to_string(plugin_->pad_id(model)) + ", eos " +
                     std::to_string(plugin_->eos_id(model)) + ", unk " +
                     std::to_string(plugin_->unk_id(model)) + ", <mask> " +
                     std::to_string(plugin_->piece_to_id(model, "<mask>"));
    plugin_->free(static_cast<d2v_spm_model*>(model_));
    model_ = nullptr;
    TORCH_CHECK(false, "tokenizer model ", model_path_, " has special ids ", got,
                "; data2vec needs bos 0, pad 1, eos 2, unk 3, <mask> 4: train it with "
                "SentencePieceTokenizer::train");
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (model_ != nullptr) plugin_->free(static_cast<d2v_spm_model*>(model_));
}

SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&& other) noexcept
    : plugin_(std::move(other.plugin_)),
      model_(std::exchange(other.model_, nullptr)),
      model_path_(std::move(other.model_path_)) {}

SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&& other) noexcept {
  if (this != &other) {
    if (model_ != nullptr) plugin_->free(static_cast<d2v_spm_model*>(model_));
    plugin_ = std::move(other.plugin_);
    model_ = std::exchange(other.model_, nullptr);
    model_path_ = std::move(other.model_path_);
  }
  return *this;
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text) const {
  TORCH_CHECK(model_ != nullptr, "tokenizer: used after move");
  int32_t* ids = nullptr;
  size_t n = 0;
  char err[kErrLen] = {0};
  TORCH_CHECK(plugin_->encode(static_cast<const d2v_spm_model*>(model_), text.data(), text.size(),
                              &ids, &n, err, kErrLen) == 0,
              err, " (model ", model_path_, ")");
  std::vector<int64_t> out(ids, ids + n);
  plugin_->free_ids(ids);
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  TORCH_CHECK(model_ != nullptr, "tokenizer: used after move");
  const auto size = vocab_size();
  std::vector<int32_t> ids32;
  ids32.reserve(ids.size());
  for (const auto id : ids) {
    TORCH_CHECK(id >= 0 && id < size, "tokenizer decode: id ", id, " outside the vocabulary of ",
                size, " (model ", model_path_, ")");
    ids32.push_back(static_cast<int32_t>(id));
  }
  auto* model = static_cast<const d2v_spm_model*>(model_);
  char err[kErrLen] = {0};
  std::string text(4 * ids.size() + 16, '\0');
  auto length =
      plugin_->decode(model, ids32.data(), ids32.size(), text.data(), text.size(), err, kErrLen);
  TORCH_CHECK(length >= 0, err, " (model ", model_path_, ")");
  if (static_cast<size_t>(length) >= text.size()) {
    text.assign(length + 1, '\0');
    length =
        plugin_->decode(model, ids32.data(), ids32.size(), text.data(), text.size(), err, kErrLen);
    TORCH_CHECK(length >= 0, err, " (model ", model_path_, ")");
  }
  text.resize(length);
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const {
  TORCH_CHECK(model_ != nullptr, "tokenizer: used after move");
  return plugin_->vocab_size(static_cast<const d2v_spm_model*>(model_));
}

std::string SentencePieceTokenizer::id_to_piece(int64_t id) const {
  TORCH_CHECK(model_ != nullptr, "tokenizer: used after move");
  TORCH_CHECK(id >= 0 && id < vocab_size(), "tokenizer: id ", id, " outside the vocabulary of ",
              vocab_size());
  return plugin_->id_to_piece(static_cast<const d2v_spm_model*>(model_), static_cast<int32_t>(id));
}

int64_t SentencePieceTokenizer::piece_to_id(const std::string& piece) const {
  TORCH_CHECK(model_ != nullptr, "tokenizer: used after move");
  return plugin_->piece_to_id(static_cast<const d2v_spm_model*>(model_), piece.c_str());
}

}  // namespace data2vec::text
