#include "data2vec/train/trainer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "data2vec/core/collapse.h"
#include "data2vec/io/files.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/train/data_loader.h"
#include "data2vec/train/device.h"
#include "data2vec/train/metrics_log.h"
#include "data2vec/train/optimizer.h"
#include "data2vec/train/progress.h"
#include "data2vec/train/schedule.h"
#include "data2vec/train/tensorboard.h"

namespace fs = std::filesystem;

namespace data2vec::train {

namespace {

// Set by SIGINT / SIGTERM: finish the step, write a checkpoint, stop.
volatile std::sig_atomic_t g_stop_requested = 0;
extern "C" void request_stop(int) {
  g_stop_requested = 1;
}

ScheduleOptions schedule_options(const io::Config& c) {
  ScheduleOptions s;
  s.kind = c.optim.schedule;
  s.peak_lr = c.optim.lr;
  s.total_steps = c.train.max_steps;
  s.warmup_steps = c.optim.warmup_steps;
  s.final_lr_scale = c.optim.final_lr_scale;
  s.tri_stage_warmup = c.optim.tri_stage_warmup;
  s.tri_stage_hold = c.optim.tri_stage_hold;
  s.tri_stage_decay = c.optim.tri_stage_decay;
  return s;
}

std::map<std::string, torch::Tensor> rng_states(const at::Generator& mask_generator) {
  std::map<std::string, torch::Tensor> states;
  states["cpu_default"] = at::detail::getDefaultCPUGenerator().get_state();
  states["mask"] = mask_generator.get_state();
  return states;
}

void restore_rng_states(const std::map<std::string, torch::Tensor>& states,
                        at::Generator& mask_generator) {
  auto cpu = at::detail::getDefaultCPUGenerator();
  cpu.set_state(states.at("cpu_default"));
  mask_generator.set_state(states.at("mask"));
}

// Running sums over the steps between two log records.
struct Window {
  double loss = 0, target_std = 0, pred_std = 0, masked_frac = 0;
  int64_t steps = 0, samples = 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  void reset() { *this = Window(); }
};

}  // namespace

PretrainResult pretrain(PretrainJob& job) {
  const io::Config& cfg = job.config;
  TORCH_CHECK(job.model, "pretrain: no model");
  TORCH_CHECK(job.train_data, "pretrain: no training data");
  const int threads = set_threads(cfg.train.threads);
  const torch::Device device = resolve_device(cfg.train.device);
  fs::create_directories(job.run_dir);

  auto model = job.model;
  model->to(device);
  model->train();

  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model->named_parameters()) {
    if (item.key().rfind("teacher.", 0) != 0) named.emplace_back(item.key(), item.value());
  }
  auto optimizer = make_optimizer(split_parameter_groups(named), cfg.optim);
  const auto trainable = model->trainable_parameters();

  // State that a checkpoint carries.
  auto mask_generator =
      at::detail::createCPUGenerator(uint64_t(cfg.train.seed) * 2654435761ULL + 1);
  torch::manual_seed(uint64_t(cfg.train.seed));
  int64_t step = 0, data_position = 0, bad_samples = 0;
  double elapsed_before = 0.0;

  PretrainResult result;
  if (job.resume) {
    const auto dir = resolve_checkpoint_dir(job.run_dir);
    if (!dir) {
      spdlog::warn("--resume: no checkpoint in {} yet; starting from step 0", job.run_dir);
    } else {
      auto ckpt = read_checkpoint(*dir);
      load_module_state(*model, ckpt.model);
      if (!ckpt.optimizer.empty()) load_optimizer_bytes(*optimizer, ckpt.optimizer);
      restore_rng_states(ckpt.rng, mask_generator);
      step = ckpt.trainer_state.at("step").get<int64_t>();
      data_position = ckpt.trainer_state.at("data_position").get<int64_t>();
      bad_samples = ckpt.trainer_state.value("bad_samples", int64_t(0));
      elapsed_before = ckpt.trainer_state.value("elapsed_s", 0.0);
      result.last_checkpoint = *dir;
      spdlog::info("resumed from {} at step {}", *dir, step);
    }
  }
  io::write_file_atomically((fs::path(job.run_dir) / "config.yaml").string(), io::to_yaml(cfg));

  EmaOptions ema = model->options().ema();
  const auto anneal = cfg.ema.anneal_steps > 0 ? cfg.ema.anneal_steps : cfg.train.max_steps;
  TORCH_CHECK(ema.anneal_steps() == anneal, "pretrain: model EMA anneal_steps ", ema.anneal_steps(),
              " differs from the config's ", anneal);
  const auto schedule = schedule_options(cfg);
  const CollapseOptions collapse = CollapseOptions()
                                       .warmup_steps(cfg.train.collapse_warmup)
                                       .min_target_std(cfg.train.min_target_std)
                                       .min_pred_std(cfg.train.min_pred_std);

  MetricsLog metrics((fs::path(job.run_dir) / "metrics.jsonl").string(),
                     job.resume ? std::optional<int64_t>(step) : std::nullopt);
  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (cfg.log.tensorboard) {
    tensorboard = std::make_unique<TensorBoardWriter>((fs::path(job.run_dir) / "tb").string());
  }

  DataLoaderOptions loader_options;
  loader_options.batch_size = cfg.train.batch_size;
  loader_options.seed = uint64_t(cfg.train.seed);
  loader_options.num_workers = cfg.train.num_workers;
  loader_options.prefetch = cfg.train.prefetch;
  loader_options.start_batch = data_position;
  DataLoader loader(job.train_data, loader_options);

