// RoBERTa's byte-level BPE on a hand-made vocabulary, with ids that follow from the published
// algorithm by hand (GPT-2's bytes_to_unicode and pre-tokenisation pattern; merges by rank):
// spaces, punctuation, digits, accents, emoji, the empty string, a very long word, and a round
// trip on real text.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "data2vec/text/bpe_tokenizer.h"
#include "data2vec/text/data.h"
#include "support.h"

using data2vec::text::ByteLevelBpeTokenizer;

namespace {

// GPT-2's bytes_to_unicode, written out as in openai/gpt-2 encoder.py.
std::vector<std::string> byte_symbols() {
  std::vector<int> bs, cs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::vector<std::string> symbol(256);
  for (size_t i = 0; i < bs.size(); ++i) {
    const int c = cs[i];
    std::string s;
    if (c < 0x80) {
      s += char(c);
    } else {
      s += char(0xC0 | (c >> 6));
      s += char(0x80 | (c & 0x3F));
    }
    symbol[size_t(bs[i])] = s;
  }
  return symbol;
}

// Vocabulary: <s> 0, <pad> 1, </s> 2, <unk> 3, byte b at 4 + b, merged tokens from 260 in merge
// order, <mask> last (273).
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"Ġ", "t"},    {"h", "e"},     {"Ġt", "he"}, {"l", "l"}, {"e", "ll"},
    {"h", "ell"},  {"hell", "o"},  {"Ġ", "w"},   {"o", "r"}, {"Ġw", "or"},
    {"Ġwor", "l"}, {"Ġworl", "d"}, {"1", "2"},
};

std::string write_vocabulary() {
  const auto dir = data2vec::testing::make_temp_dir("d2v-bpe");
  const auto symbols = byte_symbols();
  nlohmann::json vocab = {{"<s>", 0}, {"<pad>", 1}, {"</s>", 2}, {"<unk>", 3}};
  for (int b = 0; b < 256; ++b) vocab[symbols[size_t(b)]] = 4 + b;
  std::ofstream merges(dir + "/merges.txt");
  merges << "#version: 0.2\n";
  int64_t id = 260;
  for (const auto& [a, b] : kMerges) {
    merges << a << " " << b << "\n";
    vocab[a + b] = id++;
  }
  vocab["<mask>"] = id;
  std::ofstream(dir + "/vocab.json") << vocab.dump();
  return dir;
}

int64_t byte_id(unsigned char b) {
  return 4 + b;
}

}  // namespace

TEST(ByteLevelBpe, ByteSymbolsAreGpt2sBytesToUnicode) {
  const auto symbols = byte_symbols();
  for (int b = 0; b < 256; ++b)
    EXPECT_EQ(ByteLevelBpeTokenizer::byte_symbol(uint8_t(b)), symbols[size_t(b)]) << b;
}

TEST(ByteLevelBpe, PreTokenisesAsGpt2sPattern) {
  const ByteLevelBpeTokenizer bpe(write_vocabulary());
  using V = std::vector<std::string>;
  EXPECT_EQ(bpe.pieces("it's 12 apples!"), (V{"it", "'s", " 12", " apples", "!"}));
  EXPECT_EQ(bpe.pieces("a  b"), (V{"a", " ", " b"}));  // \s+(?!\S) leaves one space to the word
  EXPECT_EQ(bpe.pieces("a  "), (V{"a", "  "}));
  EXPECT_EQ(bpe.pieces("a\nb"), (V{"a", "\n", "b"}));
  EXPECT_EQ(bpe.pieces("2024 café"), (V{"2024", " café"}));  // é is a letter (\p{L})
  EXPECT_EQ(bpe.pieces("<mask>"), (V{"<", "mask", ">"}));
  EXPECT_TRUE(bpe.pieces("").empty());
}

