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
  EXPECT_TRUE(data2vec::testing::tensors_close("decayed", w, torch::full({2, 2}, 1.0 - 0.1 * 0.5), 1e-7));
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
  const auto& state = static_cast<torch::optim::AdamWParamState&>(
      *resumed->state().at(c10::guts::to_string(w.unsafeGetTensorImpl())));
  EXPECT_EQ(state.step(), 1);
  EXPECT_TRUE(data2vec::testing::tensors_close("exp_avg", state.exp_avg(),
                                               torch::full({2, 2}, 0.1 * (0.5 + 0.5)), 1e-6));
}
