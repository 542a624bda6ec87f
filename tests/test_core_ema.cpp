// The EMA teacher: decay schedule (arXiv 2202.03555, sec. 3) and the update rule of core/ema.h.
#include <cstdint>
#include <map>
#include <string>

#include "data2vec/core/ema.h"
#include "support.h"

namespace data2vec {
namespace {

using data2vec::testing::tensors_close;

TEST(EmaDecay, StartMidpointEndAndAfter) {
  const auto options = EmaOptions().decay_start(0.99).decay_end(0.999).anneal_steps(100);
  EXPECT_DOUBLE_EQ(ema_decay_at(0, options), 0.99);
  EXPECT_DOUBLE_EQ(ema_decay_at(50, options), 0.9945);  // halfway between start and end
  EXPECT_DOUBLE_EQ(ema_decay_at(25, options), 0.99 + 0.25 * 0.009);
  EXPECT_DOUBLE_EQ(ema_decay_at(100, options), 0.999);
  EXPECT_DOUBLE_EQ(ema_decay_at(101, options), 0.999);
  EXPECT_DOUBLE_EQ(ema_decay_at(1000000, options), 0.999);
  // Monotone between start and end.
  for (int64_t step = 1; step <= 100; ++step) {
    EXPECT_GT(ema_decay_at(step, options), ema_decay_at(step - 1, options)) << "step " << step;
  }
}

TEST(EmaDecay, ZeroAnnealStepsMeansEnd) {
  const auto options = EmaOptions().decay_start(0.9).decay_end(0.9999).anneal_steps(0);
  EXPECT_DOUBLE_EQ(ema_decay_at(0, options), 0.9999);
  EXPECT_DOUBLE_EQ(ema_decay_at(7, options), 0.9999);
}

// A module with every kind of state the EMA must treat differently.
struct EmaTestModuleImpl : torch::nn::Module {
  explicit EmaTestModuleImpl(torch::Dtype dtype = torch::kFloat32) {
    weight = register_parameter("weight", torch::randn({4, 5}).to(dtype));
    bias = register_parameter("bias", torch::randn({5}).to(dtype));
    embed = register_module("embed", torch::nn::Linear(3, 4));
    embed->to(dtype);
    steps = register_buffer("steps", torch::zeros({2}, torch::kLong));
    running = register_buffer("running", torch::randn({3}).to(dtype));
  }
  torch::Tensor weight;              // [4,5] averaged
  torch::Tensor bias;                // [5] averaged
  torch::nn::Linear embed{nullptr};  // copied (prefix "embed.")
  torch::Tensor steps;               // [2] int64 buffer: copied, never averaged
  torch::Tensor running;             // [3] float buffer: copied
};
TORCH_MODULE(EmaTestModule);

TEST(EmaUpdate, AveragesCopiesPrefixesAndBuffers) {
  torch::manual_seed(0);
  EmaTestModule teacher, student;
  {
    torch::NoGradGuard no_grad;
    // Values far outside fp32's exact integer range: any float round trip would change them.
    student->steps.copy_(torch::tensor({int64_t{123456789012345}, int64_t{-987654321098}}));
    teacher->steps.copy_(torch::tensor({int64_t{5}, int64_t{7}}));
  }
  std::map<std::string, torch::Tensor> before;
  for (const auto& item : teacher->named_parameters()) before[item.key()] = item.value().clone();

  const double tau = 0.9;
  ema_update(*teacher, *student, tau, {"embed."});

  for (const std::string name : {"weight", "bias"}) {
    const auto t = before[name].to(torch::kFloat64);
    const auto s = student->named_parameters()[name].to(torch::kFloat64);
    const auto expected = tau * t + (1.0 - tau) * s;
    EXPECT_TRUE(
        tensors_close("averaged " + name, teacher->named_parameters()[name], expected, 1e-6));
    EXPECT_FALSE(
        torch::equal(teacher->named_parameters()[name], student->named_parameters()[name]));
    EXPECT_EQ(teacher->named_parameters()[name].scalar_type(), torch::kFloat32);
  }
  EXPECT_TRUE(torch::equal(teacher->embed->weight, student->embed->weight)) << "copied prefix";
  EXPECT_TRUE(torch::equal(teacher->embed->bias, student->embed->bias)) << "copied prefix";
  EXPECT_EQ(teacher->steps.scalar_type(), torch::kLong);
  EXPECT_EQ(teacher->steps[0].item<int64_t>(), int64_t{123456789012345});
  EXPECT_EQ(teacher->steps[1].item<int64_t>(), int64_t{-987654321098});
  EXPECT_TRUE(torch::equal(teacher->running, student->running)) << "float buffers are copied";
}

TEST(EmaUpdate, ExactOnDyadicValues) {
  // With quarter-integer inputs and tau = 0.75, tau*t + (1-tau)*s is exact in fp32 however the
  // update is arranged, so the result must match bit for bit.
  EmaTestModule teacher, student;
  {
    torch::NoGradGuard no_grad;
    teacher->weight.copy_(torch::arange(20, torch::kFloat32).view({4, 5}) / 4.0);
    student->weight.copy_(torch::arange(20, torch::kFloat32).view({4, 5}).flip(0) * -0.5);
  }
  const auto t = teacher->weight.clone();
  const auto s = student->weight.clone();
  ema_update(*teacher, *student, 0.75, {});
  const auto expected =
      (0.75 * t.to(torch::kFloat64) + 0.25 * s.to(torch::kFloat64)).to(torch::kFloat32);
  EXPECT_TRUE(torch::equal(teacher->weight, expected))
      << tensors_close("dyadic", teacher->weight, expected, 0.0).message();
}

TEST(EmaUpdate, Bf16IsAveragedInFp32) {
  // In bf16 arithmetic tau * t rounds back to (nearly) t and the (1 - tau) * s update is lost;
  // in fp32 arithmetic the teacher moves. Expected: the fp32 (here: exact) average rounded once.
  torch::manual_seed(1);
  EmaTestModule teacher(torch::kBFloat16), student(torch::kBFloat16);
  {
    torch::NoGradGuard no_grad;
    teacher->weight.copy_(torch::ones({4, 5}) + torch::rand({4, 5}) * 0.01);
    student->weight.copy_(teacher->weight + 0.5 + torch::rand({4, 5}));
  }
  const auto t = teacher->weight.to(torch::kFloat64);
  const auto s = student->weight.to(torch::kFloat64);
  const double tau = 0.99;
  ema_update(*teacher, *student, tau, {});
  EXPECT_EQ(teacher->weight.scalar_type(), torch::kBFloat16);
  const auto expected = (tau * t + (1.0 - tau) * s).to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(teacher->weight, expected))
      << tensors_close("bf16 ema", teacher->weight, expected, 0.0).message();

