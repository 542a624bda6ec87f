#include "data2vec/app/evaluate.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include "data2vec/app/builders.h"
#include "data2vec/eval/features.h"
#include "data2vec/eval/finetune.h"
#include "data2vec/eval/knn.h"
#include "data2vec/eval/linear_probe.h"
#include "data2vec/io/files.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/train/device.h"
#include "data2vec/train/progress.h"

namespace fs = std::filesystem;

namespace data2vec::app {

namespace {

io::Config run_config(const EvaluateOptions& options, const train::CheckpointContents& ckpt) {
  io::Config config;
  if (!options.config_path.empty()) {
    config = io::load_config(options.config_path, options.overrides);
  } else {
    io::apply_yaml(config, ckpt.config_yaml, options.checkpoint + " (config.yaml)");
    io::apply_overrides(config, options.overrides);
    io::validate(config);
  }
  return config;
}

eval::ExtractOptions extract_options(const io::Config& config, const torch::Device& device,
                                     int64_t limit) {
  return eval::ExtractOptions()
      .batch_size(config.eval.batch_size)
      .device(device)
      .bf16(config.train.precision == "bf16")
      .limit(limit);
}

// The same options with a progress bar (rate, ETA) labelled `label` for one extraction.
eval::ExtractOptions with_progress(eval::ExtractOptions options, const std::string& label) {
  std::shared_ptr<train::Progress> bar;
  options.progress([bar, label](size_t done, size_t total) mutable {
    if (!bar) bar = std::make_shared<train::Progress>(int64_t(total), 0, label);
    bar->update(int64_t(done), "");
    if (done == total) bar->finish();
  });
  return options;
}

std::string percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << 100.0 * fraction;
  return out.str();
}

EvaluationRow probe_row(const std::string& task, const std::string& method,
                        const eval::FeatureSet& train, const eval::FeatureSet& test,
                        int64_t num_classes, const std::string& source = "") {
  const auto result = eval::linear_probe(train.features, train.labels, test.features, test.labels,
                                         eval::LinearProbeOptions().num_classes(num_classes));
  std::ostringstream detail;
  detail << "L2 " << result.chosen_l2 << ", " << train.features.size(1) << " features";
  if (!source.empty()) detail << ", " << source;
  spdlog::info("{}, {}: test {}%, train {}% ({})", task, method, percent(result.test_acc),
               percent(result.train_acc), detail.str());
  return {task, method, result.test_acc, result.train_acc, detail.str()};
}

// The encoder of `config` with the student's weights from the checkpoint (or fresh weights).
// `block_results`: layer_results are the blocks' outputs (what a probe of block k reads) whatever
// model.layer_result pretraining used; the weights are the same either way.
std::shared_ptr<EncoderImpl> load_encoder(io::Config config,
                                          const std::map<std::string, torch::Tensor>* state,
                                          const std::string& prefix, bool block_results = false) {
  if (block_results) config.model.layer_result = "block";
  torch::manual_seed(uint64_t(config.train.seed));
  auto encoder = make_encoder_factory(config)();
  if (state) train::load_module_state(*encoder, *state, /*strict=*/true, prefix);
  return encoder;
}

// Features of a (method, split, example limit) triple, extracted once per evaluation: tasks may
// share a split (the spoken-digits tasks share their train split), and the raw input's test
// features serve both its probe and its few-label row.
class FeatureCache {
 public:
  const eval::FeatureSet& get(const std::string& method, const Dataset& split, int64_t limit,
                              const std::function<eval::FeatureSet()>& extract) {
    const auto key = std::make_tuple(method, &split, limit);
    auto found = sets_.find(key);
    if (found == sets_.end()) found = sets_.emplace(key, extract()).first;
    return found->second;
  }

