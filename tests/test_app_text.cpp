// The text modality end to end through the builders and the command line: tokenizer training on
// a config's corpus, pretraining blocks from the train split only, evaluation tasks with the
// bag-of-words baseline, and a short pretrain + evaluate run on a generated Brown-layout corpus.
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "data2vec/app/builders.h"
#include "data2vec/io/config.h"
#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/text/tokenizer.h"
#include "support.h"

namespace fs = std::filesystem;
using namespace data2vec;
using data2vec::testing::last_command_output;
using data2vec::testing::run_command;

namespace {

// A Brown-layout corpus: genres a (news) and b (editorial), 10 documents each, written in two
// disjoint vocabularies so that genre is learnable.
std::string make_corpus() {
  const fs::path root = data2vec::testing::make_temp_dir("d2v-text-corpus");
  const fs::path brown = root / "brown";
  fs::create_directories(brown);
  const std::vector<std::vector<std::string>> words = {
      {"market", "senate", "vote", "city", "police", "mayor", "court", "report", "election"},
      {"opinion", "believe", "should", "editor", "letter", "argue", "policy", "reader", "moral"}};
  std::mt19937 rng(1);
  std::ofstream cats(brown / "cats.txt");
  for (int genre = 0; genre < 2; ++genre) {
    for (int d = 1; d <= 10; ++d) {
      char name[8];
      std::snprintf(name, sizeof(name), "c%c%02d", genre == 0 ? 'a' : 'b', d);
      cats << name << (genre == 0 ? " news\n" : " editorial\n");
      std::ofstream doc(brown / name);
      for (int line = 0; line < 30; ++line) {
        doc << "\n\t";
        for (int w = 0; w < 12; ++w) {
          doc << words[size_t(genre)][rng() % words[0].size()] << "/nn ";
          doc << (rng() % 2 ? "the/at " : "and/cc ");
        }
        doc << "./.\n";
      }
    }
  }
  return root.string();
}

io::Config text_config(const std::string& root) {
  io::Config c;
  c.model.modality = "text";
  c.model.preset = "mini";
  c.model.top_k_layers = 4;
  c.model.layer_result = "ffn";
  c.model.target_layer_norm = "layer_norm";
  c.model.target_final_norm = "none";
  c.model.mask_ratio = 0.15;
  c.data.dataset = "brown";
  c.data.root = root;
  c.data.tokenizer = root + "/tokenizer";
  c.data.max_tokens = 32;
  c.eval.tasks = "brown";
  c.train.device = "cpu";
  c.train.threads = 1;
  return c;
}

// Trains the corpus's tokenizer once for the suite, through the command line.
const std::string& corpus_with_tokenizer() {
  static const std::string root = [] {
    const auto root = make_corpus();
    const auto config_path = root + "/config.yaml";
    std::ofstream(config_path) << io::to_yaml(text_config(root));
    const int status = run_command(std::string(DATA2VEC_BINARY) + " tokenizer train --config " +
                                   config_path + " --vocab-size 40");
    EXPECT_EQ(status, 0) << last_command_output();
    return root;
  }();
  return root;
}

}  // namespace

TEST(AppText, TokenizerTrainWritesAModelWithTheSpecialIds) {
  const auto& root = corpus_with_tokenizer();
  const text::SentencePieceTokenizer tokenizer(root + "/tokenizer");
  EXPECT_EQ(tokenizer.vocab_size(), 40);
  EXPECT_EQ(tokenizer.id_to_piece(text::SentencePieceTokenizer::kMaskId), "<mask>");
  EXPECT_FALSE(fs::exists(root + "/tokenizer/training-text.txt")) << "temporary corpus left behind";
}

TEST(AppText, PretrainingBlocksComeFromTheTrainSplitOnly) {
  const auto config = text_config(corpus_with_tokenizer());
  const auto data = app::make_pretrain_dataset(config);
  ASSERT_GT(data->size(), 16u);
  const auto batch = data->collate({data->get(0, 1), data->get(1, 1)});
  EXPECT_LE(batch.input.source.size(1), config.data.max_tokens);
  EXPECT_EQ(batch.input.source[0][0].item<int64_t>(), text::SentencePieceTokenizer::kBosId);
  // 4 of every 5 documents (16 of 20) feed pretraining; every 5th is held out for evaluation.
  const auto tasks = app::make_eval_tasks(config);
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].name, "brown genre");
  // Every block of a document is read (the probe averages them): count documents.
  const auto documents = [](const Dataset& d) {
    std::set<int64_t> ids;
    for (size_t i = 0; i < d.size(); ++i) ids.insert(d.document(i));
    EXPECT_EQ(ids.count(-1), 0u) << "a block without its document";
    return ids.size();
  };
  EXPECT_EQ(documents(*tasks[0].splits.train), 16u);
  EXPECT_EQ(documents(*tasks[0].splits.test), 4u);
  EXPECT_GT(tasks[0].splits.train->size(), 16u) << "documents of this corpus span several blocks";
  EXPECT_EQ(tasks[0].splits.train->num_classes(), 2);
}

