// RoBERTa's byte-level BPE (GPT-2's tokenizer, as shipped with facebook/data2vec-text-base as
// vocab.json + merges.txt), written from the published algorithm (Radford et al. 2019; Sennrich
// et al. 2016):
//   1. pre-tokenise with GPT-2's pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (PCRE2 with Unicode properties), so a word keeps the space before it;
//   2. map each UTF-8 byte of a piece to a printable character (bytes_to_unicode: the 188
//      printable Latin-1 bytes stand for themselves, the other 68 become U+0100 + n);
//   3. merge adjacent symbols by the lowest rank in merges.txt until no listed pair remains;
//   4. look the symbols up in vocab.json.
// Decoding maps the characters back to bytes. Special tokens (<s> <pad> </s> <unk> <mask>) are
// looked up by name; raw text never encodes to them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "data2vec/text/tokenizer.h"

namespace data2vec::text {

class ByteLevelBpeTokenizer : public Tokenizer {
 public:
  // dir/vocab.json ({token: id}) and dir/merges.txt (one "a b" pair a line, rank = order; a
  // leading "#version" line is skipped). Errors name the file and line.
  explicit ByteLevelBpeTokenizer(const std::string& dir);
  ~ByteLevelBpeTokenizer() override;
  // Whether `dir` holds the two files.
  static bool present(const std::string& dir);

  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return int64_t(id_to_token_.size()); }
  int64_t bos_id() const override { return bos_; }
  int64_t pad_id() const override { return pad_; }
  int64_t eos_id() const override { return eos_; }
  int64_t unk_id() const override { return unk_; }
  int64_t mask_id() const override { return mask_; }

  // GPT-2's bytes_to_unicode (step 2): the vocabulary symbol of `byte`, UTF-8 encoded.
  static const std::string& byte_symbol(uint8_t byte);

  // The pre-tokenised pieces of `text` (step 1), for tests.
  std::vector<std::string> pieces(const std::string& text) const;
  // The BPE symbols of one piece (steps 2-3), for tests.
  std::vector<std::string> bpe(const std::string& piece) const;

 private:
  std::unordered_map<std::string, int64_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::map<std::pair<std::string, std::string>, int64_t> merge_rank_;
  std::string byte_to_symbol_[256];
  std::unordered_map<std::string, uint8_t> symbol_to_byte_;
  int64_t bos_ = 0, pad_ = 1, eos_ = 2, unk_ = 3, mask_ = -1;
  struct Pattern;
  std::unique_ptr<Pattern> pattern_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;  // piece -> ids
};

}  // namespace data2vec::text
