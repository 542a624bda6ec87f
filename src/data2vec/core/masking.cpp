#include "data2vec/core/masking.h"

#include <algorithm>
#include <cmath>

namespace data2vec {

torch::Tensor real_lengths(const torch::Tensor& padding_mask, int64_t batch, int64_t time) {
  if (!padding_mask.defined()) return torch::full({batch}, time, torch::kLong);
  TORCH_CHECK(padding_mask.scalar_type() == torch::kBool, "padding_mask must be bool, got ",
              padding_mask.scalar_type());
  return (~padding_mask).sum(/*dim=*/1).to(torch::kLong).cpu();
}

torch::Tensor random_mask(int64_t batch, int64_t time, double ratio,
                          const torch::Tensor& padding_mask, at::Generator& generator) {
  TORCH_CHECK(ratio > 0.0 && ratio < 1.0, "mask ratio must be in (0, 1), got ", ratio);
  const auto lengths = real_lengths(padding_mask, batch, time);
  // Random scores; padded positions score +inf so they sort last and are never chosen.
  auto scores = torch::rand({batch, time}, generator, torch::kFloat32);
  if (padding_mask.defined()) scores.masked_fill_(padding_mask.cpu(), 2.0);
  const auto order = scores.argsort(/*dim=*/int64_t{1});  // [B,T] positions by score
  auto mask = torch::zeros({batch, time}, torch::kBool);
  auto lengths_a = lengths.accessor<int64_t, 1>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = lengths_a[b];
    const int64_t n =
        length == 0 ? 0 : std::clamp<int64_t>(std::llround(ratio * double(length)), 1, length);
    mask[b].index_fill_(0, order[b].slice(0, 0, n), true);
  }
  return padding_mask.defined() ? mask.to(padding_mask.device()) : mask;
}

int64_t v2_masked_count(int64_t length, double ratio) {
  TORCH_CHECK(ratio > 0.0 && ratio < 1.0, "mask ratio must be in (0, 1), got ", ratio);
  TORCH_CHECK(length >= 2, "data2vec 2.0 mask: an example has ", length,
              " real positions; it needs at least 2 (one masked, one kept)");
  return std::clamp<int64_t>(std::llround(ratio * double(length)), 1, length - 1);
}

int64_t v2_kept_count(int64_t time, double ratio) {
  return time - v2_masked_count(time, ratio);
}

torch::Tensor drop_padding_to_kept_count(const torch::Tensor& mask, const torch::Tensor& padding,
                                         int64_t kept) {
  TORCH_CHECK(mask.dim() == 2 && mask.scalar_type() == torch::kBool,
              "drop_padding_to_kept_count: mask must be [R,T] bool, got ", mask.sizes(), " ",
              mask.scalar_type());
  if (!padding.defined()) return mask;
  const auto real_mask = mask & ~padding;
  const auto kept_real = (~real_mask & ~padding).sum(1);  // [R]
  const auto padded = padding.sum(1);                     // [R]
  const auto fill = kept - kept_real;                     // padded positions each row keeps
  TORCH_CHECK(((fill >= 0) & (fill <= padded)).all().item<bool>(),
              "drop_padding_to_kept_count: rows keep ", kept_real.min().item<int64_t>(), "..",
              kept_real.max().item<int64_t>(), " real positions and have ",
              padded.min().item<int64_t>(), "..", padded.max().item<int64_t>(),
              " padded ones; they cannot all keep ", kept);
  // The k-th padded position of a row (k from 1) stays kept while k <= fill.
  const auto dropped = padding & (padding.to(torch::kLong).cumsum(1) > fill.unsqueeze(1));
  return real_mask | dropped;
}

torch::Tensor random_mask_same_count(int64_t batch, int64_t time, double ratio,
                                     const torch::Tensor& padding_mask, at::Generator& generator) {
  const auto lengths = real_lengths(padding_mask, batch, time);
  auto counts = torch::empty({batch}, torch::kLong);  // masked per row
  const auto lengths_a = lengths.accessor<int64_t, 1>();
  auto counts_a = counts.accessor<int64_t, 1>();
  for (int64_t b = 0; b < batch; ++b) counts_a[b] = v2_masked_count(lengths_a[b], ratio);
  auto scores = torch::rand({batch, time}, generator, torch::kFloat32);
  const auto padding = padding_mask.defined() ? padding_mask.cpu() : padding_mask;
  if (padding.defined()) scores.masked_fill_(padding, 2.0);  // sort last
  const auto order = scores.argsort(/*dim=*/int64_t{1});     // [B,T] positions by score
  const auto rank = order.argsort(/*dim=*/int64_t{1});       // [B,T] each position's place
  const auto mask = drop_padding_to_kept_count(rank < counts.unsqueeze(1), padding,
                                               batch == 0 ? 0 : v2_kept_count(time, ratio));
  return padding_mask.defined() ? mask.to(padding_mask.device()) : mask;
}

