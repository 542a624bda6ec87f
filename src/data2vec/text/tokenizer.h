// SentencePiece tokenizer for the text modality, loaded from a plugin at run time.
//
// Debian's libsentencepiece and libtorch cannot be linked into one process (their protobuf copies
// clash, checked: the protobuf versions clash). The library therefore never links sentencepiece: it dlopen()s
// libd2v_sentencepiece.so (src/plugins/sentencepiece/, a plain C API) with
// RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND. The plugin is found, in order, at
//   $D2V_SENTENCEPIECE_PLUGIN, next to the running executable, in its parent directory
//   (test binaries live in build/tests/), and at the path it was built to.
//
// Special ids (fixed at training time, RoBERTa's order):
//   <s> 0 (bos), <pad> 1, </s> 2 (eos), <unk> 3, <mask> 4.
// <mask> is a control symbol, not a user-defined one: encoding raw text never produces it (a
// literal "<mask>" in a document stays text), only the masking code writes it.
//
// A model directory holds spm.model (and spm.vocab, for reading).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace data2vec::text {

struct SentencePieceTrainOptions {
  /// Unigram (SentencePiece's default) or bpe. Default "unigram".
  std::string model_type = "unigram";
  /// Fraction of characters the vocabulary must cover; the rest map to <unk>. Default 0.9999.
  double character_coverage = 0.9999;
  /// Treat vocab_size as an upper bound, so tiny corpora still train. Default false.
  bool soft_vocab_limit = false;
  /// Lines sampled for training (0 = all). Default 2,000,000.
  int64_t input_sentence_size = 2000000;
  /// Threads SentencePiece trains with. Default 2.
  int num_threads = 2;
};

// What the text pipeline needs of a tokenizer: the ids of raw text (without <s> / </s>: the data
// code adds them), the text of ids, and the special ids. SentencePiece models trained here and
// RoBERTa's byte-level BPE (bpe_tokenizer.h, for Hugging Face checkpoints) implement it.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual int64_t eos_id() const = 0;
  virtual int64_t unk_id() const = 0;
  virtual int64_t mask_id() const = 0;
};

// The loaded plugin (shared by every tokenizer of the process).
struct SentencePiecePlugin;

class SentencePieceTokenizer : public Tokenizer {
 public:
  static constexpr int64_t kBosId = 0;
  static constexpr int64_t kPadId = 1;
  static constexpr int64_t kEosId = 2;
  static constexpr int64_t kUnkId = 3;
  static constexpr int64_t kMaskId = 4;
  static constexpr const char* kModelFile = "spm.model";

  // Trains a model on the lines of `input_files` (plain UTF-8 text; one sentence or paragraph a
  // line) and writes out_dir/spm.model and out_dir/spm.vocab with the special ids above.
  static void train(const std::vector<std::string>& input_files, int64_t vocab_size,
                    const std::string& out_dir,
                    const SentencePieceTrainOptions& options = SentencePieceTrainOptions());

  // Loads model_dir/spm.model (or `model_dir` itself when it names a .model file). Checks that
  // the model has the special ids above.
  explicit SentencePieceTokenizer(const std::string& model_dir);
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;

  // Piece ids of `text` without <s> / </s> (the data code adds them). Thread-safe.
  std::vector<int64_t> encode(const std::string& text) const override;
  // Text of `ids`; control ids (<s>, </s>, <pad>, <mask>) decode to nothing.
  std::string decode(const std::vector<int64_t>& ids) const override;

  int64_t vocab_size() const override;
  std::string id_to_piece(int64_t id) const;
  int64_t piece_to_id(const std::string& piece) const;
  int64_t bos_id() const override { return kBosId; }
  int64_t pad_id() const override { return kPadId; }
  int64_t eos_id() const override { return kEosId; }
  int64_t unk_id() const override { return kUnkId; }
  int64_t mask_id() const override { return kMaskId; }
  const std::string& model_path() const { return model_path_; }

  // Path of the plugin this process loads (throws with a hint when none is found).
  static std::string plugin_path();

 private:
  std::shared_ptr<const SentencePiecePlugin> plugin_;
  void* model_ = nullptr;  // d2v_spm_model*
  std::string model_path_;
};

}  // namespace data2vec::text
