// The LibTorch version this code is built against, for the APIs that moved between 1.13 and 2.x.
#pragma once

#include <torch/version.h>

// True when the LibTorch headers are release major.minor or later.
#define DATA2VEC_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||           \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))
