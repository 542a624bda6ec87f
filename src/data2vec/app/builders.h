// From a configuration to the parts a job needs: the encoder, the Data2Vec model, the datasets.
// The only place that knows every modality; the trainer and evaluators see interfaces only.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "data2vec/core/data2vec.h"
#include "data2vec/core/dataset.h"
#include "data2vec/io/config.h"
#include "data2vec/io/hf.h"
#include "data2vec/nn/gemm.h"
#include "data2vec/text/data.h"

namespace data2vec::app {

// The items of a comma-separated config list (e.g. data.dataset, eval.tasks), spaces dropped.
std::vector<std::string> split_list(const std::string& list);

// model.hf_config (preset hf) as a Hugging Face config, errors citing the key.
io::HfConfig hf_model_config(const io::Config& config);

// model.gemm as the encoders' GEMM library, errors citing the key.
nn::GemmLibrary gemm_library(const io::Config& config);

// The encoder options `lookup` gives model.preset, an unknown name reported as the key's error.
template <typename Lookup>
auto preset_options(const io::Config& config, Lookup&& lookup) -> decltype(lookup(std::string())) {
  try {
    return lookup(config.model.preset);
  } catch (const c10::Error& e) {
    throw std::invalid_argument("config key 'model.preset' = '" + config.model.preset +
                                "': " + e.msg());
  }
}

// Builds encoders of the configured modality and preset (preset hf: from model.hf_config).
EncoderFactory make_encoder_factory(const io::Config& config);

// Targets, loss, EMA and head options from the config (EMA anneal 0 -> train.max_steps).
Data2VecOptions make_data2vec_options(const io::Config& config);

// The Data2Vec model, initialised from train.seed.
Data2Vec make_model(const io::Config& config);

// The pretraining split (with augmentation when data.augment).
std::shared_ptr<const Dataset> make_pretrain_dataset(const io::Config& config);

// Labelled splits for evaluation, without augmentation. `test` may hold the held-out split.
struct EvalSplits {
  std::shared_ptr<const Dataset> train;
  std::shared_ptr<const Dataset> test;
};
// The first evaluation task's splits (the k-NN monitor's).
EvalSplits make_eval_datasets(const io::Config& config);

// One labelled evaluation task: its splits, and the raw-input baseline's features of a batch
// (pixels for images, a bag of words for text, mean log-mel for speech).
struct EvalTask {
  std::string name;      // e.g. "fashion-mnist", "brown genre", "spam-assassin"
  std::string measures;  // what the task really tests, for the report
  EvalSplits splits;
  std::function<torch::Tensor(const Batch&)> raw_features;
  std::string raw_name;  // e.g. "raw pixels, linear"
};
// The tasks of eval.tasks (default: the pretraining dataset's own labels).
std::vector<EvalTask> make_eval_tasks(const io::Config& config);

// The documents a text tokenizer is trained on: the pretraining corpus's train split.
std::vector<text::TextDocument> tokenizer_training_documents(const io::Config& config);

// The files under `input` (a file, or a directory searched recursively for the modality's file
// types, sorted), read as at evaluation: for `data2vec embed`.
struct FilesDataset {
  std::shared_ptr<const Dataset> dataset;
  std::vector<std::string> files;
};
FilesDataset make_files_dataset(const io::Config& config, const std::string& input);

}  // namespace data2vec::app
