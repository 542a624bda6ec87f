#include "data2vec/train/trainer.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "data2vec/core/collapse.h"
#include "data2vec/io/files.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/train/data_loader.h"
#include "data2vec/train/device.h"
#include "data2vec/train/distributed.h"
#include "data2vec/train/metrics_log.h"
#include "data2vec/train/optimizer.h"
#include "data2vec/train/progress.h"
#include "data2vec/train/schedule.h"
#include "data2vec/train/stop_signals.h"
#include "data2vec/train/tensorboard.h"

namespace fs = std::filesystem;

namespace data2vec::train {

namespace {

// What a run writes into its directory; `--overwrite` removes exactly these.
constexpr const char* kRunOutputs[] = {"checkpoints", "tb", "metrics.jsonl", "metrics.png",
                                       "config.yaml"};

// A new run in a directory that already holds one would truncate its metrics log, move `last`
// and let the checkpoint rotation delete its own checkpoints while the old ones stayed. So it is
// refused, unless `overwrite` asks to start clean: then the old run's outputs are deleted (the
// main rank alone deletes; files that are not a run's output stay).
void claim_run_dir(const std::string& run_dir, bool overwrite, bool is_main) {
  const fs::path dir(run_dir);
  if (!fs::exists(dir / "checkpoints") && !fs::exists(dir / "metrics.jsonl")) return;
  if (!overwrite) {
    throw std::invalid_argument(
        "pretrain: '" + run_dir +
        "' already holds a run (checkpoints/, metrics.jsonl); continue it with --resume, "
        "start a new one with another --out, or delete it and start over with --overwrite");
  }
  if (!is_main) return;
  spdlog::warn("--overwrite: deleting the previous run's outputs in {}", run_dir);
  for (const char* name : kRunOutputs) fs::remove_all(dir / name);
}

// Where a run that stopped can continue from, for the stop message.
std::string checkpoint_note(const std::string& last_checkpoint, int64_t every) {
  if (last_checkpoint.empty()) {
    return "no checkpoint was written before it (checkpoint.every = " + std::to_string(every) +
           "); the run has to start over";
  }
  return "the newest checkpoint, from before it, is " + last_checkpoint;
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

// The default CPU generator (dropout) of every rank: "cpu_default" is rank 0's (the only one of a
// single-process run), "cpu_default.rank<r>" each rank's. Collective: every rank calls it.
std::map<std::string, torch::Tensor> rng_states(ProcessGroup* group) {
  std::map<std::string, torch::Tensor> states;
  const auto own = at::detail::getDefaultCPUGenerator().get_state();
  states["cpu_default"] = own;
  if (group) {
    const auto all = group->all_gather(own.to(group->collective_device()));
    for (size_t r = 0; r < all.size(); ++r)
      states["cpu_default.rank" + std::to_string(r)] = all[r].cpu();
    states["cpu_default"] = states["cpu_default.rank0"];
  }
  return states;
}

void restore_rng_states(const std::map<std::string, torch::Tensor>& states, int rank) {
  auto cpu = at::detail::getDefaultCPUGenerator();
  const auto own = states.find("cpu_default.rank" + std::to_string(rank));
  if (own != states.end()) {
    cpu.set_state(own->second);
  } else if (rank == 0) {
    cpu.set_state(states.at("cpu_default"));
  } else {
    spdlog::warn("rank {}: the checkpoint holds no random state for this rank (saved with fewer "
                 "processes); dropout continues from a fresh seed",
                 rank);
  }
}

// Masks are a pure function of (seed, global batch k, position in the global batch), drawn in
// groups of `group_size` examples: the same masks whatever the number of processes, and no
// generator state to save for an exact resume. Under data2vec 2.0 each group's mask holds the
// clone_batch copies of its examples, so the joined mask stays in example-major order, and every
// row keeps a count that depends on the batch's length alone, so the groups' masks join.
MaskedInput draw_masks(Data2VecImpl& model, const EncoderInput& input, int64_t group_size,
                       uint64_t seed, int64_t k, int64_t first_position) {
  constexpr uint64_t kMaskStream = 0x6d61736b;  // "mask": a stream apart from the data's seeds
  const int64_t batch = input.batch_size();
  const int64_t group = group_size > 0 ? std::min(group_size, batch) : batch;
  std::vector<MaskedInput> parts;
  for (int64_t start = 0; start < batch; start += group) {
    const int64_t n = std::min(group, batch - start);
    EncoderInput part{input.source.narrow(0, start, n),
                      input.padding_mask.defined() ? input.padding_mask.narrow(0, start, n)
                                                   : torch::Tensor()};
    auto generator = at::detail::createCPUGenerator(
        mix_seed(seed ^ kMaskStream, uint64_t(k), uint64_t(first_position + start)));
    parts.push_back(model.apply_mask(part, generator));
  }
  if (parts.size() == 1) return parts.front();
  std::vector<torch::Tensor> sources, paddings, masks;
  for (const auto& part : parts) {
    sources.push_back(part.student.source);
    if (part.student.padding_mask.defined()) paddings.push_back(part.student.padding_mask);
    masks.push_back(part.mask);
  }
  MaskedInput joined;
  joined.student.source = torch::cat(sources);
  if (!paddings.empty()) joined.student.padding_mask = torch::cat(paddings);
  joined.mask = torch::cat(masks);
  return joined;
}

// Checks that the ranks still hold the same student and teacher (they must, bit for bit: the
// same start, the same averaged gradients, the same optimizer and EMA arithmetic).
void check_ranks_agree(ProcessGroup& group, Data2VecImpl& model, int64_t step) {
  torch::NoGradGuard no_grad;
  double student = 0, teacher = 0;
  for (const auto& item : model.named_parameters()) {
    const double sum = item.value().to(torch::kFloat64).abs().sum().item<double>();
    (item.key().rfind("teacher.", 0) == 0 ? teacher : student) += sum;
  }
  auto mine = torch::tensor({student, teacher}, torch::kFloat64);
  const auto all = group.all_gather(mine.to(group.collective_device()));
  // Summation order may differ with thread counts: compare to a relative 1e-9.
  const auto reference = all[0].cpu();
  for (size_t r = 1; r < all.size(); ++r) {
    const auto difference = (all[r].cpu() - reference).abs().max().item<double>();
    if (difference > 1e-9 * std::max(1.0, reference.abs().max().item<double>())) {
      throw std::runtime_error("step " + std::to_string(step) + ": rank " + std::to_string(r) +
                               " holds different weights than rank 0 (student/teacher checksums "
                               "differ); the ranks diverged");
    }
  }
}

// The logged scalars of one optimizer step: means over its micro-batches (and, when
// distributed, over the ranks), and the examples it saw.
struct StepStats {
  double loss = 0, target_std = 0, pred_std = 0, masked_frac = 0;
  int64_t samples = 0;
  bool stop_requested = false;  // SIGINT / SIGTERM on any rank
};

// Forward and backward of the step's `accumulate` micro-batches: gradients accumulate in the
// parameters, `loss / accumulate` each. The logged scalars stay on the device until the end:
// one copy to the host per step.
StepStats forward_backward(Data2VecImpl& model, DataLoader& loader, const io::Config& cfg,
                           const torch::Device& device, int rank, GradientSync* gradient_sync,
                           int64_t& bad_samples) {
  const int64_t accumulate = cfg.train.accumulate;
  std::vector<torch::Tensor> scalars;  // per micro-batch: [4] fp64 loss, target_std, pred_std, masked_frac
  StepStats stats;
  for (int64_t micro = 0; micro < accumulate; ++micro) {
    LoadedBatch loaded = loader.next();
    for (const auto& message : loaded.bad_samples) spdlog::warn("skipped bad sample: {}", message);
    bad_samples += int64_t(loaded.bad_samples.size());
    const EncoderInput input = loaded.batch.input.to(device);
    const MaskedInput masked = draw_masks(model, input, cfg.train.mask_group,
                                          uint64_t(cfg.train.seed), loaded.index,
                                          int64_t(rank) * cfg.train.batch_size);
    Data2VecOutput out;
    {
      AutocastGuard autocast(device, cfg.train.precision);
      out = model.forward_masked(input, masked);
    }
    if (gradient_sync && micro + 1 == accumulate) gradient_sync->arm();
    (out.loss / double(accumulate)).backward();
    scalars.push_back(torch::stack({out.loss.detach().to(torch::kFloat64),
                                    out.target_std.detach().to(torch::kFloat64),
                                    out.pred_std.detach().to(torch::kFloat64),
                                    out.masked_frac.detach().to(torch::kFloat64)}));
    stats.samples += input.batch_size();
  }
  // fp32 -> fp64 is exact: the same doubles, summed in the same order, as reading each scalar.
  const auto host = torch::stack(scalars).cpu();  // [accumulate,4]
  const auto v = host.accessor<double, 2>();
  for (int64_t micro = 0; micro < accumulate; ++micro) {
    stats.loss += v[micro][0] / double(accumulate);
    stats.target_std += v[micro][1] / double(accumulate);
    stats.pred_std += v[micro][2] / double(accumulate);
    stats.masked_frac += v[micro][3] / double(accumulate);
  }
  return stats;
}

// Finishes the gradient all-reduce and averages the step's scalars over the ranks, so that every
// rank takes the same decisions (stop, collapse, non-finite) from the same numbers.
void reduce_across_ranks(ProcessGroup& group, GradientSync& gradient_sync, StepStats& stats) {
  gradient_sync.finish();
  auto sums = torch::tensor({stats.loss, stats.target_std, stats.pred_std, stats.masked_frac,
                             double(stats.samples), stats.stop_requested ? 1.0 : 0.0},
                            torch::kFloat64)
                  .to(group.collective_device());
  group.all_reduce_sum(sums);
  sums = sums.cpu();
  const auto v = sums.accessor<double, 1>();
  const double world = group.world_size();
  stats.loss = v[0] / world;
  stats.target_std = v[1] / world;
  stats.pred_std = v[2] / world;
  stats.masked_frac = v[3] / world;
  stats.samples = int64_t(v[4]);
  stats.stop_requested = v[5] > 0;
}

// Running sums over the steps between two log records.
struct Window {
  double loss = 0, target_std = 0, pred_std = 0, masked_frac = 0;
  int64_t steps = 0, samples = 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  void add(const StepStats& s) {
    loss += s.loss;
    target_std += s.target_std;
    pred_std += s.pred_std;
    masked_frac += s.masked_frac;
    steps += 1;
    samples += s.samples;
  }
  void reset() { *this = Window(); }
};

// Periodic work (log record, k-NN monitor, checkpoint) runs every `every` steps and at the last
// step this invocation runs (max_steps, stop_at_step or an interrupt).
bool is_due(int64_t step, int64_t every, bool last) {
  return step % every == 0 || last;
}

// Where the main rank's records go.
struct LogSinks {
  std::unique_ptr<MetricsLog> metrics;
  std::unique_ptr<TensorBoardWriter> tensorboard;  // null with log.tensorboard false
  std::unique_ptr<Progress> progress;
};

// The metrics.jsonl record of the window ending at `step`.
nlohmann::json window_record(const Window& window, int64_t step, double lr, double ema_decay,
                             double elapsed_s, int64_t bad_samples) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - window.start).count();
  const double n = double(window.steps);
  return {{"step", step},
          {"loss", window.loss / n},
          {"target_std", window.target_std / n},
          {"pred_std", window.pred_std / n},
          {"lr", lr},
          {"ema_decay", ema_decay},
          {"masked_frac", window.masked_frac / n},
          {"samples_per_s", double(window.samples) / std::max(seconds, 1e-9)},
          {"elapsed_s", elapsed_s},
          {"bad_samples", bad_samples}};
}

// Writes the record to metrics.jsonl, TensorBoard and the progress line.
void write_record(LogSinks& sinks, const nlohmann::json& record, const Window& window, double lr) {
  const int64_t step = record.at("step").get<int64_t>();
  sinks.metrics->write(record);
  if (sinks.tensorboard) {
    for (const auto& [key, value] : record.items()) {
      if (key != "step" && value.is_number())
        sinks.tensorboard->add_scalar(key, value.get<double>(), step);
    }
    sinks.tensorboard->flush();
  }
  const double n = double(window.steps);
  char status[160];
  std::snprintf(status, sizeof(status), "loss %.4f  tgt_std %.3f  pred_std %.3f  lr %.2e",
                window.loss / n, window.target_std / n, window.pred_std / n, lr);
  sinks.progress->update(step, status);
}

// Where a run (re)starts: step 0, or the newest checkpoint's model, optimizer, RNG states and
// counters (loaded into `model` and `optimizer` here).
struct RunPoint {
  int64_t step = 0, data_position = 0, bad_samples = 0;
  double elapsed_s = 0.0;
  std::string checkpoint;  // the checkpoint resumed from, empty at step 0
};

RunPoint resume_point(const std::string& run_dir, Data2VecImpl& model,
                      torch::optim::Optimizer& optimizer, int rank) {
  const auto dir = resolve_checkpoint_dir(run_dir);
  if (!dir) {
    spdlog::warn("--resume: no checkpoint in {} yet; starting from step 0", run_dir);
    return {};
  }
  auto ckpt = read_checkpoint(*dir);
  load_module_state(model, ckpt.model);
  if (!ckpt.optimizer.empty())
    load_optimizer_bytes(optimizer, ckpt.optimizer, *dir + "/optimizer.pt");
  restore_rng_states(ckpt.rng, rank);
  RunPoint point;
  point.step = ckpt.trainer_state.at("step").get<int64_t>();
  point.data_position = ckpt.trainer_state.at("data_position").get<int64_t>();
  point.bad_samples = ckpt.trainer_state.value("bad_samples", int64_t(0));
  point.elapsed_s = ckpt.trainer_state.value("elapsed_s", 0.0);
  point.checkpoint = *dir;
  spdlog::info("resumed from {} at step {}", *dir, point.step);
  return point;
}

// metrics.jsonl (cut back to `resumed_at` when resuming), TensorBoard, the progress bar.
LogSinks open_log_sinks(const io::Config& cfg, const std::string& run_dir,
                        std::optional<int64_t> resumed_at) {
  LogSinks sinks;
  sinks.metrics =
      std::make_unique<MetricsLog>((fs::path(run_dir) / "metrics.jsonl").string(), resumed_at);
  if (cfg.log.tensorboard) {
    sinks.tensorboard = std::make_unique<TensorBoardWriter>((fs::path(run_dir) / "tb").string());
  }
  sinks.progress = std::make_unique<Progress>(
      cfg.train.max_steps, resumed_at.value_or(0), "pretrain",
      ProgressOptions().plain_interval_seconds(cfg.log.progress_seconds));
  return sinks;
}

// This rank's share of the batches, from batch `position` of the run's shuffled order.
DataLoaderOptions loader_options(const io::Config& cfg, int64_t position, int rank, int world) {
  DataLoaderOptions o;
  o.batch_size = cfg.train.batch_size;
  o.seed = uint64_t(cfg.train.seed);
  o.num_workers = cfg.train.num_workers;
  o.prefetch = cfg.train.prefetch;
  o.start_batch = position;
  o.rank = rank;
  o.world_size = world;
  return o;
}

}  // namespace

