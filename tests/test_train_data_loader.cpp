#include <functional>

#include "data2vec/core/toy_dataset.h"
#include "data2vec/train/data_loader.h"
#include "support.h"

using namespace data2vec;

namespace {

// Index-valued examples; every index divisible by 7 is "corrupt".
class CountingDataset : public Dataset {
 public:
  explicit CountingDataset(size_t n) : n_(n) {}
  size_t size() const override { return n_; }
  Example get(size_t index, uint64_t seed) const override {
    if (index % 7 == 3) throw BadSample("file_" + std::to_string(index) + ".png: corrupt");
    // The seed shows up in the data so the test can see it is deterministic.
    return {torch::tensor({double(index), double(seed % 1000)}), int64_t(index % 2)};
  }

 private:
  size_t n_;
};

// Every example fails to load except those `good` says (a folder of deleted files, say).
class FailingDataset : public Dataset {
 public:
  FailingDataset(size_t n, std::function<bool(size_t)> good) : n_(n), good_(std::move(good)) {}
  size_t size() const override { return n_; }
  Example get(size_t index, uint64_t) const override {
    if (!good_(index)) throw BadSample("img_" + std::to_string(index) + ".jpg: cannot open");
    return {torch::tensor({double(index)}), 0};
  }

 private:
  size_t n_;
  std::function<bool(size_t)> good_;
};

std::vector<torch::Tensor> take(train::DataLoader& loader, int n) {
  std::vector<torch::Tensor> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next().batch.input.source.clone());
  return out;
}

train::DataLoaderOptions options(int64_t workers, int64_t start = 0) {
  train::DataLoaderOptions o;
  o.batch_size = 8;
  o.seed = 5;
  o.num_workers = workers;
  o.prefetch = 3;
  o.start_batch = start;
  return o;
}

}  // namespace

TEST(DataLoader, SameBatchesWhateverTheWorkerCount) {
  auto dataset = std::make_shared<CountingDataset>(100);
  train::DataLoader serial(dataset, options(0));
  train::DataLoader one(dataset, options(1));
  train::DataLoader three(dataset, options(3));
  const auto a = take(serial, 30), b = take(one, 30), c = take(three, 30);  // crosses epochs
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i], c[i])) << "batch " << i;
  }
}

TEST(DataLoader, ResumeFromPositionContinuesTheSameStream) {
  auto dataset = std::make_shared<CountingDataset>(100);
  train::DataLoader straight(dataset, options(2));
  const auto all = take(straight, 20);
  train::DataLoader first(dataset, options(2));
  take(first, 13);
  const auto position = first.position();
  EXPECT_EQ(position, 13);
  train::DataLoader resumed(dataset, options(2, position));
  const auto rest = take(resumed, 7);
  for (size_t i = 0; i < rest.size(); ++i) EXPECT_TRUE(torch::equal(rest[i], all[13 + i]));
}

TEST(DataLoader, EpochIsAPermutationAndEpochsDiffer) {
  auto dataset = std::make_shared<CountingDataset>(64);
  auto o = options(0);
  train::DataLoader loader(dataset, o);
  std::vector<int64_t> epoch0, epoch1;
  int64_t bad = 0;
  for (int k = 0; k < 16; ++k) {
    auto b = loader.next();
    bad += int64_t(b.bad_samples.size());
    auto& epoch = k < 8 ? epoch0 : epoch1;
    for (auto i : b.batch.indices) epoch.push_back(int64_t(i));
  }
  // 64 examples, indices 3, 10, ..., 59 are bad: 9 per epoch.
  EXPECT_EQ(bad, 18);
  EXPECT_EQ(epoch0.size(), 64u - 9u);
  auto sorted0 = epoch0, sorted1 = epoch1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  EXPECT_EQ(sorted0, sorted1);
  EXPECT_NE(epoch0, epoch1);
  EXPECT_EQ(std::adjacent_find(sorted0.begin(), sorted0.end()), sorted0.end()) << "no repeats";
}

TEST(DataLoader, BadSamplesAreNamed) {
  auto dataset = std::make_shared<CountingDataset>(16);
  train::DataLoader loader(dataset, options(1));
  std::vector<std::string> messages;
  for (int k = 0; k < 2; ++k) {
    auto b = loader.next();
    messages.insert(messages.end(), b.bad_samples.begin(), b.bad_samples.end());
  }
  ASSERT_EQ(messages.size(), 2u);  // indices 3 and 10
  EXPECT_NE(messages[0].find("corrupt"), std::string::npos);
  EXPECT_NE(messages[0].find("file_"), std::string::npos);
}

TEST(DataLoader, DataThatNeverLoadsIsAnErrorNotAnEndlessLoop) {
  // Before, next() skipped all-bad batches forever, keeping every message: a run on a folder of
  // unreadable files hung at 100% CPU with memory growing and never answered Ctrl-C.
  for (const int64_t workers : {0, 2}) {
    for (const size_t n : {size_t(6), size_t(5000)}) {
      auto dataset = std::make_shared<FailingDataset>(n, [](size_t) { return false; });
      auto o = options(workers);
      o.batch_size = 4;
      train::DataLoader loader(dataset, o);
      std::string message;
      try {
        loader.next();
      } catch (const std::exception& e) {
        message = e.what();
      }
      EXPECT_NE(message.find("examples in a row failed to load"), std::string::npos) << message;
      EXPECT_NE(message.find(".jpg: cannot open"), std::string::npos) << message;  // one named
    }
  }
  // One readable example in a hundred is a dataset with many bad files, not a broken one: its
  // batches come, the bad examples reported with them.
  auto sparse = std::make_shared<FailingDataset>(5000, [](size_t i) { return i % 100 == 0; });
  auto o = options(2);
  o.batch_size = 4;
  train::DataLoader loader(sparse, o);
  size_t bad = 0;
  for (int k = 0; k < 20; ++k) {
    const auto batch = loader.next();
    EXPECT_FALSE(batch.batch.indices.empty());
    bad += batch.bad_samples.size();
  }
  EXPECT_GT(bad, 20u * 4u);
}

TEST(DataLoader, ToyCollatePadsVariableLengths) {
  auto dataset = std::make_shared<ToyDataset>(ToyDatasetOptions().size(64).variable_length(true));
  train::DataLoader loader(dataset, options(0));
  auto batch = loader.next().batch;
  ASSERT_TRUE(batch.input.padding_mask.defined());
  for (int64_t i = 0; i < batch.input.batch_size(); ++i) {
    const auto len = dataset->get(batch.indices[i], 0).source.size(0);
    EXPECT_EQ((~batch.input.padding_mask[i]).sum().item<int64_t>(), len);
    EXPECT_EQ(batch.input.source[i].slice(0, len).abs().sum().item<double>(), 0.0);
  }
}
