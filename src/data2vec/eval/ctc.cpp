#include "data2vec/eval/ctc.h"

#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "data2vec/io/files.h"
#include "data2vec/text/data.h"

namespace data2vec::eval {

std::vector<int64_t> ctc_greedy_ids(const torch::Tensor& logits, int64_t blank) {
  TORCH_CHECK(logits.dim() == 2, "ctc_greedy_ids: expected logits [T,V], got ", logits.sizes());
  const auto best = logits.argmax(1).to(torch::kLong).contiguous().cpu();  // [T]
  const auto* p = best.data_ptr<int64_t>();
  std::vector<int64_t> ids;
  int64_t previous = -1;
  for (int64_t t = 0; t < best.numel(); ++t) {
    if (p[t] != previous && p[t] != blank) ids.push_back(p[t]);
    previous = p[t];
  }
  return ids;
}

CtcVocabulary::CtcVocabulary(std::map<std::string, int64_t> token_to_id, std::string blank_token,
                             std::string word_delimiter)
    : token_to_id_(std::move(token_to_id)), delimiter_(std::move(word_delimiter)) {
  int64_t largest = -1;
  for (const auto& [token, id] : token_to_id_) {
    if (id < 0) throw std::invalid_argument("CTC vocabulary: negative id for '" + token + "'");
    largest = std::max(largest, id);
  }
  id_to_token_.assign(size_t(largest + 1), "");
  for (const auto& [token, id] : token_to_id_) id_to_token_[size_t(id)] = token;
  const auto it = token_to_id_.find(blank_token);
  if (it == token_to_id_.end()) {
    throw std::invalid_argument("CTC vocabulary: no blank token '" + blank_token + "'");
  }
  blank_ = it->second;
}

CtcVocabulary CtcVocabulary::load(const std::string& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(io::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(path + ": not valid JSON (" + e.what() + ")");
  }
  if (!json.is_object()) throw std::invalid_argument(path + ": expected {token: id}");
  std::map<std::string, int64_t> tokens;
  for (const auto& [token, id] : json.items()) {
    if (!id.is_number_integer()) {
      throw std::invalid_argument(path + ": the id of '" + token + "' is not an integer");
    }
    tokens[token] = id.get<int64_t>();
  }
  try {
    return CtcVocabulary(tokens);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

std::vector<std::string> utf8_characters(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
    // A lead byte without its continuation bytes, or an ill-formed sequence, is bytes one by one.
    if (i + n > text.size() || !text::valid_utf8(std::string_view(text).substr(i, n))) n = 1;
    out.push_back(text.substr(i, n));
    i += n;
  }
  return out;
}

namespace {

bool is_special(const std::string& token) {
  return token.size() > 2 && token.front() == '<' && token.back() == '>';
}

std::vector<std::string> words_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace

std::string CtcVocabulary::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  for (const auto id : ids) {
    if (id < 0 || id >= size()) throw std::out_of_range("CTC id " + std::to_string(id));
    const auto& token = id_to_token_[size_t(id)];
    if (id == blank_ || is_special(token)) continue;
    text += token == delimiter_ ? " " : token;
  }
  return join_words(words_of(text));
}

std::vector<int64_t> CtcVocabulary::encode(const std::string& text) const {
  std::vector<int64_t> ids;
  const auto unk = token_to_id_.find("<unk>");
  for (const auto& ch : utf8_characters(join_words(words_of(text)))) {
    const auto it = token_to_id_.find(ch == " " ? delimiter_ : ch);
    if (it != token_to_id_.end()) {
      ids.push_back(it->second);
    } else if (unk != token_to_id_.end()) {
      ids.push_back(unk->second);
    } else {
      throw std::invalid_argument("CTC vocabulary has no token for '" + ch + "'");
    }
  }
  return ids;
}

int64_t edit_distance(const std::vector<std::string>& reference,
                      const std::vector<std::string>& hypothesis) {
  std::vector<int64_t> row(hypothesis.size() + 1);
  for (size_t j = 0; j < row.size(); ++j) row[j] = int64_t(j);
  for (size_t i = 1; i <= reference.size(); ++i) {
    int64_t diagonal = row[0];
    row[0] = int64_t(i);
    for (size_t j = 1; j <= hypothesis.size(); ++j) {
      const int64_t substitute = diagonal + (reference[i - 1] == hypothesis[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({substitute, row[j] + 1, row[j - 1] + 1});
    }
  }
  return row.back();
}

ErrorCount word_errors(const std::string& reference, const std::string& hypothesis) {
  const auto ref = words_of(reference);
  return {edit_distance(ref, words_of(hypothesis)), int64_t(ref.size())};
}

ErrorCount char_errors(const std::string& reference, const std::string& hypothesis) {
  const auto ref = utf8_characters(join_words(words_of(reference)));
  return {edit_distance(ref, utf8_characters(join_words(words_of(hypothesis)))),
          int64_t(ref.size())};
}

}  // namespace data2vec::eval
