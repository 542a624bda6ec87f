#include "data2vec/app/builders.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "data2vec/app/audio_builders.h"
#include "data2vec/core/toy_dataset.h"
#include "data2vec/core/toy_encoder.h"
#include "data2vec/io/files.h"
#include "data2vec/text/bpe_tokenizer.h"
#include "data2vec/text/data.h"
#include "data2vec/text/encoder.h"
#include "data2vec/text/hf.h"
#include "data2vec/text/tokenizer.h"
#include "data2vec/vision/augment.h"
#include "data2vec/vision/datasets.h"
#include "data2vec/vision/encoder.h"
#include "data2vec/vision/hf.h"

namespace data2vec::app {

namespace {

[[noreturn]] void unknown(const std::string& key, const std::string& value,
                          const std::string& expected) {
  throw std::invalid_argument("config key '" + key + "' = '" + value + "': expected " + expected);
}

ToyEncoderOptions toy_options(const io::Config& c) {
  ToyEncoderOptions o;
  if (c.model.preset == "tiny") {
    o.dim(64).depth(4).num_heads(4).mlp_dim(128);
  } else if (c.model.preset == "micro") {
    o.dim(32).depth(2).num_heads(2).mlp_dim(64);
  } else {
    unknown("model.preset", c.model.preset, "tiny or micro for the toy modality");
  }
  return o.mask_ratio(c.model.mask_ratio)
      .layer_result(parse_layer_result_kind(c.model.layer_result));
}

ToyDatasetOptions toy_data_options(const io::Config& c, int64_t first_index, int64_t size) {
  return ToyDatasetOptions()
      .size(c.data.limit > 0 ? std::min(c.data.limit, size) : size)
      .first_index(first_index)
      .variable_length(c.data.dataset == "toy-variable");
}

vision::VisionEncoderOptions vision_options(const io::Config& c) {
  vision::VisionEncoderOptions o;
  if (c.model.preset == "hf" && c.model.position_encoding != "relative") {
    throw std::invalid_argument("config key 'model.position_encoding' = " +
                                c.model.position_encoding +
                                ": an imported model keeps the positions its config.json gives");
  }
  if (c.model.preset == "hf") {
    o = vision::vision_options_from_hf(hf_model_config(c));
    if (c.data.image_size != o.image_size()) {
      throw std::invalid_argument(
          "config key 'data.image_size' = " + std::to_string(c.data.image_size) +
          ", but the model reads " + std::to_string(o.image_size()) + " px images");
    }
  } else {
    o = preset_options(c, vision::vision_preset);
  }
  if (c.data.image_size <= 0 || c.data.image_size % o.patch_size() != 0) {
    throw std::invalid_argument("config key 'data.image_size' = " +
                                std::to_string(c.data.image_size) +
                                ": must be a multiple of the patch size, " +
                                std::to_string(o.patch_size()) + " in model.preset '" +
                                c.model.preset + "'");
  }
  o.image_size(c.data.image_size)
      .mask_ratio(c.model.mask_ratio)
      .layer_result(parse_layer_result_kind(c.model.layer_result));
  if (c.model.dropout) o.dropout(*c.model.dropout);
  if (c.model.layer_scale_init) o.layer_scale_init(*c.model.layer_scale_init);
  o.depth_scaled_init(c.model.depth_scaled_init);
  o.gemm(gemm_library(c));
  if (c.model.position_encoding == "sincos") {
    o.absolute_position_embeddings(true)
        .sincos_position_embeddings(true)
        .shared_relative_position_bias(false)
        .layer_relative_position_bias(false);
  }
  return o;
}

vision::ImageTransformOptions image_transform(const io::Config& c, bool augment) {
  auto t = vision::ImageTransformOptions()
               .image_size(c.data.image_size)
               .channels(vision_options(c).in_channels())
               .augment(augment && c.data.augment)
               .crop_scale_min(c.data.crop_scale_min);
  if (c.data.dataset == "fashion-mnist") {
    t.mean({0.2860}).std({0.3530});
  } else if (c.data.dataset == "mnist") {
    t.mean({0.1307}).std({0.3081});
  } else if (t.channels() == 1) {
    // Other images read as grey for a one-channel model (e.g. a Fashion-MNIST run on an image
    // folder): ImageNet's per-channel statistics weighted as the RGB -> L conversion weighs them.
    t.mean({0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406})
        .std({0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225});
  }
  return t;
}

// Both splits of the configured image dataset; `augment` applies to the train split only.
EvalSplits vision_splits(const io::Config& c, bool augment) {
  const auto& root = c.data.root;
  if (c.data.dataset == "fashion-mnist" || c.data.dataset == "mnist") {
    const std::string train_prefix = root + "/train-", test_prefix = root + "/t10k-";
    auto gz = [](const std::string& base) {
      return std::filesystem::exists(base + ".gz") ? base + ".gz" : base;
    };
    return {std::make_shared<vision::IdxImageDataset>(
                gz(train_prefix + "images-idx3-ubyte"), gz(train_prefix + "labels-idx1-ubyte"),
                image_transform(c, augment), vision::kMnistClasses),
            std::make_shared<vision::IdxImageDataset>(
                gz(test_prefix + "images-idx3-ubyte"), gz(test_prefix + "labels-idx1-ubyte"),
                image_transform(c, false), vision::kMnistClasses)};
  }
  if (c.data.dataset == "image-folder") {
    // val/ is labelled by train/'s classes: each folder's own list would number them apart.
    auto train = std::make_shared<vision::ImageFolderDataset>(root + "/train",
                                                              image_transform(c, augment));
    return {train, std::make_shared<vision::ImageFolderDataset>(
                       root + "/val", image_transform(c, false), train->classes())};
  }
  unknown("data.dataset", c.data.dataset, "fashion-mnist, mnist or image-folder for vision");
}

std::vector<std::string> list_files(const std::string& input,
                                    const std::vector<std::string>& extensions) {
  if (!std::filesystem::exists(input))
    throw std::invalid_argument("input '" + input + "' does not exist");
  std::vector<std::string> files;
  for (const auto& file : io::list_files(input, extensions)) files.push_back(file.string());
  if (files.empty()) throw std::invalid_argument("no supported files under '" + input + "'");
  return files;
}

// Image files decoded and transformed as at evaluation.
class ImageFilesDataset : public Dataset {
 public:
  ImageFilesDataset(std::vector<std::string> files, vision::ImageTransformOptions transform)
      : files_(std::move(files)), transform_(std::move(transform)) {}
  size_t size() const override { return files_.size(); }
  Example get(size_t index, uint64_t seed) const override {
    const auto image = vision::decode_image_file(files_.at(index), transform_.channels());
    return {vision::transform_image(image, transform_, seed), -1};
  }
  std::string describe(size_t index) const override { return files_.at(index); }

