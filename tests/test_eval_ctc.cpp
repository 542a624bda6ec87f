// CTC greedy decoding on hand-made logits with known answers, the character vocabulary of
// Hugging Face's Wav2Vec2CTCTokenizer, and word / character error rates against hand counts.
#include <gtest/gtest.h>

#include "data2vec/eval/ctc.h"

using namespace data2vec::eval;

namespace {

// vocab.json of a tiny character model: <pad> is the blank, | the word delimiter.
CtcVocabulary vocabulary() {
  return CtcVocabulary({{"<pad>", 0},
                        {"<s>", 1},
                        {"</s>", 2},
                        {"<unk>", 3},
                        {"|", 4},
                        {"A", 5},
                        {"B", 6},
                        {"C", 7},
                        {"'", 8}});
}

// Logits [T,V] whose argmax is `path` (one-hot times 5, plus a little noise below the winner).
torch::Tensor logits_for(const std::vector<int64_t>& path, int64_t vocab) {
  auto logits = torch::rand({int64_t(path.size()), vocab});
  for (size_t t = 0; t < path.size(); ++t) logits[int64_t(t)][path[t]] = 5.0;
  return logits;
}

}  // namespace

TEST(Ctc, GreedyCollapsesRepeatsThenDropsBlanks) {
  // A A _ A B B _ _ C  ->  A A B C (a blank separates the two As)
  EXPECT_EQ(ctc_greedy_ids(logits_for({5, 5, 0, 5, 6, 6, 0, 0, 7}, 9), 0),
            (std::vector<int64_t>{5, 5, 6, 7}));
  // Repeats without a blank collapse: B B B -> B; all blanks -> nothing.
  EXPECT_EQ(ctc_greedy_ids(logits_for({6, 6, 6}, 9), 0), (std::vector<int64_t>{6}));
  EXPECT_TRUE(ctc_greedy_ids(logits_for({0, 0, 0}, 9), 0).empty());
  EXPECT_TRUE(ctc_greedy_ids(torch::zeros({0, 9}), 0).empty());
  EXPECT_THROW(ctc_greedy_ids(torch::zeros({2, 3, 4}), 0), c10::Error);
}

TEST(Ctc, VocabularyDecodesWordsAndDropsSpecialTokens) {
  const auto v = vocabulary();
  EXPECT_EQ(v.blank(), 0);
  // <s> A B | | C ' A </s> -> "AB CA'"... in order: A B, delimiter(s), C ' A
  EXPECT_EQ(v.decode({1, 5, 6, 4, 4, 7, 8, 5, 2}), "AB C'A");
  EXPECT_EQ(v.decode({4, 5, 4}), "A");  // leading / trailing delimiters trimmed
  EXPECT_EQ(v.decode({}), "");
  EXPECT_EQ(v.encode("AB  C"), (std::vector<int64_t>{5, 6, 4, 7}));
  EXPECT_EQ(v.encode("AZ"), (std::vector<int64_t>{5, 3}));         // unknown -> <unk>
  EXPECT_THROW(CtcVocabulary({{"A", 1}}), std::invalid_argument);  // no blank
}

TEST(Ctc, ErrorRatesCountEditsAgainstTheReference) {
  // one substitution, one deletion in 4 reference words
  const auto w = word_errors("the cat sat down", "the bat sat");
  EXPECT_EQ(w.errors, 2);
  EXPECT_EQ(w.reference_length, 4);
  EXPECT_DOUBLE_EQ(w.rate(), 0.5);
  // characters: "abc" vs "axcd": substitution + insertion; spaces count as characters
  EXPECT_EQ(char_errors("abc", "axcd").errors, 2);
  EXPECT_EQ(char_errors("a b", "a  b").errors, 0);  // runs of spaces are one
  EXPECT_EQ(char_errors("é", "e").errors, 1);       // UTF-8 characters, not bytes
  EXPECT_EQ(char_errors("é", "e").reference_length, 1);
  EXPECT_EQ(word_errors("", "extra words").errors, 2);
  EXPECT_EQ(edit_distance({"a", "b", "c"}, {"c", "b", "a"}), 2);
}
