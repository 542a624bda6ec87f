// The data contract between a modality's readers and the trainer / evaluators:
//   dataset.get(index, seed) -> Example -> dataset.collate(examples) -> Batch -> model
#pragma once

#include <torch/torch.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "data2vec/core/encoder.h"

namespace data2vec {

// One example as read (and augmented) from disk.
struct Example {
  torch::Tensor source;  // image [C,H,W] | waveform [S] | token ids [T] | vectors [T,F]
  int64_t label = -1;    // class index, -1 when unlabelled
};

// A batch ready for the model.
struct Batch {
  EncoderInput input;           // stacked / padded sources and their padding mask
  torch::Tensor labels;         // [B] int64, -1 where unknown
  std::vector<size_t> indices;  // dataset indices of the examples, in batch order
};

// Thrown by Dataset::get for a corrupt or unreadable example. Long jobs catch it, count it and
// skip the example; the message names the file.
class BadSample : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  // Reads example `index`; `seed` drives its random augmentation, so the same (index, seed)
  // always gives the same tensor whatever thread runs it. Must be safe to call concurrently.
  virtual Example get(size_t index, uint64_t seed) const = 0;
  // Stacks equal-shape sources; modalities with variable lengths pad and set padding_mask.
  virtual Batch collate(std::vector<Example> examples) const;
  // A human-readable name of example `index` (its file) for logs and errors.
  virtual std::string describe(size_t index) const { return "example #" + std::to_string(index); }
  // Number of classes of the labels, 0 when unlabelled.
  virtual int64_t num_classes() const { return 0; }
  // Examples cut from one longer item (a text document read as several blocks) share its
  // document id >= 0: feature extraction averages them into one row per document, so a probe
  // reads the whole document rather than its first block. -1: the example stands alone.
  virtual int64_t document(size_t /*index*/) const { return -1; }
};

}  // namespace data2vec
