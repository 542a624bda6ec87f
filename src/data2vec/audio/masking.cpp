#include "data2vec/audio/masking.h"

#include <algorithm>
#include <vector>

#include "data2vec/core/masking.h"

namespace data2vec::audio {

namespace {

// Sorted masked frame indices of one example with `length` real frames.
std::vector<int64_t> example_spans(int64_t length, const SpanMaskOptions& options,
                                   at::Generator& generator) {
  if (length <= 0) return {};
  const double draw = torch::rand({1}, generator, torch::kFloat64).item<double>();
  const auto num_spans = std::max<int64_t>(
      options.min_masks(),
      static_cast<int64_t>(options.mask_prob() * double(length) / double(options.mask_length()) +
                           draw));
  if (num_spans == 0) return {};
  // fairseq: starts in [0, length - mask_length), widened to num_spans + 1 when too short.
  int64_t num_starts = length - options.mask_length();
  if (num_starts <= num_spans) num_starts = num_spans + 1;
  const auto starts = torch::randperm(num_starts, generator, torch::kLong).slice(0, 0, num_spans);
  std::vector<char> masked(static_cast<size_t>(length), 0);
  const auto* s = starts.data_ptr<int64_t>();
  for (int64_t i = 0; i < num_spans; ++i) {
    const int64_t end = std::min(s[i] + options.mask_length(), length);
    for (int64_t f = s[i]; f < end; ++f) masked[static_cast<size_t>(f)] = 1;
  }
  std::vector<int64_t> frames;
  for (int64_t f = 0; f < length; ++f) {
    if (masked[static_cast<size_t>(f)]) frames.push_back(f);
  }
  return frames;
}

}  // namespace

torch::Tensor span_mask(const torch::Tensor& lengths, int64_t time, const SpanMaskOptions& options,
                        at::Generator& generator) {
  TORCH_CHECK(lengths.dim() == 1, "span_mask: lengths must be [B], got shape ", lengths.sizes());
  TORCH_CHECK(options.mask_prob() > 0.0 && options.mask_prob() <= 1.0,
              "span_mask: mask_prob must be in (0, 1], got ", options.mask_prob());
  TORCH_CHECK(options.mask_length() >= 1, "span_mask: mask_length must be >= 1, got ",
              options.mask_length());
  const auto lengths_cpu = lengths.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t batch = lengths_cpu.size(0);
  const auto* len = lengths_cpu.data_ptr<int64_t>();

  std::vector<std::vector<int64_t>> per_example;
  per_example.reserve(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(len[b] <= time, "span_mask: example ", b, " has ", len[b], " real frames but the ",
                "batch has only ", time);
    per_example.push_back(example_spans(len[b], options, generator));
  }
  size_t keep = 0;
  if (!per_example.empty()) {
    keep =
        std::min_element(per_example.begin(), per_example.end(), [](const auto& a, const auto& b) {
          return a.size() < b.size();
        })->size();
  }

  auto mask = torch::zeros({batch, time}, torch::kBool);  // [B,T]
  auto* m = mask.data_ptr<bool>();
  for (int64_t b = 0; b < batch; ++b) {
    auto& frames = per_example[static_cast<size_t>(b)];
    if (options.require_same_masks() && frames.size() > keep) {
      const auto pick =
          torch::randperm(static_cast<int64_t>(frames.size()), generator, torch::kLong)
              .slice(0, 0, static_cast<int64_t>(keep));
      const auto* p = pick.data_ptr<int64_t>();
      std::vector<int64_t> kept(keep);
      for (size_t i = 0; i < keep; ++i) kept[i] = frames[static_cast<size_t>(p[i])];
      frames.swap(kept);
    }
    for (const int64_t f : frames) m[b * time + f] = true;
  }
  return mask;
}

torch::Tensor block_mask_1d(const torch::Tensor& lengths, int64_t time,
                            const BlockMask1dOptions& options, at::Generator& generator) {
  TORCH_CHECK(lengths.dim() == 1, "block_mask_1d: lengths must be [B], got shape ",
              lengths.sizes());
  TORCH_CHECK(options.mask_ratio() > 0.0 && options.mask_ratio() < 1.0,
              "block_mask_1d: mask_ratio must be in (0, 1), got ", options.mask_ratio());
  TORCH_CHECK(options.block_length() >= 1, "block_mask_1d: block_length must be >= 1, got ",
              options.block_length());
  const auto lengths_cpu = lengths.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t batch = lengths_cpu.size(0);
  const auto* len = lengths_cpu.data_ptr<int64_t>();
  auto mask = torch::zeros({batch, time}, torch::kBool);  // [B,T]
  if (batch == 0) return mask;
  auto* m = mask.data_ptr<bool>();
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(len[b] <= time, "block_mask_1d: example ", b, " has ", len[b],
                " real frames but the batch has only ", time);
    const int64_t length = len[b];
    const int64_t target = v2_masked_count(length, options.mask_ratio());  // its own share
    const int64_t blocks = std::max<int64_t>(1, length - options.block_length() + 1);  // starts
    int64_t count = 0;
    while (count < target) {
      // A batch of candidate starts per generator call; each block adds its new frames in order.
      const auto starts = torch::randint(blocks, {16}, generator, torch::kLong);
      const auto* s = starts.data_ptr<int64_t>();
      for (int64_t i = 0; i < 16 && count < target; ++i) {
        const int64_t end = std::min(s[i] + options.block_length(), length);
        for (int64_t f = s[i]; f < end && count < target; ++f) {
          if (!m[b * time + f]) {
            m[b * time + f] = true;
            ++count;
          }
        }
      }
    }
  }
  const auto padding = torch::arange(time).unsqueeze(0) >= lengths_cpu.unsqueeze(1);  // [B,T]
  return drop_padding_to_kept_count(mask, padding, v2_kept_count(time, options.mask_ratio()));
}

}  // namespace data2vec::audio
