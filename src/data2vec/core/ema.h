// The EMA teacher: its decay schedule (arXiv 2202.03555, sec. 3) and the update rule.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace data2vec {

struct EmaOptions {
  /// Decay at step 0. Default 0.999.
  TORCH_ARG(double, decay_start) = 0.999;
  /// Decay from `anneal_steps` on; 1.0 freezes the teacher. Default 0.9999.
  TORCH_ARG(double, decay_end) = 0.9999;
  /// Steps over which the decay moves linearly from start to end. Default 30000.
  TORCH_ARG(int64_t, anneal_steps) = 30000;
};

// tau(step) = end - (end - start) * (1 - step / anneal_steps) for step < anneal_steps, else end.
double ema_decay_at(int64_t step, const EmaOptions& options);

// teacher = tau * teacher + (1 - tau) * student, in fp32, for every floating-point parameter whose
// name starts with none of `copied_prefixes`; those parameters and every buffer (integer buffers
// included, never averaged) are copied from the student. Both modules must share one layout.
void ema_update(torch::nn::Module& teacher, const torch::nn::Module& student, double decay,
                const std::vector<std::string>& copied_prefixes);

// Copies every parameter and buffer of `source` into `target` (the teacher's initialisation).
void copy_module_state(torch::nn::Module& target, const torch::nn::Module& source);

}  // namespace data2vec
