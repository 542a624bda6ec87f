#include "data2vec/core/collapse.h"

#include <sstream>

namespace data2vec {

std::optional<std::string> detect_collapse(int64_t step, double target_std, double pred_std,
                                           const CollapseOptions& options) {
  if (step < options.warmup_steps()) return std::nullopt;
  std::ostringstream why;
  if (target_std < options.min_target_std()) {
    why << "target std " << target_std << " < min_target_std " << options.min_target_std();
  } else if (pred_std < options.min_pred_std()) {
    why << "prediction std " << pred_std << " < min_pred_std " << options.min_pred_std();
  } else {
    return std::nullopt;
  }
  why << " at step " << step
      << ": the representation collapsed. Lower the learning rate, raise the EMA decay, or "
         "check the masking";
  return why.str();
}

}  // namespace data2vec