 private:
  std::vector<std::string> files_;
  vision::ImageTransformOptions transform_;
};

// ---- text ----------------------------------------------------------------------------------

// data.tokenizer: RoBERTa's byte-level BPE when the directory holds vocab.json + merges.txt (an
// imported Hugging Face text model), else a SentencePiece model trained here.
std::shared_ptr<text::Tokenizer> load_tokenizer(const io::Config& c) {
  if (!c.data.tokenizer.empty() && text::ByteLevelBpeTokenizer::present(c.data.tokenizer)) {
    return std::make_shared<text::ByteLevelBpeTokenizer>(c.data.tokenizer);
  }
  const std::string model = c.data.tokenizer + "/" + text::SentencePieceTokenizer::kModelFile;
  if (c.data.tokenizer.empty() || !std::filesystem::exists(model)) {
    throw std::invalid_argument(
        "config key 'data.tokenizer' = '" + c.data.tokenizer + "': no " +
        text::SentencePieceTokenizer::kModelFile +
        " (nor vocab.json + merges.txt) there; train one on the corpus first: data2vec "
        "tokenizer train --config <this config>");
  }
  return std::make_shared<text::SentencePieceTokenizer>(c.data.tokenizer);
}

text::TextEncoderOptions text_options(const io::Config& c, int64_t vocab_size) {
  auto o = c.model.preset == "hf" ? text::text_options_from_hf(hf_model_config(c))
                                  : preset_options(c, [vocab_size](const std::string& name) {
                                      return text::text_preset(name, vocab_size);
                                    });
  o.layer_result(parse_layer_result_kind(c.model.layer_result));
  o.masking().mask_prob(c.model.mask_ratio);
  if (c.model.dropout) o.dropout(*c.model.dropout).attention_dropout(*c.model.dropout);
  o.gemm(gemm_library(c));
  TORCH_CHECK(c.data.max_tokens <= o.max_positions(),
              "config key 'data.max_tokens' = ", c.data.max_tokens, " exceeds the ", c.model.preset,
              " preset's ", o.max_positions(), " positions");
  return o;
}

// A labelled corpus under data.root (scripts/fetch-data.sh text puts them there).
text::LabelledDocuments load_corpus(const std::string& name, const std::string& root) {
  if (name == "brown") return text::load_brown_corpus(root + "/brown");
  if (name == "spam-assassin") return text::load_spam_assassin(root + "/spam-assassin");
  if (name == "text-files") return {text::read_text_documents({root}), {}};
  unknown("data.dataset / eval.tasks", name, "brown, spam-assassin or text-files for text");
}

// Every 5th document is held out (the corpora are stored grouped by class, so this stratifies).
std::pair<std::vector<text::TextDocument>, std::vector<text::TextDocument>> split_documents(
    const std::vector<text::TextDocument>& documents) {
  std::vector<text::TextDocument> train, test;
  for (size_t i = 0; i < documents.size(); ++i) (i % 5 == 4 ? test : train).push_back(documents[i]);
  return {train, test};
}

// The documents a text run pretrains on (and trains its tokenizer on): the train split of each
// corpus of data.dataset (a comma-separated list).
std::vector<text::TextDocument> text_pretrain_documents(const io::Config& c) {
  std::vector<text::TextDocument> documents;
  for (const auto& name : split_list(c.data.dataset)) {
    auto train = split_documents(load_corpus(name, c.data.root).documents).first;
    documents.insert(documents.end(), train.begin(), train.end());
  }
  return documents;
}

// Bag of words over the vocabulary, log(1 + count), special ids and padding left out.
std::function<torch::Tensor(const Batch&)> bag_of_words(int64_t vocab_size) {
  return [vocab_size](const Batch& b) {
    const auto& ids = b.input.source;
    auto weight = torch::ones(ids.sizes(),
                              torch::TensorOptions().dtype(torch::kFloat32).device(ids.device()));
    if (b.input.padding_mask.defined()) weight.masked_fill_(b.input.padding_mask, 0.0);
    weight.masked_fill_(ids < 5, 0.0);  // <s> <pad> </s> <unk> <mask>
    auto counts = torch::zeros({ids.size(0), vocab_size}, weight.options());
    counts.scatter_add_(1, ids, weight);
    return counts.log1p();
  };
}

EvalTask text_task(const io::Config& c, const std::string& name) {
  auto tokenizer = load_tokenizer(c);
  auto corpus = load_corpus(name, c.data.root);
  TORCH_CHECK(!corpus.class_names.empty(), "eval task '", name, "' has no labels");
  auto [train, test] = split_documents(corpus.documents);
  // Every block of a document is read; its features are averaged (Dataset::document).
  const auto blocks = text::TextBlockOptions().max_tokens(c.data.max_tokens);
  EvalTask task;
  task.name = name == "brown" ? "brown genre" : name;
  task.measures = name == "brown"
                      ? "genre of a Brown corpus text (15 classes) from the average of its blocks"
                      : "spam vs ham of an email body (headers stripped), its blocks averaged";
  task.splits = {text::make_text_dataset(train, *tokenizer, blocks, corpus.class_names),
                 text::make_text_dataset(test, *tokenizer, blocks, corpus.class_names)};
  task.raw_features = bag_of_words(tokenizer->vocab_size());
  task.raw_name = "bag of words, linear";
  return task;
}

void require_data(const io::Config& c) {
  if (!std::filesystem::exists(c.data.root)) {
    throw std::invalid_argument("config key 'data.root' = '" + c.data.root +
                                "' does not exist (fetch it first, e.g. scripts/fetch-data.sh " +
                                c.data.dataset + ")");
  }
}

}  // namespace

nn::GemmLibrary gemm_library(const io::Config& config) {
  try {
    return nn::parse_gemm_library(config.model.gemm);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("config key 'model.gemm': " + std::string(e.what()));
  }
}

io::HfConfig hf_model_config(const io::Config& config) {
  const std::string source = "config key 'model.hf_config'";
  try {
    return io::HfConfig(nlohmann::json::parse(config.model.hf_config), source);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(source + ": not valid JSON (" + e.what() + ")");
  }
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> items;
  std::string item;
  for (char ch : list + ",") {
    if (ch == ',') {
      if (!item.empty()) items.push_back(item);
      item.clear();
    } else if (!std::isspace(static_cast<unsigned char>(ch))) {
      item += ch;
    }
  }
  return items;
}

EncoderFactory make_encoder_factory(const io::Config& config) {
  if (config.model.modality == "toy") {
    const auto options = toy_options(config);
    return [options] { return std::make_shared<ToyEncoderImpl>(options); };
  }
  if (config.model.modality == "vision") {
    const auto options = vision_options(config);
    return [options] { return vision::make_vision_encoder(options); };
  }
  if (config.model.modality == "audio") {
    const auto options = audio_encoder_options(config);
    return [options] { return audio::make_audio_encoder(options); };
  }
  if (config.model.modality == "text") {
    // An imported model's vocabulary is in its config; our own text models take the tokenizer's.
    const auto vocab = config.model.preset == "hf" ? 0 : load_tokenizer(config)->vocab_size();
    const auto options = text_options(config, vocab);
    return [options] { return text::make_text_encoder(options); };
  }
  unknown("model.modality", config.model.modality, "toy, vision, audio or text");
}

Data2VecOptions make_data2vec_options(const io::Config& c) {
  // data2vec 2.0 defaults per modality (data2vec 2.0, arXiv 2212.07525) for the unset keys.
  const bool image = c.model.modality == "vision";
  const int64_t clones = c.model.clone_batch       ? *c.model.clone_batch
                         : image                     ? 16
                         : c.model.modality == "toy" ? 4
                                                     : 8;
  return Data2VecOptions()
      .algorithm(parse_algorithm(c.model.algorithm))
      .clone_batch(clones)
      .decoder_dim(c.model.decoder_dim.value_or(0))  // 0: the encoder's decoder
      .decoder_kernel(c.model.decoder_kernel.value_or(0))
      .decoder_groups(c.model.decoder_groups.value_or(0))
      .decoder_layers(c.model.decoder_layers.value_or(0))
      .cls_loss_weight(c.model.cls_loss.value_or(image ? 0.01 : 0.0))
      .targets(TargetOptions()
                   .top_k_layers(c.model.top_k_layers)
                   .layer_norm_targets(parse_target_norm(c.model.target_layer_norm))
                   .final_norm(parse_target_norm(c.model.target_final_norm)))
      .ema(EmaOptions()
               .decay_start(c.ema.decay_start)
               .decay_end(c.ema.decay_end)
               .anneal_steps(c.ema.anneal_steps.value_or(c.train.max_steps)))
      .loss(LossOptions().beta(c.model.loss_beta).scale(c.model.loss_scale))
      .head_hidden_mult(c.model.head_hidden_mult);
}

Data2Vec make_model(const io::Config& config) {
  torch::manual_seed(uint64_t(config.train.seed));
  // The target layers are checked on the first encoder built, where the key can be named.
  auto make_encoder = make_encoder_factory(config);
  const auto checked = [make_encoder, top_k = config.model.top_k_layers,
                        preset = config.model.preset] {
    auto encoder = make_encoder();
    if (top_k > encoder->num_layers()) {
      throw std::invalid_argument("config key 'model.top_k_layers' = " + std::to_string(top_k) +
                                  ": the encoder (model.preset '" + preset + "') has only " +
                                  std::to_string(encoder->num_layers()) + " layers to average");
    }
    return encoder;
  };
  return Data2Vec(checked, make_data2vec_options(config));
}

std::shared_ptr<const Dataset> make_pretrain_dataset(const io::Config& config) {
  if (config.model.modality == "toy") {
    return std::make_shared<ToyDataset>(toy_data_options(config, 0, 4096));
  }
  if (config.model.modality == "vision") {
    require_data(config);
    return vision_splits(config, /*augment=*/true).train;
  }
  if (config.model.modality == "text") {
    require_data(config);
    auto tokenizer = load_tokenizer(config);
    return text::make_text_dataset(text_pretrain_documents(config), *tokenizer,
                                   text::TextBlockOptions().max_tokens(config.data.max_tokens));
  }
  if (config.model.modality == "audio") {
    require_data(config);
    return audio_pretrain_dataset(config);
  }
  unknown("model.modality", config.model.modality, "toy, vision, audio or text");
}

std::vector<EvalTask> make_eval_tasks(const io::Config& config) {
  auto flatten = [](const Batch& b) { return b.input.source.flatten(1).to(torch::kFloat32); };
  if (config.model.modality == "toy") {
    return {{"toy",
             "which class's sinusoids a noisy sequence mixes",
             {std::make_shared<ToyDataset>(toy_data_options(config, 0, 4096)),
              std::make_shared<ToyDataset>(toy_data_options(config, 1 << 20, 1024))},
             flatten,
             "raw input, linear"}};
  }
  if (config.model.modality == "vision") {
    require_data(config);
    return {{config.data.dataset, "object class of an image",
             vision_splits(config, /*augment=*/false), flatten, "raw pixels, linear"}};
  }
  if (config.model.modality == "text") {
    require_data(config);
    std::vector<EvalTask> tasks;
    const auto names =
        split_list(config.eval.tasks.empty() ? config.data.dataset : config.eval.tasks);
    for (const auto& name : names) tasks.push_back(text_task(config, name));
    return tasks;
  }
  if (config.model.modality == "audio") {
    require_data(config);
    return audio_eval_tasks(config);
  }
  unknown("model.modality", config.model.modality, "toy, vision, audio or text");
}

EvalSplits make_eval_datasets(const io::Config& config) {
  return make_eval_tasks(config).front().splits;
}

std::vector<text::TextDocument> tokenizer_training_documents(const io::Config& config) {
  return text_pretrain_documents(config);
}

FilesDataset make_files_dataset(const io::Config& config, const std::string& input) {
  if (config.model.modality == "vision") {
    auto files = list_files(input, vision::kImageFileExtensions);
    return {std::make_shared<ImageFilesDataset>(files, image_transform(config, /*augment=*/false)),
            files};
  }
  if (config.model.modality == "text") {
    // One document per file, read as blocks of data.max_tokens tokens (averaged by embed).
    // A file with no text has no features: named and skipped, as unreadable images and audio.
    std::vector<std::string> files;
    std::vector<text::TextDocument> documents;
    const auto listed = list_files(input, {".txt", ".text", ".md"});
    for (const auto& file : listed) {
      auto read = text::read_text_documents({file}, text::DocumentSplit::kFile);
      if (read.empty()) {
        spdlog::warn("embed: skipping {}: no text read from it", file);
        continue;
      }
      documents.push_back(std::move(read.front()));
      files.push_back(file);
    }
    if (files.empty()) {
      throw std::invalid_argument("embed: none of the " + std::to_string(listed.size()) +
                                  " text files under '" + input + "' holds any text");
    }
    auto tokenizer = load_tokenizer(config);
    return {text::make_text_dataset(
                documents, *tokenizer,
                text::TextBlockOptions().max_tokens(config.data.max_tokens)),
            files};
  }
  if (config.model.modality == "audio") return audio_files_dataset(config, input);
  unknown("model.modality", config.model.modality, "vision, audio or text");
}

}  // namespace data2vec::app
