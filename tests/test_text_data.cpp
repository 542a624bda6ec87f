// Text data: documents from files, Brown / SpamAssassin layouts, block cutting and collate.
#include <filesystem>
#include <fstream>

#include "data2vec/io/files.h"
#include "data2vec/text/data.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec::text;

namespace {

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// Document d of length n holds ids 1000 * (d + 1) + i, so every id names its document.
std::vector<std::vector<int64_t>> make_documents(const std::vector<int64_t>& lengths) {
  std::vector<std::vector<int64_t>> docs;
  for (size_t d = 0; d < lengths.size(); ++d) {
    docs.emplace_back();
    for (int64_t i = 0; i < lengths[d]; ++i) docs.back().push_back(1000 * int64_t(d + 1) + i);
  }
  return docs;
}

}  // namespace

TEST(TextData, BlocksRespectDocumentsAndMaxTokens) {
  const auto docs = make_documents({0, 3, 10, 25, 6, 7});
  const auto blocks = cut_blocks(docs, {0, 1, 2, 3, 4, 5}, 0, 2, TextBlockOptions().max_tokens(8));
  // capacity 6: 0 -> none, 3 -> 1 block, 10 -> 2 of 5, 25 -> 5 of 5, 6 -> 1 of 6, 7 -> 2 (4, 3).
  std::vector<size_t> sizes;
  for (const auto& b : blocks) sizes.push_back(b.ids.size() - 2);
  EXPECT_EQ(sizes, (std::vector<size_t>{3, 5, 5, 5, 5, 5, 5, 5, 6, 4, 3}));
  std::vector<std::vector<int64_t>> rebuilt(docs.size());
  for (const auto& b : blocks) {
    ASSERT_LE(b.ids.size(), 8u);
    EXPECT_EQ(b.ids.front(), 0);
    EXPECT_EQ(b.ids.back(), 2);
    EXPECT_EQ(b.label, b.document);
    for (size_t i = 1; i + 1 < b.ids.size(); ++i) {
      EXPECT_EQ(b.ids[i] / 1000, b.document + 1) << "a block spans two documents";
    }
    rebuilt[b.document].insert(rebuilt[b.document].end(), b.ids.begin() + 1, b.ids.end() - 1);
  }
  EXPECT_EQ(rebuilt, docs) << "blocks, in order, are the documents";
}

TEST(TextData, FirstBlockOnlyTruncates) {
  const auto docs = make_documents({3, 20, 0});
  const auto blocks =
      cut_blocks(docs, {}, 0, 2, TextBlockOptions().max_tokens(8).first_block_only(true));
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(blocks[0].ids, (std::vector<int64_t>{0, 1000, 1001, 1002, 2}));
  EXPECT_EQ(blocks[1].ids, (std::vector<int64_t>{0, 2000, 2001, 2002, 2003, 2004, 2005, 2}));
  EXPECT_EQ(blocks[1].label, -1);
  EXPECT_THROW(cut_blocks(docs, {}, 0, 2, TextBlockOptions().max_tokens(2)), c10::Error);
  EXPECT_THROW(cut_blocks(docs, {1}, 0, 2, TextBlockOptions()), c10::Error);
}

