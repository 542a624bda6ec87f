#include "data2vec/audio/data.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "data2vec/io/files.h"

namespace fs = std::filesystem;

namespace data2vec::audio {

Manifest read_manifest(const std::string& file) {
  std::ifstream in(file);
  TORCH_CHECK(in, "cannot open manifest ", file);
  Manifest manifest;
  TORCH_CHECK(std::getline(in, manifest.root) && !manifest.root.empty(), "manifest ", file,
              ": the first line must be the root directory");
  std::string line;
  for (int64_t line_no = 2; std::getline(in, line); ++line_no) {
    if (line.empty()) continue;
    const auto tab = line.rfind('\t');
    TORCH_CHECK(tab != std::string::npos && tab > 0, "manifest ", file, " line ", line_no,
                ": expected 'relative_path<TAB>num_samples', got '", line, "'");
    ManifestEntry entry;
    entry.path = line.substr(0, tab);
    try {
      size_t used = 0;
      entry.num_samples = std::stoll(line.substr(tab + 1), &used);
      TORCH_CHECK(used == line.size() - tab - 1, "trailing characters");
    } catch (const std::exception&) {
      TORCH_CHECK(false, "manifest ", file, " line ", line_no, ": bad sample count '",
                  line.substr(tab + 1), "'");
    }
    manifest.entries.push_back(std::move(entry));
  }
  return manifest;
}

Manifest scan_audio_files(const std::string& root, const std::vector<std::string>& subdirs,
                          int64_t sample_rate, size_t* num_unreadable) {
  TORCH_CHECK(fs::is_directory(root), "audio files: ", root, " is not a directory");
  const fs::path base = fs::canonical(root);
  std::vector<fs::path> files;
  for (const auto& subdir : subdirs.empty() ? std::vector<std::string>{""} : subdirs) {
    const fs::path dir = base / subdir;
    TORCH_CHECK(fs::is_directory(dir), "audio files: ", dir.string(), " is not a directory");
    const auto found = io::list_files(dir.string(), {".wav", ".flac", ".ogg"});
    files.insert(files.end(), found.begin(), found.end());
  }
  std::sort(files.begin(), files.end());

  Manifest manifest;
  manifest.root = base.string();
  size_t unreadable = 0;
  for (const auto& path : files) {
    AudioInfo info;
    try {
      info = read_audio_info(path.string());
    } catch (const BadSample& e) {
      spdlog::warn("audio files: skipping {}", e.what());
      ++unreadable;
      continue;
    }
    // The path as found, through links: fs::relative would resolve a linked folder to "../.."
    manifest.entries.push_back({path.lexically_relative(base).string(),
                                resampled_length(info.frames, info.sample_rate, sample_rate)});
  }
  if (unreadable > 0)
    spdlog::warn("audio files under {}: {} unreadable files skipped", root, unreadable);
  if (num_unreadable != nullptr) *num_unreadable = unreadable;
  return manifest;
}

void save_manifest(const Manifest& manifest, const std::string& out_file) {
  std::ostringstream text;
  text << manifest.root << '\n';
  for (const auto& entry : manifest.entries)
    text << entry.path << '\t' << entry.num_samples << '\n';
  io::write_file_atomically(out_file, text.str());
}

Manifest write_manifest(const std::string& dir, const std::string& out_file, int64_t sample_rate) {
  auto manifest = scan_audio_files(dir, {}, sample_rate);
  save_manifest(manifest, out_file);
  return manifest;
}

LabelFn label_from_component(int index) {
  return [index](const std::string& relative_path) -> std::string {
    std::vector<std::string> parts;
    for (const auto& part : fs::path(relative_path)) parts.push_back(part.string());
    if (parts.empty()) return "";
    parts.back() = fs::path(parts.back()).stem().string();
    const int n = static_cast<int>(parts.size());
    const int at = index < 0 ? n + index : index;
    return at >= 0 && at < n ? parts[static_cast<size_t>(at)] : "";
  };
}

AudioManifestDataset::AudioManifestDataset(const std::string& manifest_file,
                                           const AudioDatasetOptions& options, LabelFn labels)
    : AudioManifestDataset(read_manifest(manifest_file), options, std::move(labels)) {}

AudioManifestDataset::AudioManifestDataset(Manifest manifest, const AudioDatasetOptions& options,
                                           LabelFn labels)
    : options_(options), manifest_(std::move(manifest)) {
  std::vector<std::string> names;
  for (size_t i = 0; i < manifest_.entries.size(); ++i) {
    if (manifest_.entries[i].num_samples < options_.min_samples()) {
      ++num_skipped_;
      continue;
    }
    entries_.push_back(i);
    names.push_back(labels ? labels(manifest_.entries[i].path) : "");
  }
  if (options_.class_names().empty()) {
    std::set<std::string> distinct(names.begin(), names.end());
    distinct.erase("");
    class_names_.assign(distinct.begin(), distinct.end());
  } else {
    class_names_ = options_.class_names();
  }
  std::map<std::string, int64_t> class_index;
  for (size_t c = 0; c < class_names_.size(); ++c) class_index[class_names_[c]] = int64_t(c);
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) {
      labels_.push_back(-1);
      continue;
    }
    const auto found = class_index.find(names[i]);
    TORCH_CHECK(found != class_index.end(), "audio dataset: ", describe(i), " has label '", names[i],
                "', not one of the ", class_names_.size(), " classes of the split it is scored against");
    labels_.push_back(found->second);
  }
}

