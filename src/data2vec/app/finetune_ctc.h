// `data2vec finetune-ctc`: speech recognition from a pretrained audio encoder (a run of ours or
// one import-hf made), with the same encoder at random init as the baseline, scored by word and
// character error rates on held-out sets (eval/ctc_finetune.h has the recipe). The fine-tuned
// model is saved as a run that `transcribe` reads and `export-hf` writes as a
// Data2VecAudioForCTC (encoder under data2vec_audio.*, the head as lm_head.*).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data2vec/eval/ctc_finetune.h"

namespace data2vec::app {

// A transcript list: one utterance per line, "path<TAB>transcript" (a path relative to the
// list's folder, or absolute; audio of any rate, WAV / FLAC / Ogg). Audio is resampled to 16 kHz
// and normalised per utterance as Hugging Face's Wav2Vec2FeatureExtractor does; transcripts go
// through eval::normalize_transcript. Errors name the list and the line.
std::vector<eval::CtcUtterance> read_transcripts(const std::string& list, int64_t limit = 0);

struct FinetuneCtcOptions {
  std::string checkpoint;          // run or checkpoint directory, or a Hugging Face folder
  std::string train;               // transcript list to fine-tune on
  std::vector<std::string> tests;  // transcript lists to score (each a row per model)
  std::string out_dir;             // the fine-tuned run ("" = not saved)
  bool baseline = true;            // also fine-tune the same encoder at random init
  int64_t train_limit = 0;         // first N training utterances (0 = all)
  eval::CtcFinetuneOptions finetune = eval::CtcFinetuneOptions();  // steps, lr, ... (device set)
  std::string report_path;         // markdown report ("" = none)
};

struct CtcRow {
  std::string test;    // the test list's name (its file stem)
  std::string method;  // "random init" or "data2vec"
  eval::CtcScore score;
  double final_loss = 0;  // training loss, mean of the last 10% of the updates
  double minutes = 0;     // fine-tuning wall time
};

// Fine-tunes (the random-init twin first when baseline) and scores every test list.
std::vector<CtcRow> finetune_ctc(const FinetuneCtcOptions& options);

// | test | model | WER (%) | CER (%) | words | chars | train loss | minutes |, then a few
// reference / hypothesis pairs of each test for the fine-tuned model.
std::string ctc_rows_to_markdown(const std::vector<CtcRow>& rows, size_t examples = 3);

// Writes a run directory like import-hf's: config.yaml, checkpoints/step_<steps> (student =
// teacher = `encoder`, the head as hf_head.lm_head.*), and OUT/hf/ with config.json
// (architectures Data2VecAudioForCTC, vocab_size, pad_token_id = blank), vocab.json,
// tokenizer_config.json and special_tokens_map.json (Wav2Vec2CTCTokenizer's) and
// preprocessor_config.json, so that `transcribe OUT` runs and export-hf carries them along.
// `hf_config`: the imported model's config.json ({} for our own encoders).
void save_ctc_run(const std::string& out_dir, const std::string& config_yaml,
                  const nlohmann::json& hf_config, audio::AudioEncoderImpl& encoder,
                  torch::nn::Linear& head, const eval::CtcVocabulary& vocabulary,
                  int64_t steps, const std::string& finetuned_from);

}  // namespace data2vec::app