TEST(ByteLevelBpe, MergesByRankGiveTheHandComputedIds) {
  const ByteLevelBpeTokenizer bpe(write_vocabulary());
  EXPECT_EQ(bpe.vocab_size(), 274);
  EXPECT_EQ(bpe.mask_id(), 273);
  // "hello": h e l l o; lowest rank first: (h e) -> he, then (l l) -> ll; (he ll) is not a
  // merge ("h ell" and "e ll" are), so the word stays in three symbols.
  EXPECT_EQ(bpe.bpe("hello"), (std::vector<std::string>{"he", "ll", "o"}));
  // " world": Ġw, or, Ġwor, Ġworl, Ġworld.
  EXPECT_EQ(bpe.encode("hello world"), (std::vector<int64_t>{261, 263, byte_id('o'), 271}));
  EXPECT_EQ(bpe.encode(" the"), (std::vector<int64_t>{262}));
  EXPECT_EQ(bpe.encode(" 12"), (std::vector<int64_t>{byte_id(' '), 272}));
  EXPECT_EQ(bpe.encode("2024"),
            (std::vector<int64_t>{byte_id('2'), byte_id('0'), byte_id('2'), byte_id('4')}));
  EXPECT_EQ(bpe.encode("!"), (std::vector<int64_t>{byte_id('!')}));
  EXPECT_EQ(bpe.encode("é"), (std::vector<int64_t>{byte_id(0xC3), byte_id(0xA9)}));
  EXPECT_EQ(bpe.encode("😀"),
            (std::vector<int64_t>{byte_id(0xF0), byte_id(0x9F), byte_id(0x98), byte_id(0x80)}));
  EXPECT_TRUE(bpe.encode("").empty());
  const auto long_word = bpe.encode(std::string(1000, 'x'));
  EXPECT_EQ(long_word, std::vector<int64_t>(1000, byte_id('x')));
  // A literal "<mask>" in text stays text.
  for (const auto id : bpe.encode("<mask>")) EXPECT_NE(id, bpe.mask_id());
}

TEST(ByteLevelBpe, RoundTripsRealText) {
  const ByteLevelBpeTokenizer bpe(write_vocabulary());
  const std::string text =
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
      "election produced \"no evidence\" that any irregularities took place.\n\n  The jury "
      "further said in term-end presentments that the City Executive Committee, which had "
      "over-all charge of the election, deserves the praise and thanks of the City of Atlanta "
      "for the manner in which the election was conducted. Naïve café façade — 12% of 2,024 "
      "voters; emoji 🎉 and tabs\tend.  ";
  const auto ids = bpe.encode(text);
  EXPECT_LT(ids.size(), text.size());  // merges did shorten it
  EXPECT_EQ(bpe.decode(ids), text);
  // Special ids decode to nothing.
  auto framed = ids;
  framed.insert(framed.begin(), bpe.bos_id());
  framed.push_back(bpe.eos_id());
  framed.push_back(bpe.pad_id());
  EXPECT_EQ(bpe.decode(framed), text);
}

TEST(ByteLevelBpe, ALineEncodesPieceByPieceAsAWhole) {
  // split_long_line's cuts fall before a space between words: the space opens the next piece,
  // as GPT-2's pre-tokeniser attaches it to the word after it ("Ġworld").
  const ByteLevelBpeTokenizer bpe(write_vocabulary());
  std::string line;
  for (int i = 0; i < 400; ++i)
    line += std::string(i % 3 ? " " : "  ") + (i % 2 ? "hello" : "the") + (i % 5 ? "" : ",") +
            (i % 7 ? " world" : " 12");
  std::vector<int64_t> by_piece;
  const auto pieces = data2vec::text::split_long_line(line, 100);
  ASSERT_GT(pieces.size(), 20u);
  for (const auto piece : pieces) {
    const auto ids = bpe.encode(std::string(piece));
    by_piece.insert(by_piece.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(by_piece, bpe.encode(line));
}

TEST(ByteLevelBpe, BadFilesAreErrorsNamingTheFileAndLine) {
  const auto dir = write_vocabulary();
  std::ofstream(dir + "/merges.txt", std::ios::app) << "one_symbol_only\n";
  try {
    ByteLevelBpeTokenizer bpe(dir);
    FAIL() << "accepted a bad merges line";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt:15"), std::string::npos) << e.what();
  }
  std::ofstream(dir + "/vocab.json") << "{not json";
  EXPECT_THROW(ByteLevelBpeTokenizer bpe(dir), std::invalid_argument);
  EXPECT_FALSE(ByteLevelBpeTokenizer::present(data2vec::testing::make_temp_dir("d2v-none")));
}
