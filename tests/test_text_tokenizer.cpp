// The SentencePiece tokenizer through its dlopen()ed plugin: trains, encodes and decodes in the
// same process as libtorch (a direct link of both crashes before main, see text/tokenizer.h).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "data2vec/text/data.h"
#include "data2vec/text/tokenizer.h"
#include "support.h"

namespace fs = std::filesystem;
using data2vec::text::SentencePieceTokenizer;
using data2vec::text::SentencePieceTrainOptions;

namespace {

const std::vector<std::string> kWords = {
    "the",    "quick",    "brown",          "fox",       "jumps",   "over",    "lazy",
    "dog",    "data",     "vector",         "model",     "teacher", "student", "masked",
    "tokens", "predict",  "layer",          "average",   "signal",  "speech",  "image",
    "text",   "learning", "representation", "contextual"};

// A small corpus of random sentences over kWords; returns its path.
std::string write_corpus(const std::string& dir, int lines) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<size_t> word(0, kWords.size() - 1);
  std::uniform_int_distribution<int> length(3, 12);
  const auto path = (fs::path(dir) / "corpus.txt").string();
  std::ofstream out(path);
  for (int i = 0; i < lines; ++i) {
    const int n = length(rng);
    for (int j = 0; j < n; ++j) out << (j ? " " : "") << kWords[word(rng)];
    out << ".\n";
  }
  return path;
}

// One trained model shared by the tests of this file (training takes ~0.1 s, but once is enough).
class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = data2vec::testing::make_temp_dir("d2v-text-tokenizer");
    SentencePieceTokenizer::train({write_corpus(dir_, 400)}, 48, dir_ + "/model");
  }
  static std::string dir_;
};
std::string TokenizerTest::dir_;

}  // namespace

TEST_F(TokenizerTest, SpecialIdsAsDocumented) {
  ASSERT_TRUE(fs::exists(dir_ + "/model/spm.model"));
  SentencePieceTokenizer tokenizer(dir_ + "/model");
  EXPECT_EQ(tokenizer.vocab_size(), 48);
  EXPECT_EQ(tokenizer.id_to_piece(0), "<s>");
  EXPECT_EQ(tokenizer.id_to_piece(1), "<pad>");
  EXPECT_EQ(tokenizer.id_to_piece(2), "</s>");
  EXPECT_EQ(tokenizer.id_to_piece(3), "<unk>");
  EXPECT_EQ(tokenizer.id_to_piece(4), "<mask>");
  EXPECT_EQ(tokenizer.bos_id(), 0);
  EXPECT_EQ(tokenizer.pad_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_EQ(tokenizer.unk_id(), 3);
  EXPECT_EQ(tokenizer.mask_id(), 4);
  EXPECT_EQ(tokenizer.piece_to_id("<mask>"), 4);
}

TEST_F(TokenizerTest, EncodeDecodeRoundTrip) {
  SentencePieceTokenizer tokenizer(dir_ + "/model");
  const std::string text = "the student predicts the teacher representation of masked tokens.";
  const auto ids = tokenizer.encode(text);
  ASSERT_FALSE(ids.empty());
  for (const auto id : ids) {
    EXPECT_GE(id, 4) << "text never encodes to <s>, <pad>, </s> or <mask>";
    EXPECT_LT(id, tokenizer.vocab_size());
    EXPECT_NE(id, tokenizer.unk_id()) << "every character was in the training text";
  }
  EXPECT_EQ(tokenizer.decode(ids), text);
  EXPECT_EQ(tokenizer.encode(tokenizer.decode(ids)), ids);
  // Control ids decode to nothing.
  auto with_specials = ids;
  with_specials.insert(with_specials.begin(), tokenizer.bos_id());
  with_specials.push_back(tokenizer.eos_id());
  EXPECT_EQ(tokenizer.decode(with_specials), text);
  // A long text exercises the decode buffer retry.
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += (i ? " " : "") + kWords[i % kWords.size()];
  EXPECT_EQ(tokenizer.decode(tokenizer.encode(long_text)), long_text);
}

TEST_F(TokenizerTest, LiteralMaskTextIsNotTheMaskId) {
  SentencePieceTokenizer tokenizer(dir_ + "/model");
  const auto ids = tokenizer.encode("the <mask> dog");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tokenizer.mask_id()), 0);
}

