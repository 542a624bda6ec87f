#include <sstream>

#include "data2vec/core/toy_encoder.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/train/optimizer.h"
#include "support.h"

using namespace data2vec;

TEST(Optimizer, NoWeightDecayOnBiasesNormsTokensPositions) {
  ToyEncoder encoder(ToyEncoderOptions().depth(1));
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : encoder->named_parameters()) named.emplace_back(item.key(), item.value());
  const auto groups = train::split_parameter_groups(named);
  auto contains = [](const std::vector<torch::Tensor>& list, const torch::Tensor& t) {
    for (const auto& x : list) {
      if (x.is_same(t)) return true;
    }
    return false;
  };
  EXPECT_TRUE(contains(groups.exempt, encoder->mask_token));
  EXPECT_TRUE(contains(groups.exempt, encoder->position_embeddings));
  EXPECT_TRUE(contains(groups.exempt, encoder->embed->bias));
  EXPECT_TRUE(contains(groups.exempt, encoder->final_norm->weight));
  EXPECT_TRUE(contains(groups.decayed, encoder->embed->weight));
  EXPECT_TRUE(contains(groups.decayed, encoder->layers[0]->attention->query->weight));
  EXPECT_EQ(groups.decayed.size() + groups.exempt.size(), named.size());
}

TEST(Optimizer, ExemptGroupReallyHasNoDecay) {
  // One AdamW step with zero gradients: only weight decay moves parameters.
  auto w = torch::ones({2, 2}, torch::requires_grad());
  auto b = torch::ones({2}, torch::requires_grad());
  io::OptimConfig config;
  config.lr = 0.1;
  config.weight_decay = 0.5;
  auto optimizer = train::make_optimizer({{w}, {b}}, config);
  w.mutable_grad() = torch::zeros_like(w);
  b.mutable_grad() = torch::zeros_like(b);
  optimizer->step();
  EXPECT_TRUE(
      data2vec::testing::tensors_close("decayed", w, torch::full({2, 2}, 1.0 - 0.1 * 0.5), 1e-7));
  EXPECT_TRUE(data2vec::testing::tensors_close("exempt", b, torch::ones({2}), 0.0));
  train::set_learning_rate(*optimizer, 0.25);
  for (auto& group : optimizer->param_groups()) EXPECT_DOUBLE_EQ(group.options().get_lr(), 0.25);
}

TEST(Optimizer, AdamDecaysWeightsDecoupledAsFairseq) {
  // fairseq's Adam (fairseq/optim/adam.py) decays the weights apart from the gradient:
  //   p <- p * (1 - lr * wd) - lr * m_hat / (sqrt(v_hat) + eps)
  // with m and v built from the gradient alone. At step 1, m_hat = g and v_hat = g^2.
  // (L2 in the gradient, g + wd * p, would move p = 1 by lr * sign(g + wd * p) = 0.1 instead.)
  const double lr = 0.1, wd = 0.5, g = 0.5, eps = 1e-8;
  auto w = torch::ones({2, 2}, torch::requires_grad());
  io::OptimConfig config;
  config.name = "adam";
  config.lr = lr;
  config.eps = eps;
  config.weight_decay = wd;
  auto optimizer = train::make_optimizer({{w}, {}}, config);
  w.mutable_grad() = torch::full({2, 2}, g);
  optimizer->step();
  const double expected = 1.0 * (1.0 - lr * wd) - lr * g / (std::sqrt(g * g) + eps);  // 0.85
  EXPECT_TRUE(
      data2vec::testing::tensors_close("adam step", w, torch::full({2, 2}, expected), 1e-6));
}

TEST(Optimizer, AnAdamRunFromBeforeDecoupledDecayResumes) {
  // Runs saved while optim.name adam built LibTorch's Adam hold its state; the AdamW that adam
  // builds now must read it, moments and step count included.
  auto w = torch::ones({2, 2}, torch::requires_grad());
  std::vector<torch::optim::OptimizerParamGroup> groups;  // decayed, exempt: as make_optimizer
  groups.emplace_back(std::vector<torch::Tensor>{w},
                      std::make_unique<torch::optim::AdamOptions>(
                          torch::optim::AdamOptions(0.1).weight_decay(0.5)));
  groups.emplace_back(std::vector<torch::Tensor>{},
                      std::make_unique<torch::optim::AdamOptions>(0.1));
  torch::optim::Adam old(std::move(groups), torch::optim::AdamOptions(0.1));
  w.mutable_grad() = torch::full({2, 2}, 0.5);
  old.step();
  const auto bytes = train::optimizer_bytes(old);

  io::OptimConfig config;
  config.name = "adam";
  auto resumed = train::make_optimizer({{w}, {}}, config);
  ASSERT_NO_THROW(train::load_optimizer_bytes(*resumed, bytes));
  const auto* found = train::parameter_state(*resumed, w);
  ASSERT_NE(found, nullptr);
  const auto& state = static_cast<const torch::optim::AdamWParamState&>(*found);
  EXPECT_EQ(state.step(), 1);
  EXPECT_TRUE(data2vec::testing::tensors_close("exp_avg", state.exp_avg(),
                                               torch::full({2, 2}, 0.1 * (0.5 + 0.5)), 1e-6));
}