TEST(TextData, CollatePadsAndMarksPadding) {
  std::vector<TextBlock> blocks = {
      {{0, 7, 8, 2}, 1, 0}, {{0, 9, 9, 9, 9, 2}, 0, 1}, {{0, 2}, 1, 2}};
  TextBlockDataset dataset(blocks, /*pad_id=*/1, {"a", "b"}, {"doc-a", "doc-b", "doc-c"});
  ASSERT_EQ(dataset.size(), 3u);
  EXPECT_EQ(dataset.num_classes(), 2);
  EXPECT_EQ(dataset.total_tokens(), 12);
  const auto e = dataset.get(1, 0);
  EXPECT_EQ(e.source.sizes(), (std::vector<int64_t>{6}));
  EXPECT_EQ(e.label, 0);
  const auto batch = dataset.collate({dataset.get(0, 0), dataset.get(1, 0), dataset.get(2, 0)});
  const auto expected_ids =
      torch::tensor({0, 7, 8, 2, 1, 1, 0, 9, 9, 9, 9, 2, 0, 2, 1, 1, 1, 1}, torch::kLong)
          .view({3, 6});
  EXPECT_TRUE(batch.input.source.equal(expected_ids)) << batch.input.source;
  const auto expected_padding =
      torch::tensor({0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1})
          .view({3, 6})
          .to(torch::kBool);
  EXPECT_TRUE(batch.input.padding_mask.equal(expected_padding)) << batch.input.padding_mask;
  EXPECT_EQ(to_vector(batch.labels), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_NE(dataset.describe(2).find("doc-c"), std::string::npos);
  EXPECT_THROW(TextBlockDataset({{{0, 2}, 5, 0}}, 1, {"a", "b"}), c10::Error);
}

TEST(TextData, ReadsDocumentsFromFilesAndDirectories) {
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-text-data");
  write(dir / "a.txt", "first doc line one\nline two\n\n\n  \nsecond doc\n");
  write(dir / "sub" / "b.txt", "third doc\nstill third\n");
  write(dir / ".hidden", "never read\n");
  write(dir / "c.txt", "\n\n");
  auto docs = read_text_documents({dir.string()});
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "first doc line one\nline two");
  EXPECT_EQ(docs[1].text, "second doc");
  EXPECT_EQ(docs[2].text, "third doc\nstill third");
  EXPECT_EQ(docs[2].label, -1);
  EXPECT_NE(docs[2].source.find("b.txt"), std::string::npos);

  docs = read_text_documents({(dir / "a.txt").string()}, DocumentSplit::kFile);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].text, "first doc line one\nline two\nsecond doc");
  EXPECT_THROW(read_text_documents({(dir / "missing").string()}), c10::Error);

  // Tokenizer training text: lines, a blank line after each document.
  write_documents_text(read_text_documents({dir.string()}), (dir / "out.txt").string());
  std::ifstream in(dir / "out.txt");
  const std::string written((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(written, "first doc line one\nline two\n\nsecond doc\n\nthird doc\nstill third\n\n");
}

TEST(TextData, BrownCorpusLayout) {
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-brown");
  write(dir / "ca01",
        "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\n\tIt/pps ended/vbd ./.\n");
  write(dir / "ca02", "\tA/at b/nn ./.\n");
  write(dir / "cr01", "\tFunny/jj 1/2/cd ./.\n");
  write(dir / "cats.txt", "ca01 news\nca02 news\ncr01 humor\n");
  write(dir / "README", "not a document\n");
  const auto brown = load_brown_corpus(dir.string());
  EXPECT_EQ(brown.class_names, (std::vector<std::string>{"news", "humor"}));
  ASSERT_EQ(brown.documents.size(), 3u);
  EXPECT_EQ(brown.documents[0].text, "The jury said \" no \" .\nIt ended .");
  EXPECT_EQ(brown.documents[0].label, 0);
  EXPECT_EQ(brown.documents[1].label, 0);
  EXPECT_EQ(brown.documents[2].label, 1);
  EXPECT_EQ(brown.documents[2].text, "Funny 1/2 .");
  EXPECT_THROW(load_brown_corpus((dir / "nothing").string()), c10::Error);
}

TEST(TextData, SpamAssassinLayout) {
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-spam");
  write(dir / "data" / "easy-ham-1" / "00001.aa.txt",
        "From: a@b\nSubject: hi\n\nHello Bob,\n\nsee you.\n");
  write(dir / "data" / "easy-ham-1" / "00001.aa.json", "{}");
  write(dir / "data" / "spam-2" / "00002.bb.txt", "From: x@y\n\nBUY NOW\n");
  const auto spam = load_spam_assassin(dir.string());
  EXPECT_EQ(spam.class_names, (std::vector<std::string>{"ham", "spam"}));
  ASSERT_EQ(spam.documents.size(), 2u);
  EXPECT_EQ(spam.documents[0].text, "Hello Bob,\nsee you.");
  EXPECT_EQ(spam.documents[0].label, 0);
  EXPECT_EQ(spam.documents[1].text, "BUY NOW");
  EXPECT_EQ(spam.documents[1].label, 1);
  const auto with_headers = load_spam_assassin(dir.string(), /*strip_headers=*/false);
  EXPECT_EQ(with_headers.documents[1].text, "From: x@y\nBUY NOW");
  EXPECT_THROW(load_spam_assassin((dir / "data").string()), c10::Error);
}

TEST(TextData, TokenizerTrainingTextCutsLongLinesAndDropsLinesThatAreNotUtf8) {
  // SentencePiece's trainer skips lines over 4192 bytes with a log message that crashes inside
  // the plugin, and a 48 MB one-line file left it nothing to train on: long lines are written in
  // split_long_line's pieces. Stray bytes (emails, Latin-1 files) never reach it.
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-training-text");
  std::string words;
  for (int i = 0; i < 1200; ++i) words += (i ? " " : "") + std::string("word") + char('a' + i % 26);
  ASSERT_EQ(words.size(), 1200u * 6 - 1);  // 7199 bytes: two pieces, cut before a space
  const std::string blob(5000, 'a');       // no space: cut at 4000 bytes
  const std::string invalid_utf8 = "caf\xc3 au lait";
  std::vector<TextDocument> documents = {
      {"first line\n" + words + "\n" + blob + "\nd\xc3\xa9j\xc3\xa0 vu", 0, "a"},
      {invalid_utf8 + "\nlast line", 1, "b"}};
  const auto path = (dir / "train.txt").string();
  EXPECT_EQ(write_documents_text(documents, path), 7u);
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t cut = words.rfind(' ', 4000);  // "worda ... wordX| wordY ..."
  EXPECT_EQ(text, "first line\n" + words.substr(0, cut) + "\n" + words.substr(cut) + "\n" +
                      blob.substr(0, 4000) + "\n" + blob.substr(4000) +
                      "\nd\xc3\xa9j\xc3\xa0 vu\n\nlast line\n\n");
}

TEST(TextData, SplitLongLineCutsBeforeALoneSpaceOrBetweenCharacters) {
  EXPECT_EQ(split_long_line("short", 8), (std::vector<std::string_view>{"short"}));
  EXPECT_EQ(split_long_line("", 8), (std::vector<std::string_view>{}));
  // The space opens the next piece; a double space is not a place to cut.
  EXPECT_EQ(split_long_line("aa bb  cc dd", 8),
            (std::vector<std::string_view>{"aa", " bb  cc", " dd"}));
  EXPECT_EQ(split_long_line("one two three four", 9),
            (std::vector<std::string_view>{"one two", " three", " four"}));
  // No space within reach: cut at the limit, moved back to the start of a UTF-8 character
  // (\xc3\xa9 is one character, e acute).
  EXPECT_EQ(split_long_line("abc\xc3\xa9\xc3\xa9xyz", 4),
            (std::vector<std::string_view>{"abc", "\xc3\xa9\xc3\xa9", "xyz"}));
  // Every piece within the limit, and the pieces are the line.
  std::string line;
  for (int i = 0; i < 5000; ++i) line += (i % 7 == 0 ? "  " : " ") + std::to_string(i * 7919);
  for (const size_t limit : {4u, 17u, 100u, 4000u}) {
    std::string joined;
    for (const auto piece : split_long_line(line, limit)) {
      EXPECT_LE(piece.size(), limit);
      joined += piece;
    }
    EXPECT_EQ(joined, line) << "limit " << limit;
  }
  // A space right at the limit, or one byte past it at the end of the line.
  EXPECT_EQ(split_long_line("abcd efgh", 4),
            (std::vector<std::string_view>{"abcd", " efg", "h"}));
  EXPECT_EQ(split_long_line("abcd ", 4), (std::vector<std::string_view>{"abcd", " "}));
  // Bytes that are no UTF-8 (a run of continuation bytes) are cut at the limit, not one by one.
  EXPECT_EQ(split_long_line(std::string(10, '\x80'), 4).size(), 3u);
  EXPECT_THROW(split_long_line("abcdef", 3), c10::Error);
}

TEST(TextData, FilesThatAreNotUtf8TextAreSkippedOrCleanedNotReadAsText) {
  // A user's text folder holds what it holds: a PDF, a UTF-16 export from Windows, a Latin-1
  // file, a UTF-8 file with a byte-order mark. Before, the binary and UTF-16 files were read as
  // text (NUL bytes and all) and the Latin-1 lines reached the tokenizer as they were.
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-text-encodings");
  write(dir / "a-binary.pdf", std::string("%PDF-1.4\n\0\x01\x02 stream\n", 20));
  write(dir / "b-utf16.txt", std::string("\xFF\xFEh\0i\0\n\0", 8));
  write(dir / "c-bom.txt", "\xEF\xBB\xBFwith a mark\n");
  // Overlong forms and surrogates are not UTF-8 either (the BPE's pre-tokeniser read such a line
  // differently in pieces than whole: found by fuzz_text).
  write(dir / "d-latin1.txt",
        "good line\ncaf\xe9 cr\xe8me\nfa\xc0\xa7" "ade\n\xed\xa0\x80 surrogate\nanother good "
        "line\nsecond doc\n");
  const auto docs = read_text_documents({dir.string()});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "with a mark");
  EXPECT_NE(docs[0].source.find("c-bom.txt"), std::string::npos);
  // The line that is not UTF-8 is left out, not read as a blank line that would end a document.
  EXPECT_EQ(docs[1].text, "good line\nanother good line\nsecond doc");
}

