// Text files as they come in a user's folder: read_text_documents (the binary and UTF-16 checks,
// the byte-order mark, lines that are not UTF-8), each line through split_long_line, and the
// documents through RoBERTa's byte-level BPE. The first byte picks the document split and the
// piece limit; the rest is the file. Besides the sanitizers, four properties are checked: the
// pieces of a line join back to it, none is longer than the limit, pieces cut before spaces
// encode to the line's ids, and decode(encode(text)) gives the text back.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "data2vec/text/bpe_tokenizer.h"
#include "data2vec/text/data.h"
#include "fuzz_support.h"

namespace {

void fail(const char* what) {
  std::fprintf(stderr, "d2v fuzz: %s\n", what);
  std::abort();
}

// A vocabulary of the 256 byte symbols and a few merges, so every text has an encoding.
const data2vec::text::ByteLevelBpeTokenizer& tokenizer() {
  static const auto* bpe = [] {
    const auto dir = data2vec::fuzz::scratch_dir() + "/bpe";
    std::filesystem::create_directories(dir);
    nlohmann::json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}};
    for (int byte = 0; byte < 256; ++byte)
      vocab[data2vec::text::ByteLevelBpeTokenizer::byte_symbol(uint8_t(byte))] = 4 + byte;
    std::ofstream(dir + "/merges.txt") << "#version: 0.2\n\xC4\xA0 t\nh e\n\xC4\xA0t he\n";
    vocab["\xC4\xA0t"] = 260;
    vocab["he"] = 261;
    vocab["\xC4\xA0the"] = 262;
    vocab["<mask>"] = 263;
    std::ofstream(dir + "/vocab.json") << vocab.dump();
    return new data2vec::text::ByteLevelBpeTokenizer(dir);
  }();
  return *bpe;
}

// The pieces of `line` must be the line, each within `limit`; cut only before spaces (no blob
// cut: each piece after the first opens with one), they must encode to the whole line's ids.
void check_split(std::string_view line, size_t limit, bool text) {
  const auto pieces = data2vec::text::split_long_line(line, limit);
  std::string joined;
  bool cut_before_spaces = true;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].size() > limit) fail("split_long_line: a piece longer than the limit");
    if (i > 0 && pieces[i].front() != ' ') cut_before_spaces = false;
    joined += pieces[i];
  }
  if (joined != line) fail("split_long_line: the pieces are not the line");
  if (!text || !cut_before_spaces || pieces.size() < 2) return;
  std::vector<int64_t> by_piece;
  for (const auto piece : pieces) {
    const auto ids = tokenizer().encode(std::string(piece));
    by_piece.insert(by_piece.end(), ids.begin(), ids.end());
  }
  if (by_piece != tokenizer().encode(std::string(line)))
    fail("split_long_line: the pieces encode to other ids than the line");
}

void check_lines(std::string_view text, size_t limit, bool valid_text) {
  size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    check_split(text.substr(start, end - start), limit, valid_text);
    start = end + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const bool quiet = [] {  // a warning per run would be most of the time spent
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  const auto split = data[0] & 0x80 ? data2vec::text::DocumentSplit::kFile
                                    : data2vec::text::DocumentSplit::kBlankLine;
  const size_t limit = 4 + data[0] % 64;
  // The raw bytes first: the readers of labelled corpora (SpamAssassin) do not check UTF-8.
  check_lines(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), limit, false);
  const auto path = data2vec::fuzz::write_input("text.txt", data + 1, size - 1);
  std::vector<data2vec::text::TextDocument> documents;
  data2vec::fuzz::expect_named_refusal(
      [&] { documents = data2vec::text::read_text_documents({path}, split); }, path);
  for (const auto& document : documents) {
    check_lines(document.text, limit, true);
    if (tokenizer().decode(tokenizer().encode(document.text)) != document.text)
      fail("byte-level BPE: decode(encode(text)) is not the text");
  }
  return 0;
}