namespace {

// Parameters of three shapes (one larger than the fused step's 16384-element chunks), two groups
// as make_optimizer builds them, and one decayed parameter that never gets a gradient.
struct AdamWProblem {
  std::vector<torch::Tensor> params;
  explicit AdamWProblem(torch::Dtype dtype = torch::kFloat32) {
    torch::manual_seed(7);
    for (const auto& shape : {std::vector<int64_t>{300, 70}, {33, 17}, {70}, {5, 5}})
      params.push_back(torch::randn(shape, torch::dtype(dtype)).requires_grad_());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups(
      const torch::optim::AdamWOptions& options) const {
    auto exempt = std::make_unique<torch::optim::AdamWOptions>(options);
    exempt->weight_decay(0.0);
    std::vector<torch::optim::OptimizerParamGroup> out;
    out.emplace_back(std::vector<torch::Tensor>{params[0], params[1], params[3]},
                     std::make_unique<torch::optim::AdamWOptions>(options));
    out.emplace_back(std::vector<torch::Tensor>{params[2]}, std::move(exempt));
    return out;
  }
  // The same gradients for every copy of the problem: a function of the step.
  void set_gradients(int step) {
    torch::manual_seed(100 + step);
    for (size_t i = 0; i < 3; ++i) params[i].mutable_grad() = torch::randn_like(params[i]);
  }
};

const torch::optim::AdamWParamState* adamw_state(torch::optim::Optimizer& optimizer,
                                                 const torch::Tensor& p) {
  return static_cast<const torch::optim::AdamWParamState*>(train::parameter_state(optimizer, p));
}

}  // namespace

TEST(Optimizer, FusedAdamWFollowsLibTorchsAdamW) {
  // Six steps with the learning rate changed halfway: parameters, both moments and step counts
  // as LibTorch's AdamW has them (to fp32 rounding: its ops may fuse multiply-adds); the
  // parameter without a gradient stays untouched and gets no state in either.
  const auto options =
      torch::optim::AdamWOptions(1e-2).betas({0.9, 0.98}).eps(1e-6).weight_decay(0.05);
  AdamWProblem fused_problem, plain_problem;
  train::FusedAdamW fused(fused_problem.groups(options), options);
  torch::optim::AdamW plain(plain_problem.groups(options), options);
  for (int step = 0; step < 6; ++step) {
    if (step == 3) {
      train::set_learning_rate(fused, 3e-3);
      train::set_learning_rate(plain, 3e-3);
    }
    fused_problem.set_gradients(step);
    plain_problem.set_gradients(step);
    fused.step();
    plain.step();
  }
  for (size_t i = 0; i < 4; ++i) {
    const auto label = "parameter " + std::to_string(i);
    const auto& p = fused_problem.params[i];
    EXPECT_TRUE(data2vec::testing::tensors_close(label, p, plain_problem.params[i], 2e-6));
    const auto* a = adamw_state(fused, p);
    const auto* b = adamw_state(plain, plain_problem.params[i]);
    ASSERT_EQ(a == nullptr, b == nullptr) << label;
    if (i == 3) {
      EXPECT_EQ(a, nullptr);
      EXPECT_TRUE(torch::equal(p, plain_problem.params[i]));
      continue;
    }
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->step(), 6);
    EXPECT_EQ(a->step(), b->step());
    EXPECT_TRUE(
        data2vec::testing::tensors_close(label + " exp_avg", a->exp_avg(), b->exp_avg(), 1e-6));
    EXPECT_TRUE(data2vec::testing::tensors_close(label + " exp_avg_sq", a->exp_avg_sq(),
                                                 b->exp_avg_sq(), 1e-6));
  }
  // The moved distance is the update's, not rounding: the check above can fail.
  EXPECT_GT((fused_problem.params[0] - AdamWProblem().params[0]).abs().max().item<double>(), 1e-2);
}

TEST(Optimizer, FusedAdamWResultsDoNotDependOnTheThreadCount) {
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  std::vector<torch::Tensor> results;
  const int threads = at::get_num_threads();
  for (int n : {1, 2}) {
    at::set_num_threads(n);
    AdamWProblem problem;
    train::FusedAdamW optimizer(problem.groups(options), options);
    for (int step = 0; step < 3; ++step) {
      problem.set_gradients(step);
      optimizer.step();
    }
    results.push_back(problem.params[0].detach().clone());
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(results[0], results[1]));
}

