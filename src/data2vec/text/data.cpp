#include "data2vec/text/data.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string_view>

#include "data2vec/io/files.h"

namespace fs = std::filesystem;

namespace data2vec::text {

namespace {

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c); });
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  return lines;
}

// Why the bytes of a file are not text to read, or "" when they are (UTF-8 or ASCII, perhaps
// with invalid lines: those are counted line by line).
std::string why_not_text(const std::string& bytes) {
  const auto starts_with = [&](std::string_view prefix) {
    return bytes.compare(0, prefix.size(), prefix) == 0;
  };
  if (starts_with("\xFF\xFE") || starts_with("\xFE\xFF"))
    return "UTF-16 or UTF-32 text (convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8)";
  const auto nul = bytes.find('\0');
  if (nul != std::string::npos)
    return "binary, not text (a NUL byte at offset " + std::to_string(nul) + ")";
  return "";
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) out += (out.empty() ? "" : "\n") + line;
  return out;
}

}  // namespace

// Overlong forms (C0, C1, E0 80-9F, F0 80-8F), surrogates (ED A0-BF) and code points past
// U+10FFFF (F4 90-BF, F5-FF) are refused: the tokenizers' regular expressions and SentencePiece
// read such bytes differently from one cut to the next.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    const auto second = static_cast<unsigned char>(s[i + 1]);
    if (second < low || second > high) return false;
    for (size_t k = 2; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

std::vector<std::string_view> split_long_line(std::string_view line, size_t max_bytes) {
  TORCH_CHECK(max_bytes >= 4, "split_long_line: max_bytes must be at least 4, got ", max_bytes);
  const auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  std::vector<std::string_view> pieces;
  while (line.size() > max_bytes) {
    // The last lone space within reach, cut before it: " word" starts the next piece as it
    // would have inside the line, for SentencePiece and byte-level BPE alike.
    size_t cut = 0;
    for (size_t p = max_bytes; p >= 1 && cut == 0; --p) {
      if (line[p] == ' ' && !is_space(line[p - 1]) && p + 1 < line.size() && !is_space(line[p + 1]))
        cut = p;
    }
    if (cut == 0) {  // one run without spaces (a blob): cut between UTF-8 characters
      cut = max_bytes;
      // A character has at most 3 continuation bytes; more in a row are not UTF-8 at all.
      for (int back = 0; back < 3 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80;
           ++back) {
        --cut;
      }
      if ((static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) cut = max_bytes;
    }
    pieces.push_back(line.substr(0, cut));
    line.remove_prefix(cut);
  }
  if (!line.empty()) pieces.push_back(line);
  return pieces;
}

std::vector<TextDocument> read_text_documents(const std::vector<std::string>& paths,
                                              DocumentSplit split) {
  // A folder of thousands of Latin-1 files must not bury the log: the first few files of each
  // kind are named, the rest counted.
  constexpr size_t kFilesNamed = 10;
  std::vector<TextDocument> documents;
  size_t files_skipped = 0, files_with_bad_lines = 0, bad_lines = 0;
  for (const auto& root : paths) {
    TORCH_CHECK(fs::exists(root), "text data: ", root, " does not exist");
    for (const auto& file : io::list_files(root)) {
      auto bytes = io::read_file(file.string());
      if (const auto why = why_not_text(bytes); !why.empty()) {
        if (files_skipped++ < kFilesNamed)
          spdlog::warn("text data: skipping {}: {}", file.string(), why);
        continue;
      }
      if (bytes.compare(0, 3, "\xEF\xBB\xBF") == 0) bytes.erase(0, 3);  // a UTF-8 byte-order mark
      auto lines = split_lines(bytes);
      bytes = std::string();
      // A line that is not UTF-8 is left out, as if it were not there (not a blank line, which
      // would end a document).
      const auto total_lines = lines.size();
      size_t invalid_lines = 0, first_invalid = 0, kept = 0;
      for (size_t i = 0; i < total_lines; ++i) {
        if (valid_utf8(lines[i])) {
          if (kept != i) lines[kept] = std::move(lines[i]);
          ++kept;
        } else if (invalid_lines++ == 0) {
          first_invalid = i + 1;
        }
      }
      lines.resize(kept);
      if (invalid_lines > 0) {
        bad_lines += invalid_lines;
        if (files_with_bad_lines++ < kFilesNamed) {
          spdlog::warn("text data: {}: {} of {} lines are not UTF-8 and were left out (the "
                       "first: line {}); convert the file, e.g. iconv -f LATIN1 -t UTF-8",
                       file.string(), invalid_lines, total_lines, first_invalid);
        }
      }
      std::vector<std::string> current;
      int64_t number = 0;
      auto flush = [&] {
        if (current.empty()) return;
        documents.push_back({join_lines(current), -1,
                             file.string() + (split == DocumentSplit::kBlankLine
                                                  ? " document " + std::to_string(number)
                                                  : std::string())});
        ++number;
        current.clear();
      };
      for (const auto& line : lines) {
        if (is_blank(line)) {
          if (split == DocumentSplit::kBlankLine) flush();
          continue;
        }
        current.push_back(line);
      }
      flush();
    }
  }
  if (files_skipped > kFilesNamed)
    spdlog::warn("text data: {} files skipped in all (not text)", files_skipped);
  if (files_with_bad_lines > kFilesNamed) {
    spdlog::warn("text data: {} lines that are not UTF-8 left out of {} files in all", bad_lines,
                 files_with_bad_lines);
  }
  return documents;
}

LabelledDocuments load_brown_corpus(const std::string& dir) {
  const std::regex name_re("c([a-r])[0-9][0-9]");
  std::vector<fs::path> files;
  if (fs::is_directory(dir)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), name_re)) {
        files.push_back(entry.path());
      }
    }
  }
  TORCH_CHECK(!files.empty(), "Brown corpus: no files named like ca01 in ", dir,
              "; fetch it with scripts/fetch-data.sh text (it lands in data/text/brown)");
  std::sort(files.begin(), files.end());

  // Genre names from cats.txt ("ca01 news"), keyed by the genre letter.
  std::map<char, std::string> genre_names;
  if (fs::is_regular_file(fs::path(dir) / "cats.txt")) {
    for (const auto& line : split_lines(io::read_file((fs::path(dir) / "cats.txt").string()))) {
      std::istringstream fields(line);
      std::string file, name;
      if (fields >> file >> name && file.size() == 4) genre_names.emplace(file[1], name);
    }
  }
  std::map<char, int64_t> genre_index;
  for (const auto& file : files) genre_index.emplace(file.filename().string()[1], 0);
  LabelledDocuments out;
  for (auto& [letter, index] : genre_index) {
    index = static_cast<int64_t>(out.class_names.size());
    const auto named = genre_names.find(letter);
    out.class_names.push_back(named != genre_names.end() ? named->second
                                                         : std::string("c") + letter);
  }

  for (const auto& file : files) {
    std::vector<std::string> sentences;
    for (const auto& line : split_lines(io::read_file(file.string()))) {
      std::istringstream tokens(line);
      std::string sentence;
      for (std::string token; tokens >> token;) {
        const auto slash = token.rfind('/');
        auto word = (slash == std::string::npos || slash == 0) ? token : token.substr(0, slash);
        if (word == "``" || word == "''") word = "\"";
        sentence += (sentence.empty() ? "" : " ") + word;
      }
      if (!sentence.empty()) sentences.push_back(std::move(sentence));
    }
    if (sentences.empty()) throw BadSample("Brown corpus: " + file.string() + " has no text");
    out.documents.push_back(
        {join_lines(sentences), genre_index.at(file.filename().string()[1]), file.string()});
  }
  return out;
}

