// Pretrained models at work, without Python: speech recognition with a CTC model
// (Data2VecAudioForCTC, e.g. facebook/data2vec-audio-base-960h) and image classification
// (Data2VecVisionForImageClassification, e.g. facebook/data2vec-vision-base-ft1k), from a Hugging
// Face folder or a run that import-hf made. Preprocessing follows the folder's
// preprocessor_config.json as Hugging Face's feature extractors read it.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace data2vec::app {

// Zero mean, unit variance over the utterance as Wav2Vec2FeatureExtractor does it
// (zero_mean_unit_var_norm: population variance, eps 1e-7). waveform [S].
torch::Tensor hf_normalize(const torch::Tensor& waveform);

struct TranscribeOptions {
  std::string model;                // HF folder or run directory with a CTC head and vocab.json
  std::vector<std::string> inputs;  // audio files (WAV / FLAC / Ogg, any rate)
  double window_s = 20.0;           // longer files run in windows of this length ...
  double overlap_s = 2.0;           // ... overlapping by this much (each side keeps half)
};

struct Transcript {
  std::string file;
  std::string text;
  int64_t frames = 0;  // frames decoded (one per 20 ms with the standard conv stack)
  std::string error;   // non-empty: the file could not be read (text empty)
};

// Greedy CTC transcripts, one per input in order, each also passed to `each` as soon as it is
// done (so a long list prints as it goes). Unreadable files and files shorter than one frame of
// the model are named in `error` and skipped; the model is loaded once.
std::vector<Transcript> transcribe(const TranscribeOptions& options,
                                   const std::function<void(const Transcript&)>& each = {});

struct ClassifyOptions {
  std::string model;                // HF folder or run directory with a classifier head
  std::vector<std::string> inputs;  // image files
  int64_t top_k = 5;
};

struct Prediction {
  std::string file;
  std::vector<std::pair<std::string, double>> top;  // label, probability; best first
  std::string error;                                // non-empty: unreadable image
};

// The top-k labels of each image, in order, each also passed to `each` as soon as it is done.
// Unreadable images are named in `error` and skipped.
std::vector<Prediction> classify(const ClassifyOptions& options,
                                 const std::function<void(const Prediction&)>& each = {});

}  // namespace data2vec::app
