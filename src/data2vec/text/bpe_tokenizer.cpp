#include "data2vec/text/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data2vec/io/files.h"

namespace data2vec::text {

namespace fs = std::filesystem;

namespace {

// GPT-2's pre-tokenisation pattern (openai/gpt-2 encoder.py; Hugging Face's RobertaTokenizer).
constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string utf8(uint32_t code_point) {
  std::string out;
  if (code_point < 0x80) {
    out += char(code_point);
  } else if (code_point < 0x800) {
    out += char(0xC0 | (code_point >> 6));
    out += char(0x80 | (code_point & 0x3F));
  } else {
    out += char(0xE0 | (code_point >> 12));
    out += char(0x80 | ((code_point >> 6) & 0x3F));
    out += char(0x80 | (code_point & 0x3F));
  }
  return out;
}

// UTF-8 characters of a string (each symbol of the byte alphabet is one character).
std::vector<std::string> characters(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4;
    n = std::min(n, text.size() - i);
    out.push_back(text.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace

struct ByteLevelBpeTokenizer::Pattern {
  pcre2_code* code = nullptr;
  ~Pattern() {
    if (code) pcre2_code_free(code);
  }
};

bool ByteLevelBpeTokenizer::present(const std::string& dir) {
  return fs::exists(fs::path(dir) / "vocab.json") && fs::exists(fs::path(dir) / "merges.txt");
}

ByteLevelBpeTokenizer::~ByteLevelBpeTokenizer() = default;

const std::string& ByteLevelBpeTokenizer::byte_symbol(uint8_t byte) {
  // Printable Latin-1 bytes map to themselves, the other 68 to U+0100 + n in byte order.
  static const auto symbols = [] {
    std::array<std::string, 256> table;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      table[size_t(b)] = utf8(printable ? uint32_t(b) : next++);
    }
    return table;
  }();
  return symbols[byte];
}

ByteLevelBpeTokenizer::ByteLevelBpeTokenizer(const std::string& dir)
    : pattern_(std::make_unique<Pattern>()) {
  for (int b = 0; b < 256; ++b) {
    byte_to_symbol_[b] = byte_symbol(uint8_t(b));
    symbol_to_byte_[byte_to_symbol_[b]] = uint8_t(b);
  }

  const auto vocab_path = (fs::path(dir) / "vocab.json").string();
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(io::read_file(vocab_path));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(vocab_path + ": not valid JSON (" + e.what() + ")");
  }
  if (!vocab.is_object() || vocab.empty()) {
    throw std::invalid_argument(vocab_path + ": expected a non-empty {token: id} object");
  }
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) {
      throw std::invalid_argument(vocab_path + ": the id of '" + token + "' is not a valid id");
    }
    token_to_id_[token] = id.get<int64_t>();
    if (size_t(id.get<int64_t>()) >= id_to_token_.size()) {
      id_to_token_.resize(size_t(id.get<int64_t>()) + 1);
    }
    id_to_token_[size_t(id.get<int64_t>())] = token;
  }
  auto special = [&](const char* token, int64_t fallback) {
    const auto it = token_to_id_.find(token);
    return it == token_to_id_.end() ? fallback : it->second;
  };
  bos_ = special("<s>", 0), pad_ = special("<pad>", 1), eos_ = special("</s>", 2);
  unk_ = special("<unk>", 3), mask_ = special("<mask>", vocab_size() - 1);

  const auto merges_path = (fs::path(dir) / "merges.txt").string();
  std::ifstream merges(merges_path);
  if (!merges) throw std::invalid_argument("cannot read " + merges_path);
  std::string line;
  for (int64_t number = 1, rank = 0; std::getline(merges, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (number == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      throw std::invalid_argument(merges_path + ":" + std::to_string(number) +
                                  ": expected two symbols separated by one space, got '" + line +
                                  "'");
    }
    merge_rank_.emplace(std::make_pair(line.substr(0, space), line.substr(space + 1)), rank++);
  }

  int error = 0;
  PCRE2_SIZE offset = 0;
  pattern_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (!pattern_->code)
    throw std::runtime_error("BPE: the pre-tokenisation pattern did not compile");
}

std::vector<std::string> ByteLevelBpeTokenizer::pieces(const std::string& text) const {
  std::vector<std::string> out;
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(pattern_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  // Invalid UTF-8 (the pattern needs valid input) is matched byte by byte as "other" symbols.
  const bool valid = pcre2_match(pattern_->code, subject, text.size(), 0, 0, match, nullptr) >=
                         PCRE2_ERROR_NOMATCH ||
                     text.empty();
  size_t start = 0;
  while (valid && start < text.size()) {
    const int rc = pcre2_match(pattern_->code, subject, text.size(), start, 0, match, nullptr);
    if (rc < 0) break;
    const auto* ovector = pcre2_get_ovector_pointer(match);
    if (ovector[1] <= start) break;  // no progress: cannot happen with this pattern
    out.push_back(text.substr(ovector[0], ovector[1] - ovector[0]));
    start = ovector[1];
  }
  pcre2_match_data_free(match);
  if (!valid) {
    for (char c : text) out.emplace_back(1, c);
  }
  return out;
}

std::vector<std::string> ByteLevelBpeTokenizer::bpe(const std::string& piece) const {
  std::vector<std::string> symbols;
  for (unsigned char byte : piece) symbols.push_back(byte_to_symbol_[byte]);
  while (symbols.size() > 1) {
    int64_t best_rank = std::numeric_limits<int64_t>::max();
    std::pair<std::string, std::string> best;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = merge_rank_.find({symbols[i], symbols[i + 1]});
      if (it != merge_rank_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = it->first;
      }
    }
    if (best_rank == std::numeric_limits<int64_t>::max()) break;
    std::vector<std::string> merged;  // every occurrence of the pair, left to right
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == best.first && symbols[i + 1] == best.second) {
        merged.push_back(symbols[i] + symbols[i + 1]);
        ++i;
      } else {
        merged.push_back(symbols[i]);
      }
    }
    symbols = std::move(merged);
  }
  return symbols;
}

std::vector<int64_t> ByteLevelBpeTokenizer::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  for (const auto& piece : pieces(text)) {
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      const auto hit = cache_.find(piece);
      if (hit != cache_.end()) {
        ids.insert(ids.end(), hit->second.begin(), hit->second.end());
        continue;
      }
    }
    std::vector<int64_t> piece_ids;
    for (const auto& symbol : bpe(piece)) {
      const auto it = token_to_id_.find(symbol);
      if (it != token_to_id_.end()) {
        piece_ids.push_back(it->second);
      } else {  // a vocabulary without every byte: per-character fallback, then <unk>
        for (const auto& ch : characters(symbol)) {
          const auto c = token_to_id_.find(ch);
          piece_ids.push_back(c == token_to_id_.end() ? unk_ : c->second);
        }
      }
    }
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < 100000) cache_.emplace(piece, std::move(piece_ids));
  }
  return ids;
}

std::string ByteLevelBpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string bytes;
  for (const auto id : ids) {
    if (id == bos_ || id == eos_ || id == pad_ || id == mask_) continue;
    if (id < 0 || id >= vocab_size()) throw std::out_of_range("BPE id " + std::to_string(id));
    for (const auto& ch : characters(id_to_token_[size_t(id)])) {
      const auto it = symbol_to_byte_.find(ch);
      if (it != symbol_to_byte_.end()) bytes += char(it->second);
    }
  }
  return bytes;
}

}  // namespace data2vec::text
