#include "data2vec/core/data2vec.h"
#include "data2vec/core/toy_encoder.h"
#include "test_util.h"
TEST(Build, ToyForward) {
  using namespace data2vec;
  Data2Vec model([] { return std::make_shared<ToyEncoderImpl>(ToyEncoderOptions()); },
                 Data2VecOptions().targets(TargetOptions().top_k_layers(2)));
  auto gen = at::detail::createCPUGenerator(1);
  EncoderInput in{torch::randn({2, 10, 16}), {}};
  auto out = model->forward(in, gen);
  EXPECT_EQ(out.loss.dim(), 0);
}
