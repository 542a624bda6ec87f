#include "data2vec/text/masking.h"

#include <algorithm>

#include "data2vec/core/masking.h"

namespace data2vec::text {

TextMaskResult bert_mask(const torch::Tensor& ids, const torch::Tensor& padding_mask,
                         const std::vector<int64_t>& special_ids, int64_t mask_id,
                         int64_t vocab_size, const TextMaskOptions& options,
                         at::Generator& generator) {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == torch::kLong,
              "bert_mask: ids must be [B,T] int64, got ", ids.sizes(), " ", ids.scalar_type());
  TORCH_CHECK(!padding_mask.defined() || padding_mask.sizes() == ids.sizes(),
              "bert_mask: padding mask ", padding_mask.sizes(), " does not match ids ",
              ids.sizes());
  const double p_random = options.random_token_prob(), p_keep = options.leave_unmasked_prob();
  TORCH_CHECK(p_random >= 0 && p_keep >= 0 && p_random + p_keep <= 1.0,
              "bert_mask: random_token_prob ", p_random, " + leave_unmasked_prob ", p_keep,
              " must be probabilities summing to at most 1");
  TORCH_CHECK(mask_id >= 0 && mask_id < vocab_size, "bert_mask: mask id ", mask_id,
              " outside the vocabulary of ", vocab_size);
  const auto b = ids.size(0), t = ids.size(1);
  const auto cpu_ids = ids.cpu();
  const auto special = torch::tensor(special_ids, torch::kLong);

  // Not eligible = padding or a special id; core's random_mask never selects "padding" and fixes
  // the count at round(ratio * eligible), at least one.
  auto ineligible = torch::isin(cpu_ids, special);  // [B,T]
  if (padding_mask.defined()) ineligible = ineligible | padding_mask.cpu();
  const auto mask = random_mask(b, t, options.mask_prob(), ineligible, generator);  // [B,T]

  // Replacement draws for every position; only selected ones are used.
  std::vector<bool> is_special(vocab_size, false);
  for (const auto id : special_ids) {
    if (id >= 0 && id < vocab_size) is_special[id] = true;
  }
  is_special[mask_id] = true;
  std::vector<int64_t> allowed;
  for (int64_t id = 0; id < vocab_size; ++id) {
    if (!is_special[id]) allowed.push_back(id);
  }
  TORCH_CHECK(!allowed.empty() || p_random == 0.0,
              "bert_mask: no non-special id to draw random replacements from (vocab_size ",
              vocab_size, ")");
  const auto u = torch::rand({b, t}, generator, torch::kFloat64);  // [B,T] which kind
  const auto to_mask = mask & (u < 1.0 - p_random - p_keep);
  const auto to_random = mask & (u >= 1.0 - p_random - p_keep) & (u < 1.0 - p_keep);
  auto student = cpu_ids.masked_fill(to_mask, mask_id);
  if (!allowed.empty()) {
    const auto pick = torch::randint(static_cast<int64_t>(allowed.size()), {b, t}, generator,
                                     torch::kLong);  // [B,T] index into `allowed`
    const auto random_ids = torch::tensor(allowed, torch::kLong).index({pick});  // [B,T]
    student = torch::where(to_random, random_ids, student);
  }
  return {student.to(ids.device()), mask.to(ids.device())};
}

}  // namespace data2vec::text