  // What bf16 arithmetic would have produced: must differ, or the test proves nothing.
  const auto bf16_t = t.to(torch::kBFloat16), bf16_s = s.to(torch::kBFloat16);
  const auto in_bf16 = (bf16_t * tau) + (bf16_s * (1.0 - tau));
  EXPECT_FALSE(torch::equal(in_bf16, expected));
}

TEST(EmaUpdate, DecayOneKeepsTeacherAndZeroCopiesStudent) {
  torch::manual_seed(2);
  EmaTestModule teacher, student;
  const auto t = teacher->weight.clone();
  ema_update(*teacher, *student, 1.0, {});
  EXPECT_TRUE(torch::equal(teacher->weight, t));
  copy_module_state(*teacher, *student);
  for (const auto& item : student->named_parameters()) {
    EXPECT_TRUE(torch::equal(teacher->named_parameters()[item.key()], item.value())) << item.key();
  }
  for (const auto& item : student->named_buffers()) {
    EXPECT_TRUE(torch::equal(teacher->named_buffers()[item.key()], item.value())) << item.key();
  }
}

TEST(EmaUpdate, RejectsDifferentLayouts) {
  EmaTestModule teacher;
  torch::nn::Linear other(3, 4);
  EXPECT_THROW(ema_update(*teacher, *other, 0.9, {}), c10::Error);
}

TEST(EmaUpdate, ShapeMismatchNamesTheParameter) {
  // Same names, one parameter of another shape: [4,5] against [1,5] broadcasts in mul_ / add_,
  // so the average must be refused by name rather than computed.
  EmaTestModule teacher, student;
  {
    torch::NoGradGuard no_grad;
    student->weight.set_data(torch::randn({1, 5}));
  }
  try {
    ema_update(*teacher, *student, 0.9, {});
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("'weight'"), std::string::npos)
        << e.what_without_backtrace();
  }
}

// A module with parameters large enough to be split across threads.
struct LargeEmaModuleImpl : torch::nn::Module {
  LargeEmaModuleImpl() {
    // LibTorch splits elementwise ops in chunks of 32768 elements: 3 chunks here.
    weight = register_parameter("weight", torch::randn({70001}));
    odd = register_parameter("odd", torch::randn({37, 53}));
  }
  torch::Tensor weight, odd;
};
TORCH_MODULE(LargeEmaModule);

TEST(EmaUpdate, LargeParametersMatchTheFormulaAtAnyThreadCount) {
  torch::manual_seed(3);
  LargeEmaModule student, teacher_one, teacher_two;
  copy_module_state(*teacher_one, *student);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : teacher_one->parameters()) p.add_(torch::randn_like(p));
  }
  copy_module_state(*teacher_two, *teacher_one);
  std::map<std::string, torch::Tensor> before;
  for (const auto& item : teacher_one->named_parameters()) before[item.key()] = item.value().clone();
  const double tau = 0.9993;
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  ema_update(*teacher_one, *student, tau, {});
  torch::set_num_threads(2);
  ema_update(*teacher_two, *student, tau, {});
  torch::set_num_threads(threads);
  for (const auto& item : student->named_parameters()) {
    const auto& name = item.key();
    const auto expected = tau * before[name].to(torch::kFloat64) +
                          (1.0 - tau) * item.value().to(torch::kFloat64);
    EXPECT_TRUE(tensors_close(name, teacher_one->named_parameters()[name], expected, 2e-6));
    EXPECT_TRUE(torch::equal(teacher_one->named_parameters()[name],
                             teacher_two->named_parameters()[name]))
        << name << ": 1 and 2 threads differ";
  }
}

}  // namespace
}  // namespace data2vec