 private:
  std::map<std::tuple<std::string, const Dataset*, int64_t>, eval::FeatureSet> sets_;
};

// The baseline that fine-tuning with few labels has to beat: the linear model on the raw input,
// fitted on the same labelled subset that eval::finetune draws (label_fraction_subset with the
// run's seed over the train split's labels in dataset order) where a feature row is one dataset
// example (images, clips); a text task's rows are documents, so there it is the same fraction of
// the documents.
EvaluationRow raw_input_few_labels_row(const EvalTask& task, const io::Config& config,
                                       const torch::Device& device, const EvaluateOptions& options,
                                       FeatureCache& cache) {
  const auto& all = cache.get(task.raw_name, *task.splits.train, 0, [&] {
    return eval::extract_features(task.raw_features, *task.splits.train,
                                  extract_options(config, device, 0));
  });
  const auto labels_tensor = all.labels.contiguous();
  const std::vector<int64_t> labels(labels_tensor.data_ptr<int64_t>(),
                                    labels_tensor.data_ptr<int64_t>() + labels_tensor.numel());
  const auto subset =
      eval::label_fraction_subset(labels, options.label_fraction, uint64_t(config.train.seed));
  const auto rows = torch::tensor(std::vector<int64_t>(subset.begin(), subset.end()), torch::kLong);
  eval::FeatureSet few;
  few.features = all.features.index_select(0, rows);
  few.labels = all.labels.index_select(0, rows);
  const auto& test = cache.get(task.raw_name, *task.splits.test, options.test_limit, [&] {
    return eval::extract_features(task.raw_features, *task.splits.test,
                                  extract_options(config, device, options.test_limit));
  });
  const auto fraction = percent(options.label_fraction) + "%";
  auto row = probe_row(task.name, task.raw_name + ", " + fraction + " labels", few, test,
                       task.splits.train->num_classes());
  row.detail = std::to_string(subset.size()) + " labels (" + fraction + "), " + row.detail;
  return row;
}

}  // namespace

