#include <fstream>
#include <optional>
#include <set>
#include <variant>

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

TEST(Config, ProbeLayerIsFinalANumberOrAList) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "a.yaml", "eval:\n  probe_layer: 2\n");
  EXPECT_EQ(data2vec::io::load_config(path).eval.probe_layer, "2");
  EXPECT_EQ(data2vec::io::load_config(path, {"eval.probe_layer=final"}).eval.probe_layer, "final");
  EXPECT_EQ(data2vec::io::load_config(path, {"eval.probe_layer=1,2,final"}).eval.probe_layer,
            "1,2,final");
  // A layer listed twice (also as 01) would be a probe of duplicated columns: evaluate rejects
  // it, so the config check must too, naming the key before any run starts.
  for (const std::string bad : {"top", "-1", "", "1,", "1,,2", "1,top", "1,1", "final,2,final",
                                "0,00", "3,03", "99999999999999999999"}) {
    const auto message =
        error_of([&] { data2vec::io::load_config(path, {"eval.probe_layer=" + bad}); });
    EXPECT_NE(message.find("eval.probe_layer"), std::string::npos) << bad << ": " << message;
  }
}

TEST(Config, PoolIsMeanClsOrGrid) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "a.yaml", "eval:\n  pool: grid\n");
  EXPECT_EQ(data2vec::io::load_config(path).eval.pool, "grid");
  EXPECT_EQ(data2vec::io::load_config(path, {"eval.pool=cls"}).eval.pool, "cls");
  const auto message = error_of([&] { data2vec::io::load_config(path, {"eval.pool=max"}); });
  EXPECT_NE(message.find("eval.pool"), std::string::npos) << message;
  EXPECT_NE(message.find("mean, cls or grid"), std::string::npos) << message;
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

