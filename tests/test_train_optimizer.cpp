#include "data2vec/core/toy_encoder.h"
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
