// Audio datasets: fairseq-style manifests and the Dataset that reads them.
//
// Manifest format (fairseq wav2vec_manifest.py):
//   line 1:   root directory
//   then:     relative_path<TAB>num_samples
// One difference: fairseq stores the file's own frame count; we store the length AFTER
// resampling to the manifest's sample rate (16 kHz): floor(frames * 16000 / file_rate). For
// 16 kHz files (fairseq's usual input) the two agree; for 8 kHz prompts ours is the length the
// model actually sees, which is what length bucketing and max_samples need.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data2vec/audio/io.h"
#include "data2vec/core/dataset.h"

namespace data2vec::audio {

struct ManifestEntry {
  std::string path;         // relative to the manifest's root
  int64_t num_samples = 0;  // at the manifest's sample rate
};

struct Manifest {
  std::string root;
  std::vector<ManifestEntry> entries;
};

// Parses a manifest; throws naming the file and line when it is malformed.
Manifest read_manifest(const std::string& file);

// The audio files (.wav/.flac/.ogg, any case) under root/subdir for each of `subdirs` (empty:
// root itself), searched recursively, in sorted path order, with paths relative to `root` and
// lengths from their headers. Unreadable files are named in a warning, skipped and counted in
// `num_unreadable` when given.
Manifest scan_audio_files(const std::string& root, const std::vector<std::string>& subdirs = {},
                          int64_t sample_rate = 16000, size_t* num_unreadable = nullptr);

// Writes `manifest` to `out_file` atomically (a crash never leaves half a manifest).
void save_manifest(const Manifest& manifest, const std::string& out_file);

// scan_audio_files(dir) saved to `out_file`. Returns what was written.
Manifest write_manifest(const std::string& dir, const std::string& out_file,
                        int64_t sample_rate = 16000);

// A label read from an example's relative path: a class name, or "" for unlabelled.
using LabelFn = std::function<std::string(const std::string& relative_path)>;

// The path component at `index`: 0, 1, ... from the start; -1 is the file name without its
// extension, -2 its directory, ... E.g. "en/digits/5.wav": 0 -> "en", -1 -> "5".
LabelFn label_from_component(int index);

struct AudioDatasetOptions {
  /// Rate the model reads, Hz. Default 16000.
  TORCH_ARG(int64_t, sample_rate) = 16000;
  /// Longer examples are randomly cropped to this many samples (<= 0: never). Default 320000
  /// (data2vec audio's max_sample_size, 20 s).
  TORCH_ARG(int64_t, max_samples) = 320000;
  /// Examples shorter than this are left out of the dataset. Default 4000 (0.25 s: 12 frames,
  /// enough for a span of 10).
  TORCH_ARG(int64_t, min_samples) = 4000;
  /// Per-utterance zero mean / unit variance. Default true.
  TORCH_ARG(bool, normalize) = true;
  /// libsamplerate converter. Default fastest (see io.h for the measured speeds).
  TORCH_ARG(ResampleQuality, resample_quality) = ResampleQuality::kFastest;
  /// Class names in label order, so that a test split numbers its classes as its train split
  /// does; a label outside them is an error naming the file. Default empty: the sorted distinct
  /// labels found.
  TORCH_ARG(std::vector<std::string>, class_names) = {};
};

class AudioManifestDataset : public Dataset {
 public:
  // `labels` (may be empty): class names from paths; classes as options.class_names says.
  AudioManifestDataset(const std::string& manifest_file, const AudioDatasetOptions& options,
                       LabelFn labels = nullptr);
  AudioManifestDataset(Manifest manifest, const AudioDatasetOptions& options,
                       LabelFn labels = nullptr);

  size_t size() const override { return entries_.size(); }
  // read -> resample -> normalise -> random crop to max_samples (fairseq's order: the crop of a
  // long file is normalised over the whole file). The crop offset depends on (index, seed) only.
  Example get(size_t index, uint64_t seed) const override;
  // Pads to the longest waveform with zeros: source [B,S], padding_mask [B,S] true at padding
  // (undefined when every waveform has the same length).
  Batch collate(std::vector<Example> examples) const override;
  std::string describe(size_t index) const override;
  int64_t num_classes() const override { return static_cast<int64_t>(class_names_.size()); }

  const std::vector<std::string>& class_names() const { return class_names_; }
  // Samples per example as the model will see it (capped at max_samples), for bucketing.
  std::vector<int64_t> lengths() const;
  // Manifest entries left out for being shorter than min_samples.
  size_t num_skipped() const { return num_skipped_; }
  const Manifest& manifest() const { return manifest_; }

 private:
  AudioDatasetOptions options_;
  Manifest manifest_;
  std::vector<size_t> entries_;  // indices into manifest_.entries that are kept
  std::vector<int64_t> labels_;  // per kept entry, -1 when unlabelled
  std::vector<std::string> class_names_;
  size_t num_skipped_ = 0;
};

// Short utterances joined into examples of one length, for pretraining on corpora of clips
// shorter than the positional convolution's reach (here: prompts and single words of ~1 s).
// Unpacked, every frame of such a clip sees a clip edge, the frame's position is visible to
// student and teacher alike, and the EMA pair settles on targets that are a function of position
// alone (measured: R^2 of targets on position 1.000 after 500 steps of 1 s clips).
//
// Example i is utterance i (as `utterances` reads it, already normalised) followed by
// utterances drawn by (index, seed) until `length` samples are reached, cut at a random offset
// inside utterance i's span. Unlabelled; a bad utterance anywhere throws BadSample naming it.
class PackedAudioDataset : public Dataset {
 public:
  PackedAudioDataset(std::shared_ptr<const Dataset> utterances, int64_t length);

  size_t size() const override { return utterances_->size(); }
  Example get(size_t index, uint64_t seed) const override;
  Batch collate(std::vector<Example> examples) const override;
  std::string describe(size_t index) const override;

 private:
  std::shared_ptr<const Dataset> utterances_;
  int64_t length_;
};

// Batches of similar lengths (fairseq's ordering): indices shuffled by `seed`, stably sorted by
// length, cut into consecutive batches of `batch_size` (the last may be smaller), and the batch
// order shuffled. Every index 0..lengths.size()-1 appears exactly once.
std::vector<std::vector<size_t>> length_bucketed_batches(const std::vector<int64_t>& lengths,
                                                         size_t batch_size, uint64_t seed);

}  // namespace data2vec::audio
