#include "data2vec/core/data2vec.h"

namespace data2vec {

namespace {

torch::nn::Sequential make_head(int64_t dim, int64_t hidden_mult) {
  if (hidden_mult <= 0) return torch::nn::Sequential(torch::nn::Linear(dim, dim));
  return torch::nn::Sequential(torch::nn::Linear(dim, hidden_mult * dim), torch::nn::GELU(),
                               torch::nn::Linear(hidden_mult * dim, dim));
}

}  // namespace

Data2VecImpl::Data2VecImpl(const EncoderFactory& make_encoder, const Data2VecOptions& options)
    : options_(options) {
  student_ = register_module("student", make_encoder());
  teacher_ = register_module("teacher", make_encoder());
  TORCH_CHECK(options_.targets().top_k_layers() <= student_->num_layers(), "top_k_layers = ",
              options_.targets().top_k_layers(), " but the encoder has only ",
              student_->num_layers(), " layers");
  head_ = register_module("head", make_head(student_->embed_dim(), options_.head_hidden_mult()));
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
  for (auto& p : head_->parameters()) params.push_back(p);
  return params;
}

Data2VecOutput Data2VecImpl::forward(const EncoderInput& batch, at::Generator& generator) {
  return forward_masked(batch, student_->apply_mask(batch, generator));
}

torch::Tensor Data2VecImpl::teacher_targets(const EncoderInput& batch,
                                            const EncoderOutput& student_output) {
  torch::NoGradGuard no_grad;
  const EncoderOutput teacher_output = teacher_->teacher_features(batch, student_output);
  return build_targets(teacher_output.layer_results, teacher_output.padding_mask,
                       options_.targets());  // [B,T,D] fp32
}

Data2VecOutput Data2VecImpl::forward_masked(const EncoderInput& batch, const MaskedInput& masked) {
  const EncoderOutput student_output = student_->extract_features(masked.student, masked.mask);
  const torch::Tensor targets = teacher_targets(batch, student_output);

  // Positions that count: masked and real. Padding never counts, whatever the mask says.
  torch::Tensor selected = masked.mask.to(torch::kBool);  // [B,T]
  if (student_output.padding_mask.defined()) selected = selected & ~student_output.padding_mask;

  Data2VecOutput out;
  out.mask = masked.mask;
  out.padding_mask = student_output.padding_mask;
  out.predictions = head_->forward(student_output.x.index({selected}));  // [N,D]
  out.targets = targets.index({selected});                               // [N,D]
  out.loss = regression_loss(out.predictions, out.targets, options_.loss());
  out.target_std = mean_std_over_positions(out.targets);
  out.pred_std = mean_std_over_positions(out.predictions);
  const auto real = student_output.padding_mask.defined()
                        ? (~student_output.padding_mask).sum()
                        : torch::full({}, selected.numel(), torch::kLong);
  out.masked_frac = selected.sum().to(torch::kFloat64) / real.to(torch::kFloat64).clamp_min(1);
  return out;
}

double Data2VecImpl::ema_step(int64_t step) {
  const double decay = ema_decay_at(step, options_.ema());
  if (decay < 1.0) ema_update(*teacher_, *student_, decay, student_->ema_copied_prefixes());
  return decay;
}

}  // namespace data2vec
