#include "data2vec/train/data_loader.h"

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

namespace data2vec::train {

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  auto splitmix = [](uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
  };
  return splitmix(splitmix(splitmix(seed) ^ a) ^ b);
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, const DataLoaderOptions& options)
    : dataset_(std::move(dataset)), options_(options), next_index_(options.start_batch) {
  TORCH_CHECK(dataset_ && dataset_->size() > 0, "data loader: the dataset is empty");
  TORCH_CHECK(options_.batch_size > 0, "data loader: batch_size must be > 0");
  TORCH_CHECK(options_.world_size >= 1 && options_.rank >= 0 && options_.rank < options_.world_size,
              "data loader: rank ", options_.rank, " outside world of ", options_.world_size);
  TORCH_CHECK(int64_t(dataset_->size()) >= options_.batch_size * options_.world_size,
              "data loader: the dataset has ", dataset_->size(), " examples, fewer than one global batch (",
              options_.batch_size, " x ", options_.world_size, " processes)");
  for (int64_t w = 0; w < options_.num_workers; ++w) {
    workers_.emplace_back([this, w] { worker_loop(w); });
  }
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  space_.notify_all();
  ready_.notify_all();
  for (auto& t : workers_) t.join();
}

int64_t DataLoader::batches_per_epoch() const {
  return std::max<int64_t>(1, int64_t(dataset_->size()) / (options_.batch_size * options_.world_size));
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  const auto n = int64_t(dataset_->size());
  if (!options_.shuffle) {
    std::vector<int64_t> order(n);
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    return order;
  }
  auto generator = at::detail::createCPUGenerator(mix_seed(options_.seed, 0x5eed, uint64_t(epoch)));
  const auto perm = torch::randperm(n, generator, torch::kLong);
  return std::vector<int64_t>(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n);
}

LoadedBatch DataLoader::load(int64_t k) const {
  // Drop-last: each epoch yields batches_per_epoch() full batches.
  const int64_t per_epoch = batches_per_epoch();
  const int64_t epoch = k / per_epoch;
  const int64_t in_global = options_.rank * options_.batch_size;  // this rank's slice
  const int64_t first = (k % per_epoch) * options_.batch_size * options_.world_size + in_global;
  std::shared_ptr<std::vector<int64_t>> order;
  {
    std::lock_guard<std::mutex> lock(order_mutex_);
    auto it = orders_.find(epoch);
    if (it == orders_.end()) {
      it = orders_.emplace(epoch, std::make_shared<std::vector<int64_t>>(epoch_order(epoch))).first;
      while (orders_.size() > 3) orders_.erase(orders_.begin());
    }
    order = it->second;
  }
  LoadedBatch out;
  out.index = k;
  std::vector<Example> examples;
  examples.reserve(options_.batch_size);
  for (int64_t i = 0; i < options_.batch_size; ++i) {
    const auto index = size_t((*order)[first + i]);
    try {
      examples.push_back(dataset_->get(index, mix_seed(options_.seed, uint64_t(k), uint64_t(in_global + i))));
      out.batch.indices.push_back(index);
    } catch (const BadSample& e) {
      out.bad_samples.push_back(e.what());
    }
  }
  if (!examples.empty()) {
    auto indices = std::move(out.batch.indices);
    out.batch = dataset_->collate(std::move(examples));
    out.batch.indices = std::move(indices);
  }
  return out;
}

void DataLoader::worker_loop(int64_t worker) {
  for (int64_t k = options_.start_batch + worker;; k += options_.num_workers) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      space_.wait(lock, [&] { return stopping_ || k < next_index_ + options_.prefetch; });
      if (stopping_) return;
    }
    LoadedBatch batch;
    try {
      batch = load(k);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      ready_.notify_all();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.emplace(k, std::move(batch));
    }
    ready_.notify_all();
  }
}

LoadedBatch DataLoader::next() {
  // Examples failing one after another past this count (or past the whole dataset, if smaller)
  // mean the data is unreadable (a wrong data.root, deleted files), not a few bad files: at one
  // good example in a hundred, 1000 failures in a row happen with probability 4e-5.
  const size_t give_up = std::min<size_t>(dataset_->size(), 1000);
  std::vector<std::string> carried_bad;
  while (true) {
    LoadedBatch batch;
    if (workers_.empty()) {
      batch = load(next_index_++);
    } else {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [&] { return error_ || done_.count(next_index_) > 0; });
      if (error_ && done_.count(next_index_) == 0) std::rethrow_exception(error_);
      batch = std::move(done_.at(next_index_));
      done_.erase(next_index_);
      ++next_index_;
    }
    space_.notify_all();
    carried_bad.insert(carried_bad.end(), batch.bad_samples.begin(), batch.bad_samples.end());
    if (!batch.batch.indices.empty()) {
      batch.bad_samples = std::move(carried_bad);
      return batch;
    }
    if (carried_bad.size() >= give_up) {
      throw std::runtime_error(std::to_string(carried_bad.size()) +
                               " examples in a row failed to load (the dataset holds " +
                               std::to_string(dataset_->size()) + "); the first: " +
                               carried_bad.front() + "; the last: " + carried_bad.back());
    }
  }
}

}  // namespace data2vec::train
