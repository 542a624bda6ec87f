// CTC fine-tuning of an audio encoder for speech recognition, as wav2vec 2.0 / data2vec do it
// (arXiv 2202.03555 sec. 5.2; fairseq's wav2vec2_asr.py and tri_stage_lr_scheduler.py; Hugging
// Face's Data2VecAudioForCTC): a linear head `lm_head` D -> V over a character vocabulary (blank =
// the pad token, `|` = word boundary), the conv feature encoder frozen, the transformer frozen for
// the first `freeze_encoder_steps` updates (the head alone learns), Adam under the tri-stage
// learning rate, torch::ctc_loss; scored by greedy decoding with word and character error rates.
//
// Shapes: B utterances, S samples (16 kHz), T frames, D encoder width, V vocabulary.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "data2vec/audio/encoder.h"
#include "data2vec/eval/ctc.h"

namespace data2vec::eval {

// The vocabulary of Hugging Face's English CTC checkpoints (facebook/data2vec-audio-base-960h,
// wav2vec2-base-960h vocab.json): <pad> 0 (the blank), <s> 1, </s> 2, <unk> 3, | 4, then the 26
// capital letters by frequency and the apostrophe; V = 32, the vocab_size of their config.json.
CtcVocabulary english_ctc_vocabulary();

// A transcript as the English vocabulary reads it: letters upper-cased, apostrophes kept (the
// typographic ones, U+2018, U+2019 and U+02BC, read as '), every other character a word break,
// runs of spaces collapsed, ends trimmed.
std::string normalize_transcript(const std::string& text);

// The characters of `text` that normalize_transcript drops although they are words, not
// punctuation: digits and letters outside A-Z (any non-ASCII character but typographic quotes,
// dashes and spaces), each once, in order of first appearance; a byte that is not UTF-8 as
// "\xNN". "9 o'clock, café" -> {"9", "é"}.
std::vector<std::string> words_outside_alphabet(const std::string& text);

// Whether CTC can align `ids` to `frames` output frames: it needs one frame per label and one
// more between each pair of equal neighbours. A transcript that cannot is no loss at all
// (zero_infinity) and teaches nothing.
bool ctc_alignable(const std::vector<int64_t>& ids, int64_t frames);

// One labelled utterance: wave [S] float, 16 kHz, normalised (zero mean, unit variance).
struct CtcUtterance {
  std::string id;  // e.g. the file path
  torch::Tensor wave;
  std::string text;  // normalised transcript
};

// fairseq's tri-stage schedule (tri_stage_lr_scheduler.py) over `total_steps` updates, 0-based
// `step`: a linear warm-up from init_scale * peak to peak over the first phase, a hold at peak,
// an exponential decay to final_scale * peak over the third phase, then final_scale * peak.
struct TriStageOptions {
  /// Fractions of the run in warm-up, hold and decay (fairseq's phase_ratio). Default 0.1/0.4/0.5.
  TORCH_ARG(double, warmup_frac) = 0.1;
  TORCH_ARG(double, hold_frac) = 0.4;
  TORCH_ARG(double, decay_frac) = 0.5;
  /// Learning rate at step 0 relative to the peak (init_lr_scale). Default 0.01.
  TORCH_ARG(double, init_scale) = 0.01;
  /// Learning rate at the end of the decay relative to the peak (final_lr_scale). Default 0.05.
  TORCH_ARG(double, final_scale) = 0.05;
};
double tri_stage_lr(int64_t step, int64_t total_steps, double peak,
                    const TriStageOptions& options = {});

// Sets requires_grad = false on the conv feature encoder (`feature_extractor.*`): it receives no
// gradient and no update (fairseq feature_grad_mult 0; HF freeze_feature_encoder()).
void freeze_feature_encoder(audio::AudioEncoderImpl& encoder);

// The CTC head: Linear D -> V, Hugging Face's lm_head (weight [V,D], bias [V]).
torch::nn::Linear make_ctc_head(int64_t dim, int64_t vocab_size);

// Per-frame logits [B,T,V] and real frames per utterance [B] for a padded batch.
struct CtcForward {
  torch::Tensor logits;         // [B,T,V]
  torch::Tensor frame_lengths;  // [B] int64
};
// waves: B utterances of any length, padded with zeros to the longest (padding mask [B,S]).
// apply_mask: frames masked by the encoder's span mask (drawn from `generator`) read the mask
// embedding. encoder_grad false: the encoder runs without a graph (only the head gets gradients).
CtcForward ctc_forward(audio::AudioEncoderImpl& encoder, torch::nn::Linear& head,
                       const std::vector<torch::Tensor>& waves, const torch::Device& device,
                       bool apply_mask = false, at::Generator* generator = nullptr,
                       bool encoder_grad = true);

// torch::ctc_loss over a batch (reduction mean: each utterance's loss over its target length,
// then the mean; zero_infinity, so an utterance too short for its transcript adds nothing).
torch::Tensor ctc_batch_loss(const CtcForward& forward, const std::vector<std::string>& texts,
                             const CtcVocabulary& vocabulary);

// What the per-step hook sees.
struct CtcStep {
  int64_t step = 0;  // updates done, this one included
  double loss = 0;
  double lr = 0;
  bool encoder_frozen = false;  // the transformer was frozen in this update
};

struct CtcFinetuneOptions {
  /// Updates. Default 1000.
  TORCH_ARG(int64_t, steps) = 1000;
  /// Utterances per update. Default 8.
  TORCH_ARG(int64_t, batch_size) = 8;
  /// Peak learning rate. Default 5e-4.
  TORCH_ARG(double, lr) = 5e-4;
  /// The schedule's phases (fairseq's fine-tuning defaults).
  TORCH_ARG(TriStageOptions, schedule) = TriStageOptions();
  /// Updates during which only the head learns (fairseq freeze_finetune_updates). Default 0.
  TORCH_ARG(int64_t, freeze_encoder_steps) = 0;
  /// Adam betas, eps and decoupled weight decay (fairseq: 0.9, 0.98, 1e-8, 0). Default same.
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.98;
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(double, weight_decay) = 0.0;
  /// Gradient-norm clip; 0 = none. Default 5.
  TORCH_ARG(double, clip_grad_norm) = 5.0;
  /// Mask frames with the encoder's span mask while training (wav2vec 2.0's fine-tuning
  /// regulariser, mask_prob / mask_length of the encoder). Default false.
  TORCH_ARG(bool, mask) = false;
  /// Seeds the head init, the batch order, dropout and masks. Default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Default CPU.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Called after every update. Default none.
  TORCH_ARG(std::function<void(const CtcStep&)>, on_step) = nullptr;
};

struct CtcFinetuneResult {
  torch::nn::Linear head{nullptr};  // lm_head, D -> V
  int64_t steps = 0;
  double first_loss = 0;  // mean loss of the first 10% of the updates
  double final_loss = 0;  // mean loss of the last 10% of the updates
};

// Fine-tunes `encoder` IN PLACE (its feature encoder frozen) with a new head on `train`;
// leaves the encoder in eval mode on options.device.
CtcFinetuneResult ctc_finetune(audio::AudioEncoderImpl& encoder,
                               const std::vector<CtcUtterance>& train,
                               const CtcVocabulary& vocabulary,
                               const CtcFinetuneOptions& options = {});

struct CtcScore {
  ErrorCount words, chars;
  std::vector<std::pair<std::string, std::string>> examples;  // (reference, hypothesis), in order
};
// Greedy transcripts of `test` in eval mode, batched (padding through the padding mask), and
// their error rates against the references.
CtcScore ctc_score(audio::AudioEncoderImpl& encoder, torch::nn::Linear& head,
                   const std::vector<CtcUtterance>& test, const CtcVocabulary& vocabulary,
                   int64_t batch_size = 8, const torch::Device& device = torch::kCPU);

}  // namespace data2vec::eval
