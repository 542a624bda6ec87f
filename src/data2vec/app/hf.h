// Hugging Face checkpoints both ways, as commands:
//   import_hf    an HF folder (config.json + model.safetensors or pytorch_model.bin) -> a run
//                directory that embed, evaluate, finetune and pretrain --init accept
//   export_hf    a run's encoder -> config.json + model.safetensors that transformers'
//                Data2Vec*Model (or Data2VecAudioForCTC, with vocab.json and the processor's
//                configs) .from_pretrained loads with no missing or unexpected keys
//   hf_forward   the model of an HF folder or a run on the fixtures' input format, writing the
//                outputs under HF's names: how a port is checked against Hugging Face's numbers
// The modality tables live beside each encoder (vision/hf.h, audio/hf.h, text/hf.h).
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data2vec/core/encoder.h"
#include "data2vec/io/config.h"

namespace data2vec::app {

struct ImportHfOptions {
  std::string hf_dir;                  // the Hugging Face folder
  std::string out_dir;                 // the run directory to create
  std::string config_path;             // optional YAML whose training keys apply (model.* kept)
  std::vector<std::string> overrides;  // --set key=value
};

// Writes OUT/config.yaml and OUT/checkpoints/step_0 (student = teacher = the imported encoder;
// a task head under hf_head.<HF name>) and copies the folder's small files (vocab, tokenizer and
// preprocessor configs) to OUT/hf/. Refuses an OUT that already holds a run. Returns the
// checkpoint directory.
std::string import_hf(const ImportHfOptions& options);

struct ExportHfOptions {
  std::string checkpoint;  // run or checkpoint directory
  std::string out_dir;     // the HF folder to write
  bool teacher = false;    // export the EMA teacher instead of the student
  bool overwrite = false;  // replace the model an existing folder holds
};

// Writes OUT/config.json and OUT/model.safetensors (with the task head when the run has one), and
// copies the run's small files (RUN/hf/: vocab.json, tokenizer and preprocessor configs) to OUT.
// A run with a CTC head (finetune-ctc, or an imported Data2VecAudioForCTC) is written as a
// Data2VecAudioForCTC: vocab_size = the head's rows, pad_token_id = the blank of vocab.json, the
// run's ctc_loss_reduction / ctc_zero_infinity. A folder that already holds a model is refused
// unless `overwrite`, which also removes the weight files the export does not write (a
// pytorch_model.bin left beside the new model.safetensors would be a second, stale model).
void export_hf(const ExportHfOptions& options);

// A model read for inference: from an HF folder, or from a run / checkpoint directory.
struct HfModel {
  io::Config config;                          // the run's (an HF folder: import-hf's defaults)
  std::string modality;                       // vision | audio | text
  std::shared_ptr<EncoderImpl> encoder;       // weights loaded, in train mode as built
  std::map<std::string, torch::Tensor> head;  // task head under HF names (lm_head.*, classifier.*)
  nlohmann::json hf_config;                   // config.json (id2label, ...)
  std::string files_dir;  // where the folder's vocab.json / preprocessor_config.json are ("" none)
};
HfModel load_hf_model(const std::string& dir);

// The encoder of an HF folder (or of a run / checkpoint directory), weights loaded, in train
// mode as built; task heads are not part of it.
std::shared_ptr<EncoderImpl> load_hf_encoder(const std::string& dir);

// Runs the model of `model_dir` (an HF folder, or a run / checkpoint directory) on every variant
// of `inputs` (keys "<variant>.<input name>", metadata "variants") and writes
// "<variant>.hidden_states.<i>", ".last_hidden_state", ".pooler_output" (when the model has a
// pooler), ".extract_features" (audio) and ".logits" (task heads). Returns the tensors written.
int64_t hf_forward(const std::string& model_dir, const std::string& inputs,
                   const std::string& output);

}  // namespace data2vec::app
