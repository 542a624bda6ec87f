// Text classification fine-tuning (eval::finetune on a text encoder): a task made here that a
// text encoder must learn, the way `evaluate --every-task` fine-tunes on brown genre and spam.
#include <gtest/gtest.h>

#include "data2vec/core/dataset.h"
#include "data2vec/eval/finetune.h"
#include "data2vec/text/encoder.h"

namespace data2vec::eval {
namespace {

// Sequences <s> w1..w10 </s> of words 5..24; label 1 when word 5 occurs more often than word 6.
// Seeded per index, so train and test differ by their offset.
class CountDataset : public Dataset {
 public:
  CountDataset(size_t n, int64_t offset) : n_(n), offset_(offset) {}
  size_t size() const override { return n_; }
  int64_t num_classes() const override { return 2; }
  Example get(size_t index, uint64_t) const override {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(uint64_t(offset_) + index);
    auto words = torch::randint(5, 25, {10}, generator, torch::kLong);
    const int64_t favoured = int64_t(index % 2) ? 5 : 6, other = 11 - favoured;
    words.slice(0, 0, 3).fill_(favoured);  // at least 3 of the favoured word
    words.masked_fill_(words.eq(other), 7);  // and none of the other one
    words = words.index_select(0, torch::randperm(10, generator));
    return {torch::cat({torch::tensor({0L}), words, torch::tensor({2L})}),
            favoured == 5 ? 1 : 0};
  }

 private:
  size_t n_;
  int64_t offset_;
};

std::shared_ptr<EncoderImpl> small_text_encoder() {
  torch::manual_seed(3);
  return text::make_text_encoder(text::TextEncoderOptions(25)
                                     .dim(32)
                                     .depth(2)
                                     .num_heads(2)
                                     .mlp_dim(64)
                                     .max_positions(16)
                                     .dropout(0.0));
}

TEST(TextFinetune, LearnsACountingTask) {
  CountDataset train(256, 0), test(128, 100000);
  auto options = FinetuneOptions().epochs(6).batch_size(32).lr(3e-3).layer_decay(1.0).seed(0);
  const auto untrained =
      finetune(small_text_encoder(), train, test, FinetuneOptions(options).epochs(0));
  auto encoder = small_text_encoder();
  const auto result = finetune(encoder, train, test, options);
  EXPECT_EQ(result.steps, 6 * 8);
  EXPECT_GT(result.test_acc, 0.9) << "untrained " << untrained.test_acc;
  EXPECT_GT(result.test_acc, untrained.test_acc + 0.2);
}

}  // namespace
}  // namespace data2vec::eval
