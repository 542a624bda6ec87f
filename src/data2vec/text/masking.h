// BERT-style token masking for the text student (arXiv 2202.03555 and fairseq's data2vec configs, text column).
//
// Per sequence, among its eligible tokens (real, i.e. not padding, and not one of the special
// ids), exactly n = max(1, round(mask_prob * eligible)) are selected uniformly without
// replacement (round = half away from zero; n = 0 only when nothing is eligible). Each selected
// token independently becomes
//   <mask>                                with probability 1 - random_token_prob -
//   leave_unmasked_prob a uniform random non-special id       with probability random_token_prob
//   itself                                with probability leave_unmasked_prob.
// The mask marks every selected position (all three kinds): the loss covers all of them.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace data2vec::text {

struct TextMaskOptions {
  /// Fraction of eligible tokens selected per sequence. Default 0.15.
  TORCH_ARG(double, mask_prob) = 0.15;
  /// Of the selected, the fraction replaced by a random non-special token. Default 0.1.
  TORCH_ARG(double, random_token_prob) = 0.1;
  /// Of the selected, the fraction left unchanged. Default 0.1 (so 0.8 become <mask>).
  TORCH_ARG(double, leave_unmasked_prob) = 0.1;
};

struct TextMaskResult {
  torch::Tensor ids;   // [B,T] int64, the student's input: selected tokens substituted
  torch::Tensor mask;  // [B,T] bool, true at every selected position; never on padding
};

// ids [B,T] int64 (any device); padding_mask [B,T] bool, true = padding (may be undefined);
// special_ids: never selected and never drawn as random replacements (include pad: ids equal to
// it count as special even where padding_mask is false);
// vocab_size bounds the random replacements. Runs on the CPU with `generator`; the result is on
// the device of `ids`.
TextMaskResult bert_mask(const torch::Tensor& ids, const torch::Tensor& padding_mask,
                         const std::vector<int64_t>& special_ids, int64_t mask_id,
                         int64_t vocab_size, const TextMaskOptions& options,
                         at::Generator& generator);

}  // namespace data2vec::text