std::vector<EvaluationRow> evaluate_run(const EvaluateOptions& options) {
  if (!options.report_path.empty()) io::check_output_path(options.report_path, "--report");
  const auto ckpt = train::read_checkpoint(options.checkpoint);
  const io::Config config = run_config(options, ckpt);
  train::set_threads(config.train.threads);
  const torch::Device device = train::resolve_device(config.train.device);
  const auto tasks = make_eval_tasks(config);
  const auto pool = eval::parse_pool_mode(config.eval.pool);
  FeatureCache cache;
  std::vector<EvaluationRow> rows;

  if (options.probe) {
    const int64_t train_limit =
        options.probe_train_limit > 0 ? options.probe_train_limit : config.eval.probe_train_limit;
    const auto train_options = extract_options(config, device, train_limit);
    const auto test_options = extract_options(config, device, options.test_limit);
    const auto layers = eval::parse_probe_layers(config.eval.probe_layer);
    std::string source = eval::describe_probe_layers(layers);
    if (pool != eval::PoolMode::kMean) {
      source += (source.empty() ? "" : ", ") + eval::to_string(pool) + " pooling";
    }
    const bool block_results =
        std::any_of(layers.begin(), layers.end(), [](int64_t layer) { return layer >= 1; });
    for (const auto& task : tasks) {
      const int64_t classes = task.splits.train->num_classes();
      const auto& raw_train = cache.get(task.raw_name, *task.splits.train, train_limit, [&] {
        return eval::extract_features(task.raw_features, *task.splits.train, train_options);
      });
      const auto& raw_test = cache.get(task.raw_name, *task.splits.test, options.test_limit, [&] {
        return eval::extract_features(task.raw_features, *task.splits.test, test_options);
      });
      rows.push_back(probe_row(task.name, task.raw_name, raw_train, raw_test, classes));
      const auto short_name = [](const std::string& method) {
        return method.substr(0, method.find(','));
      };
      for (const auto& [method, prefix] : std::vector<std::pair<std::string, std::string>>{
               {"random init, linear probe", ""},
               {"data2vec student, linear probe", "student."},
               {"data2vec teacher, linear probe", "teacher."}}) {
        auto encoder =
            load_encoder(config, prefix.empty() ? nullptr : &ckpt.model, prefix, block_results);
        encoder->to(device);
        const auto label = short_name(method);
        const auto& train = cache.get(method, *task.splits.train, train_limit, [&] {
          return eval::extract_features(
              *encoder, *task.splits.train,
              with_progress(train_options, label + " train").layers(layers).pool(pool));
        });
        const auto& test = cache.get(method, *task.splits.test, options.test_limit, [&] {
          return eval::extract_features(
              *encoder, *task.splits.test,
              with_progress(test_options, label + " test").layers(layers).pool(pool));
        });
        rows.push_back(probe_row(task.name, method, train, test, classes, source));
      }
    }
  }
  // Fine-tuning: the first task, or every task that has its own train split (tasks sharing one,
  // such as the spoken-digit test sets, are fine-tuned once, on the first).
  std::vector<const EvalTask*> finetune_tasks;
  std::vector<const Dataset*> finetune_splits;
  for (const auto& task : tasks) {
    if (std::find(finetune_splits.begin(), finetune_splits.end(), task.splits.train.get()) !=
        finetune_splits.end()) {
      continue;
    }
    finetune_tasks.push_back(&task);
    finetune_splits.push_back(task.splits.train.get());
    if (!options.finetune_every_task) break;
  }
  // Found here, not after the head-only epochs: mixup blends pixels and shift moves them;
  // token ids and padded audio cannot be.
  for (const auto& [flag, used, what] :
       {std::make_tuple("--mixup", options.finetune_mixup > 0, "blends"),
        std::make_tuple("--shift", options.finetune_shift > 0, "moves")}) {
    if (options.label_fraction > 0 && used && config.model.modality != "vision") {
      throw std::invalid_argument(std::string(flag) + " " + what +
                                  " images; this run's model.modality is " + config.model.modality);
    }
  }
  for (const auto* task :
       options.label_fraction > 0 ? finetune_tasks : std::vector<const EvalTask*>{}) {
    rows.push_back(raw_input_few_labels_row(*task, config, device, options, cache));
    for (const auto& [method, prefix] : std::vector<std::pair<std::string, std::string>>{
             {"random init, fine-tune", ""}, {"data2vec, fine-tune", "student."}}) {
      auto encoder = load_encoder(config, prefix.empty() ? nullptr : &ckpt.model, prefix);
      // End-to-end fine-tuning of a text task takes tens of minutes on a CPU: a bar with the
      // rate, ETA, loss and lr, made at the first step (which knows the step count).
      std::unique_ptr<train::Progress> bar;
      const auto on_step = [&bar,
                            label = task->name + ": " + method](const eval::FinetuneStep& step) {
        if (!bar) bar = std::make_unique<train::Progress>(step.total_steps, 0, label);
        std::ostringstream status;
        status << "epoch " << step.epoch + 1 << "  loss " << std::fixed << std::setprecision(4)
               << step.loss << "  lr " << std::scientific << std::setprecision(2) << step.lr;
        bar->update(step.step, status.str());
      };
      const double label_smoothing =
          options.finetune_label_smoothing.value_or(config.model.modality == "vision" ? 0.1 : 0.0);
      const double layer_decay =
          options.finetune_layer_decay.value_or(config.model.modality == "vision" ? 0.65 : 1.0);
      const auto result = eval::finetune(encoder, *task->splits.train, *task->splits.test,
                                         eval::FinetuneOptions()
                                             .label_fraction(options.label_fraction)
                                             .epochs(options.finetune_epochs)
                                             .head_only_epochs(options.finetune_head_only_epochs)
                                             .lr(options.finetune_lr)
                                             .layer_decay(layer_decay)
                                             .weight_decay(options.finetune_weight_decay)
                                             .label_smoothing(label_smoothing)
                                             .mixup(options.finetune_mixup)
                                             .shift(options.finetune_shift)
                                             .batch_size(64)
                                             .device(device)
                                             .bf16(config.train.precision == "bf16")
                                             .pool(pool)
                                             .seed(uint64_t(config.train.seed))
                                             .on_step(on_step));
      if (bar) bar->finish();
      std::ostringstream detail;
      detail << result.train_examples << " labels (" << percent(options.label_fraction) << "%), "
             << options.finetune_epochs << " epochs";
      if (options.finetune_head_only_epochs > 0) {
        detail << " (the first " << options.finetune_head_only_epochs << " head only)";
      }
      if (layer_decay < 1) detail << ", layer decay " << layer_decay;
      if (label_smoothing > 0) detail << ", label smoothing " << label_smoothing;
      if (options.finetune_mixup > 0) detail << ", mixup " << options.finetune_mixup;
      if (options.finetune_shift > 0)
        detail << ", shifts up to " << options.finetune_shift << " px";
      if (pool != eval::PoolMode::kMean) detail << ", " << eval::to_string(pool) << " pooling";
      const auto name = method + " " + percent(options.label_fraction) + "% labels";
      spdlog::info("{}: test {}%, train {}% ({})", name, percent(result.test_acc),
                   percent(result.train_acc), detail.str());
      rows.push_back({task->name, name, result.test_acc, result.train_acc, detail.str()});
    }
  }
  if (!options.report_path.empty()) {
    std::ostringstream report;
    report << "# data2vec.cpp evaluation\n\n"
           << "Checkpoint: `" << *train::resolve_checkpoint_dir(options.checkpoint) << "` (step "
           << ckpt.trainer_state.value("step", 0) << ", " << std::fixed << std::setprecision(1)
           << ckpt.trainer_state.value("elapsed_s", 0.0) / 60.0 << " min of pretraining)\n\n"
           << "Model: " << config.model.modality << " / " << config.model.preset << ", algorithm "
           << config.model.algorithm << ", precision " << config.train.precision << "\n\n"
           << rows_to_markdown(rows) << "\nWhat each task measures:\n\n";
    for (const auto& task : tasks) report << "- " << task.name << ": " << task.measures << "\n";
    const auto plot = fs::path(options.checkpoint) / "metrics.png";
    if (fs::exists(plot)) report << "\n![pretraining metrics](metrics.png)\n";
    io::write_file_atomically(options.report_path, report.str());
  }
  return rows;
}