LabelledDocuments load_spam_assassin(const std::string& dir, bool strip_headers) {
  const auto data = fs::path(dir) / "data";
  TORCH_CHECK(fs::is_directory(data), "SpamAssassin: ", data.string(),
              " is not a directory; fetch the corpus with scripts/fetch-data.sh text (it lands "
              "in data/text/spam-assassin)");
  std::vector<fs::path> groups;
  for (const auto& entry : fs::directory_iterator(data)) {
    if (entry.is_directory()) groups.push_back(entry.path());
  }
  std::sort(groups.begin(), groups.end());
  LabelledDocuments out;
  out.class_names = {"ham", "spam"};
  for (const auto& group : groups) {
    const auto name = group.filename().string();
    const int64_t label = name.rfind("spam", 0) == 0 ? 1 : 0;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(group)) {
      if (entry.is_regular_file() && entry.path().extension() == ".txt") {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      auto text = io::read_file(file.string());
      if (strip_headers) {
        auto body = text.find("\n\n");
        if (body == std::string::npos) body = text.find("\r\n\r\n");
        text = body == std::string::npos ? std::string() : text.substr(body);
      }
      // Blank lines inside an email are paragraph breaks, not document breaks.
      std::vector<std::string> lines;
      for (auto& line : split_lines(text)) {
        if (!is_blank(line)) lines.push_back(std::move(line));
      }
      out.documents.push_back({join_lines(lines), label, file.string()});
    }
  }
  TORCH_CHECK(!out.documents.empty(), "SpamAssassin: no <group>/*.txt emails under ", data.string(),
              "; expected folders like easy-ham-1 and spam-1");
  return out;
}

