// The encoder interface: what a modality (or a user) plugs into Data2Vec.
//
// Shape vocabulary used throughout the core:
//   B batch, T encoder time steps (patches / frames / tokens), D model width, L layers.
//
// An encoder provides two capabilities, named as in the original data2vec design:
//   apply_mask(input, generator)    -> the student's input and a boolean mask [B,T] (true = masked)
//   extract_features(input, mask)   -> final output [B,T,D], one result per layer, padding mask
// and, optionally, teacher_features(): how the EMA copy reads the batch (default: the unmasked
// input through extract_features; audio reads the student's unmasked local features instead).
//
// data2vec 2.0 (data2vec 2.0, arXiv 2212.07525) needs one more, optional, capability: encoding only the kept
// positions of M masked copies of each example. An encoder that has it overrides
//   supports_kept_encoding() -> true
//   v2_mask(input, clones, generator)            -> [B*M,T] bool, the same masked count per row
//   extract_kept_features(input, ids_keep, M)    -> x [B*M,Tk,D] at the kept positions only
//   default_decoder_options()                    -> the modality's decoder (1-D or 2-D)
// An encoder without it (a user's own, written for 1.0) still trains with algorithm v1.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "data2vec/core/decoder.h"

namespace data2vec {

// Which tensor of a transformer layer counts as its "layer result" (arXiv 2202.03555, sec. 3).
enum class LayerResultKind {
  kFfn,    // feed-forward output before the residual add, dropout and the final layer norm
  kBlock,  // the block's output after its residual (data2vec 1.0 vision)
};

LayerResultKind parse_layer_result_kind(const std::string& name);
std::string to_string(LayerResultKind kind);

// One batch as the model sees it.
struct EncoderInput {
  torch::Tensor source;  // images [B,C,H,W] | waveforms [B,S] | token ids [B,T] | vectors [B,T,F]
  torch::Tensor
      padding_mask;  // [B,S] or [B,T] bool, true = padding; undefined when nothing is padded

  EncoderInput to(const torch::Device& device) const;
  int64_t batch_size() const { return source.size(0); }
};

// What apply_mask returns: the student's input and the positions the student must predict.
struct MaskedInput {
  EncoderInput student;  // e.g. text: ids with <mask> substituted; images: unchanged pixels
  torch::Tensor mask;    // [B,T] bool, true = masked; on padding only where a 2.0 row drops it
};

// What extract_features returns.
// (From extract_kept_features: x, layer_results and padding_mask are [B*M,Tk,...] over the kept
// positions of the copies; local_features stays [B,T,D], once per original example.)
struct EncoderOutput {
  torch::Tensor x;                           // [B,T,D] final output
  std::vector<torch::Tensor> layer_results;  // L x [B,T,D], in layer order (kind per options)
  torch::Tensor padding_mask;                // [B,T] bool, true = padding; undefined when none
  torch::Tensor local_features;              // [B,T,D] unmasked local features (before masking)
  // [B,T,D] what entered the first block (Hugging Face's hidden_states[0]); set by the built-in
  // encoders' extract_features, may be undefined for others.
  torch::Tensor block_input;
};

class EncoderImpl : public torch::nn::Module {
 public:
  ~EncoderImpl() override = default;

  // Width D of the encoder's output.
  virtual int64_t embed_dim() const = 0;
  // Number of transformer layers L (= layer_results.size()).
  virtual int64_t num_layers() const = 0;

  // Chooses the mask by the modality's strategy and builds the student's input.
  virtual MaskedInput apply_mask(const EncoderInput& input, at::Generator& generator) = 0;

  // Runs the encoder. `mask` [B,T] bool marks positions whose local features are replaced by the
  // mask embedding; an undefined mask means nothing is masked.
  virtual EncoderOutput extract_features(const EncoderInput& input, const torch::Tensor& mask) = 0;

  // The teacher's forward, called on the EMA copy under no-grad with the UNMASKED batch and the
  // student's output of the same step. Default: the whole encoder on the unmasked input.
  virtual EncoderOutput teacher_features(const EncoderInput& input, const EncoderOutput& student) {
    return extract_features(input, torch::Tensor());
  }

  // Leading positions of the output that are not part of the input sequence (vision: 1 for the
  // CLS token). They are never masked; mean pooling skips them.
  virtual int64_t num_prefix_tokens() const { return 0; }

  // Parameter-name prefixes the teacher copies from the student instead of averaging
  // (e.g. text embeddings). Buffers are always copied.
  virtual std::vector<std::string> ema_copied_prefixes() const { return {}; }

  // ---- data2vec 2.0 (optional) ----

  // Whether the three methods below are implemented. Data2Vec with algorithm v2 requires it.
  virtual bool supports_kept_encoding() const { return false; }

  // The 2.0 mask strategy for `clones` copies of each example: [B*clones, T] bool (true =
  // masked), copies of example b in rows b*clones .. b*clones+clones-1, each with its own draw,
  // each row masking its own share of ITS real positions, never a prefix token, and EVERY row
  // keeping the same number of positions (so kept positions gather into a rectangle) by keeping
  // or dropping (marking true) padding as core/masking.h's v2 helpers do; that number must
  // depend only on T, so the masks of parts of a batch join. Padding never counts in the loss.
  virtual torch::Tensor v2_mask(const EncoderInput& input, int64_t clones,
                                at::Generator& generator);

  // The student's 2.0 forward: local features once per example, repeated `clones` times, then
  // only the kept positions `ids_keep` [B*clones,Tk] int64 (ascending; see keep_indices) through
  // the blocks. Returns x [B*clones,Tk,D], padding_mask [B*clones,Tk] (undefined when none),
  // local_features [B,T,D]; layer_results may be empty (the student's are never read).
  virtual EncoderOutput extract_kept_features(const EncoderInput& input,
                                              const torch::Tensor& ids_keep, int64_t clones);

  // The modality's 2.0 decoder (data2vec 2.0, arXiv 2212.07525): 1-D 384/k7/g16/4 blocks by default; vision 2-D.
  virtual DecoderOptions default_decoder_options() const { return DecoderOptions(); }
};

// Builds a fresh encoder; Data2Vec calls it twice (student and teacher).
using EncoderFactory = std::function<std::shared_ptr<EncoderImpl>()>;

}  // namespace data2vec