PretrainResult pretrain(PretrainJob& job) {
  const io::Config& cfg = job.config;
  TORCH_CHECK(job.model, "pretrain: no model");
  TORCH_CHECK(job.train_data, "pretrain: no training data");
  const int threads = set_threads(cfg.train.threads);
  ProcessGroup* group = job.group.get();
  const bool is_main = !group || group->is_main();
  const int rank = group ? group->rank() : 0;
  const int world = group ? group->world_size() : 1;
  const torch::Device device = group ? group->device() : resolve_device(cfg.train.device);
  if (!job.resume) claim_run_dir(job.run_dir, job.overwrite, is_main);
  if (is_main) {
    fs::create_directories(job.run_dir);
    remove_stale_temporaries(job.run_dir);
  }

  auto model = job.model;
  model->to(device);
  model->train();

  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : model->named_parameters()) {
    if (item.key().rfind("teacher.", 0) != 0) named.emplace_back(item.key(), item.value());
  }
  auto optimizer = make_optimizer(split_parameter_groups(named), cfg.optim);
  const auto trainable = model->trainable_parameters();

  // State that a checkpoint carries. Dropout differs between ranks; rank 0 draws what a
  // single process would.
  torch::manual_seed(rank == 0 ? uint64_t(cfg.train.seed)
                               : mix_seed(uint64_t(cfg.train.seed), 0xd50, uint64_t(rank)));

  PretrainResult result;
  const auto start = job.resume ? resume_point(job.run_dir, *model, *optimizer, rank) : RunPoint{};
  const int64_t data_position = start.data_position;
  int64_t step = start.step, bad_samples = start.bad_samples;
  const double elapsed_before = start.elapsed_s;
  result.last_checkpoint = start.checkpoint;
  std::unique_ptr<GradientSync> gradient_sync;
  if (group) {
    broadcast_module_state(*group, *model);  // one start for all ranks, whatever each built
    gradient_sync = std::make_unique<GradientSync>(*group, trainable, cfg.train.bucket_mb);
  }
  if (is_main) {
    io::write_file_atomically((fs::path(job.run_dir) / "config.yaml").string(), io::to_yaml(cfg));
  }

  EmaOptions ema = model->options().ema();
  const auto anneal = cfg.ema.anneal_steps.value_or(cfg.train.max_steps);
  TORCH_CHECK(ema.anneal_steps() == anneal, "pretrain: model EMA anneal_steps ", ema.anneal_steps(),
              " differs from the config's ", anneal);
  const auto schedule = schedule_options(cfg);
  const CollapseOptions collapse = CollapseOptions()
                                       .warmup_steps(cfg.train.collapse_warmup)
                                       .min_target_std(cfg.train.min_target_std)
                                       .min_pred_std(cfg.train.min_pred_std);

  LogSinks sinks;
  if (is_main) {
    sinks = open_log_sinks(cfg, job.run_dir,
                           job.resume ? std::optional<int64_t>(step) : std::nullopt);
  }

  DataLoader loader(job.train_data, loader_options(cfg, data_position, rank, world));

  spdlog::info("pretraining {} on {} ({} threads, {}): {} steps of {} examples ({} per process x {} "
               "micro-batches x {} process{}), {} examples",
               cfg.model.modality, device.str(), threads, cfg.train.precision, cfg.train.max_steps,
               cfg.train.batch_size * cfg.train.accumulate * world, cfg.train.batch_size,
               cfg.train.accumulate, world, world == 1 ? "" : "es", job.train_data->size());
  if (group) {
    spdlog::info("data parallel over {} processes ({}), {} gradient buckets", world,
                 group->backend(), gradient_sync->num_buckets());
  }

  // Collective when distributed (every rank calls it); rank 0 alone writes.
  auto save = [&](int64_t at_step, double elapsed) {
    auto rng = rng_states(group);
    if (group) check_ranks_agree(*group, *model, at_step);
    if (!is_main) return;
    CheckpointContents contents;
    contents.model = module_state(*model);
    contents.optimizer = optimizer_bytes(*optimizer);
    contents.rng = std::move(rng);
    contents.trainer_state = {{"step", at_step},
                              {"data_position", loader.position()},
                              {"bad_samples", bad_samples},
                              {"elapsed_s", elapsed}};
    contents.config_yaml = io::to_yaml(cfg);
    result.last_checkpoint = save_checkpoint(job.run_dir, at_step, contents, cfg.checkpoint.keep);
  };

  const StopSignals stop_signals;

  const auto run_start = std::chrono::steady_clock::now();
  auto elapsed_now = [&] {
    return elapsed_before +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  };
  Window window;

  // lr -> micro-batches (forward, backward) -> cross-rank statistics -> guard -> clip -> step
  // -> EMA -> collapse check -> log -> checkpoint.
  while (step < cfg.train.max_steps) {
    const double lr = lr_at(step, schedule);
    set_learning_rate(*optimizer, lr);
    optimizer->zero_grad();
    StepStats stats =
        forward_backward(*model, loader, cfg, device, rank, gradient_sync.get(), bad_samples);
    stats.stop_requested = stop_signals.requested();
    if (group) reduce_across_ranks(*group, *gradient_sync, stats);
    if (!std::isfinite(stats.loss)) {
      result.stopped_because = "non-finite loss (" + std::to_string(stats.loss) + ") at step " +
                               std::to_string(step + 1) +
                               "; lower optim.lr or use train.precision=fp32; " +
                               checkpoint_note(result.last_checkpoint, cfg.checkpoint.every);
      break;
    }
    if (cfg.optim.clip_grad_norm > 0)
      clip_grad_norm(trainable, cfg.optim.clip_grad_norm);
    optimizer->step();
    const double decay = model->ema_step(step);
    ++step;
    window.add(stats);
    result.last_loss = stats.loss;
    ++result.steps_run;

    if (auto why = detect_collapse(step, stats.target_std, stats.pred_std, collapse)) {
      result.stopped_because =
          *why + "; " + checkpoint_note(result.last_checkpoint, cfg.checkpoint.every);
      break;
    }
    const bool stop_here = step == job.stop_at_step;
    const bool last = step == cfg.train.max_steps || stop_here || stats.stop_requested;
    if (is_main && is_due(step, cfg.log.every, last)) {
      auto record = window_record(window, step, lr, decay, elapsed_now(), bad_samples);
      if (job.monitor && cfg.eval.knn_every > 0 && is_due(step, cfg.eval.knn_every, last)) {
        record.update(job.monitor(*model, step));
        model->train();
      }
      write_record(sinks, record, window, lr);
      window.reset();
    }
    if (is_due(step, cfg.checkpoint.every, last)) save(step, elapsed_now());
    if (stats.stop_requested) {
      result.stopped_because = "interrupted; resume with --resume";
      result.interrupted = true;
      break;
    }
    if (stop_here) break;
  }
  if (sinks.progress) sinks.progress->finish();
  result.steps_done = step;
  result.bad_samples = bad_samples;
  if (!result.stopped_because.empty())
    spdlog::error("training stopped: {}", result.stopped_because);
  return result;
}

}  // namespace data2vec::train
