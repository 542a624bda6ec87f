#include <fstream>

#include "data2vec/io/config.h"
#include "support.h"

using data2vec::io::Config;

namespace {

std::string write_file(const std::string& dir, const std::string& name, const std::string& text) {
  const auto path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// The message of the exception `fn` throws (empty if it does not throw).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, LoadsValuesOverDefaults) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "a.yaml", "train:\n  max_steps: 77\n  precision: bf16\noptim:\n  lr: 0.005\n");
  const Config c = data2vec::io::load_config(path);
  EXPECT_EQ(c.train.max_steps, 77);
  EXPECT_EQ(c.train.precision, "bf16");
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.005);
  EXPECT_EQ(c.train.batch_size, Config().train.batch_size);  // untouched default
}

TEST(Config, UnknownKeyNamesKeyFileAndLine) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "bad.yaml", "train:\n  max_steps: 10\n  max_stepz: 5\n");
  const auto message = error_of([&] { data2vec::io::load_config(path); });
  EXPECT_NE(message.find("train.max_stepz"), std::string::npos) << message;
  EXPECT_NE(message.find(path + ":3"), std::string::npos) << message;
  EXPECT_NE(message.find("train.max_steps"), std::string::npos) << "hint lists the section's keys";
}

TEST(Config, WrongTypeNamesKeyAndExpectedType) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "bad.yaml", "optim:\n  lr: fast\n");
  const auto message = error_of([&] { data2vec::io::load_config(path); });
  EXPECT_NE(message.find("optim.lr"), std::string::npos) << message;
  EXPECT_NE(message.find("a number"), std::string::npos) << message;
  EXPECT_NE(message.find(path + ":2"), std::string::npos) << message;
  const auto path2 = write_file(dir, "bad2.yaml", "train:\n  max_steps: 1.5\n");
  EXPECT_NE(error_of([&] { data2vec::io::load_config(path2); }).find("an integer"), std::string::npos);
}

TEST(Config, BadEnumValueIsRejected) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "bad.yaml", "train:\n  device: tpu\n");
  const auto message = error_of([&] { data2vec::io::load_config(path); });
  EXPECT_NE(message.find("train.device"), std::string::npos) << message;
  EXPECT_NE(message.find("cpu, cuda, auto"), std::string::npos) << message;
}

TEST(Config, ProbeLayerIsFinalOrANumber) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "a.yaml", "eval:\n  probe_layer: 2\n");
  EXPECT_EQ(data2vec::io::load_config(path).eval.probe_layer, "2");
  EXPECT_EQ(data2vec::io::load_config(path, {"eval.probe_layer=final"}).eval.probe_layer, "final");
  for (const std::string bad : {"top", "-1", ""}) {
    const auto message =
        error_of([&] { data2vec::io::load_config(path, {"eval.probe_layer=" + bad}); });
    EXPECT_NE(message.find("eval.probe_layer"), std::string::npos) << bad << ": " << message;
  }
}

TEST(Config, SetOverridesAnyKeyAndRejectsUnknown) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "a.yaml", "train:\n  max_steps: 10\n");
  const Config c = data2vec::io::load_config(path, {"train.max_steps=20", "log.tensorboard=false",
                                                    "model.modality=text"});
  EXPECT_EQ(c.train.max_steps, 20);
  EXPECT_FALSE(c.log.tensorboard);
  EXPECT_EQ(c.model.modality, "text");
  EXPECT_NE(error_of([&] { data2vec::io::load_config(path, {"train.nope=1"}); }).find("train.nope"),
            std::string::npos);
  EXPECT_NE(error_of([&] { data2vec::io::load_config(path, {"train.max_steps"}); }).find("key=value"),
            std::string::npos);
}

TEST(Config, BaseChainAppliesParentFirst) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  write_file(dir, "parent.yaml", "train:\n  max_steps: 10\n  batch_size: 8\n");
  const auto child = write_file(dir, "child.yaml", "base: parent.yaml\ntrain:\n  max_steps: 30\n");
  const Config c = data2vec::io::load_config(child);
  EXPECT_EQ(c.train.max_steps, 30);
  EXPECT_EQ(c.train.batch_size, 8);
}

