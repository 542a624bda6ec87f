// data2vec: the command-line program. Thin: every command parses its flags and calls the library.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include "data2vec/app/builders.h"
#include "data2vec/app/embed.h"
#include "data2vec/app/evaluate.h"
#include "data2vec/app/finetune_ctc.h"
#include "data2vec/app/hf.h"
#include "data2vec/app/pretrained.h"
#include "data2vec/audio/data.h"
#include "data2vec/io/config.h"
#include "data2vec/io/files.h"
#include "data2vec/text/data.h"
#include "data2vec/text/tokenizer.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/train/device.h"
#include "data2vec/train/distributed.h"
#include "data2vec/train/launch.h"
#include "data2vec/train/plot.h"
#include "data2vec/train/stop_signals.h"
#include "data2vec/train/trainer.h"

namespace fs = std::filesystem;
using namespace data2vec;

#ifndef DATA2VEC_VERSION
#define DATA2VEC_VERSION "0.2.0"
#endif

namespace {

// The exit codes, as `data2vec --help` and the README list them.
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntimeError = 1,   // a command failed (bad config, unreadable file, full disk, ...)
  kExitUsageError = 2,     // the command line could not be parsed
  kExitGuardStopped = 3,   // pretrain stopped by the collapse or non-finite-loss guard
  kExitInterrupted = 130,  // pretrain stopped by SIGINT / SIGTERM (with a checkpoint), 128 + 2
};

constexpr const char* kExitCodesHelp =
    "Exit codes: 0 ok; 1 runtime error (message on stderr); 2 usage error; 3 pretraining "
    "stopped by the collapse or non-finite-loss guard; 130 pretraining interrupted by "
    "SIGINT/SIGTERM (a checkpoint was written: continue with --resume).\n"
    "Results go to stdout, logs and errors to stderr.";

// A number between 0 and 1, each end in or out as `zero_in` / `one_in` say. The usage error
// names the interval and the text given.
CLI::Validator unit_interval_check(bool zero_in, bool one_in) {
  const std::string interval = std::string(zero_in ? "[" : "(") + "0, 1" + (one_in ? "]" : ")");
  return CLI::Validator(
      [=](std::string& text) {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        const bool ok = !text.empty() && *end == '\0' && (zero_in ? value >= 0 : value > 0) &&
                        (one_in ? value <= 1 : value < 1);
        return ok ? std::string() : "must be a number in " + interval + ", got " + text;
      },
      "in " + interval);
}

// `--name X` for an optional setting in the unit interval (see unit_interval_check); unset, the
// command uses its own default.
void add_unit_interval_option(CLI::App* command, const std::string& name,
                              std::optional<double>& target, bool zero_in, bool one_in,
                              const std::string& help) {
  command
      ->add_option_function<double>(
          name, [&target](const double& value) { target = value; }, help)
      ->check(unit_interval_check(zero_in, one_in));
}

// A number option's check: finite, and > 0 (`strict`) or >= 0. The usage error says so with the
// text given ("must be a number > 0, got -3"), where CLI11's own ranges print the largest double
// and let nan through.
CLI::Validator number_check(bool strict) {
  return CLI::Validator(
      [strict](std::string& text) {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        const bool parsed = !text.empty() && *end == '\0' && std::isfinite(value);
        if (parsed && (strict ? value > 0 : value >= 0)) return std::string();
        return std::string(strict ? "must be a number > 0" : "must be a number >= 0") +
               ", got " + text;
      },
      strict ? "> 0" : ">= 0");
}

// `data2vec --version`: what decides how fast and in which precision a run goes.
std::string version_text() {
  std::string features;
  for (const auto& feature : train::precision_cpu_features()) features += " " + feature;
  return fmt::format(
      "data2vec {}\nLibTorch {}\nBLAS {}\nCPU features for fp32/bf16:{} (bf16 pays off "
      "with avx512_bf16 or amx_bf16; otherwise use train.precision fp32)",
      DATA2VEC_VERSION, TORCH_VERSION, train::blas_library(),
      features.empty() ? " none of avx2, avx512_bf16, amx_bf16" : features);
}

// --help-all shows every command's options at every depth: CLI11 2.1 expands the first level
// only, which left out `tokenizer train`'s.
class ExpandEveryLevel : public CLI::Formatter {
 public:
  std::string make_expanded(const CLI::App* command) const override {
    std::string text = command->get_display_name(true) + "\n" + make_description(command) +
                       make_positionals(command) + make_groups(command, CLI::AppFormatMode::Sub) +
                       make_subcommands(command, CLI::AppFormatMode::All);
    text = CLI::detail::find_and_replace(text, "\n\n", "\n");
    text.pop_back();  // the final newline: every other line is indented under the name
    return CLI::detail::find_and_replace(text, "\n", "\n  ") + "\n";
  }
};

