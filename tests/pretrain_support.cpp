#include "pretrain_support.h"

#include "data2vec/app/builders.h"
#include "data2vec/io/files.h"
#include "data2vec/train/checkpoint.h"
#include "support.h"

namespace data2vec::testing {

io::Config toy_run_config(int64_t max_steps) {
  io::Config c;
  c.model.modality = "toy";
  c.model.preset = "micro";
  c.model.top_k_layers = 2;
  c.model.layer_result = "ffn";
  c.model.target_layer_norm = "instance_norm";
  c.model.target_final_norm = "none";
  c.model.loss_beta = 0;
  c.model.loss_scale = 0;
  c.model.mask_ratio = 0.5;
  c.ema.decay_start = 0.99;
  c.ema.decay_end = 0.999;
  c.ema.anneal_steps = 40;
  c.optim.lr = 1e-3;
  c.optim.warmup_steps = 5;
  c.train.max_steps = max_steps;
  c.train.batch_size = 8;
  c.train.threads = 2;
  c.train.num_workers = 2;
  c.train.device = "cpu";
  c.data.dataset = "toy-variable";
  c.data.limit = 64;
  c.log.every = 3;
  c.log.tensorboard = false;
  c.checkpoint.every = 5;
  return c;
}

train::PretrainResult run_pretraining(const io::Config& config, const std::string& run_dir,
                                      bool resume, int64_t stop_at, train::Monitor monitor) {
  train::PretrainJob job;
  job.monitor = std::move(monitor);
  job.stop_at_step = stop_at;
  job.config = config;
  job.run_dir = run_dir;
  job.resume = resume;
  job.model = app::make_model(config);
  job.train_data = app::make_pretrain_dataset(config);
  return train::pretrain(job);
}

std::string untrained_run(const io::Config& config) {
  const auto run = make_temp_dir("d2v-untrained") + "/run";
  auto model = app::make_model(config);
  train::CheckpointContents contents;
  contents.model = train::module_state(*model);
  contents.trainer_state = {{"step", 0}, {"data_position", 0}};
  contents.config_yaml = io::to_yaml(config);
  train::save_checkpoint(run, 0, contents, 0);
  return run;
}

std::string last_model_bytes(const std::string& run_dir) {
  return io::read_file(run_dir + "/checkpoints/last/model.safetensors");
}

}  // namespace data2vec::testing