TEST(Config, YamlRoundTripKeepsEveryKey) {
  Config c;
  c.train.max_steps = 1234;
  c.optim.lr = 0.000123456789;
  c.data.tokenizer = "";
  c.log.tensorboard = false;
  const auto text = data2vec::io::to_yaml(c);
  Config back;
  data2vec::io::apply_yaml(back, text, "roundtrip");
  EXPECT_EQ(data2vec::io::to_yaml(back), text);
  EXPECT_EQ(back.train.max_steps, 1234);
  EXPECT_DOUBLE_EQ(back.optim.lr, 0.000123456789);
  EXPECT_FALSE(back.log.tensorboard);
}

TEST(Config, ShippedPresetsLoad) {
  for (const char* preset : {"configs/toy/tiny.yaml"}) {
    const auto path = std::string(DATA2VEC_SOURCE_DIR) + "/" + preset;
    EXPECT_NO_THROW(data2vec::io::load_config(path)) << preset;
  }
}

TEST(Config, AlgorithmV2BringsTheDefaultsOfDataVec2) {
  // data2vec 2.0 (arXiv 2212.07525; fairseq config/v2/*.yaml): FFN layer results, instance norm
  // per layer, squared error; images layer-norm the average, mask 80% and scale by 1/sqrt(D),
  // text scales by 1 and masks 48%. A config that only says `algorithm: v2` must get them.
  const auto dir = data2vec::testing::make_temp_dir("config");
  const Config vision = data2vec::io::load_config(
      write_file(dir, "vision.yaml", "model:\n  modality: vision\n  algorithm: v2\n"));
  EXPECT_EQ(vision.model.layer_result, "ffn");
  EXPECT_EQ(vision.model.target_layer_norm, "instance_norm");
  EXPECT_EQ(vision.model.target_final_norm, "layer_norm");
  EXPECT_DOUBLE_EQ(vision.model.loss_beta, 0.0);
  EXPECT_DOUBLE_EQ(vision.model.loss_scale, 0.0);  // 1/sqrt(D)
  EXPECT_DOUBLE_EQ(vision.model.mask_ratio, 0.8);

  const Config text = data2vec::io::load_config(
      write_file(dir, "text.yaml", "model:\n  modality: text\n  algorithm: v2\n"));
  EXPECT_EQ(text.model.target_final_norm, "none");
  EXPECT_DOUBLE_EQ(text.model.loss_scale, 1.0);
  EXPECT_DOUBLE_EQ(text.model.mask_ratio, 0.48);

  const Config audio = data2vec::io::load_config(
      write_file(dir, "audio.yaml", "model:\n  modality: audio\n  algorithm: v2\n"));
  EXPECT_EQ(audio.model.layer_result, "ffn");
  EXPECT_EQ(audio.model.target_final_norm, "none");
  EXPECT_DOUBLE_EQ(audio.model.loss_scale, 0.0);

  // data2vec 1.0 keeps its own defaults.
  const Config v1 = data2vec::io::load_config(
      write_file(dir, "v1.yaml", "model:\n  modality: vision\n  algorithm: v1\n"));
  EXPECT_EQ(v1.model.layer_result, "block");
  EXPECT_EQ(v1.model.target_layer_norm, "layer_norm");
  EXPECT_DOUBLE_EQ(v1.model.loss_beta, 2.0);
  EXPECT_DOUBLE_EQ(v1.model.mask_ratio, 0.6);
}

TEST(Config, ExplicitKeysWinOverTheAlgorithmsDefaults) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  write_file(dir, "parent.yaml", "model:\n  modality: vision\n  layer_result: block\n");
  const auto child =
      write_file(dir, "child.yaml", "base: parent.yaml\nmodel:\n  algorithm: v2\n  loss_beta: 2\n");
  // From a base file, from the file itself and from --set: each stays as written.
  const Config c = data2vec::io::load_config(child, {"model.mask_ratio=0.7"});
  EXPECT_EQ(c.model.layer_result, "block");
  EXPECT_DOUBLE_EQ(c.model.loss_beta, 2.0);
  EXPECT_DOUBLE_EQ(c.model.mask_ratio, 0.7);
  // The keys not written take the 2.0 defaults.
  EXPECT_EQ(c.model.target_layer_norm, "instance_norm");
  EXPECT_DOUBLE_EQ(c.model.loss_scale, 0.0);
  // --set model.algorithm=v2 on a file is as good as writing it there.
  const auto plain = write_file(dir, "plain.yaml", "model:\n  modality: vision\n");
  EXPECT_EQ(data2vec::io::load_config(plain, {"model.algorithm=v2"}).model.layer_result, "ffn");
}
