// CTC: greedy decoding of per-frame logits (Graves et al. 2006; wav2vec 2.0 / data2vec speech
// recognition) and the word and character error rates the speech tasks report.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace data2vec::eval {

// Best path: the argmax of each frame, repeats collapsed, then blanks dropped. logits [T,V].
std::vector<int64_t> ctc_greedy_ids(const torch::Tensor& logits, int64_t blank);

// A character vocabulary as Hugging Face's Wav2Vec2CTCTokenizer keeps it (vocab.json: token ->
// id): the pad token is the CTC blank, `|` the word delimiter.
class CtcVocabulary {
 public:
  explicit CtcVocabulary(std::map<std::string, int64_t> token_to_id,
                         std::string blank_token = "<pad>", std::string word_delimiter = "|");
  // Reads vocab.json; errors name the file.
  static CtcVocabulary load(const std::string& path);

  int64_t blank() const { return blank_; }
  int64_t size() const { return int64_t(id_to_token_.size()); }
  // The token of `id` ("" for an id no token has).
  const std::string& token(int64_t id) const { return id_to_token_.at(size_t(id)); }
  // Ids -> text: the delimiter becomes a space, special tokens (<s>, </s>, <unk>, the blank)
  // are dropped, runs of spaces collapse and the ends are trimmed.
  std::string decode(const std::vector<int64_t>& ids) const;
  // Text -> ids for training targets: a space becomes the delimiter; characters missing from the
  // vocabulary map to <unk> when it exists, else throw naming the character.
  std::vector<int64_t> encode(const std::string& text) const;

 private:
  std::vector<std::string> id_to_token_;
  std::map<std::string, int64_t> token_to_id_;
  int64_t blank_ = 0;
  std::string delimiter_;
};

// UTF-8 characters of `text` (each byte of an ill-formed sequence counts as one character).
std::vector<std::string> utf8_characters(const std::string& text);

// Edit distance between two sequences (substitutions, insertions, deletions all cost 1).
int64_t edit_distance(const std::vector<std::string>& reference,
                      const std::vector<std::string>& hypothesis);

// Errors and reference length, to sum over a test set before dividing.
struct ErrorCount {
  int64_t errors = 0;
  int64_t reference_length = 0;
  double rate() const { return reference_length ? double(errors) / reference_length : 0.0; }
};
// Word errors: texts split on whitespace. Character errors: over the UTF-8 characters of the
// texts with runs of whitespace as one space.
ErrorCount word_errors(const std::string& reference, const std::string& hypothesis);
ErrorCount char_errors(const std::string& reference, const std::string& hypothesis);

}  // namespace data2vec::eval