std::string AudioManifestDataset::describe(size_t index) const {
  TORCH_CHECK(index < entries_.size(), "audio dataset: index ", index, " >= size ",
              entries_.size());
  return (fs::path(manifest_.root) / manifest_.entries[entries_[index]].path).string();
}

Example AudioManifestDataset::get(size_t index, uint64_t seed) const {
  const std::string path = describe(index);
  auto waveform = read_audio(path, options_.sample_rate(), options_.resample_quality());  // [S]
  if (options_.normalize()) waveform = normalize_waveform(waveform);
  // One generator per (index, seed): the same crop whatever thread reads the example.
  auto generator = at::detail::createCPUGenerator(seed ^ (0x9E3779B97F4A7C15ULL * (index + 1)));
  Example example;
  example.source = random_crop(waveform, options_.max_samples(), generator).contiguous();
  example.label = labels_[index];
  return example;
}

PackedAudioDataset::PackedAudioDataset(std::shared_ptr<const Dataset> utterances, int64_t length)
    : utterances_(std::move(utterances)), length_(length) {
  TORCH_CHECK(utterances_ && utterances_->size() > 0, "packed audio: no utterances to pack");
  TORCH_CHECK(length_ > 0, "packed audio: length must be > 0 samples, got ", length_);
}

Example PackedAudioDataset::get(size_t index, uint64_t seed) const {
  auto generator =
      at::detail::createCPUGenerator(~seed ^ (0xD1B54A32D192ED03ULL * (index + 1)));
  const auto first = utterances_->get(index, seed).source;  // [S0]
  std::vector<torch::Tensor> parts{first};
  int64_t total = first.size(0);
  const auto count = static_cast<int64_t>(utterances_->size());
  while (total < length_) {
    const auto next = torch::randint(count, {1}, generator).item<int64_t>();
    parts.push_back(utterances_->get(static_cast<size_t>(next), seed).source);
    total += parts.back().size(0);
  }
  // The window starts inside utterance i, so every utterance is the start of some example.
  const int64_t last_start = std::min(first.size(0) - 1, total - length_);
  const auto start = torch::randint(last_start + 1, {1}, generator).item<int64_t>();
  Example example;
  example.source = torch::cat(parts).slice(0, start, start + length_).contiguous();  // [length]
  return example;
}

Batch PackedAudioDataset::collate(std::vector<Example> examples) const {
  return utterances_->collate(std::move(examples));
}

std::string PackedAudioDataset::describe(size_t index) const {
  return utterances_->describe(index) + " (packed with others)";
}

Batch AudioManifestDataset::collate(std::vector<Example> examples) const {
  TORCH_CHECK(!examples.empty(), "audio collate: empty batch");
  const auto batch = static_cast<int64_t>(examples.size());
  int64_t longest = 0;
  bool all_equal = true;
  for (const auto& e : examples) {
    TORCH_CHECK(e.source.dim() == 1, "audio collate: expected waveforms [S], got shape ",
                e.source.sizes());
    if (longest != 0 && e.source.size(0) != longest) all_equal = false;
    longest = std::max(longest, e.source.size(0));
  }
  Batch out;
  out.input.source = torch::zeros({batch, longest}, torch::kFloat32);  // [B,S]
  auto padding = torch::ones({batch, longest}, torch::kBool);          // [B,S]
  std::vector<int64_t> labels;
  for (int64_t b = 0; b < batch; ++b) {
    const auto& source = examples[static_cast<size_t>(b)].source;
    const int64_t length = source.size(0);
    out.input.source[b].slice(0, 0, length).copy_(source);
    padding[b].slice(0, 0, length).fill_(false);
    labels.push_back(examples[static_cast<size_t>(b)].label);
  }
  if (!all_equal) out.input.padding_mask = padding;
  out.labels = torch::tensor(labels, torch::kLong);
  return out;
}

std::vector<int64_t> AudioManifestDataset::lengths() const {
  std::vector<int64_t> out;
  out.reserve(entries_.size());
  for (const size_t i : entries_) {
    const int64_t n = manifest_.entries[i].num_samples;
    out.push_back(options_.max_samples() > 0 ? std::min(n, options_.max_samples()) : n);
  }
  return out;
}

std::vector<std::vector<size_t>> length_bucketed_batches(const std::vector<int64_t>& lengths,
                                                         size_t batch_size, uint64_t seed) {
  TORCH_CHECK(batch_size > 0, "length_bucketed_batches: batch_size must be > 0");
  std::mt19937_64 rng(seed);
  std::vector<size_t> order(lengths.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);  // random ties among equal lengths
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return lengths[a] < lengths[b]; });
  std::vector<std::vector<size_t>> batches;
  for (size_t start = 0; start < order.size(); start += batch_size) {
    const size_t end = std::min(order.size(), start + batch_size);
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start),
                         order.begin() + static_cast<std::ptrdiff_t>(end));
  }
  std::shuffle(batches.begin(), batches.end(), rng);
  return batches;
}

}  // namespace data2vec::audio
