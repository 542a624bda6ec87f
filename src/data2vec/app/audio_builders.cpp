#include "data2vec/app/audio_builders.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>

#include "data2vec/audio/data.h"
#include "data2vec/audio/features.h"
#include "data2vec/audio/hf.h"

namespace fs = std::filesystem;

namespace data2vec::app {

namespace {

// The rate every audio model here reads (arXiv 2202.03555; fairseq's data2vec configs: 16 kHz).
constexpr int64_t kSampleRate = 16000;

const std::vector<std::string> kAsteriskLanguages{"en", "es", "fr", "it", "ru"};

std::string asterisk_package(const std::string& language) {
  return "asterisk-core-sounds-" + language + "-wav";
}

// The recorded English digits "0.wav".."9.wav": the spoken-digits task's real test set.
bool is_asterisk_english_digit(const std::string& relative_path) {
  static const std::regex digit(R"(asterisk-core-sounds-en-wav/.*/digits/[0-9]\.wav)");
  return std::regex_match(relative_path, digit);
}

// Language code from a path under data.root: asterisk-core-sounds-<xx>-wav/... or
// klettres-data/usr/share/klettres/<xx>[_REGION]/...
std::string language_of(const std::string& relative_path) {
  static const std::regex asterisk(R"(asterisk-core-sounds-([a-z]+)-wav/.*)");
  static const std::regex klettres(R"(klettres-data/usr/share/klettres/([a-z]+)(_[A-Za-z]+)?/.*)");
  std::smatch match;
  if (std::regex_match(relative_path, match, asterisk)) return match[1];
  if (std::regex_match(relative_path, match, klettres)) return match[1];
  return "";
}

void require_dir(const fs::path& dir, const std::string& fetch) {
  if (!fs::is_directory(dir)) {
    throw std::invalid_argument("config key 'data.root': no " + dir.string() +
                                " (fetch it first: scripts/fetch-data.sh " + fetch + ")");
  }
}

audio::Manifest scan(const io::Config& c, const std::vector<std::string>& subdirs) {
  return audio::scan_audio_files(c.data.root, subdirs, kSampleRate);
}

audio::Manifest asterisk_manifest(const io::Config& c) {
  std::vector<std::string> packages;
  for (const auto& language : kAsteriskLanguages) {
    require_dir(fs::path(c.data.root) / asterisk_package(language), "speech");
    packages.push_back(asterisk_package(language));
  }
  auto manifest = scan(c, packages);
  auto& entries = manifest.entries;
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const audio::ManifestEntry& e) {
                                 return is_asterisk_english_digit(e.path);
                               }),
                entries.end());
  return manifest;
}

// klettres clips of `languages` (all when empty).
audio::Manifest klettres_manifest(const io::Config& c, const std::vector<std::string>& languages) {
  require_dir(fs::path(c.data.root) / "klettres-data", "speech");
  auto manifest = scan(c, {"klettres-data"});
  if (!languages.empty()) {
    auto& entries = manifest.entries;
    entries.erase(std::remove_if(entries.begin(), entries.end(),
                                 [&](const audio::ManifestEntry& e) {
                                   const auto language = language_of(e.path);
                                   return std::find(languages.begin(), languages.end(), language) ==
                                          languages.end();
                                 }),
                  entries.end());
  }
  return manifest;
}

audio::Manifest spoken_digits_manifest(const io::Config& c, const std::string& split) {
  const std::string subdir = "spoken-digits/" + split;
  require_dir(fs::path(c.data.root) / subdir, "spoken-digits");
  return scan(c, {subdir});
}

// One manifest from several, under their deepest common root.
audio::Manifest concatenate(const std::vector<audio::Manifest>& parts) {
  TORCH_CHECK(!parts.empty(), "no audio corpora named");
  fs::path root = parts.front().root;
  for (const auto& part : parts) {
    while (fs::relative(part.root, root).string().rfind("..", 0) == 0) root = root.parent_path();
  }
  audio::Manifest all;
  all.root = root.string();
  for (const auto& part : parts) {
    const auto prefix = fs::relative(part.root, root);
    for (const auto& entry : part.entries) {
      all.entries.push_back({(prefix / entry.path).lexically_normal().string(), entry.num_samples});
    }
  }
  return all;
}

