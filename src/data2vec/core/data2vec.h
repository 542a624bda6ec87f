// Data2Vec: one module that trains any encoder the data2vec way (arXiv 2202.03555 and 2212.07525).
//
// data2vec 1.0 (algorithm v1):
//   mask -> student(masked input) -> head at masked positions
//        -> teacher(unmasked input, no grad) -> top-K targets -> loss
// data2vec 2.0 (algorithm v2): M = clone_batch masked copies of each example
//   mask [B*M,T] -> keep_indices -> student(kept positions only) -> restore order, noise at the
//   masked slots -> CNN decoder -> predictions at masked positions of every copy
//        -> teacher(unmasked input, once per example, no grad) -> targets, repeated M times
//        -> loss (+ CLS loss for encoders with a CLS token)
// After the optimizer step: ema_step() moves the teacher towards the student.
//
// Registered submodules, and so the tensor names in every checkpoint:
//   student.*  the encoder being trained
//   teacher.*  its EMA copy (eval mode, no gradient)
//   head.*     the regression head (v1)
//   decoder.*  the CNN decoder (v2; it takes the head's place)
#pragma once

#include <torch/torch.h>

#include <string>

#include "data2vec/core/decoder.h"
#include "data2vec/core/ema.h"
#include "data2vec/core/encoder.h"
#include "data2vec/core/loss.h"
#include "data2vec/core/targets.h"

namespace data2vec {

enum class Algorithm {
  kV1,  // data2vec 1.0
  kV2,  // data2vec 2.0: kept-only student, multi-mask, CNN decoder
};
Algorithm parse_algorithm(const std::string& name);
std::string to_string(Algorithm algorithm);

struct Data2VecOptions {
  /// data2vec 1.0 or 2.0. Default v1.
  TORCH_ARG(Algorithm, algorithm) = Algorithm::kV1;
  /// How targets are built from the teacher's layers.
  TORCH_ARG(TargetOptions, targets) = TargetOptions();
  /// The teacher's decay schedule.
  TORCH_ARG(EmaOptions, ema) = EmaOptions();
  /// The regression loss.
  TORCH_ARG(LossOptions, loss) = LossOptions();
  /// Regression head: 0 -> Linear(D,D); m > 0 -> Linear(D,mD) -> GELU -> Linear(mD,D) (text: 2).
  TORCH_ARG(int64_t, head_hidden_mult) = 0;
  /// v2: masked copies M of each example (arXiv 2212.07525: image 16, audio and text 8). Default 8.
  TORCH_ARG(int64_t, clone_batch) = 8;
  /// v2: the decoder is the encoder's default_decoder_options() with these taken over where
  /// > 0 (width, kernel, groups, blocks). Default 0 (the modality's decoder).
  TORCH_ARG(int64_t, decoder_dim) = 0;
  TORCH_ARG(int64_t, decoder_kernel) = 0;
  TORCH_ARG(int64_t, decoder_groups) = 0;
  TORCH_ARG(int64_t, decoder_layers) = 0;
  /// v2: weight of the CLS loss (student CLS vs the mean target over positions) for encoders
  /// with a prefix token (images 0.01). As in fairseq it weighs the CLS loss SUMMED over the
  /// B*M rows, not averaged: loss = patch mean + weight x sum over rows. Default 0.
  TORCH_ARG(double, cls_loss_weight) = 0.0;
};

// What one forward pass produced. Tensors are on the model's device.
// v2: B is B*M (the copies) for mask, padding_mask and the positions of predictions / targets.
struct Data2VecOutput {
  torch::Tensor loss;          // scalar, with gradient to the student and the head / decoder
  torch::Tensor predictions;   // [N,D] head output at the N masked, real positions
  torch::Tensor targets;       // [N,D] fp32 teacher targets at the same positions
  torch::Tensor mask;          // [B,T] bool, the mask the student saw
  torch::Tensor padding_mask;  // [B,T] bool or undefined
  torch::Tensor cls_loss;      // v2 with a CLS token: scalar, unweighted mean over the B*M rows
                               // (the loss adds weight x B*M x it); undefined otherwise
  torch::Tensor target_std;    // scalar: mean over D of the std of targets over positions
  torch::Tensor pred_std;      // scalar: the same for predictions
  torch::Tensor masked_frac;   // scalar: masked / real positions
};

class Data2VecImpl : public torch::nn::Module {
 public:
  // Builds the student and the teacher with `make_encoder`; the teacher starts as an exact copy.
  Data2VecImpl(const EncoderFactory& make_encoder, const Data2VecOptions& options);

  // One data2vec pass: the student's encoder chooses a mask, then see forward_masked.
  Data2VecOutput forward(const EncoderInput& batch, at::Generator& generator);

  // The mask of this algorithm: v1 the encoder's apply_mask ([B,T]); v2 its v2_mask for
  // clone_batch copies ([B*M,T], student = the unmasked batch).
  MaskedInput apply_mask(const EncoderInput& batch, at::Generator& generator);

  // The same pass with a given mask: `masked` is the student's view, `batch` the unmasked input
  // the teacher reads. v2: masked.mask is [B*M,T] and masked.student is not read.
  Data2VecOutput forward_masked(const EncoderInput& batch, const MaskedInput& masked);

  // Teacher targets [B,T,D] for the unmasked batch (no gradient), given the student's output.
  torch::Tensor teacher_targets(const EncoderInput& batch, const EncoderOutput& student_output);

  // EMA update after the optimizer step `step` (0-based); returns the decay used.
  double ema_step(int64_t step);

  // The teacher never trains: it stays in eval mode whatever the rest of the model does.
  void train(bool on = true) override;

  // Parameters the optimizer updates (student and head; never the teacher).
  std::vector<torch::Tensor> trainable_parameters() const;

  const Data2VecOptions& options() const { return options_; }
  std::shared_ptr<EncoderImpl> student() const { return student_; }
  std::shared_ptr<EncoderImpl> teacher() const { return teacher_; }
  torch::nn::Sequential head() const { return head_; }  // null under v2
  Decoder decoder() const { return decoder_; }          // null under v1

 private:
  Data2VecOutput forward_v1(const EncoderInput& batch, const MaskedInput& masked);
  Data2VecOutput forward_v2(const EncoderInput& batch, const torch::Tensor& mask);

  Data2VecOptions options_;
  std::shared_ptr<EncoderImpl> student_;
  std::shared_ptr<EncoderImpl> teacher_;
  torch::nn::Sequential head_{nullptr};
  Decoder decoder_{nullptr};
};
TORCH_MODULE(Data2Vec);

}  // namespace data2vec
