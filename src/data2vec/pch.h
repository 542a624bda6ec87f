// Precompiled header: the heavy, stable includes shared by every translation unit.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