// Every 5th clip of a manifest (`held_out`) or the other four.
audio::Manifest every_fifth(audio::Manifest manifest, bool held_out) {
  std::vector<audio::ManifestEntry> kept;
  for (size_t i = 0; i < manifest.entries.size(); ++i) {
    if ((i % 5 == 4) == held_out) kept.push_back(manifest.entries[i]);
  }
  manifest.entries = std::move(kept);
  return manifest;
}

// The five languages' clips of Asterisk and klettres, one manifest.
audio::Manifest language_manifest(const io::Config& c) {
  return concatenate({asterisk_manifest(c), klettres_manifest(c, kAsteriskLanguages)});
}

audio::Manifest corpus_manifest(const io::Config& c, const std::string& name) {
  if (name == "asterisk" || name == "klettres") {
    // The language task's held-out clips (every 5th of its five languages) are never pretrained on.
    auto manifest = name == "asterisk" ? asterisk_manifest(c) : klettres_manifest(c, {});
    const auto held_out = every_fifth(language_manifest(c), true);
    std::set<std::string> excluded;
    for (const auto& entry : held_out.entries)
      excluded.insert((fs::path(held_out.root) / entry.path).string());
    auto& entries = manifest.entries;
    entries.erase(
        std::remove_if(entries.begin(), entries.end(),
                       [&](const audio::ManifestEntry& e) {
                         return excluded.count((fs::path(manifest.root) / e.path).string()) > 0;
                       }),
        entries.end());
    return manifest;
  }
  if (name == "spoken-digits") return spoken_digits_manifest(c, "train");
  if (name.size() > 4 && name.substr(name.size() - 4) == ".tsv") return audio::read_manifest(name);
  throw std::invalid_argument("config key 'data.dataset': unknown audio corpus '" + name +
                              "' (expected asterisk, klettres, spoken-digits or a manifest .tsv)");
}

audio::AudioDatasetOptions dataset_options(const io::Config& c) {
  return audio::AudioDatasetOptions().sample_rate(kSampleRate).max_samples(c.data.max_samples);
}

std::shared_ptr<audio::AudioManifestDataset> make_dataset(
    audio::Manifest manifest, const io::Config& c, audio::LabelFn labels = nullptr,
    std::vector<std::string> class_names = {}) {
  if (c.data.limit > 0 && int64_t(manifest.entries.size()) > c.data.limit) {
    manifest.entries.resize(size_t(c.data.limit));
  }
  return std::make_shared<audio::AudioManifestDataset>(
      std::move(manifest), dataset_options(c).class_names(std::move(class_names)),
      std::move(labels));
}

// A train split in a fixed shuffled order: corpora are stored class by class, and
// eval.probe_train_limit keeps the first N examples, which must cover every class.
std::shared_ptr<audio::AudioManifestDataset> make_train_split(audio::Manifest manifest,
                                                              const io::Config& c,
                                                              audio::LabelFn labels) {
  std::mt19937_64 rng(20221028);
  std::shuffle(manifest.entries.begin(), manifest.entries.end(), rng);
  return make_dataset(std::move(manifest), c, std::move(labels));
}

std::function<torch::Tensor(const Batch&)> mean_log_mel_features() {
  return [](const Batch& b) { return audio::mean_log_mel(b.input.source, b.input.padding_mask); };
}

std::vector<EvalTask> digits_tasks(const io::Config& c) {
  const auto label = audio::label_from_component(-2);  // spoken-digits/<split>/<word>/<clip>.wav
  const auto train = make_train_split(spoken_digits_manifest(c, "train"), c, label);
  const auto task = [&](const std::string& name, const std::string& measures,
                        const std::string& split) {
    return EvalTask{
        name,
        measures,
        {train, make_dataset(spoken_digits_manifest(c, split), c, label, train->class_names())},
        mean_log_mel_features(),
        "mean log-mel, linear"};
  };
  return {
      task("spoken digits, held-out voices",
           "which digit word (zero..nine) is spoken by espeak-ng voice variants never heard in "
           "training "
           "(trained on 8 other variants and 5 flite/festival voices, same 7 accents)",
           "test-voices"),
      task("spoken digits, other synthesisers",
           "the same classifier on voices of synthesisers it was not trained on (flite slt, "
           "festival "
           "ked and slt): a shift of voice and engine at once",
           "test-engines"),
      task(
          "spoken digits, real speaker",
          "the same classifier on the 10 recorded Asterisk digits (one human speaker; 10 clips, so "
          "each is 10 points)",
          "test-real")};
}