// A double prints as the shortest decimal that reads back exactly: what a user wrote (0.8),
// not its binary expansion (0.80000000000000004), and still bit-exact on reload.
TEST(Config, YamlPrintsTheShortestExactDecimal) {
  Config c;
  c.model.mask_ratio = 0.8;
  c.optim.lr = 1.0 / 3.0;
  c.optim.weight_decay = 0.05;
  const auto text = data2vec::io::to_yaml(c);
  EXPECT_NE(text.find("mask_ratio: 0.8  #"), std::string::npos) << text;
  EXPECT_NE(text.find("weight_decay: 0.05  #"), std::string::npos) << text;
  EXPECT_EQ(text.find("0000000"), std::string::npos) << text;
  Config back;
  data2vec::io::apply_yaml(back, text, "roundtrip");
  EXPECT_EQ(back.optim.lr, 1.0 / 3.0);  // 17 digits where it takes 17
  EXPECT_EQ(back.model.mask_ratio, 0.8);
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

// ---- the key table: every field of every section declared exactly once, with its help ----

namespace {

// Converts to any field type: T{Any{}, ..., Any{}} compiles for up to as many initialisers as
// the aggregate T has fields (C++17 has no reflection; this is how to count them).
struct AnyField {
  template <typename T>
  operator T() const;  // NOLINT: declared only, used in unevaluated context
};

template <typename T, typename... Fields>
constexpr auto initialisable(int) -> decltype(T{Fields{}...}, true) {
  return true;
}
template <typename T, typename... Fields>
constexpr bool initialisable(long) {
  return false;
}

template <typename T, typename... Fields>
constexpr size_t field_count() {
  if constexpr (initialisable<T, Fields..., AnyField>(0)) {
    return field_count<T, Fields..., AnyField>();
  } else {
    return sizeof...(Fields);
  }
}

// The keys of `section`, checked to point at distinct fields inside `object`.
template <typename Section>
size_t distinct_fields_in(const std::vector<data2vec::io::ConfigKey>& keys,
                          const std::string& section, const Section& object) {
  std::set<const void*> fields;
  const auto* begin = reinterpret_cast<const char*>(&object);
  for (const auto& key : keys) {
    if (key.name.rfind(section + ".", 0) != 0) continue;
    const void* field = std::visit([](auto* f) { return static_cast<const void*>(f); }, key.field);
    const auto* at = static_cast<const char*>(field);
    EXPECT_TRUE(at >= begin && at < begin + sizeof(Section)) << key.name << " is not in " << section;
    EXPECT_TRUE(fields.insert(field).second) << key.name << " points at a field already in the table";
  }
  return fields.size();
}

}  // namespace

TEST(ConfigKeys, EveryFieldOfEverySectionAppearsExactlyOnce) {
  Config c;
  const auto keys = data2vec::io::config_keys(c);
  static_assert(field_count<Config>() == 8, "a new section needs its line below");
  EXPECT_EQ(distinct_fields_in(keys, "train", c.train), field_count<data2vec::io::TrainConfig>());
  EXPECT_EQ(distinct_fields_in(keys, "model", c.model), field_count<data2vec::io::ModelConfig>());
  EXPECT_EQ(distinct_fields_in(keys, "ema", c.ema), field_count<data2vec::io::EmaConfig>());
  EXPECT_EQ(distinct_fields_in(keys, "optim", c.optim), field_count<data2vec::io::OptimConfig>());
  EXPECT_EQ(distinct_fields_in(keys, "data", c.data), field_count<data2vec::io::DataConfig>());
  EXPECT_EQ(distinct_fields_in(keys, "log", c.log), field_count<data2vec::io::LogConfig>());
  EXPECT_EQ(distinct_fields_in(keys, "checkpoint", c.checkpoint),
            field_count<data2vec::io::CheckpointConfig>());
  EXPECT_EQ(distinct_fields_in(keys, "eval", c.eval), field_count<data2vec::io::EvalConfig>());
  // The counter itself counts: TrainConfig has 16 fields.
  EXPECT_EQ(field_count<data2vec::io::TrainConfig>(), 16u);

  std::set<std::string> names;
  for (const auto& key : keys) {
    EXPECT_TRUE(names.insert(key.name).second) << "key declared twice: " << key.name;
    EXPECT_FALSE(key.help.empty()) << key.name << " has no help text";
    EXPECT_EQ(key.help.find('\n'), std::string::npos) << key.name << ": help is one line";
    if (!key.choices.empty()) {
      EXPECT_TRUE(std::holds_alternative<std::string*>(key.field)) << key.name;
    }
  }
}

TEST(ConfigKeys, ConfigPrintsEveryKeysHelpAsAComment) {
  const auto text = data2vec::io::to_yaml(Config());
  EXPECT_NE(text.find("max_steps: 1000  # optimizer steps in the whole run"), std::string::npos)
      << text;
  EXPECT_NE(text.find("precision: fp32  # fp32 | bf16: "), std::string::npos) << text;
  Config c;
  for (const auto& key : data2vec::io::config_keys(c)) {
    std::string comment = "# ";
    for (size_t i = 0; i < key.choices.size(); ++i) comment += (i ? " | " : "") + key.choices[i];
    comment += (key.choices.empty() ? "" : ": ") + key.help + "\n";
    EXPECT_NE(text.find(comment), std::string::npos) << key.name << ": " << comment;
  }
}

// Every key with choices rejects a word outside them, through validate() alone.
TEST(ConfigKeys, EveryChoiceKeyRejectsOtherWords) {
  Config c;
  int checked = 0;
  for (const auto& key : data2vec::io::config_keys(c)) {
    if (key.choices.empty()) continue;
    Config bad;
    data2vec::io::apply_overrides(bad, {key.name + "=not-a-choice"});
    const auto message = error_of([&] { data2vec::io::validate(bad); });
    EXPECT_NE(message.find(key.name), std::string::npos) << message;
    EXPECT_NE(message.find(key.choices.front()), std::string::npos) << message;
    for (const auto& choice : key.choices) {
      Config good;
      data2vec::io::apply_overrides(good, {key.name + "=" + choice});
      if (key.name == "model.preset") continue;
      EXPECT_NO_THROW(data2vec::io::validate(good)) << key.name << "=" << choice;
    }
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

// Keys meaning "the modality's default" are optional: unset by default, null or the old
// sentinels (0 for integers, -1 for numbers) read as unset, values given are range-checked.
TEST(ConfigKeys, ModalityDefaultsAreOptional) {
  const Config defaults;
  EXPECT_FALSE(defaults.model.clone_batch.has_value());
  EXPECT_FALSE(defaults.model.dropout.has_value());
  EXPECT_FALSE(defaults.ema.anneal_steps.has_value());
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto path = write_file(dir, "a.yaml",
                               "model:\n  clone_batch: 4\n  dropout: 0\n  cls_loss: ~\n"
                               "  decoder_dim: 0\n  layer_scale_init: -1\n");
  const Config c = data2vec::io::load_config(path);
  EXPECT_EQ(c.model.clone_batch, std::optional<int64_t>(4));
  EXPECT_EQ(c.model.dropout, std::optional<double>(0.0));
  EXPECT_FALSE(c.model.cls_loss.has_value());
  EXPECT_FALSE(c.model.decoder_dim.has_value());       // legacy 0
  EXPECT_FALSE(c.model.layer_scale_init.has_value());  // legacy -1
  EXPECT_FALSE(data2vec::io::load_config(path, {"model.clone_batch="}).model.clone_batch);
  EXPECT_NE(error_of([&] { data2vec::io::load_config(path, {"model.dropout=1.5"}); })
                .find("model.dropout"),
            std::string::npos);
  EXPECT_NE(error_of([&] { data2vec::io::load_config(path, {"model.decoder_kernel=4"}); })
                .find("odd"),
            std::string::npos);
  EXPECT_NE(error_of([&] { data2vec::io::load_config(path, {"ema.anneal_steps=-3"}); })
                .find("ema.anneal_steps"),
            std::string::npos);
  // Unset prints as null and reads back unset; set values survive the round trip.
  const auto text = data2vec::io::to_yaml(c);
  EXPECT_NE(text.find("cls_loss: ~"), std::string::npos) << text;
  Config back;
  data2vec::io::apply_yaml(back, text, "roundtrip");
  EXPECT_EQ(back.model.clone_batch, c.model.clone_batch);
  EXPECT_EQ(back.model.dropout, c.model.dropout);
  EXPECT_FALSE(back.model.cls_loss.has_value());
  EXPECT_EQ(data2vec::io::to_yaml(back), text);
}

// .nan and .inf are numbers to YAML; as a learning rate or an Adam beta they would only surface
// later as LibTorch's "Invalid beta parameter at index 0: nan", naming no key.
TEST(Config, NonFiniteAndOutOfRangeOptimizerValuesNameTheirKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"optim.beta1=.nan", "optim.beta1"},     {"optim.lr=.inf", "optim.lr"},
      {"optim.beta2=5", "optim.beta2"},        {"optim.eps=-1", "optim.eps"},
      {"optim.weight_decay=-3", "optim.weight_decay"},
      {"optim.clip_grad_norm=-1", "optim.clip_grad_norm"},
      {"ema.decay_end=.nan", "ema.decay_end"}, {"model.dropout=.nan", "model.dropout"},
      {"optim.beta1=0.95", ""}};
  for (const auto& [override_text, key] : cases) {
    Config c;
    data2vec::io::ConfigOrigins origins;
    data2vec::io::apply_overrides(c, {override_text}, &origins);
    const auto message = error_of([&] { data2vec::io::validate(c, &origins); });
    if (key.empty()) {
      EXPECT_EQ(message, "") << override_text;
      continue;
    }
    EXPECT_NE(message.find("'" + key + "'"), std::string::npos) << override_text << ": " << message;
    EXPECT_NE(message.find("--set " + override_text), std::string::npos) << message;
  }
}

// PyYAML (YAML 1.1) reads "3e+01" as a string; "3.0e+01" is a float to every reader.
TEST(Config, YamlExponentsCarryADecimalPoint) {
  Config c;
  c.optim.eps = 1e-8;
  c.optim.lr = 30;
  c.optim.weight_decay = 2.5e-7;
  const auto text = data2vec::io::to_yaml(c);
  EXPECT_NE(text.find("eps: 1.0e-08  #"), std::string::npos) << text;
  EXPECT_NE(text.find("lr: 30  #"), std::string::npos) << text;
  EXPECT_NE(text.find("weight_decay: 2.5e-07  #"), std::string::npos) << text;
  Config back;
  data2vec::io::apply_yaml(back, text, "roundtrip");
  EXPECT_EQ(back.optim.eps, 1e-8);
  EXPECT_EQ(back.optim.weight_decay, 2.5e-7);
}

TEST(Config, DifferingKeysNamesEveryKeyThatChanged) {
  Config a, b;
  EXPECT_TRUE(data2vec::io::differing_keys(a, b).empty());
  b.train.max_steps = a.train.max_steps + 1;
  b.optim.lr = a.optim.lr * 2;
  b.model.clone_batch = 4;
  EXPECT_EQ(data2vec::io::differing_keys(a, b),
            (std::vector<std::string>{"train.max_steps", "model.clone_batch", "optim.lr"}));
}

// A missing base is the referencing file's mistake: its name and line say where to look.
TEST(Config, AMissingBaseNamesTheFileAndLineThatNamesIt) {
  const auto dir = data2vec::testing::make_temp_dir("config");
  const auto child =
      write_file(dir, "child.yaml", "train:\n  max_steps: 30\nbase: nonexistent.yaml\n");
  const auto message = error_of([&] { data2vec::io::load_config(child); });
  EXPECT_NE(message.find(child + ":3"), std::string::npos) << message;
  EXPECT_NE(message.find("nonexistent.yaml"), std::string::npos) << message;
  const auto folder = error_of([&] { data2vec::io::load_config(dir); });
  EXPECT_NE(folder.find("is a directory"), std::string::npos) << folder;
}

TEST(Config, ADuplicateKeyNamesBothLines) {
  // YAML parsers disagree on which of two equal keys wins (yaml-cpp keeps one silently): a file
  // that says max_steps twice is a mistake to show, not a value to guess.
  const auto dir = data2vec::testing::make_temp_dir("config-duplicate");
  const auto path = write_file(dir, "dup.yaml",
                               "train:\n  max_steps: 3\n  batch_size: 8\n  max_steps: 5\n");
  const auto message = error_of([&] { data2vec::io::load_config(path); });
  EXPECT_NE(message.find(path + ":4: duplicate key 'train.max_steps' (first on line 2)"),
            std::string::npos)
      << message;
  // A section given twice is the same mistake, one level up.
  const auto sections = write_file(dir, "sections.yaml",
                                   "train:\n  max_steps: 3\noptim:\n  lr: 0.1\n"
                                   "train:\n  seed: 2\n");
  const auto message2 = error_of([&] { data2vec::io::load_config(sections); });
  EXPECT_NE(message2.find(sections + ":5: duplicate key 'train' (first on line 1)"),
            std::string::npos)
      << message2;
}

TEST(Config, ASectionGivenAValueSaysItIsASection) {
  const auto dir = data2vec::testing::make_temp_dir("config-section");
  const auto path = write_file(dir, "section.yaml", "model:\n  modality: toy\ntrain: 5\n");
  const auto message = error_of([&] { data2vec::io::load_config(path); });
  EXPECT_NE(message.find(path + ":3: 'train' is a section"), std::string::npos) << message;
  EXPECT_NE(message.find("train.max_steps"), std::string::npos) << message;
  EXPECT_EQ(message.find("unknown key"), std::string::npos) << message;
  const auto good = write_file(dir, "good.yaml", "model:\n  modality: toy\n");
  const auto set = error_of([&] { data2vec::io::load_config(good, {"train=5"}); });
  EXPECT_NE(set.find("'train' is a section"), std::string::npos) << set;
}