// A parse error as CLI11 prints it, with exit code 2; a first word that is no command, or an
// option `data2vec` itself does not have, says so.
int usage_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  if (argc > 1 && argv[1][0] == '-') {
    const std::string flag = std::string(argv[1]).substr(0, std::string(argv[1]).find('='));
    if (app.get_option_no_throw(flag) == nullptr) {
      std::cerr << "data2vec: unknown option '" << flag
                << "' (options go after the command: data2vec <command> [options]); see "
                   "data2vec --help\n";
      return kExitUsageError;
    }
  }
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const auto* command : app.get_subcommands([](const CLI::App*) { return true; })) {
      names += (names.empty() ? "" : ", ") + command->get_name();
      known |= command->get_name() == argv[1];
    }
    if (!known) {
      std::cerr << "data2vec: unknown command '" << argv[1] << "' (commands: " << names
                << "); see data2vec --help\n";
      return kExitUsageError;
    }
  }
  app.exit(e);
  return kExitUsageError;
}

// --config FILE and --set key=value, shared by the commands that read a configuration.
struct ConfigFlags {
  std::string path;
  std::vector<std::string> overrides;

  void add_to(CLI::App* command, bool required) {
    auto* option =
        command->add_option("-c,--config", path, "YAML configuration (presets in configs/)");
    if (required) option->required()->check(CLI::ExistingFile);
    command
        ->add_option("--set", overrides,
                     "override one key, e.g. --set train.max_steps=200 (repeatable; keys: "
                     "`data2vec config --config FILE` prints them all)")
        ->allow_extra_args(false);  // one key=value each: `--set k=v DIR` leaves DIR positional
  }

  io::Config load() const { return io::load_config(path, overrides); }
};

// The encoder weights of `init` (a run or checkpoint directory, e.g. from import-hf) as the start
// of a new run: student and teacher both, as the original project starts from a checkpoint.
void initialise_from(Data2Vec& model, const std::string& init) {
  const auto ckpt = train::read_checkpoint(init);
  train::load_module_state(*model->student(), ckpt.model, /*strict=*/true, "student.");
  train::load_module_state(*model->teacher(), ckpt.model, /*strict=*/true, "student.");
  spdlog::info("student and teacher start from the encoder of {}", init);
}