namespace {

// SentencePiece's trainer skips lines longer than its max_sentence_length (4192 bytes) and says
// so on std::cerr, which crashes inside the RTLD_DEEPBIND plugin (its std::cerr binds to
// libstdc++'s own, never-constructed copy). Longer lines are cut below it instead.
constexpr size_t kLongestTrainingLine = 4000;
// SentencePiece's encoder holds a lattice over its whole input: a 48 MB one-line file took
// 3.2 GB. Lines are encoded in pieces of at most this many bytes.
constexpr size_t kLongestEncodedText = 16384;

}  // namespace

size_t write_documents_text(const std::vector<TextDocument>& documents,
                            const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  TORCH_CHECK(out, "cannot write ", path);
  size_t written = 0;
  for (const auto& document : documents) {
    for (const auto& line : split_lines(document.text)) {
      if (is_blank(line) || !valid_utf8(line)) continue;
      for (const auto piece : split_long_line(line, kLongestTrainingLine)) {
        out << piece << '\n';
        ++written;
      }
    }
    out << '\n';
  }
  TORCH_CHECK(out.good(), "error writing ", path, " (disk full?)");
  return written;
}

std::vector<std::vector<int64_t>> tokenize_documents(const std::vector<TextDocument>& documents,
                                                     const Tokenizer& tokenizer) {
  std::vector<std::vector<int64_t>> out(documents.size());
  at::parallel_for(0, static_cast<int64_t>(documents.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (const auto& line : split_lines(documents[i].text)) {
        if (is_blank(line)) continue;
        if (line.size() <= kLongestEncodedText) {
          const auto ids = tokenizer.encode(line);
          out[i].insert(out[i].end(), ids.begin(), ids.end());
          continue;
        }
        for (const auto piece : split_long_line(line, kLongestEncodedText)) {
          const auto ids = tokenizer.encode(std::string(piece));
          out[i].insert(out[i].end(), ids.begin(), ids.end());
        }
      }
    }
  });
  return out;
}

std::vector<TextBlock> cut_blocks(const std::vector<std::vector<int64_t>>& documents,
                                  const std::vector<int64_t>& labels, int64_t bos_id,
                                  int64_t eos_id, const TextBlockOptions& options) {
  TORCH_CHECK(options.max_tokens() >= 3, "text blocks: max_tokens ", options.max_tokens(),
              " leaves no room for a token between <s> and </s>");
  TORCH_CHECK(labels.empty() || labels.size() == documents.size(), "text blocks: ", labels.size(),
              " labels for ", documents.size(), " documents");
  const auto capacity = options.max_tokens() - 2;
  std::vector<TextBlock> blocks;
  for (size_t d = 0; d < documents.size(); ++d) {
    const auto& ids = documents[d];
    const auto n = static_cast<int64_t>(ids.size());
    if (n == 0) continue;
    // Near-equal pieces: the first n % k blocks hold one token more than the rest.
    const auto k = options.first_block_only() ? 1 : (n + capacity - 1) / capacity;
    const auto base = options.first_block_only() ? std::min(n, capacity) : n / k;
    const auto extra = options.first_block_only() ? 0 : n % k;
    int64_t start = 0;
    for (int64_t j = 0; j < k; ++j) {
      const auto length = base + (j < extra ? 1 : 0);
      TextBlock block;
      block.ids.reserve(length + 2);
      block.ids.push_back(bos_id);
      block.ids.insert(block.ids.end(), ids.begin() + start, ids.begin() + start + length);
      block.ids.push_back(eos_id);
      block.label = labels.empty() ? -1 : labels[d];
      block.document = static_cast<int64_t>(d);
      blocks.push_back(std::move(block));
      start += length;
    }
  }
  return blocks;
}

