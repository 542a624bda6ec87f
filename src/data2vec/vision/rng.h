// A small seeded random source for the vision data path and masks.
//
// Masks and augmentations must be pure functions of (shape, options, seed). Drawing every number
// through a tensor op on an at::Generator would cost a dispatch per draw, so callers draw one
// 64-bit seed per image from their generator and run this engine from it. The uniform draws are
// written out here (not std::*_distribution) so a seed gives the same numbers with any standard
// library.
#pragma once

#include <cstdint>
#include <random>

namespace data2vec::vision {

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // Uniform in [lo, hi) (53-bit resolution); hi < lo is allowed and mirrors Python's
  // random.uniform, which BEiT's mask generator relies on.
  double uniform(double lo, double hi) {
    const double u = double(engine_() >> 11) * (1.0 / 9007199254740992.0);  // [0,1)
    return lo + (hi - lo) * u;
  }

  // Uniform integer in [lo, hi] (both inclusive, as Python's random.randint). Needs hi >= lo.
  int64_t randint(int64_t lo, int64_t hi) {
    const uint64_t span = uint64_t(hi - lo) + 1;
    return lo + int64_t(engine_() % span);  // modulo bias < span / 2^64: negligible here
  }

  bool coin(double p_true) { return uniform(0.0, 1.0) < p_true; }

  uint64_t next() { return engine_(); }

 private:
  std::mt19937_64 engine_;
};

}  // namespace data2vec::vision