int run_pretrain(const ConfigFlags& flags, const std::string& out_dir, bool resume, bool overwrite,
                 int64_t stop_at, const std::string& init, int nproc,
                 const std::vector<std::string>& args) {
  auto distributed = train::distributed_options_from_env();
  if (nproc > 1 && !distributed) return train::launch_local_workers(nproc, args);
  // Before this process starts any thread: Ctrl-C must never interrupt a oneDNN kernel.
  train::route_stop_signals_to_a_thread();
  io::Config config;
  const auto existing = resume ? train::resolve_checkpoint_dir(out_dir) : std::nullopt;
  const auto run_config = (fs::path(out_dir) / "config.yaml").string();
  if (existing) {
    // On resume the architecture comes from the checkpoint, not from the command line.
    io::apply_yaml(config, train::read_checkpoint(*existing).config_yaml,
                   *existing + "/config.yaml");
    io::apply_overrides(config, flags.overrides);
    io::validate(config);
    if (!flags.path.empty()) {
      // Rerunning the first command line with --resume added is natural; a file that says
      // something else must not pass unnoticed.
      const auto differ = io::differing_keys(config, flags.load());
      std::string keys;
      for (const auto& key : differ) keys += (keys.empty() ? "" : ", ") + key;
      if (!differ.empty()) {
        spdlog::warn(
            "--resume continues with the configuration in {}/config.yaml, not --config {}, "
            "which differs in {}; change a key of a resumed run with --set",
            *existing, flags.path, keys);
      }
    }
  } else if (resume && flags.path.empty()) {
    // Stopped before its first checkpoint: the run's own configuration starts it again.
    if (!fs::exists(run_config)) {
      throw std::invalid_argument("pretrain --resume: '" + out_dir +
                                  "' holds no run to continue (no checkpoint in checkpoints/ "
                                  "and no config.yaml); start one with --config");
    }
    spdlog::info("--resume: the run's configuration is {}", run_config);
    config = io::load_config(run_config, flags.overrides);
  } else if (!init.empty()) {
    // The architecture is the init checkpoint's; training keys come from --config (if given).
    if (!flags.path.empty()) config = flags.load();
    io::Config source;
    io::apply_yaml(source, train::read_checkpoint(init).config_yaml, init + " (config.yaml)");
    config.model.modality = source.model.modality;
    config.model.preset = source.model.preset;
    config.model.hf_config = source.model.hf_config;
    if (flags.path.empty()) config = source;
    io::apply_overrides(config, flags.overrides);
    io::validate(config);
  } else {
    if (flags.path.empty())
      throw std::invalid_argument("pretrain: --config is required for a new run");
    config = flags.load();
  }
  train::PretrainJob job;
  job.config = config;
  job.run_dir = out_dir;
  job.resume = resume;
  job.overwrite = overwrite;
  job.stop_at_step = stop_at;
  if (distributed) {  // under a launcher: a group even of one (the same code path everywhere)
    distributed->backend = config.train.dist_backend;
    distributed->timeout = std::chrono::seconds(config.train.dist_timeout_s);
    job.group = std::make_shared<train::ProcessGroup>(*distributed,
                                                      train::resolve_device(config.train.device));
    // Rank 0 speaks for the run; the others report warnings and errors only.
    if (!job.group->is_main()) spdlog::set_level(spdlog::level::warn);
    spdlog::set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S.%e] [rank {}] [%l] %v", job.group->rank()));
  }
  const bool is_main = !job.group || job.group->is_main();
  job.model = app::make_model(config);
  if (!init.empty() && !existing) initialise_from(job.model, init);
  job.train_data = app::make_pretrain_dataset(config);
  if (config.eval.knn_every > 0 && is_main) job.monitor = app::make_knn_monitor(config);
  const auto result = train::pretrain(job);
  const int code = result.interrupted               ? kExitInterrupted
                   : result.stopped_because.empty() ? kExitOk
                                                    : kExitGuardStopped;
  if (!is_main) return code;
  std::cout << "steps " << result.steps_done << ", last loss "
            << (result.steps_run > 0 ? fmt::format("{}", result.last_loss) : "none (no step run)")
            << ", bad samples " << result.bad_samples << ", checkpoint "
            << (result.last_checkpoint.empty() ? "none" : result.last_checkpoint) << "\n";
  return code;
}

// `data2vec tokenizer train`: SentencePiece on a config's pretraining corpus or on text files.
int run_tokenizer_train(const ConfigFlags& flags, const std::vector<std::string>& inputs,
                        int64_t vocab_size, std::string out_dir) {
  std::vector<text::TextDocument> documents;
  if (!flags.path.empty()) {
    const auto config = flags.load();
    if (out_dir.empty()) out_dir = config.data.tokenizer;
    if (out_dir.empty())
      throw std::invalid_argument("tokenizer train: give --out or set data.tokenizer");
    documents = app::tokenizer_training_documents(config);
  } else {
    if (inputs.empty() || out_dir.empty())
      throw std::invalid_argument("tokenizer train: give --config, or --input FILES and --out DIR");
    documents = text::read_text_documents(inputs);
  }
  if (documents.empty()) throw std::invalid_argument("tokenizer train: no text in the input");
  fs::create_directories(out_dir);
  const auto corpus = (fs::path(out_dir) / "training-text.txt").string();
  if (text::write_documents_text(documents, corpus) == 0) {
    fs::remove(corpus);
    throw std::invalid_argument("tokenizer train: no line of UTF-8 text in the " +
                                std::to_string(documents.size()) + " documents of the input");
  }
  spdlog::info("training a {}-piece SentencePiece model on {} documents -> {}", vocab_size,
               documents.size(), out_dir);
  try {
    text::SentencePieceTokenizer::train({corpus}, vocab_size, out_dir);
  } catch (...) {
    fs::remove(corpus);  // a copy of the whole corpus, of no use once training failed
    throw;
  }
  fs::remove(corpus);
  const text::SentencePieceTokenizer tokenizer(out_dir);
  std::cout << out_dir << "/" << text::SentencePieceTokenizer::kModelFile << ": "
            << tokenizer.vocab_size() << " pieces\n";
  return 0;
}

int run_command(int argc, char** argv);

}  // namespace

int main(int argc, char** argv) {
  // Logs and errors go to stderr, results to stdout: `data2vec ... > out.txt` keeps results only.
  spdlog::set_default_logger(spdlog::stderr_color_mt("data2vec"));
  const int code = run_command(argc, argv);
  // Results that never reached stdout (a full disk behind `> out.txt`, /dev/full) are a failed
  // command, not a success. A closed pipe (`| head`) ends the process by SIGPIPE before this.
  std::cout.flush();
  if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
    spdlog::error("could not write the results to standard output: {}", std::strerror(errno));
    return code == kExitOk ? kExitRuntimeError : code;
  }
  return code;
}

