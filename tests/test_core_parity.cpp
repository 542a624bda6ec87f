// Parity with PyTorch: targets and losses against tests/fixtures/core_parity.safetensors, written
// by scripts/make_core_fixtures.py (regenerate with /usr/bin/python3
// scripts/make_core_fixtures.py).
#include <vector>

#include "data2vec/core/loss.h"
#include "data2vec/core/targets.h"
#include "data2vec/io/safetensors.h"
#include "support.h"

namespace data2vec {
namespace {

using data2vec::testing::fixture_path;
using data2vec::testing::tensors_close;

constexpr double kTolerance = 1e-5;

class CoreParity : public ::testing::Test {
 protected:
  void SetUp() override {
    content_ = io::load_safetensors(fixture_path("core_parity.safetensors"));
    ASSERT_NE(content_.metadata.count("generated_by"), 0u);
    EXPECT_NE(content_.metadata["generated_by"].find("@generated"), std::string::npos);
    const auto stacked = get("layer_results");  // [L,B,T,D]
    ASSERT_EQ(stacked.dim(), 4);
    for (int64_t i = 0; i < stacked.size(0); ++i) layers_.push_back(stacked[i]);
    padding_ = get("padding_mask");
    mask_ = get("mask");
    ASSERT_EQ(padding_.scalar_type(), torch::kBool);
    ASSERT_EQ(mask_.scalar_type(), torch::kBool);
  }

  torch::Tensor get(const std::string& name) {
    auto it = content_.tensors.find(name);
    if (it == content_.tensors.end()) {
      ADD_FAILURE() << "fixture has no tensor '" << name
                    << "'; regenerate it with /usr/bin/python3 scripts/make_core_fixtures.py";
      return torch::Tensor();
    }
    return it->second;
  }

  io::SafetensorsContent content_;
  std::vector<torch::Tensor> layers_;  // L x [B,T,D]
  torch::Tensor padding_;              // [B,T] bool
  torch::Tensor mask_;                 // [B,T] bool
};

TEST_F(CoreParity, TargetsK3InstancePerLayerNoFinal) {
  const auto opts = TargetOptions()
                        .top_k_layers(3)
                        .layer_norm_targets(TargetNorm::kInstance)
                        .final_norm(TargetNorm::kNone);
  EXPECT_TRUE(tensors_close("targets k3 instance/none", build_targets(layers_, padding_, opts),
                            get("targets_k3_instance_none"), kTolerance));
}

TEST_F(CoreParity, TargetsK2LayerPerLayerLayerFinal) {
  const auto opts = TargetOptions()
                        .top_k_layers(2)
                        .layer_norm_targets(TargetNorm::kLayer)
                        .final_norm(TargetNorm::kLayer);
  EXPECT_TRUE(tensors_close("targets k2 layer/layer", build_targets(layers_, padding_, opts),
                            get("targets_k2_layer_layer"), kTolerance));
}

TEST_F(CoreParity, TargetsK4NoPerLayerInstanceFinal) {
  const auto opts = TargetOptions()
                        .top_k_layers(4)
                        .layer_norm_targets(TargetNorm::kNone)
                        .final_norm(TargetNorm::kInstance);
  EXPECT_TRUE(tensors_close("targets k4 none/instance", build_targets(layers_, padding_, opts),
                            get("targets_k4_none_instance"), kTolerance));
}

TEST_F(CoreParity, LossesAtMaskedRealPositions) {
  const auto opts = TargetOptions()
                        .top_k_layers(3)
                        .layer_norm_targets(TargetNorm::kInstance)
                        .final_norm(TargetNorm::kNone);
  const auto targets = build_targets(layers_, padding_, opts);  // [B,T,D]
  const auto selected = mask_ & ~padding_;                      // [B,T]
  ASSERT_EQ(selected.sum().item<int64_t>(), get("selected_count").item<int64_t>());
  const auto p = get("predictions").index({selected});  // [N,D]
  const auto t = targets.index({selected});             // [N,D]

  const auto mse = regression_loss(p, t, LossOptions().beta(0));  // scale 1/sqrt(D)
  EXPECT_TRUE(
      tensors_close("loss mse scale 1/sqrt(D)", mse, get("loss_mse_scale_inv_sqrt_d"), kTolerance));
  const auto smooth = regression_loss(p, t, LossOptions().beta(2).scale(1));
  EXPECT_TRUE(tensors_close("loss smooth l1 beta 2 scale 1", smooth,
                            get("loss_smooth_l1_beta2_scale1"), kTolerance));
}

}  // namespace
}  // namespace data2vec