TEST(TextData, FoldersBehindLinksAreReadOnce) {
  const fs::path dir = data2vec::testing::make_temp_dir("d2v-text-links");
  write(dir / "corpus" / "a.txt", "in the corpus\n");
  write(dir / "elsewhere" / "b.txt", "linked in\n");
  fs::create_directory_symlink(dir / "elsewhere", dir / "corpus" / "more");
  fs::create_directory_symlink(dir / "corpus", dir / "corpus" / "loop");  // a link back up
  const auto docs = read_text_documents({(dir / "corpus").string()});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "in the corpus");
  EXPECT_EQ(docs[1].text, "linked in");
}

TEST(IoListFiles, RealPathsWinOverLinksAndNothingIsReadTwice) {
  // A folder and links to it inside the same tree: the files are named by the real path, not by
  // whichever name the directory listed first (before: "d/x.wav" for links b, c, d -> a).
  const fs::path root = data2vec::testing::make_temp_dir("d2v-list-files");
  write(root / "m" / "x.wav", "x");
  write(root / "m" / "y.WAV", "y");
  write(root / "m" / "._x.wav", "fork");
  write(root / "m" / "notes.txt", "n");
  for (const char* name : {"a", "b", "z"}) fs::create_directory_symlink(root / "m", root / name);
  fs::create_symlink(root / "gone", root / "m" / "broken.wav");  // a link to nothing: skipped
  const auto files = data2vec::io::list_files(root.string(), {".wav"});
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0], root / "m" / "x.wav");
  EXPECT_EQ(files[1], root / "m" / "y.WAV");
  // Every file when no extension is given; a file given is itself.
  EXPECT_EQ(data2vec::io::list_files(root.string()).size(), 3u);
  EXPECT_EQ(data2vec::io::list_files((root / "m" / "notes.txt").string()),
            (std::vector<fs::path>{root / "m" / "notes.txt"}));
  EXPECT_THROW(data2vec::io::list_files((root / "missing").string()), std::runtime_error);
}
