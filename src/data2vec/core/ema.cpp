#include "data2vec/core/ema.h"

#include <algorithm>

namespace data2vec {

double ema_decay_at(int64_t step, const EmaOptions& options) {
  if (options.anneal_steps() <= 0 || step >= options.anneal_steps()) return options.decay_end();
  const double remaining = 1.0 - static_cast<double>(step) / options.anneal_steps();
  return options.decay_end() - (options.decay_end() - options.decay_start()) * remaining;
}

namespace {

bool has_any_prefix(const std::string& name, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return name.rfind(p, 0) == 0; });
}

// Named tensors of the same module layout, checked to match one-to-one.
void check_same_layout(const torch::OrderedDict<std::string, torch::Tensor>& a,
                       const torch::OrderedDict<std::string, torch::Tensor>& b, const char* what) {
  TORCH_CHECK(a.size() == b.size(), "EMA: teacher and student have different numbers of ", what,
              " (", a.size(), " vs ", b.size(), "); were they built with the same options?");
}

}  // namespace

void ema_update(torch::nn::Module& teacher, const torch::nn::Module& student, double decay,
                const std::vector<std::string>& copied_prefixes) {
  torch::NoGradGuard no_grad;
  const auto student_params = student.named_parameters();
  auto teacher_params = teacher.named_parameters();
  check_same_layout(teacher_params, student_params, "parameters");
  for (const auto& item : student_params) {
    torch::Tensor* t = teacher_params.find(item.key());
    TORCH_CHECK(t != nullptr, "EMA: the teacher has no parameter '", item.key(), "'");
    const torch::Tensor& s = item.value();
    TORCH_CHECK(t->sizes() == s.sizes(), "EMA: parameter '", item.key(), "' is ", t->sizes(),
                " in the teacher and ", s.sizes(), " in the student");
    if (decay == 0.0 || !s.is_floating_point() || has_any_prefix(item.key(), copied_prefixes)) {
      t->copy_(s);
    } else if (t->scalar_type() == torch::kFloat32) {
      t->mul_(decay).add_(s.to(torch::kFloat32), 1.0 - decay);
    } else {
      // Averaging in low precision loses (1 - tau) ~ 1e-4 updates entirely: do it in fp32.
      t->copy_(t->to(torch::kFloat32).mul_(decay).add_(s.to(torch::kFloat32), 1.0 - decay));
    }
  }
  const auto student_buffers = student.named_buffers();
  auto teacher_buffers = teacher.named_buffers();
  check_same_layout(teacher_buffers, student_buffers, "buffers");
  for (const auto& item : student_buffers) {
    torch::Tensor* t = teacher_buffers.find(item.key());
    TORCH_CHECK(t != nullptr, "EMA: the teacher has no buffer '", item.key(), "'");
    t->copy_(item.value());
  }
}

void copy_module_state(torch::nn::Module& target, const torch::nn::Module& source) {
  ema_update(target, source, /*decay=*/0.0, /*copied_prefixes=*/{});
}

}  // namespace data2vec