TEST(AppText, BagOfWordsCountsRealNonSpecialTokens) {
  const auto config = text_config(corpus_with_tokenizer());
  const auto task = app::make_eval_tasks(config).front();
  const auto& train = *task.splits.train;
  auto batch = train.collate({train.get(0, 0), train.get(1, 0)});
  const auto features = task.raw_features(batch);
  ASSERT_EQ(features.sizes(), (std::vector<int64_t>{2, 40}));
  EXPECT_EQ(features.slice(1, 0, 5).abs().sum().item<double>(), 0.0) << "special ids counted";
  // Against a count by hand.
  const auto ids = batch.input.source[0];
  const auto padding = batch.input.padding_mask[0];
  std::vector<double> counts(40, 0.0);
  for (int64_t t = 0; t < ids.size(0); ++t) {
    const auto id = ids[t].item<int64_t>();
    if (!padding[t].item<bool>() && id >= 5) counts[size_t(id)] += 1;
  }
  for (size_t v = 0; v < counts.size(); ++v)
    EXPECT_NEAR(features[0][int64_t(v)].item<double>(), std::log1p(counts[v]), 1e-6) << "id " << v;
}

TEST(AppText, MissingTokenizerNamesTheKeyAndTheFix) {
  auto config = text_config(corpus_with_tokenizer());
  config.data.tokenizer = "/nonexistent/tokenizer";
  try {
    app::make_pretrain_dataset(config);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("data.tokenizer"), std::string::npos) << what;
    EXPECT_NE(what.find("tokenizer train"), std::string::npos) << what;
  }
}

TEST(AppText, PretrainThenEvaluateReportsAllBaselines) {
  const auto& root = corpus_with_tokenizer();
  auto config = text_config(root);
  config.train.max_steps = 4;
  config.train.batch_size = 8;
  config.log.every = 2;
  config.log.tensorboard = false;
  const auto config_path = root + "/run.yaml";
  std::ofstream(config_path) << io::to_yaml(config);
  const auto out = data2vec::testing::make_temp_dir("d2v-text-run");
  const std::string bin = DATA2VEC_BINARY;
  ASSERT_EQ(run_command(bin + " pretrain --config " + config_path + " --out " + out), 0)
      << last_command_output();
  ASSERT_EQ(run_command(bin + " evaluate --checkpoint " + out + " --report " + out + "/report.md"),
            0)
      << last_command_output();
  // Features of text files from the checkpoint: one row of D = 128 (mini preset) per file.
  const auto inputs = data2vec::testing::make_temp_dir("d2v-text-embed");
  std::ofstream(inputs + "/a.txt") << "the market and the senate vote\n";
  std::ofstream(inputs + "/b.txt") << "the editor should argue\n";
  std::ofstream(inputs + "/c-empty.txt") << "\n\n";  // no text: named and skipped, not fatal
  ASSERT_EQ(run_command(bin + " embed --checkpoint " + out + " --input " + inputs + " --output " +
                        out + "/features.safetensors"),
            0)
      << last_command_output();
  EXPECT_NE(last_command_output().find("skipping " + inputs + "/c-empty.txt: no text"),
            std::string::npos)
      << last_command_output();
  const auto embedded = io::load_safetensors(out + "/features.safetensors");
  EXPECT_EQ(embedded.tensors.at("features").sizes(), (std::vector<int64_t>{2, 128}));
  EXPECT_EQ(embedded.metadata.at("files").find("c-empty"), std::string::npos);
  const auto report = io::read_file(out + "/report.md");
  for (const char* row :
       {"bag of words, linear", "random init, linear probe", "data2vec student, linear probe",
        "data2vec teacher, linear probe", "brown genre"}) {
    EXPECT_NE(report.find(row), std::string::npos) << row << "\n" << report;
  }
}
