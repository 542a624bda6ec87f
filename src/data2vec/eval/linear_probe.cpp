#include "data2vec/eval/linear_probe.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "data2vec/eval/batching.h"

namespace data2vec::eval {

namespace F = torch::nn::functional;

torch::Tensor LinearClassifier::logits(const torch::Tensor& features) const {
  auto x = (features.to(weight.device(), torch::kFloat) - mean) / std;  // [N,D]
  return torch::addmm(bias, x, weight.t());                             // [N,C]
}

torch::Tensor LinearClassifier::predict(const torch::Tensor& features) const {
  if (features.size(0) == 0) return torch::empty({0}, torch::kLong);
  return logits(features).argmax(1);
}

namespace {

void check_split(const char* name, const torch::Tensor& x, const torch::Tensor& y) {
  TORCH_CHECK(x.defined() && x.dim() == 2, "linear_probe: ", name, " features must be [N,D], got ",
              x.defined() ? x.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(y.defined() && y.dim() == 1 && y.size(0) == x.size(0), "linear_probe: ", name,
              " labels must be [", x.size(0), "], got ",
              y.defined() ? y.sizes() : torch::IntArrayRef{});
  if (y.numel() > 0) {
    TORCH_CHECK(y.min().item<int64_t>() >= 0, "linear_probe: ", name,
                " labels contain -1 (unlabelled examples): drop them before probing");
  }
}

}  // namespace

LinearClassifier fit_linear_classifier(const torch::Tensor& features, const torch::Tensor& labels,
                                       int64_t num_classes, double l2,
                                       const LinearProbeOptions& options) {
  check_split("train", features, labels);
  TORCH_CHECK(features.size(0) > 0, "linear_probe: no training rows");
  TORCH_CHECK(num_classes >= 1, "linear_probe: num_classes must be >= 1, got ", num_classes);
  TORCH_CHECK(l2 >= 0, "linear_probe: L2 strength must be >= 0, got ", l2);
  auto raw = features.to(torch::kFloat);
  auto y = labels.to(features.device(), torch::kLong);
  LinearClassifier c;
  c.mean = raw.mean(0);                                          // [D]
  auto std = raw.std(0, /*unbiased=*/false);                     // [D]
  c.std = torch::where(std < 1e-6, torch::ones_like(std), std);  // [D]
  auto x = (raw - c.mean) / c.std;                               // [N,D]
  const int64_t d = x.size(1);

  torch::AutoGradMode grad(true);
  // Zero init: the problem is convex, so the fit is deterministic and needs no seed.
  auto w = torch::zeros({num_classes, d}, x.options()).requires_grad_(true);  // [C,D]
  auto b = torch::zeros({num_classes}, x.options()).requires_grad_(true);     // [C]
  auto objective = [&] {
    return F::cross_entropy(torch::addmm(b, x, w.t()), y) + 0.5 * l2 * w.pow(2).sum();
  };
  if (options.optimizer() == ProbeOptimizer::kLbfgs) {
    torch::optim::LBFGS opt({w, b}, torch::optim::LBFGSOptions(1.0)
                                        .max_iter(options.lbfgs_iterations())
                                        .max_eval(options.lbfgs_iterations() * 5 / 4)
                                        .history_size(20)
                                        .tolerance_grad(1e-6)
                                        .tolerance_change(1e-9)
                                        .line_search_fn("strong_wolfe"));
    opt.step([&] {
      opt.zero_grad();
      auto loss = objective();
      loss.backward();
      return loss;
    });
  } else {
    torch::optim::AdamW opt({w, b}, torch::optim::AdamWOptions(options.adamw_lr()).weight_decay(0));
    const auto steps = options.adamw_steps();
    for (int64_t step = 0; step < steps; ++step) {
      // A cosine decay to 0 lets Adam settle on the optimum instead of hovering around it.
      const double t = static_cast<double>(step) / static_cast<double>(steps);
      static_cast<torch::optim::AdamWOptions&>(opt.param_groups()[0].options())
          .lr(options.adamw_lr() * 0.5 * (1.0 + std::cos(std::acos(-1.0) * t)));
      opt.zero_grad();
      objective().backward();
      opt.step();
    }
  }
  c.weight = w.detach();
  c.bias = b.detach();
  return c;
}

LinearProbeResult linear_probe(const torch::Tensor& train_features,
                               const torch::Tensor& train_labels,
                               const torch::Tensor& test_features, const torch::Tensor& test_labels,
                               const LinearProbeOptions& options) {
  check_split("train", train_features, train_labels);
  check_split("test", test_features, test_labels);
  const auto& grid = options.l2_grid();
  TORCH_CHECK(!grid.empty(), "linear_probe: empty l2_grid");
  const int64_t n = train_features.size(0);
  TORCH_CHECK(n > 0, "linear_probe: no training rows");
  TORCH_CHECK(test_features.size(0) == 0 || test_features.size(1) == train_features.size(1),
              "linear_probe: train features have D = ", train_features.size(1),
              " but test features D = ", test_features.size(1));
  int64_t num_classes = options.num_classes();
  if (num_classes == 0) {
    num_classes = train_labels.max().item<int64_t>() + 1;
    if (test_labels.numel() > 0) {
      num_classes = std::max(num_classes, test_labels.max().item<int64_t>() + 1);
    }
  }

  LinearProbeResult r;
  r.l2_grid = grid;
  r.chosen_l2 = grid.front();
  r.num_test = test_features.size(0);
  const double frac = options.val_fraction();
  TORCH_CHECK(frac >= 0 && frac < 1, "linear_probe: val_fraction must be in [0,1), got ", frac);
  if (grid.size() > 1) {
    TORCH_CHECK(frac > 0, "linear_probe: choosing among ", grid.size(),
                " L2 strengths needs val_fraction > 0 (or give a one-value l2_grid)");
    const int64_t n_val = std::max<int64_t>(1, std::llround(frac * static_cast<double>(n)));
    TORCH_CHECK(n_val < n, "linear_probe: ", n, " train rows are too few to hold out ", n_val);
    auto gen = at::detail::createCPUGenerator(options.seed());
    auto perm = torch::randperm(n, gen, torch::kLong).to(train_features.device());
    auto val_idx = perm.slice(0, 0, n_val), fit_idx = perm.slice(0, n_val);
    auto fit_x = train_features.index_select(0, fit_idx);
    auto fit_y = train_labels.index_select(0, fit_idx);
    auto val_x = train_features.index_select(0, val_idx);
    auto val_y = train_labels.index_select(0, val_idx);
    double best = -1;
    for (double l2 : grid) {
      auto c = fit_linear_classifier(fit_x, fit_y, num_classes, l2, options);
      const double acc = accuracy(c.predict(val_x), val_y);
      r.val_acc.push_back(acc);
      spdlog::debug("linear_probe: l2 {:g} -> val acc {:.4f}", l2, acc);
      if (acc > best || (acc == best && l2 > r.chosen_l2)) {
        best = acc;
        r.chosen_l2 = l2;
      }
    }
    r.num_val = n_val;
  }
  r.num_train = n;
  r.classifier =
      fit_linear_classifier(train_features, train_labels, num_classes, r.chosen_l2, options);
  r.train_acc = accuracy(r.classifier.predict(train_features), train_labels);
  r.test_acc = accuracy(r.classifier.predict(test_features), test_labels);
  return r;
}

}  // namespace data2vec::eval
