#include "data2vec/core/data2vec.h"

#include <algorithm>

#include "data2vec/core/masking.h"

namespace data2vec {

namespace {

torch::nn::Sequential make_head(int64_t dim, int64_t hidden_mult) {
  if (hidden_mult <= 0) return torch::nn::Sequential(torch::nn::Linear(dim, dim));
  return torch::nn::Sequential(torch::nn::Linear(dim, hidden_mult * dim), torch::nn::GELU(),
                               torch::nn::Linear(hidden_mult * dim, dim));
}

// Masked real positions / real positions, counted over the input sequence: the positions after
// the `prefix` tokens (vision's CLS), which are never masked and stand for no input patch.
// selected, padding: [B,T] bool (padding may be undefined).
torch::Tensor masked_fraction(const torch::Tensor& selected, const torch::Tensor& padding,
                              int64_t prefix) {
  const auto positions = selected.slice(1, prefix);
  const auto real = padding.defined() ? (~padding.slice(1, prefix)).sum()
                                      : torch::full({}, positions.numel(), torch::kLong);
  return positions.sum().to(torch::kFloat64) / real.to(torch::kFloat64).clamp_min(1);
}

}  // namespace

Algorithm parse_algorithm(const std::string& name) {
  if (name == "v1") return Algorithm::kV1;
  if (name == "v2") return Algorithm::kV2;
  TORCH_CHECK(false, "unknown data2vec algorithm '", name, "' (expected v1 or v2)");
}

std::string to_string(Algorithm algorithm) {
  return algorithm == Algorithm::kV1 ? "v1" : "v2";
}

Data2VecImpl::Data2VecImpl(const EncoderFactory& make_encoder, const Data2VecOptions& options)
    : options_(options) {
  student_ = register_module("student", make_encoder());
  teacher_ = register_module("teacher", make_encoder());
  TORCH_CHECK(options_.targets().top_k_layers() <= student_->num_layers(),
              "top_k_layers = ", options_.targets().top_k_layers(), " but the encoder has only ",
              student_->num_layers(), " layers");
  if (options_.algorithm() == Algorithm::kV1) {
    head_ = register_module("head", make_head(student_->embed_dim(), options_.head_hidden_mult()));
  } else {
    TORCH_CHECK(student_->supports_kept_encoding(),
                "algorithm v2 needs an encoder that can encode only the kept positions "
                "(supports_kept_encoding, v2_mask, extract_kept_features; see core/encoder.h); "
                "this one supports algorithm v1 only");
    TORCH_CHECK(options_.clone_batch() >= 1, "clone_batch must be >= 1, got ",
                options_.clone_batch());
    decoder_ = register_module(
        "decoder",
        Decoder(student_->embed_dim(),
                override_decoder_options(student_->default_decoder_options(),
                                         options_.decoder_dim(), options_.decoder_kernel(),
                                         options_.decoder_groups(), options_.decoder_layers())));
  }
  copy_module_state(*teacher_, *student_);
  for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
  teacher_->eval();
}

void Data2VecImpl::train(bool on) {
  torch::nn::Module::train(on);
  teacher_->eval();
}

std::vector<torch::Tensor> Data2VecImpl::trainable_parameters() const {
  auto params = student_->parameters();
  const auto predictor = head_ ? head_->parameters() : decoder_->parameters();
  params.insert(params.end(), predictor.begin(), predictor.end());
  // Frozen tensors (fixed sin-cos positions) get no gradient: nothing to clip or average.
  params.erase(std::remove_if(params.begin(), params.end(),
                              [](const torch::Tensor& p) { return !p.requires_grad(); }),
               params.end());
  return params;
}

MaskedInput Data2VecImpl::apply_mask(const EncoderInput& batch, at::Generator& generator) {
  if (options_.algorithm() == Algorithm::kV1) return student_->apply_mask(batch, generator);
  return {batch, student_->v2_mask(batch, options_.clone_batch(), generator)};
}

Data2VecOutput Data2VecImpl::forward(const EncoderInput& batch, at::Generator& generator) {
  return forward_masked(batch, apply_mask(batch, generator));
}

Data2VecOutput Data2VecImpl::forward_masked(const EncoderInput& batch, const MaskedInput& masked) {
  return options_.algorithm() == Algorithm::kV1 ? forward_v1(batch, masked)
                                                : forward_v2(batch, masked.mask);
}

torch::Tensor Data2VecImpl::teacher_targets(const EncoderInput& batch,
                                            const EncoderOutput& student_output) {
  torch::NoGradGuard no_grad;
  const EncoderOutput teacher_output = teacher_->teacher_features(batch, student_output);
  return build_targets(teacher_output.layer_results, teacher_output.padding_mask,
                       options_.targets());  // [B,T,D] fp32
}

Data2VecOutput Data2VecImpl::forward_v1(const EncoderInput& batch, const MaskedInput& masked) {
  const EncoderOutput student_output = student_->extract_features(masked.student, masked.mask);
  const torch::Tensor targets = teacher_targets(batch, student_output);

  // Positions that count: masked and real. Padding never counts, whatever the mask says.
  torch::Tensor selected = masked.mask.to(torch::kBool);  // [B,T]
  if (student_output.padding_mask.defined()) selected = selected & ~student_output.padding_mask;

  Data2VecOutput out;
  out.mask = masked.mask;
  out.padding_mask = student_output.padding_mask;
  out.predictions = head_->forward(select_positions(student_output.x, selected));  // [N,D]
  out.targets = select_positions(targets, selected);                               // [N,D]
  out.loss = regression_loss(out.predictions, out.targets, options_.loss());
  out.target_std = mean_std_over_positions(out.targets);
  out.pred_std = mean_std_over_positions(out.predictions);
  out.masked_frac =
      masked_fraction(selected, student_output.padding_mask, student_->num_prefix_tokens());
  return out;
}

Data2VecOutput Data2VecImpl::forward_v2(const EncoderInput& batch, const torch::Tensor& mask_in) {
  const int64_t m = options_.clone_batch(), b = batch.batch_size();
  const int64_t prefix = student_->num_prefix_tokens();
  const torch::Tensor mask = mask_in.to(torch::kBool);  // [B*M,T]
  TORCH_CHECK(mask.dim() == 2 && mask.size(0) == b * m, "v2: the mask must be [B*M, T] = [", b * m,
              ", T] for ", b, " examples x clone_batch ", m, ", got ", mask.sizes());

  // Student: only the kept positions of every copy.
  const torch::Tensor ids_keep = keep_indices(mask);  // [B*M,Tk]
  const EncoderOutput student_output = student_->extract_kept_features(batch, ids_keep, m);
  const torch::Tensor& kept = student_output.x;  // [B*M,Tk,D]

  // Teacher: once per original example, on the whole unmasked input; FFN layer results of the
  // positions after the prefix (CLS) tokens.
  torch::Tensor targets, padding;  // [B,T-prefix,D] fp32; [B,T] bool or undefined
  {
    torch::NoGradGuard no_grad;
    const EncoderOutput teacher_output = teacher_->teacher_features(batch, student_output);
    padding = teacher_output.padding_mask;
    std::vector<torch::Tensor> layers;
    for (const auto& layer : teacher_output.layer_results) layers.push_back(layer.slice(1, prefix));
    targets = build_targets(layers, padding.defined() ? padding.slice(1, prefix) : padding,
                            options_.targets());
  }
  const torch::Tensor copies_padding =
      padding.defined() ? padding.repeat_interleave(m, 0) : padding;  // [B*M,T]

  // Decoder input: encoder output at kept slots, N(0, std) noise at masked slots, original order.
  const auto t = mask.size(1), d = kept.size(2);
  const auto noise = mask_noise({b * m, t, d}, decoder_->options().mask_noise_std(),
                                kept.options().dtype(torch::kFloat32));
  const auto restored = restore_positions(kept, ids_keep, noise);  // [B*M,T,D]
  const auto decoded = decoder_->forward(
      restored.slice(1, prefix),
      copies_padding.defined() ? copies_padding.slice(1, prefix) : copies_padding);  // [B*M,T',D]

  // Positions that count: masked and real, in every copy.
  torch::Tensor selected = mask;  // [B*M,T]
  if (copies_padding.defined()) selected = selected & ~copies_padding;
  const auto selected_inputs = selected.slice(1, prefix);  // [B*M,T']

  Data2VecOutput out;
  out.mask = mask;
  out.padding_mask = copies_padding;
  out.predictions = select_positions(decoded, selected_inputs);                      // [N,D]
  out.targets = select_positions(targets.repeat_interleave(m, 0), selected_inputs);  // [N,D]
  out.loss = regression_loss(out.predictions, out.targets, options_.loss());
  if (prefix > 0 && options_.cls_loss_weight() > 0) {
    // The student's CLS (kept position 0: never masked, first in ascending order) regresses the
    // mean target over the example's positions.
    const auto cls_target = targets.mean(1).repeat_interleave(m, 0);  // [B*M,D]
    out.cls_loss = regression_loss(kept.select(1, 0), cls_target, options_.loss());
    // fairseq (data2vec2.py) scales the CLS term by the sample size, the masked count the
    // criterion then divides every term by: the CLS loss counts SUMMED over the B*M rows while the
    // patch loss is a mean over masked patches. out.cls_loss is the per-row mean.
    out.loss = out.loss + options_.cls_loss_weight() * double(b * m) * out.cls_loss;
  }
  out.target_std = mean_std_over_positions(out.targets);
  out.pred_std = mean_std_over_positions(out.predictions);
  out.masked_frac = masked_fraction(selected, copies_padding, prefix);
  return out;
}

double Data2VecImpl::ema_step(int64_t step) {
  const double decay = ema_decay_at(step, options_.ema());
  if (decay < 1.0) ema_update(*teacher_, *student_, decay, student_->ema_copied_prefixes());
  return decay;
}

}  // namespace data2vec
