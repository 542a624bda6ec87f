// Data2Vec: one module that trains any encoder the data2vec way (SPEC section 1).
//
//   mask -> student(masked input) -> head at masked positions
//        -> teacher(unmasked input, no grad) -> top-K targets -> loss
//   after the optimizer step: ema_step() moves the teacher towards the student.
//
// Registered submodules, and so the tensor names in every checkpoint:
//   student.*  the encoder being trained
//   teacher.*  its EMA copy (eval mode, no gradient)
//   head.*     the regression head
#pragma once

#include <torch/torch.h>

#include "data2vec/core/ema.h"
#include "data2vec/core/encoder.h"
#include "data2vec/core/loss.h"
#include "data2vec/core/targets.h"

namespace data2vec {

struct Data2VecOptions {
  /// How targets are built from the teacher's layers.
  TORCH_ARG(TargetOptions, targets) = TargetOptions();
  /// The teacher's decay schedule.
  TORCH_ARG(EmaOptions, ema) = EmaOptions();
  /// The regression loss.
  TORCH_ARG(LossOptions, loss) = LossOptions();
  /// Regression head: 0 -> Linear(D,D); m > 0 -> Linear(D,mD) -> GELU -> Linear(mD,D) (text: 2).
  TORCH_ARG(int64_t, head_hidden_mult) = 0;
};

// What one forward pass produced. Tensors are on the model's device.
struct Data2VecOutput {
  torch::Tensor loss;          // scalar, with gradient to the student and the head
  torch::Tensor predictions;   // [N,D] head output at the N masked, real positions
  torch::Tensor targets;       // [N,D] fp32 teacher targets at the same positions
  torch::Tensor mask;          // [B,T] bool, the mask the student saw
  torch::Tensor padding_mask;  // [B,T] bool or undefined
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

  // The same pass with a given mask: `masked` is the student's view, `batch` the unmasked input
  // the teacher reads.
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
  torch::nn::Sequential head() const { return head_; }

 private:
  Data2VecOptions options_;
  std::shared_ptr<EncoderImpl> student_;
  std::shared_ptr<EncoderImpl> teacher_;
  torch::nn::Sequential head_{nullptr};
};
TORCH_MODULE(Data2Vec);

}  // namespace data2vec
