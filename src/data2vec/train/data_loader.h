// Background data loading with prefetch, deterministic whatever the thread timing:
//   global batch k of the run = positions [k*W*B, (k+1)*W*B) of an endless stream of epochs, each
//   epoch a permutation of the dataset drawn from (seed, epoch); rank r of W processes reads the
//   r-th slice of B; example seeds come from (seed, k, position in the global batch).
// A worker builds whole batches; batches are handed out strictly in order. Bad examples
// (data2vec::BadSample) are dropped from their batch, counted and named, never fatal.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data2vec/core/dataset.h"

namespace data2vec::train {

struct DataLoaderOptions {
  int64_t batch_size = 64;
  uint64_t seed = 1;
  bool shuffle = true;
  int64_t num_workers = 2;  // 0 = load on the calling thread
  int64_t prefetch = 4;     // batches ready ahead of the consumer
  int64_t start_batch = 0;  // resume position: index of the first batch handed out
  // Data parallelism: global batch k holds world_size * batch_size examples; this process reads
  // the rank-th slice of batch_size. Example seeds depend on the global position only, so the
  // examples and their augmentations are the same whatever the number of processes.
  int64_t rank = 0;
  int64_t world_size = 1;
};

struct LoadedBatch {
  Batch batch;
  int64_t index = 0;                     // batch number k
  std::vector<std::string> bad_samples;  // messages for examples dropped from this batch
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, const DataLoaderOptions& options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch in order. Batches whose examples were all bad are skipped (and reported in
  // the next batch's bad_samples).
  LoadedBatch next();

  // Index of the batch next() returns next: the position to save for an exact resume.
  int64_t position() const { return next_index_; }
  int64_t batches_per_epoch() const;

  // Builds batch k on the calling thread (what the workers run).
  LoadedBatch load(int64_t k) const;

 private:
  void worker_loop(int64_t worker);
  std::vector<int64_t> epoch_order(int64_t epoch) const;

  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  int64_t next_index_;

  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::condition_variable space_;
  std::map<int64_t, LoadedBatch> done_;
  std::exception_ptr error_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  // Cache of the current epochs' permutations (workers may straddle an epoch boundary).
  mutable std::mutex order_mutex_;
  mutable std::map<int64_t, std::shared_ptr<std::vector<int64_t>>> orders_;
};

// A 64-bit mix of (seed, a, b) for per-example seeds (splitmix64).
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b);

}  // namespace data2vec::train
