// Fine-tuning (arXiv 2202.03555 sec. 4): an encoder plus a linear head on a labelled dataset, trained end to end
// with AdamW, a cosine learning rate after a linear warm-up and layer-wise lr decay, on a
// class-balanced fraction of the labels (1%, 10%, 100%); scored by top-1 on the test dataset.
// The encoder runs unmasked (apply_mask is not used), in train mode while training and eval mode
// while scoring.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "data2vec/core/dataset.h"
#include "data2vec/core/encoder.h"
#include "data2vec/eval/features.h"

namespace data2vec::eval {

// What the per-step hook sees.
struct FinetuneStep {
  int64_t step = 0;   // optimizer steps done, this one included
  int64_t epoch = 0;  // 0-based
  double loss = 0;    // cross-entropy of this batch
  double lr = 0;      // peak-layer learning rate of this step
  int64_t total_steps = 0;  // optimizer steps the whole run takes (epochs x steps per epoch)
};

struct FinetuneOptions {
  /// Fraction of the labelled train examples used: a class-balanced, seeded subset of exactly
  /// round(fraction * labelled) examples (at least 1). Default 1.
  TORCH_ARG(double, label_fraction) = 1.0;
  /// Passes over the subset. Default 10.
  TORCH_ARG(int64_t, epochs) = 10;
  /// The first this many of `epochs` train the head alone on the frozen encoder (eval mode, no
  /// gradient into it), then everything trains: linear probing then fine-tuning (LP-FT, Kumar et
  /// al., arXiv 2202.10054), which distorts pretrained features less when labels are few. The
  /// lr schedule runs over all epochs. Default 0.
  TORCH_ARG(int64_t, head_only_epochs) = 0;
  /// Default 32.
  TORCH_ARG(int64_t, batch_size) = 32;
  /// Peak learning rate of the head and the top layer group. Default 1e-3.
  TORCH_ARG(double, lr) = 1e-3;
  /// Learning rate at the end of the cosine. Default 1e-6.
  TORCH_ARG(double, min_lr) = 1e-6;
  /// Linear warm-up from 0, in epochs (fractions allowed). Default 1.
  TORCH_ARG(double, warmup_epochs) = 1.0;
  /// AdamW decoupled weight decay; none on biases, norms, layer scales, tokens and position
  /// tables. Default 0.05.
  TORCH_ARG(double, weight_decay) = 0.05;
  /// Default 0.9.
  TORCH_ARG(double, beta1) = 0.9;
  /// Default 0.999.
  TORCH_ARG(double, beta2) = 0.999;
  /// Layer-wise lr decay: a parameter of layer group id gets lr * decay^(L+1-id) (see
  /// layer_id_from_name); 1 turns it off. Default 0.65 (vision).
  TORCH_ARG(double, layer_decay) = 0.65;
  /// Label smoothing of the cross-entropy (Szegedy et al., arXiv 1512.00567): the target puts
  /// 1 - s on the label and s spread evenly over all classes, so the head cannot drive its logits
  /// to the few examples' extremes. data2vec's image fine-tuning (the BEiT recipe) uses 0.1.
  /// In [0, 1). Default 0.
  TORCH_ARG(double, label_smoothing) = 0.0;
  /// Mixup (Zhang et al., arXiv 1710.09412) while the encoder trains: each batch becomes
  /// lam * x + (1 - lam) * x[perm] with lam ~ Beta(alpha, alpha), the loss the same mix of the
  /// two labels' losses. 0 = off. Unpadded floating-point inputs only (images, not token ids).
  /// data2vec's image fine-tuning uses 0.8. Default 0.
  TORCH_ARG(double, mixup) = 0.0;
  /// Random translation while the encoder trains: each image moves by up to this many pixels
  /// in each direction, independently per example, the uncovered border filled with the image's
  /// darkest value (the standard "pad and random crop" of small-image training, e.g. CIFAR in
  /// He et al., arXiv 1512.03385). 0 = off. Images only. Default 0.
  TORCH_ARG(int64_t, shift) = 0;
  /// Gradient-norm clip; 0 = none. Default 0.
  TORCH_ARG(double, clip_grad_norm) = 0.0;
  /// Pooling of the encoder output before the head. Default mean.
  TORCH_ARG(PoolMode, pool) = PoolMode::kMean;
  /// Classes C; 0 = dataset.num_classes(), else 1 + the largest train label. Default 0.
  TORCH_ARG(int64_t, num_classes) = 0;
  /// Seeds the subset, the shuffling, the head init and (through torch::manual_seed, which this
  /// sets globally) dropout. Default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Where training runs; the encoder and head are moved there. Default CPU.
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// bf16 autocast for forward passes (fp32 weights). Default false.
  TORCH_ARG(bool, bf16) = false;
  /// train_acc is measured on at most this many subset examples (0 = all). Default 10000.
  TORCH_ARG(int64_t, train_eval_limit) = 10000;
  /// Called after every optimizer step. Default none.
  TORCH_ARG(std::function<void(const FinetuneStep&)>, on_step) = nullptr;
};

struct FinetuneResult {
  double test_acc = 0;              // top-1 on the test dataset (eval mode)
  double train_acc = 0;             // top-1 on (up to train_eval_limit of) the train subset
  int64_t steps = 0;                // optimizer steps taken
  int64_t train_examples = 0;       // size of the label-fraction subset
  int64_t num_skipped = 0;          // bad examples skipped (train + test reads)
  double final_loss = 0;            // mean training loss of the last epoch
  torch::nn::Linear head{nullptr};  // the trained head, D -> C
};

// Fine-tunes `encoder` IN PLACE (pass a pretrained student, or a freshly built encoder for the
// random-init baseline) with a new linear head, and scores it. Leaves the encoder in eval mode.
FinetuneResult finetune(const std::shared_ptr<EncoderImpl>& encoder, const Dataset& train,
                        const Dataset& test, const FinetuneOptions& options = {});

// `images` [B,C,H,W] each moved by its own (dy, dx) in [-max_shift, max_shift]^2 drawn from
// `rng`, the uncovered border filled with that image's minimum.
torch::Tensor random_shift(const torch::Tensor& images, int64_t max_shift, std::mt19937_64& rng);

// The fine-tuning loss: cross-entropy of logits [N,C] against labels [N] (-1 = unlabelled, left
// out of the mean) with label smoothing s: (1 - s) * -log p[label] + s * mean_c(-log p[c]).
torch::Tensor classification_loss(const torch::Tensor& logits, const torch::Tensor& labels,
                                  double label_smoothing);

// Layer group of a parameter for layer-wise lr decay, given L = num_layers:
//   a name with a segment "layer.<i>." or "layers.<i>."          -> i + 1
//   else one containing embed, token, patch, feature_extractor,
//        feature_projection, pos_conv, position or mask_emb    -> 0
//   else (final norms, heads, shared biases)                      -> L + 1
int64_t layer_id_from_name(const std::string& name, int64_t num_layers);

// decay^(L + 1 - layer_id).
double layer_lr_scale(int64_t layer_id, int64_t num_layers, double decay);

// Class-balanced seeded subset of exactly clamp(round(fraction * n), 1, n) indices, n = the
// number of labels >= 0 (-1 = unlabelled, never chosen): classes are dealt round-robin (in a
// seeded order, each class's examples in a seeded order), so class counts differ by at most one
// unless a class runs out. Sorted ascending.
std::vector<size_t> label_fraction_subset(const std::vector<int64_t>& labels, double fraction,
                                          uint64_t seed);

// Learning rate at 0-based `step`: peak * (step + 1) / warmup_steps during the warm-up (so no step
// runs at lr 0), then a cosine from `peak` down to `min_lr` at `total_steps` (and min_lr after).
double warmup_cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak,
                        double min_lr);

}  // namespace data2vec::eval