std::string rows_to_markdown(const std::vector<EvaluationRow>& rows) {
  std::ostringstream out;
  out << "| task | method | test top-1 (%) | train top-1 (%) | detail |\n|---|---|---:|---:|---|\n";
  for (const auto& row : rows) {
    out << "| " << row.task << " | " << row.method << " | " << percent(row.test_acc) << " | "
        << percent(row.train_acc) << " | " << row.detail << " |\n";
  }
  return out.str();
}

train::Monitor make_knn_monitor(const io::Config& config) {
  const auto splits = make_eval_datasets(config);
  return [config, splits](Data2VecImpl& model, int64_t step) {
    const torch::Device device = train::resolve_device(config.train.device);
    nlohmann::json metrics;
    for (const auto& [key, encoder] :
         std::vector<std::pair<std::string, std::shared_ptr<EncoderImpl>>>{
             {"knn_acc", model.student()}, {"teacher_knn_acc", model.teacher()}}) {
      const bool was_training = encoder->is_training();
      const auto train = eval::extract_features(
          *encoder, *splits.train, extract_options(config, device, config.eval.knn_train_size));
      const auto test = eval::extract_features(
          *encoder, *splits.test, extract_options(config, device, config.eval.knn_test_size));
      encoder->train(was_training);
      metrics[key] = eval::knn_accuracy(train.features, train.labels, test.features, test.labels,
                                        eval::KnnOptions().k(config.eval.knn_k));
    }
    spdlog::info("step {}: k-NN accuracy student {:.4f}, teacher {:.4f}", step,
                 metrics["knn_acc"].get<double>(), metrics["teacher_knn_acc"].get<double>());
    return metrics;
  };
}

}  // namespace data2vec::app
