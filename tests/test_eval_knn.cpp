// k-NN: clustered data, and equality with a brute-force loop for both vote rules.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "data2vec/eval/knn.h"
#include "support.h"

namespace {

using namespace data2vec::eval;

// Plain loops: cosine similarity, full sort, k best, votes, first class with the most votes.
std::vector<int64_t> brute_force(const torch::Tensor& train, const torch::Tensor& labels,
                                 const torch::Tensor& queries, int64_t k, int64_t classes,
                                 bool weighted, double temperature) {
  auto tr = train.accessor<float, 2>();
  auto q = queries.accessor<float, 2>();
  auto y = labels.accessor<int64_t, 1>();
  const int64_t n = train.size(0), d = train.size(1);
  auto norm = [d](auto row) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) s += double(row[j]) * row[j];
    return std::sqrt(s);
  };
  std::vector<int64_t> out;
  for (int64_t i = 0; i < queries.size(0); ++i) {
    std::vector<std::pair<double, int64_t>> sims;
    for (int64_t t = 0; t < n; ++t) {
      double dot = 0;
      for (int64_t j = 0; j < d; ++j) dot += double(q[i][j]) * tr[t][j];
      sims.push_back({dot / (norm(q[i]) * norm(tr[t])), t});
    }
    std::sort(sims.begin(), sims.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::vector<double> votes(static_cast<size_t>(classes), 0.0);
    for (int64_t r = 0; r < std::min(k, n); ++r) {
      const auto& [sim, t] = sims[static_cast<size_t>(r)];
      votes[static_cast<size_t>(y[t])] += weighted ? std::exp(sim / temperature) : 1.0;
    }
    out.push_back(std::max_element(votes.begin(), votes.end()) - votes.begin());
  }
  return out;
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(Knn, ClusteredData) {
  auto gen = at::detail::createCPUGenerator(1);
  auto centres = torch::randn({5, 24}, gen) * 2.0;
  auto make = [&](int64_t per_class) {
    auto y = torch::arange(5).repeat_interleave(per_class);
    auto x = centres.index_select(0, y) + 0.5 * torch::randn({5 * per_class, 24}, gen);
    return std::make_pair(x, y);
  };
  auto [train_x, train_y] = make(80);
  auto [test_x, test_y] = make(40);
  EXPECT_GT(knn_accuracy(train_x, train_y, test_x, test_y), 0.95);
  EXPECT_GT(knn_accuracy(train_x, train_y, test_x, test_y, KnnOptions().vote(KnnVote::kMajority)),
            0.95);
}

TEST(Knn, EqualsBruteForceWithTinyChunks) {
  auto gen = at::detail::createCPUGenerator(2);
  auto train = torch::randn({50, 5}, gen), queries = torch::randn({23, 5}, gen);
  auto labels = torch::randint(0, 3, {50}, gen);
  for (bool weighted : {true, false}) {
    auto options = KnnOptions()
                       .k(7)
                       .vote(weighted ? KnnVote::kWeighted : KnnVote::kMajority)
                       .query_chunk(4)
                       .train_chunk(6);
    auto expected = brute_force(train, labels, queries, 7, 3, weighted, 0.07);
    EXPECT_EQ(to_vector(knn_predict(train, labels, queries, options)), expected)
        << (weighted ? "weighted" : "majority");
    // One big block gives the same answer as many small ones.
    EXPECT_EQ(
        to_vector(knn_predict(train, labels, queries, options.query_chunk(1000).train_chunk(1000))),
        expected);
  }
  // k larger than the train set is clamped.
  EXPECT_EQ(to_vector(knn_predict(train, labels, queries, KnnOptions().k(500).train_chunk(7))),
            brute_force(train, labels, queries, 500, 3, true, 0.07));
}

TEST(Knn, AccuracyCountsMatches) {
  auto train = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}});
  auto labels = torch::tensor({0, 1}, torch::kLong);
  auto queries = torch::tensor({{2.0f, 0.1f}, {0.1f, 3.0f}, {1.0f, 0.2f}});
  auto options = KnnOptions().k(1);
  EXPECT_EQ(to_vector(knn_predict(train, labels, queries, options)),
            (std::vector<int64_t>{0, 1, 0}));
  EXPECT_DOUBLE_EQ(
      knn_accuracy(train, labels, queries, torch::tensor({0, 1, 1}, torch::kLong), options),
      2.0 / 3.0);
  EXPECT_THROW(knn_predict(train, torch::tensor({0, -1}, torch::kLong), queries), c10::Error);
}

}  // namespace