namespace {

int run_command(int argc, char** argv) {
  // Past a file-size limit (ulimit -f) the kernel would kill us with SIGXFSZ, silently; ignored,
  // the write fails with EFBIG instead and the error names the file.
  std::signal(SIGXFSZ, SIG_IGN);
  train::keep_freed_memory();  // every step reuses its activations' memory: no page faults
  CLI::App app{
      "data2vec: self-supervised pretraining of image, speech and text encoders (data2vec 1.0 "
      "and 2.0) on LibTorch.\nRun `data2vec <command> --help` for a command's options."};
  app.formatter(std::make_shared<ExpandEveryLevel>());  // before the commands: they copy it
  app.require_subcommand(1);
  app.option_defaults()->always_capture_default();  // every option's help shows its default
  app.set_help_all_flag("--help-all", "show the help of every command");
  app.set_version_flag("--version", version_text,
                       "print the version, the LibTorch version, the BLAS in use and the CPU "
                       "features that decide between fp32 and bf16");
  app.footer(kExitCodesHelp);

  ConfigFlags pretrain_flags;
  std::string pretrain_out;
  bool pretrain_resume = false;
  bool pretrain_overwrite = false;
  int64_t pretrain_stop_at = 0;
  int pretrain_nproc = 1;
  std::string pretrain_init;
  auto* pretrain = app.add_subcommand(
      "pretrain",
      "Pretrain an encoder the data2vec way. Writes DIR/metrics.jsonl, DIR/tb/ (TensorBoard), "
      "DIR/config.yaml and DIR/checkpoints/{step_N,last}. Ctrl-C writes a checkpoint and stops "
      "(exit 130). A DIR that already holds a run is refused unless --resume or --overwrite.");
  pretrain_flags.add_to(pretrain, false);
  pretrain->add_option("-o,--out", pretrain_out, "run directory")->required();
  pretrain->add_flag("--resume", pretrain_resume,
                     "continue exactly from DIR/checkpoints/last, or the newest complete "
                     "step_N when that link is broken (config from the checkpoint; --set still "
                     "applies, e.g. to raise train.max_steps)");
  pretrain
      ->add_flag("--overwrite", pretrain_overwrite,
                 "start a new run in a DIR that holds one: DELETES its checkpoints/, tb/, "
                 "metrics.jsonl, metrics.png and config.yaml first (other files stay)")
      ->excludes(pretrain->get_option("--resume"));
  pretrain
      ->add_option("--stop-at", pretrain_stop_at,
                   "stop after this step with a checkpoint, keeping the schedules of "
                   "train.max_steps; continue later with --resume (0: do not stop early)")
      ->check(number_check(false));
  pretrain
      ->add_option("--init", pretrain_init,
                   "start student and teacher from this run's encoder (e.g. one made by "
                   "import-hf); the architecture is taken from it, training keys from "
                   "--config or from it")
      ->check(CLI::ExistingDirectory);
  pretrain
      ->add_option("--nproc", pretrain_nproc,
                   "data-parallel worker processes on this machine (c10d: gloo on cpu, nccl "
                   "on cuda); train.batch_size is per process. Under torchrun or Slurm the "
                   "launcher's environment is used instead")
      ->check(CLI::Range(1, 256));

  std::string plot_dir;
  auto* plot = app.add_subcommand("plot",
                                  "Render DIR/metrics.jsonl to DIR/metrics.png (loss, "
                                  "target/prediction std, lr) with gnuplot.");
  plot->add_option("dir", plot_dir, "run directory")->required()->check(CLI::ExistingDirectory);

  ConfigFlags show_flags;
  auto* show = app.add_subcommand(
      "config",
      "Print the resolved configuration (every key with its value and what it does) as YAML, "
      "after the checks pretrain makes (the model is built once to check the architecture). "
      "The output is a configuration pretrain --config reads.");
  show->add_option("-c,--config", show_flags.path,
                   "YAML configuration (default: the built-in defaults, data2vec 1.0 on "
                   "Fashion-MNIST with the fmnist-tiny ViT)");
  show->add_option("--set", show_flags.overrides, "override one key (repeatable)")
      ->allow_extra_args(false);

  // probe / finetune / evaluate share their flags.
  app::EvaluateOptions eval_options;
  auto add_eval_flags = [&](CLI::App* command) {
    command
        ->add_option("--checkpoint", eval_options.checkpoint,
                     "run directory (uses checkpoints/last) or checkpoint directory")
        ->required()
        ->check(CLI::ExistingDirectory);
    command->add_option("-c,--config", eval_options.config_path,
                        "evaluate with this config instead of the checkpoint's");
    command->add_option("--set", eval_options.overrides, "override one key (repeatable)")
      ->allow_extra_args(false);
    command
        ->add_option("--train-limit", eval_options.probe_train_limit,
                     "train examples for the probes (0 = all)")
        ->check(number_check(false));
    command
        ->add_option("--test-limit", eval_options.test_limit, "test examples scored (0 = all)")
        ->check(number_check(false));
    command->add_option("--report", eval_options.report_path, "write a markdown report here");
  };
  auto* probe = app.add_subcommand(
      "probe",
      "Linear-probe top-1 on the held-out split: the raw input, the encoder at random init, and "
      "the checkpoint's student and teacher, all in one run.");
  add_eval_flags(probe);
  auto* finetune = app.add_subcommand(
      "finetune",
      "Fine-tune encoder + linear head on a fraction of the labels, from the checkpoint and from "
      "random init; top-1 on the held-out split.");
  add_eval_flags(finetune);
  auto* evaluate = app.add_subcommand(
      "evaluate", "probe and finetune together, one table (what `make demo` reports).");
  add_eval_flags(evaluate);
  for (auto* command : {finetune, evaluate}) {
    command
        ->add_option("--label-fraction", eval_options.label_fraction,
                     command == finetune
                         ? "fraction of the training labels fine-tuned on, in (0, 1] (default "
                           "0.01)"
                         : "also fine-tune on this fraction of the training labels, in (0, 1]; "
                           "without it, the probes alone")
        ->check(unit_interval_check(/*zero_in=*/false, /*one_in=*/true))
        ->default_str("");
    command->add_option("--epochs", eval_options.finetune_epochs, "fine-tuning epochs")
        ->check(number_check(true));
    command->add_option("--lr", eval_options.finetune_lr, "fine-tuning peak learning rate")
        ->check(number_check(true));
    command
        ->add_option("--head-only-epochs", eval_options.finetune_head_only_epochs,
                     "of --epochs, how many first train the head alone on the frozen encoder "
                     "(linear probing, then fine-tuning)")
        ->check(number_check(false));
    add_unit_interval_option(command, "--label-smoothing", eval_options.finetune_label_smoothing,
                             /*zero_in=*/true, /*one_in=*/false,
                             "fine-tuning label smoothing in [0, 1) (default: 0.1 for images, the "
                             "BEiT / data2vec recipe; 0 for speech and text)");
    add_unit_interval_option(command, "--layer-decay", eval_options.finetune_layer_decay,
                             /*zero_in=*/false, /*one_in=*/true,
                             "lr factor per layer below the head, in (0, 1]: 1 = none (default: "
                             "0.65 for images, the BEiT / data2vec recipe; 1 for speech and text)");
    command
        ->add_option(
            "--weight-decay", eval_options.finetune_weight_decay,
            "AdamW weight decay of the fine-tuned weights (not biases, norms, tokens and position "
            "tables)")
        ->check(number_check(false))
        ->capture_default_str();
    command
        ->add_option("--mixup", eval_options.finetune_mixup,
                     "mixup alpha while the encoder trains (lam ~ Beta(alpha, alpha)); 0 = off; "
                     "images only")
        ->check(number_check(false));
    command
        ->add_option("--shift", eval_options.finetune_shift,
                     "move each training image by up to this many pixels in each direction while "
                     "the encoder trains (pad and random crop); 0 = off; images only")
        ->check(number_check(false));
    command->add_flag("--every-task", eval_options.finetune_every_task,
                      "fine-tune on every task with its own train split (text: brown genre and "
                      "spam), not only the first");
  }

  app::FinetuneCtcOptions ctc_options;
  int64_t ctc_steps = 1000, ctc_batch = 8, ctc_freeze = 0;
  double ctc_lr = 5e-4;
  bool ctc_mask = false, ctc_no_baseline = false;
  uint64_t ctc_seed = 0;
  auto* finetune_ctc = app.add_subcommand(
      "finetune-ctc",
      "Speech recognition: fine-tune an audio encoder (a run, or a Hugging Face folder / run "
      "import-hf made) with a CTC head over characters (Hugging Face's English vocab.json: blank "
      "<pad>, word boundary |), the conv feature encoder frozen, Adam under fairseq's tri-stage "
      "schedule (10% warm-up, 40% hold, 50% exponential decay); the same encoder at random init "
      "is fine-tuned alike as the baseline. Prints word and character error rates (greedy "
      "decoding) on each --test list. --out saves the fine-tuned model as a run that transcribe "
      "reads and export-hf writes as a Data2VecAudioForCTC.");
  finetune_ctc
      ->add_option("--checkpoint", ctc_options.checkpoint,
                   "run or checkpoint directory, or a Hugging Face folder (audio)")
      ->required()
      ->check(CLI::ExistingPath);
  finetune_ctc
      ->add_option("--train", ctc_options.train,
                   "transcript list: path<TAB>transcript per line (paths relative to the list; "
                   "scripts/fetch-data.sh spoken-sentences writes them)")
      ->required()
      ->check(CLI::ExistingFile);
  finetune_ctc->add_option("--test", ctc_options.tests, "transcript list to score (repeatable)")
      ->check(CLI::ExistingFile);
  finetune_ctc->add_option("-o,--out", ctc_options.out_dir, "save the fine-tuned model here");
  finetune_ctc->add_option("--steps", ctc_steps, "updates")->check(number_check(true));
  finetune_ctc->add_option("--batch-size", ctc_batch, "utterances per update")
      ->check(number_check(true));
  finetune_ctc->add_option("--lr", ctc_lr, "peak learning rate")->check(number_check(true));
  finetune_ctc
      ->add_option("--freeze-encoder-steps", ctc_freeze,
                   "updates during which only the head learns (fairseq freeze_finetune_updates)")
      ->check(number_check(false));
  finetune_ctc->add_flag("--mask", ctc_mask,
                         "mask frames with the encoder's span mask while training (wav2vec 2.0's "
                         "fine-tuning regulariser)");
  finetune_ctc->add_option("--seed", ctc_seed, "seed of the head, batch order, dropout and masks");
  finetune_ctc
      ->add_option("--train-limit", ctc_options.train_limit,
                   "first N training utterances (0 = all)")
      ->check(number_check(false));
  finetune_ctc->add_flag("--no-baseline", ctc_no_baseline,
                         "skip the random-init baseline (it doubles the time)");
  finetune_ctc->add_option("--report", ctc_options.report_path, "write a markdown report here");

  auto* tokenizer = app.add_subcommand("tokenizer", "Text tokenizers (SentencePiece).");
  tokenizer->require_subcommand(1);
  auto* tokenizer_train = tokenizer->add_subcommand(
      "train",
      "Train a SentencePiece model with data2vec's special ids (<s> 0, <pad> 1, </s> 2, <unk> 3, "
      "<mask> 4): on the pretraining corpus of --config (written to its data.tokenizer), or on "
      "--input text files (documents separated by blank lines).");
  ConfigFlags tokenizer_flags;
  std::vector<std::string> tokenizer_inputs;
  int64_t tokenizer_vocab = 8000;
  std::string tokenizer_out;
  tokenizer_flags.add_to(tokenizer_train, false);
  tokenizer_train->add_option("--input", tokenizer_inputs, "text files or folders");
  tokenizer_train->add_option("--vocab-size", tokenizer_vocab, "pieces in the vocabulary");
  tokenizer_train->add_option("-o,--out", tokenizer_out,
                              "model directory (default: the config's data.tokenizer)");

  app::EmbedOptions embed_options;
  auto* embed = app.add_subcommand(
      "embed",
      "Features of a file or a folder of files from a checkpoint's encoder, to safetensors.");
  embed->add_option("--checkpoint", embed_options.checkpoint, "run or checkpoint directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  embed
      ->add_option("--input", embed_options.input,
                   "a file, or a folder searched recursively (links to folders followed, names "
                   "starting with . skipped)")
      ->required()
      ->check(CLI::ExistingPath);
  embed
      ->add_option("--output", embed_options.output,
                   "FILE.safetensors: tensor 'features' [N,D], metadata 'files'")
      ->required();
  embed->add_option("--pool", embed_options.pool,
                    "mean | cls | grid (images: the 2 x 2 quadrant means of the patch grid, "
                    "4 x D features)");

  std::string manifest_dir, manifest_out;
  auto* manifest = app.add_subcommand(
      "manifest",
      "Write a fairseq-style audio manifest (first line the root, then path<TAB>samples at 16 kHz) "
      "of the .wav/.flac/.ogg files under DIR; unreadable files are named, skipped and counted. "
      "Use it as data.dataset (a name ending in .tsv) with model.modality audio.");
  manifest
      ->add_option("dir", manifest_dir,
                   "folder searched recursively (links to folders followed, names starting with . "
                   "skipped)")
      ->required()
      ->check(CLI::ExistingDirectory);
  manifest->add_option("-o,--out", manifest_out, "manifest file to write (e.g. train.tsv)")
      ->required();

  app::ImportHfOptions import_options;
  auto* import_hf = app.add_subcommand(
      "import-hf",
      "Import a Hugging Face data2vec folder (config.json + model.safetensors or "
      "pytorch_model.bin; facebook/data2vec-vision/-audio/-text, base or task models) as a run "
      "directory for embed, probe, finetune, evaluate, export-hf and pretrain --init.");
  import_hf->add_option("hf_dir", import_options.hf_dir, "the Hugging Face folder")
      ->required()
      ->check(CLI::ExistingDirectory);
  import_hf->add_option("-o,--out", import_options.out_dir, "run directory to create")->required();
  import_hf->add_option("-c,--config", import_options.config_path,
                        "YAML whose training keys the run uses (default: data2vec 1.0's for the "
                        "modality); the architecture always comes from config.json");
  import_hf->add_option("--set", import_options.overrides, "override one key (repeatable)")
      ->allow_extra_args(false);

  app::ExportHfOptions export_options;
  auto* export_hf = app.add_subcommand(
      "export-hf",
      "Write a run's encoder as a Hugging Face folder (config.json + model.safetensors, and the "
      "run's vocab / preprocessor files) that transformers' from_pretrained loads: "
      "Data2Vec*Model, or Data2VecAudioForCTC for a finetune-ctc run.");
  export_hf->add_option("checkpoint", export_options.checkpoint, "run or checkpoint directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  export_hf->add_option("-o,--out", export_options.out_dir, "folder to write")->required();
  export_hf->add_flag("--overwrite", export_options.overwrite,
                      "replace the model a folder already holds (its config.json and weight "
                      "files; other files stay)");
  export_hf->add_flag("--teacher", export_options.teacher,
                      "export the EMA teacher instead of the student");

  std::string forward_dir, forward_inputs, forward_output;
  auto* hf_forward = app.add_subcommand(
      "hf-forward",
      "Run a Hugging Face folder's model (or a run's encoder) on inputs stored as "
      "<variant>.<name> tensors (pixel_values, bool_masked_pos, input_values, attention_mask, "
      "input_ids, token_type_ids; metadata 'variants') and write every hidden state, "
      "last_hidden_state, pooler_output, extract_features and logits under the same keys as "
      "Hugging Face's outputs.");
  hf_forward->add_option("model", forward_dir, "Hugging Face folder, run or checkpoint directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  hf_forward->add_option("--inputs", forward_inputs, "inputs (.safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  hf_forward->add_option("--output", forward_output, "outputs to write (.safetensors)")->required();

  app::TranscribeOptions transcribe_options;
  auto* transcribe = app.add_subcommand(
      "transcribe",
      "Speech to text with a CTC model (a Data2VecAudioForCTC folder such as "
      "facebook/data2vec-audio-base-960h, or a run import-hf made of one): audio of any rate is "
      "resampled and normalised as its preprocessor_config.json says, long files run in "
      "overlapping windows, greedy CTC decoding with its vocab.json. One line per file on "
      "stdout, in order (empty for a file that could not be read; exit 1 then).");
  transcribe->add_option("model", transcribe_options.model, "Hugging Face folder or run directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  transcribe->add_option("audio", transcribe_options.inputs, "WAV / FLAC / Ogg files")->required();
  transcribe->add_option("--window", transcribe_options.window_s, "window length in seconds")
      ->check(number_check(true));
  transcribe
      ->add_option("--overlap", transcribe_options.overlap_s,
                   "overlap of consecutive windows in seconds")
      ->check(number_check(false));

  app::ClassifyOptions classify_options;
  auto* classify = app.add_subcommand(
      "classify",
      "Image classification with a Data2VecVisionForImageClassification folder (e.g. "
      "facebook/data2vec-vision-base-ft1k) or a run import-hf made of one: images resized and "
      "normalised as its preprocessor_config.json says. Prints file<TAB>rank<TAB>label<TAB>"
      "probability lines, best first (none for a file that could not be read: its error goes to "
      "stderr, exit 1 then).");
  classify->add_option("model", classify_options.model, "Hugging Face folder or run directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  classify->add_option("images", classify_options.inputs, "image files")->required();
  classify->add_option("--top-k", classify_options.top_k, "labels per image")
      ->check(number_check(true));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version end here too, with code 0.
    return e.get_exit_code() == 0 ? app.exit(e) : usage_error(app, e, argc, argv);
  }

  try {
    if (*pretrain) {
      return run_pretrain(pretrain_flags, pretrain_out, pretrain_resume, pretrain_overwrite,
                          pretrain_stop_at, pretrain_init, pretrain_nproc,
                          std::vector<std::string>(argv + 1, argv + argc));
    }
    if (*probe || *finetune || *evaluate) {
      eval_options.probe = !*finetune;
      if (*probe) eval_options.label_fraction = 0;
      if (*finetune && eval_options.label_fraction <= 0) eval_options.label_fraction = 0.01;
      const auto rows = app::evaluate_run(eval_options);
      std::cout << app::rows_to_markdown(rows);
      return 0;
    }
    if (*finetune_ctc) {
      ctc_options.baseline = !ctc_no_baseline;
      ctc_options.finetune.steps(ctc_steps)
          .batch_size(ctc_batch)
          .lr(ctc_lr)
          .freeze_encoder_steps(ctc_freeze)
          .mask(ctc_mask)
          .seed(ctc_seed);
      std::cout << app::ctc_rows_to_markdown(app::finetune_ctc(ctc_options));
      return 0;
    }
    if (*tokenizer_train) {
      return run_tokenizer_train(tokenizer_flags, tokenizer_inputs, tokenizer_vocab, tokenizer_out);
    }
    if (*import_hf) {
      std::cout << app::import_hf(import_options) << "\n";
      return 0;
    }
    if (*export_hf) {
      app::export_hf(export_options);
      std::cout << export_options.out_dir << "\n";
      return 0;
    }
    if (*hf_forward) {
      io::check_output_path(forward_output, "--output");
      const auto written = app::hf_forward(forward_dir, forward_inputs, forward_output);
      std::cout << forward_output << ": " << written << " tensors\n";
      return 0;
    }
    if (*transcribe) {
      // Each line as soon as its file is done: an interrupted run keeps what it finished.
      bool failed = false;
      app::transcribe(transcribe_options, [&](const app::Transcript& t) {
        std::cout << t.text << std::endl;
        failed |= !t.error.empty();
      });
      return failed ? 1 : 0;
    }
    if (*classify) {
      bool failed = false;
      app::classify(classify_options, [&](const app::Prediction& p) {
        for (size_t i = 0; i < p.top.size(); ++i) {
          std::cout << p.file << "\t" << i + 1 << "\t" << p.top[i].first << "\t"
                    << fmt::format("{:.4f}", p.top[i].second) << "\n";
        }
        std::cout.flush();
        failed |= !p.error.empty();
      });
      return failed ? 1 : 0;
    }
    if (*embed) {
      app::embed_files(embed_options);
      return 0;
    }
    if (*manifest) {
      io::check_output_path(manifest_out, "--out");
      size_t unreadable = 0;
      auto written = audio::scan_audio_files(manifest_dir, {}, 16000, &unreadable);
      if (written.entries.empty()) {  // an empty corpus is a wrong folder, not a result
        throw std::invalid_argument(
            "manifest: no readable .wav/.flac/.ogg file under '" + manifest_dir + "'" +
            (unreadable > 0 ? fmt::format(" ({} unreadable)", unreadable) : "") +
            "; nothing written");
      }
      audio::save_manifest(written, manifest_out);
      int64_t samples = 0;
      for (const auto& entry : written.entries) samples += entry.num_samples;
      std::cout << manifest_out << ": " << written.entries.size() << " files, "
                << fmt::format("{:.1f}", samples / 16000.0 / 3600.0) << " h at 16 kHz, "
                << unreadable << " unreadable skipped\n";
      return 0;
    }
    if (*plot) {
      train::plot_metrics(plot_dir);
      std::cout << (fs::path(plot_dir) / "metrics.png").string() << "\n";
      return 0;
    }
    if (*show) {
      io::Config config;
      if (!show_flags.path.empty()) {
        config = show_flags.load();
      } else {
        io::ConfigOrigins origins;
        io::apply_overrides(config, show_flags.overrides, &origins);
        io::apply_algorithm_defaults(config, origins);
        io::validate(config, &origins);
      }
      // What pretrain would reject when it builds the model (e.g. model.top_k_layers beyond the
      // encoder's depth) is rejected here too; the built-in defaults are a run as well.
      app::make_model(config);
      std::cout << io::to_yaml(config);
      return 0;
    }
  } catch (const c10::Error& e) {
    // The message alone: LibTorch's C++ backtrace means nothing to a user.
    spdlog::error("{}", e.what_without_backtrace());
    return kExitRuntimeError;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitRuntimeError;
  }
  return kExitOk;
}

}  // namespace