torch::Tensor keep_indices(const torch::Tensor& mask) {
  TORCH_CHECK(mask.dim() == 2 && mask.scalar_type() == torch::kBool,
              "keep_indices: mask must be [R,T] bool, got ", mask.sizes(), " ", mask.scalar_type());
  const auto rows = mask.size(0);
  const auto kept_per_row = (~mask).sum(1);  // [R]
  const int64_t kept = rows == 0 ? 0 : kept_per_row[0].item<int64_t>();
  TORCH_CHECK((kept_per_row == kept).all().item<bool>(),
              "keep_indices: rows keep different numbers of positions (min ",
              kept_per_row.min().item<int64_t>(), ", max ", kept_per_row.max().item<int64_t>(),
              "); data2vec 2.0 masks must keep the same count in every row");
  // nonzero lists (row, column) pairs in row-major order: columns ascend within a row.
  return torch::nonzero(~mask).select(1, 1).view({rows, kept});
}

torch::Tensor gather_positions(const torch::Tensor& x, const torch::Tensor& ids_keep) {
  TORCH_CHECK(x.dim() == 3 && ids_keep.dim() == 2 && x.size(0) == ids_keep.size(0),
              "gather_positions: x ", x.sizes(), " and ids_keep ", ids_keep.sizes(),
              " must be [R,T,D] and [R,Tk]");
  return x.gather(1, ids_keep.unsqueeze(-1).expand({-1, -1, x.size(2)}));  // [R,Tk,D]
}

torch::Tensor gather_copies(const torch::Tensor& x, const torch::Tensor& ids_keep, int64_t clones) {
  TORCH_CHECK(x.dim() >= 2 && ids_keep.dim() == 2 && ids_keep.size(0) == x.size(0) * clones,
              "gather_copies: x ", x.sizes(), " and ids_keep ", ids_keep.sizes(),
              " must be [B,T,...] and [B*", clones, ",Tk]");
  // Rows of x as a [B*T,...] matrix: index_select, whose backward (index_add_) ran 0.3 ms
  // where x.index({example, ids_keep})'s (index_put_ accumulating) ran 2.0 ms on the 2.0 demo's
  // 256 copies x 11 kept patches of 128.
  const auto t = x.size(1);
  const auto example = torch::arange(ids_keep.size(0), ids_keep.options())
                           .div(clones, "floor")
                           .unsqueeze(1);                    // [B*M,1]
  const auto rows = (example * t + ids_keep).reshape({-1});  // [B*M*Tk]
  auto shape = x.sizes().vec();                              // [B,T,...] -> [B*M,Tk,...]
  shape[0] = ids_keep.size(0);
  shape[1] = ids_keep.size(1);
  return x.flatten(0, 1).index_select(0, rows).view(shape);
}

namespace {

// Rows of a [M,D] matrix at distinct indices [N]; the gradient goes back to those rows only.
class SelectRowsFunction : public torch::autograd::Function<SelectRowsFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& rows,
                               const torch::Tensor& index) {
    ctx->save_for_backward({index});
    ctx->saved_data["rows"] = rows.size(0);
    return rows.index_select(0, index);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto index = ctx->get_saved_variables()[0];
    const auto& grad = grads[0];
    // The indices are distinct (a mask's positions): no accumulation needed.
    auto d_rows = torch::zeros({ctx->saved_data["rows"].toInt(), grad.size(1)}, grad.options());
    d_rows.index_put_({index}, grad);
    return {d_rows, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor select_positions(const torch::Tensor& x, const torch::Tensor& selected) {
  TORCH_CHECK(x.dim() == 3 && selected.dim() == 2 && selected.scalar_type() == torch::kBool &&
                  x.sizes().slice(0, 2) == selected.sizes(),
              "select_positions: x ", x.sizes(), " and selected ", selected.sizes(), " ",
              selected.scalar_type(), " must be [R,T,D] and [R,T] bool");
  const auto index = torch::nonzero(selected.reshape({-1})).view({-1});  // row-major order
  return SelectRowsFunction::apply(x.reshape({-1, x.size(2)}), index);
}

torch::Tensor restore_positions(const torch::Tensor& kept, const torch::Tensor& ids_keep,
                                const torch::Tensor& fill) {
  TORCH_CHECK(kept.dim() == 3 && fill.dim() == 3 && kept.size(0) == fill.size(0) &&
                  kept.size(2) == fill.size(2) && ids_keep.sizes() == kept.sizes().slice(0, 2),
              "restore_positions: kept ", kept.sizes(), ", ids_keep ", ids_keep.sizes(),
              " and fill ", fill.sizes(), " do not match");
  return fill.to(kept.scalar_type())
      .scatter(1, ids_keep.unsqueeze(-1).expand({-1, -1, kept.size(2)}), kept);  // [R,T,D]
}

}  // namespace data2vec