TextBlockDataset::TextBlockDataset(std::vector<TextBlock> blocks, int64_t pad_id,
                                   std::vector<std::string> class_names,
                                   std::vector<std::string> document_names)
    : blocks_(std::move(blocks)),
      pad_id_(pad_id),
      class_names_(std::move(class_names)),
      document_names_(std::move(document_names)) {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    TORCH_CHECK(!blocks_[i].ids.empty(), "text dataset: block ", i, " is empty");
    TORCH_CHECK(class_names_.empty() || blocks_[i].label < num_classes(), "text dataset: block ", i,
                " has label ", blocks_[i].label, " but there are only ", num_classes(), " classes");
  }
}

Example TextBlockDataset::get(size_t index, uint64_t /*seed: no augmentation*/) const {
  TORCH_CHECK(index < blocks_.size(), "text dataset: index ", index, " >= size ", blocks_.size());
  const auto& block = blocks_[index];
  return {torch::tensor(block.ids, torch::kLong), block.label};
}

Batch TextBlockDataset::collate(std::vector<Example> examples) const {
  TORCH_CHECK(!examples.empty(), "text collate: empty batch");
  const auto b = static_cast<int64_t>(examples.size());
  int64_t t = 0;
  for (const auto& e : examples) {
    TORCH_CHECK(e.source.dim() == 1, "text collate: expects ids [T], got ", e.source.sizes());
    t = std::max(t, e.source.size(0));
  }
  auto ids = torch::full({b, t}, pad_id_, torch::kLong);  // [B,T]
  auto padding = torch::ones({b, t}, torch::kBool);       // [B,T] true = padding
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < b; ++i) {
    const auto n = examples[i].source.size(0);
    ids[i].slice(0, 0, n).copy_(examples[i].source);
    padding[i].slice(0, 0, n).fill_(false);
    labels.push_back(examples[i].label);
  }
  Batch batch;
  batch.input = EncoderInput{ids, padding};
  batch.labels = torch::tensor(labels, torch::kLong);
  return batch;
}

std::string TextBlockDataset::describe(size_t index) const {
  if (index >= blocks_.size()) return "text block #" + std::to_string(index) + " (out of range)";
  const auto document = blocks_[index].document;
  const auto name = document >= 0 && static_cast<size_t>(document) < document_names_.size()
                        ? document_names_[document]
                        : "document #" + std::to_string(document);
  return "text block #" + std::to_string(index) + " of " + name;
}

int64_t TextBlockDataset::total_tokens() const {
  int64_t total = 0;
  for (const auto& block : blocks_) total += static_cast<int64_t>(block.ids.size());
  return total;
}

std::shared_ptr<TextBlockDataset> make_text_dataset(const std::vector<TextDocument>& documents,
                                                    const Tokenizer& tokenizer,
                                                    const TextBlockOptions& options,
                                                    std::vector<std::string> class_names) {
  std::vector<int64_t> labels;
  std::vector<std::string> names;
  for (const auto& document : documents) {
    labels.push_back(document.label);
    names.push_back(document.source);
  }
  auto blocks = cut_blocks(tokenize_documents(documents, tokenizer), labels, tokenizer.bos_id(),
                           tokenizer.eos_id(), options);
  return std::make_shared<TextBlockDataset>(std::move(blocks), tokenizer.pad_id(),
                                            std::move(class_names), std::move(names));
}

}  // namespace data2vec::text