  spdlog::info("pretraining {} on {} ({} threads, {}), {} steps of {} x {} examples, {} examples",
               cfg.model.modality, device.str(), threads, cfg.train.precision, cfg.train.max_steps,
               cfg.train.batch_size, cfg.train.accumulate, job.train_data->size());

  auto save = [&](int64_t at_step, double elapsed) {
    CheckpointContents contents;
    contents.model = module_state(*model);
    contents.optimizer = optimizer_bytes(*optimizer);
    contents.rng = rng_states(mask_generator);
    contents.trainer_state = {{"step", at_step},
                              {"data_position", loader.position()},
                              {"bad_samples", bad_samples},
                              {"elapsed_s", elapsed}};
    contents.config_yaml = io::to_yaml(cfg);
    result.last_checkpoint = save_checkpoint(job.run_dir, at_step, contents, cfg.checkpoint.keep);
  };

  g_stop_requested = 0;
  auto previous_int = std::signal(SIGINT, request_stop);
  auto previous_term = std::signal(SIGTERM, request_stop);

  Progress progress(cfg.train.max_steps, step, "pretrain",
                    ProgressOptions().plain_interval_seconds(cfg.log.progress_seconds));
  const auto run_start = std::chrono::steady_clock::now();
  auto elapsed_now = [&] {
    return elapsed_before +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  };
  Window window;

  while (step < cfg.train.max_steps) {
    const double lr = lr_at(step, schedule);
    set_learning_rate(*optimizer, lr);

    optimizer->zero_grad();
    double step_loss = 0, target_std = 0, pred_std = 0, masked_frac = 0;
    int64_t step_samples = 0;
    for (int64_t micro = 0; micro < cfg.train.accumulate; ++micro) {
      LoadedBatch loaded = loader.next();
      for (const auto& message : loaded.bad_samples)
        spdlog::warn("skipped bad sample: {}", message);
      bad_samples += int64_t(loaded.bad_samples.size());
      const EncoderInput input = loaded.batch.input.to(device);
      Data2VecOutput out;
      {
        AutocastGuard autocast(device, cfg.train.precision);
        out = model->forward(input, mask_generator);
      }
      (out.loss / double(cfg.train.accumulate)).backward();
      step_loss += out.loss.item<double>() / double(cfg.train.accumulate);
      target_std += out.target_std.item<double>() / double(cfg.train.accumulate);
      pred_std += out.pred_std.item<double>() / double(cfg.train.accumulate);
      masked_frac += out.masked_frac.item<double>() / double(cfg.train.accumulate);
      step_samples += input.batch_size();
    }
    if (!std::isfinite(step_loss)) {
      result.stopped_because = "non-finite loss (" + std::to_string(step_loss) + ") at step " +
                               std::to_string(step + 1) +
                               "; lower optim.lr or use train.precision=fp32. The last good "
                               "checkpoint is " +
                               (result.last_checkpoint.empty() ? "none" : result.last_checkpoint);
      break;
    }
    if (cfg.optim.clip_grad_norm > 0)
      torch::nn::utils::clip_grad_norm_(trainable, cfg.optim.clip_grad_norm);
    optimizer->step();
    const double decay = model->ema_step(step);
    ++step;

    window.loss += step_loss;
    window.target_std += target_std;
    window.pred_std += pred_std;
    window.masked_frac += masked_frac;
    window.steps += 1;
    window.samples += step_samples;
    result.last_loss = step_loss;

    if (auto why = detect_collapse(step, target_std, pred_std, collapse)) {
      result.stopped_because = *why;
      break;
    }

    const bool stop_here = step == job.stop_at_step;
    const bool last = step == cfg.train.max_steps || stop_here || g_stop_requested;
    if (step % cfg.log.every == 0 || last) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - window.start).count();
      const double n = double(window.steps);
      nlohmann::json record = {{"step", step},
                               {"loss", window.loss / n},
                               {"target_std", window.target_std / n},
                               {"pred_std", window.pred_std / n},
                               {"lr", lr},
                               {"ema_decay", decay},
                               {"masked_frac", window.masked_frac / n},
                               {"samples_per_s", double(window.samples) / std::max(seconds, 1e-9)},
                               {"elapsed_s", elapsed_now()},
                               {"bad_samples", bad_samples}};
      if (job.monitor && cfg.eval.knn_every > 0 && (step % cfg.eval.knn_every == 0 || last)) {
        record.update(job.monitor(*model, step));
        model->train();
      }
      metrics.write(record);
      if (tensorboard) {
        for (const auto& [key, value] : record.items()) {
          if (key != "step" && value.is_number())
            tensorboard->add_scalar(key, value.get<double>(), step);
        }
        tensorboard->flush();
      }
      char status[160];
      std::snprintf(status, sizeof(status), "loss %.4f  tgt_std %.3f  pred_std %.3f  lr %.2e",
                    window.loss / n, window.target_std / n, window.pred_std / n, lr);
      progress.update(step, status);
      window.reset();
    }
    if (step % cfg.checkpoint.every == 0 || last) save(step, elapsed_now());
    if (g_stop_requested) {
      result.stopped_because = "interrupted; resume with --resume";
      break;
    }
    if (stop_here) break;
  }
  progress.finish();
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  result.steps_done = step;
  result.bad_samples = bad_samples;
  if (!result.stopped_because.empty())
    spdlog::error("training stopped: {}", result.stopped_because);
  return result;
}

}  // namespace data2vec::train