TEST(Optimizer, FusedAdamWStateMovesToAndFromLibTorchsAdamW) {
  // Checkpoints written by either optimizer resume in the other: two fused steps, then one more
  // step from the saved state by each optimizer agree.
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  AdamWProblem problem;
  train::FusedAdamW fused(problem.groups(options), options);
  for (int step = 0; step < 2; ++step) {
    problem.set_gradients(step);
    fused.step();
  }
  const auto bytes = train::optimizer_bytes(fused);
  const auto saved = problem.params[0].detach().clone();

  AdamWProblem into_plain;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < 4; ++i) into_plain.params[i].copy_(problem.params[i]);
  torch::optim::AdamW plain(into_plain.groups(options), options);
  train::load_optimizer_bytes(plain, bytes);
  into_plain.set_gradients(2);
  plain.step();

  train::FusedAdamW reloaded(problem.groups(options), options);
  train::load_optimizer_bytes(reloaded, train::optimizer_bytes(plain));  // AdamW's own format
  problem.set_gradients(2);
  reloaded.step();
  EXPECT_EQ(adamw_state(reloaded, problem.params[0])->step(), 4);  // 2 saved + 1 (plain) + 1
  EXPECT_FALSE(torch::equal(problem.params[0], saved));
  // The plain step started from the fused state: its third step matches the fused third step.
  AdamWProblem reference;
  train::FusedAdamW straight(reference.groups(options), options);
  for (int step = 0; step < 3; ++step) {
    reference.set_gradients(step);
    straight.step();
  }
  EXPECT_TRUE(data2vec::testing::tensors_close("resumed in AdamW", into_plain.params[0],
                                               reference.params[0], 1e-6));
}

TEST(Optimizer, AnArchiveOfLibTorchsOwnSaveLoadsEveryParametersState) {
  // Optimizer::save keys states by TensorImpl address (hex in 1.13, decimal in 2.x, in hash-map
  // order); each parameter of the loading optimizer must get its own state back, not another's.
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  AdamWProblem problem;
  torch::optim::AdamW plain(problem.groups(options), options);
  for (int step = 0; step < 2; ++step) {
    problem.set_gradients(step);
    plain.step();
  }
  torch::serialize::OutputArchive archive;
  plain.save(archive);
  std::ostringstream out;
  archive.save_to(out);

  AdamWProblem copy;
  train::FusedAdamW loaded(copy.groups(options), options);
  train::load_optimizer_bytes(loaded, out.str());
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE("parameter " + std::to_string(i));
    const auto* want = adamw_state(plain, problem.params[i]);
    const auto* got = adamw_state(loaded, copy.params[i]);
    if (want == nullptr) {  // params[3] never had a gradient
      EXPECT_EQ(got, nullptr);
      continue;
    }
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->step(), 2);
    EXPECT_TRUE(torch::equal(got->exp_avg(), want->exp_avg()));
    EXPECT_TRUE(torch::equal(got->exp_avg_sq(), want->exp_avg_sq()));
  }
}

TEST(Optimizer, FusedAdamWTakesLibTorchsStepOffCpuFp32) {
  // Double parameters are not fused: the step is AdamW's own, bit for bit.
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.05);
  AdamWProblem fused_problem(torch::kFloat64), plain_problem(torch::kFloat64);
  train::FusedAdamW fused(fused_problem.groups(options), options);
  torch::optim::AdamW plain(plain_problem.groups(options), options);
  for (int step = 0; step < 2; ++step) {
    fused_problem.set_gradients(step);
    plain_problem.set_gradients(step);
    fused.step();
    plain.step();
  }
  for (size_t i = 0; i < 4; ++i)
    EXPECT_TRUE(torch::equal(fused_problem.params[i], plain_problem.params[i])) << i;
}

TEST(Optimizer, MakeOptimizerBuildsTheFusedAdamW) {
  auto w = torch::ones({2, 2}, torch::requires_grad());
  io::OptimConfig config;
  const auto optimizer = train::make_optimizer({{w}, {}}, config);
  EXPECT_NE(dynamic_cast<train::FusedAdamW*>(optimizer.get()), nullptr);
}

TEST(Optimizer, ClipGradNormAgreesWithLibTorchs) {
  // Over and under the limit: the same norm and the same clipped gradients as
  // torch::nn::utils::clip_grad_norm_ (one parameter without a gradient among them).
  for (const double max_norm : {1.0, 1e4}) {
    AdamWProblem ours, theirs;
    ours.set_gradients(0);
    theirs.set_gradients(0);
    const double norm = train::clip_grad_norm(ours.params, max_norm);
    const double expected = torch::nn::utils::clip_grad_norm_(theirs.params, max_norm);
    EXPECT_NEAR(norm, expected, 1e-5 * expected) << max_norm;
    EXPECT_GT(norm, 100.0);  // ~sqrt(21682): the first case clips
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(data2vec::testing::tensors_close(
          "gradient " + std::to_string(i), ours.params[i].grad(), theirs.params[i].grad(), 1e-6))
          << max_norm;
    }
    EXPECT_FALSE(ours.params[3].grad().defined());
    if (max_norm == 1.0) {
      double clipped = 0.0;
      for (size_t i = 0; i < 3; ++i) clipped += ours.params[i].grad().pow(2).sum().item<double>();
      EXPECT_NEAR(std::sqrt(clipped), 1.0, 1e-5);
    }
  }
  // Other dtypes go to LibTorch's.
  AdamWProblem ours(torch::kFloat64), theirs(torch::kFloat64);
  ours.set_gradients(1);
  theirs.set_gradients(1);
  EXPECT_EQ(train::clip_grad_norm(ours.params, 1.0),
            torch::nn::utils::clip_grad_norm_(theirs.params, 1.0));
}