TEST_F(TokenizerTest, IdsFeedTorchInTheSameProcess) {
  SentencePieceTokenizer tokenizer(dir_ + "/model");
  const auto ids = torch::tensor(tokenizer.encode("the lazy dog"), torch::kLong);
  const auto table = torch::randn({tokenizer.vocab_size(), 8});
  const auto embedded = table.index_select(0, ids);  // [T,8]
  EXPECT_EQ(embedded.size(0), ids.size(0));
  EXPECT_TRUE(torch::isfinite(torch::matmul(embedded, embedded.t())).all().item<bool>());
}

TEST_F(TokenizerTest, MoveKeepsTheModel) {
  SentencePieceTokenizer a(dir_ + "/model");
  const auto ids = a.encode("the fox");
  SentencePieceTokenizer b(std::move(a));
  EXPECT_EQ(b.encode("the fox"), ids);
  SentencePieceTokenizer c(dir_ + "/model/spm.model");  // the .model file itself also works
  c = std::move(b);
  EXPECT_EQ(c.encode("the fox"), ids);
}

TEST_F(TokenizerTest, DatasetFromDocuments) {
  SentencePieceTokenizer tokenizer(dir_ + "/model");
  std::vector<data2vec::text::TextDocument> docs = {
      {"the quick brown fox\njumps over the lazy dog", 0, "a"}, {"data vector model", 1, "b"}};
  const auto dataset = data2vec::text::make_text_dataset(
      docs, tokenizer, data2vec::text::TextBlockOptions().max_tokens(6), {"x", "y"});
  ASSERT_GE(dataset->size(), 3u);
  for (const auto& block : dataset->blocks()) {
    EXPECT_EQ(block.ids.front(), 0);
    EXPECT_EQ(block.ids.back(), 2);
    EXPECT_LE(block.ids.size(), 6u);
  }
  // The lines of a document are joined as if by a space.
  std::vector<int64_t> doc0;
  for (const auto& block : dataset->blocks()) {
    if (block.document == 0) doc0.insert(doc0.end(), block.ids.begin() + 1, block.ids.end() - 1);
  }
  EXPECT_EQ(tokenizer.decode(doc0), "the quick brown fox jumps over the lazy dog");
  EXPECT_EQ(dataset->num_classes(), 2);
  EXPECT_EQ(dataset->blocks().back().label, 1);
}

TEST_F(TokenizerTest, ALongLineEncodesInPiecesToTheSameIds) {
  // tokenize_documents hands SentencePiece a long line in split_long_line's pieces (its memory
  // grows with its input: 3.2 GB for a 48 MB line): the ids must be those of the whole line.
  SentencePieceTokenizer tokenizer(dir_ + "/model");
  std::mt19937 rng(7);
  std::string line;
  while (line.size() < 100000) {
    line += (line.empty() ? "" : rng() % 5 == 0 ? "  " : " ") + kWords[rng() % kWords.size()];
    if (rng() % 9 == 0) line += ".";
  }
  const auto ids = data2vec::text::tokenize_documents({{line, -1, "long"}}, tokenizer);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_GT(data2vec::text::split_long_line(line, 16384).size(), 6u);
  EXPECT_EQ(ids[0], tokenizer.encode(line));
}

TEST(Tokenizer, ClearErrors) {
  EXPECT_THROW(SentencePieceTokenizer("/nonexistent/model/dir"), c10::Error);
  EXPECT_THROW(SentencePieceTokenizer::train({"/nonexistent/corpus.txt"}, 100, "/tmp/x"),
               c10::Error);
  setenv("D2V_SENTENCEPIECE_PLUGIN", "/nonexistent/libd2v_sentencepiece.so", 1);
  try {
    SentencePieceTokenizer::plugin_path();
    ADD_FAILURE() << "a missing plugin must throw";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("D2V_SENTENCEPIECE_PLUGIN"), std::string::npos);
  }
  unsetenv("D2V_SENTENCEPIECE_PLUGIN");
  EXPECT_TRUE(fs::exists(SentencePieceTokenizer::plugin_path()));
}