EvalTask language_task(const io::Config& c) {
  const audio::LabelFn label = language_of;
  const auto all = language_manifest(c);
  const auto train = make_train_split(every_fifth(all, false), c, label);
  return {
      "language, seen speakers",
      "which of en/es/fr/it/ru is spoken, on held-out clips (every 5th) of the same speakers: one "
      "Asterisk speaker per language plus klettres' (en has two there). Language and speaker "
      "coincide, so this measures speaker-and-language identity, not language across speakers "
      "(trained on Asterisk and tested on klettres, every method here scored chance, ~20%)",
      {train, make_dataset(every_fifth(all, true), c, label, train->class_names())},
      mean_log_mel_features(),
      "mean log-mel, linear"};
}

}  // namespace

audio::AudioEncoderOptions audio_encoder_options(const io::Config& c) {
  auto o = c.model.preset == "hf" ? audio::audio_options_from_hf(hf_model_config(c))
                                  : preset_options(c, audio::audio_preset);
  o.layer_result(parse_layer_result_kind(c.model.layer_result));
  o.mask().mask_prob(c.model.mask_prob).mask_length(c.model.mask_length);
  if (c.model.dropout) o.dropout(*c.model.dropout).attention_dropout(*c.model.dropout);
  if (c.model.pos_conv_kernel) o.pos_conv_kernel(*c.model.pos_conv_kernel);
  o.gemm(gemm_library(c));
  return o;
}

std::shared_ptr<const Dataset> audio_pretrain_dataset(const io::Config& c) {
  std::vector<audio::Manifest> parts;
  for (const auto& name : split_list(c.data.dataset)) parts.push_back(corpus_manifest(c, name));
  auto utterances = make_dataset(concatenate(parts), c);
  if (!c.data.pack) return utterances;
  return std::make_shared<audio::PackedAudioDataset>(utterances, c.data.max_samples);
}

std::vector<EvalTask> audio_eval_tasks(const io::Config& c) {
  std::vector<EvalTask> tasks;
  for (const auto& name : split_list(c.eval.tasks.empty() ? "digits,language" : c.eval.tasks)) {
    if (name == "digits") {
      for (auto& task : digits_tasks(c)) tasks.push_back(std::move(task));
    } else if (name == "language") {
      tasks.push_back(language_task(c));
    } else {
      throw std::invalid_argument("config key 'eval.tasks': unknown audio task '" + name +
                                  "' (expected digits or language)");
    }
  }
  return tasks;
}

FilesDataset audio_files_dataset(const io::Config& c, const std::string& input) {
  if (!fs::exists(input)) throw std::invalid_argument("input '" + input + "' does not exist");
  audio::Manifest manifest;
  if (fs::is_directory(input)) {
    manifest = audio::scan_audio_files(input, {}, kSampleRate);
  } else {
    const auto info = audio::read_audio_info(input);
    const fs::path path = fs::absolute(input);
    manifest.root = path.parent_path().string();
    manifest.entries.push_back(
        {path.filename().string(),
         audio::resampled_length(info.frames, info.sample_rate, kSampleRate)});
  }
  if (manifest.entries.empty())
    throw std::invalid_argument("no readable audio files under '" + input + "'");
  // Every file gets a vector: one window of the conv stack (400 samples) is the least it reads.
  // A shorter file is named and skipped, as an unreadable one is; not the end of the whole run.
  constexpr int64_t kMinSamples = 400;
  for (const auto& entry : manifest.entries) {
    if (entry.num_samples < kMinSamples) {
      spdlog::warn("embed: skipping {}: {} samples at 16 kHz, shorter than one 25 ms window",
                   (fs::path(manifest.root) / entry.path).string(), entry.num_samples);
    }
  }
  auto options = dataset_options(c).min_samples(kMinSamples);
  auto dataset = std::make_shared<audio::AudioManifestDataset>(manifest, options);
  if (dataset->size() == 0)
    throw std::invalid_argument("no audio file under '" + input + "' is long enough to embed");
  std::vector<std::string> files;
  for (size_t i = 0; i < dataset->size(); ++i) files.push_back(dataset->describe(i));
  return {dataset, files};
}

}  // namespace data2vec::app
