#include "data2vec/app/embed.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "data2vec/app/builders.h"
#include "data2vec/eval/features.h"
#include "data2vec/io/files.h"
#include "data2vec/io/safetensors.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/train/device.h"

namespace data2vec::app {

int64_t embed_files(const EmbedOptions& options) {
  const auto ckpt = train::read_checkpoint(options.checkpoint);
  io::Config config;
  io::apply_yaml(config, ckpt.config_yaml, options.checkpoint + " (config.yaml)");
  train::set_threads(config.train.threads);
  const torch::Device device = train::resolve_device(config.train.device);
  // The quadrants of a patch grid: a clip's frames or a text's tokens would be cut into four
  // runs laid out as a square only when their count happens to be one.
  const auto pool = eval::parse_pool_mode(options.pool);
  if (pool == eval::PoolMode::kGrid && config.model.modality != "vision") {
    throw std::invalid_argument("embed --pool grid pools the quadrants of an image's patch grid; " +
                                options.checkpoint + " holds an encoder of " + config.model.modality +
                                " (use mean or cls)");
  }

  io::check_output_path(options.output, "--output");
  const auto [dataset, files] = make_files_dataset(config, options.input);

  auto encoder = make_encoder_factory(config)();
  train::load_module_state(*encoder, ckpt.model, /*strict=*/true, "student.");
  encoder->to(device);
  const auto features = eval::extract_features(
      *encoder, *dataset,
      eval::ExtractOptions()
          .batch_size(config.eval.batch_size)
          .device(device)
          .pool(pool));
  std::vector<std::string> embedded;
  for (const size_t i : features.indices) {
    // A text file is read as blocks (one document): its row is their average.
    const int64_t document = dataset->document(i);
    embedded.push_back(files[document >= 0 ? size_t(document) : i]);
  }
  // Nothing embedded is a failure, not an empty file of features and exit 0: every input was
  // unreadable (each is named in a warning above).
  if (embedded.empty()) {
    throw std::runtime_error(
        "embed: none of the " + std::to_string(files.size()) + " files under '" + options.input +
        "' could be read (see the warnings above); nothing written to " + options.output);
  }
  io::save_safetensors(options.output, {{"features", features.features}},
                       {{"files", nlohmann::json(embedded).dump()}, {"pool", options.pool}});
  // The files skipped are named in the warnings above (the readers drop some before extraction,
  // so no count kept here would cover them all).
  spdlog::info("embedded {} files -> {}", embedded.size(), options.output);
  return int64_t(embedded.size());
}

}  // namespace data2vec::app
