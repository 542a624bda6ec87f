#include "data2vec/app/finetune_ctc.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "data2vec/app/builders.h"
#include "data2vec/app/hf.h"
#include "data2vec/app/pretrained.h"
#include "data2vec/audio/hf.h"
#include "data2vec/audio/io.h"
#include "data2vec/core/dataset.h"
#include "data2vec/io/files.h"
#include "data2vec/train/checkpoint.h"
#include "data2vec/train/device.h"
#include "data2vec/train/progress.h"

namespace data2vec::app {

namespace fs = std::filesystem;

std::vector<eval::CtcUtterance> read_transcripts(const std::string& list, int64_t limit) {
  std::ifstream in(list);
  if (!in) throw std::invalid_argument("cannot read the transcript list '" + list + "'");
  const auto root = fs::path(list).parent_path();
  std::vector<eval::CtcUtterance> out;
  std::string line;
  int64_t lines_losing_words = 0, first_losing = 0;
  std::vector<std::string> lost;  // characters dropped, each once
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const auto tab = line.find('\t');
    if (tab == std::string::npos) {
      throw std::invalid_argument(list + ":" + std::to_string(number) +
                                  ": expected 'path<TAB>transcript'");
    }
    auto path = fs::path(line.substr(0, tab));
    if (path.is_relative()) path = root / path;
    const auto text = eval::normalize_transcript(line.substr(tab + 1));
    if (const auto dropped = eval::words_outside_alphabet(line.substr(tab + 1)); !dropped.empty()) {
      if (lines_losing_words++ == 0) first_losing = number;
      for (const auto& ch : dropped) {
        if (std::find(lost.begin(), lost.end(), ch) == lost.end()) lost.push_back(ch);
      }
    }
    if (text.empty()) {
      throw std::invalid_argument(list + ":" + std::to_string(number) +
                                  ": the transcript has no letters");
    }
    torch::Tensor wave;
    try {
      wave = hf_normalize(audio::read_audio(path.string(), 16000, audio::ResampleQuality::kBest));
    } catch (const BadSample& e) {
      throw std::invalid_argument(list + ":" + std::to_string(number) + ": " + e.what());
    }
    out.push_back({path.string(), wave, text});
    if (limit > 0 && int64_t(out.size()) == limit) break;
  }
  if (out.empty()) throw std::invalid_argument("'" + list + "' lists no utterances");
  if (lines_losing_words > 0) {
    std::string shown;
    for (size_t i = 0; i < std::min<size_t>(lost.size(), 12); ++i)
      shown += (i ? " " : "") + lost[i];
    spdlog::warn("{}: {} transcripts hold characters the English CTC alphabet (A-Z, ') lacks, "
                 "dropped from them: {}{} (the first on line {}); spell numbers out, transliterate "
                 "other letters",
                 list, lines_losing_words, shown, lost.size() > 12 ? " ..." : "", first_losing);
  }
  return out;
}

// A transcript longer than its clip's frames gets no loss (zero_infinity) and teaches nothing:
// said once, with a count, rather than found later in a loss that will not fall.
static void warn_unalignable(const std::vector<eval::CtcUtterance>& utterances,
                             const audio::AudioEncoderImpl& encoder,
                             const eval::CtcVocabulary& vocabulary, const std::string& list) {
  int64_t unalignable = 0;
  std::string first;
  for (const auto& utterance : utterances) {
    if (eval::ctc_alignable(vocabulary.encode(utterance.text),
                            encoder.num_frames(utterance.wave.size(0))))
      continue;
    if (unalignable++ == 0) first = utterance.id;
  }
  if (unalignable > 0) {
    spdlog::warn("{}: {} of {} clips are too short for their transcripts (CTC needs a frame, "
                 "20 ms, per character and one more between repeated letters): they add no loss "
                 "and teach nothing; the first: {}",
                 list, unalignable, utterances.size(), first);
  }
}

// finetune-ctc --out names a folder for a new run only.
static void check_new_run_dir(const std::string& out_dir) {
  if (fs::exists(fs::path(out_dir) / "checkpoints") ||
      fs::exists(fs::path(out_dir) / "config.yaml")) {
    throw std::invalid_argument("--out '" + out_dir + "' already holds a run; choose a new --out");
  }
}

void save_ctc_run(const std::string& out_dir, const std::string& config_yaml,
                  const nlohmann::json& hf_config, audio::AudioEncoderImpl& encoder,
                  torch::nn::Linear& head, const eval::CtcVocabulary& vocabulary, int64_t steps,
                  const std::string& finetuned_from) {
  check_new_run_dir(out_dir);
  train::CheckpointContents contents;
  for (const auto& [name, tensor] : train::module_state(encoder)) {
    contents.model["student." + name] = tensor.cpu();
    contents.model["teacher." + name] = tensor.cpu();
  }
  contents.model["hf_head.lm_head.weight"] = head->weight.detach().cpu().contiguous();  // [V,D]
  contents.model["hf_head.lm_head.bias"] = head->bias.detach().cpu().contiguous();      // [V]
  contents.trainer_state = {{"step", steps},
                            {"data_position", 0},
                            {"bad_samples", 0},
                            {"elapsed_s", 0.0},
                            {"ctc_finetuned_from", finetuned_from}};
  contents.config_yaml = config_yaml;
  fs::create_directories(out_dir);
  train::save_checkpoint(out_dir, steps, contents, /*keep=*/0);
  io::write_file_atomically((fs::path(out_dir) / "config.yaml").string(), config_yaml);

  // What transcribe (and a user of Hugging Face's Data2VecAudioForCTC) reads beside the weights.
  auto json = hf_config.empty() ? audio::hf_audio_config(encoder.options()) : hf_config;
  json["architectures"] = {"Data2VecAudioForCTC"};
  json["vocab_size"] = vocabulary.size();
  json["pad_token_id"] = vocabulary.blank();
  json["ctc_loss_reduction"] = "mean";
  json["ctc_zero_infinity"] = true;
  // Wav2Vec2CTCTokenizer's files: vocab.json as its save_vocabulary writes it (indent 2, keys
  // sorted), the special tokens the vocabulary has, the blank as the pad token.
  nlohmann::json vocab = nlohmann::json::object();
  for (int64_t id = 0; id < vocabulary.size(); ++id) {
    if (!vocabulary.token(id).empty()) vocab[vocabulary.token(id)] = id;
  }
  nlohmann::json special_tokens = {{"pad_token", vocabulary.token(vocabulary.blank())}};
  for (const auto& [key, token] : {std::pair<const char*, const char*>{"bos_token", "<s>"},
                                   {"eos_token", "</s>"},
                                   {"unk_token", "<unk>"}}) {
    if (vocab.contains(token)) special_tokens[key] = token;
  }
  auto tokenizer = special_tokens;
  tokenizer.update({{"tokenizer_class", "Wav2Vec2CTCTokenizer"},
                    {"word_delimiter_token", "|"},
                    {"replace_word_delimiter_char", " "},
                    {"do_lower_case", false}});
  const nlohmann::json preprocessor = {{"do_normalize", true},
                                       {"feature_extractor_type", "Wav2Vec2FeatureExtractor"},
                                       {"feature_size", 1},
                                       {"padding_side", "right"},
                                       {"padding_value", 0.0},
                                       {"return_attention_mask", true},
                                       {"sampling_rate", 16000}};
  const auto hf = fs::path(out_dir) / "hf";
  fs::create_directories(hf);
  io::write_file_atomically((hf / "config.json").string(), json.dump(2) + "\n");
  io::write_file_atomically((hf / "vocab.json").string(), vocab.dump(2) + "\n");
  io::write_file_atomically((hf / "tokenizer_config.json").string(), tokenizer.dump(2) + "\n");
  io::write_file_atomically((hf / "special_tokens_map.json").string(),
                            special_tokens.dump(2) + "\n");
  io::write_file_atomically((hf / "preprocessor_config.json").string(),
                            preprocessor.dump(2) + "\n");
}

namespace {

std::shared_ptr<audio::AudioEncoderImpl> as_audio(const std::shared_ptr<EncoderImpl>& encoder,
                                                  const std::string& source) {
  auto audio = std::dynamic_pointer_cast<audio::AudioEncoderImpl>(encoder);
  if (!audio) throw std::invalid_argument("'" + source + "' is not an audio model");
  return audio;
}

std::string percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << 100.0 * fraction;
  return out.str();
}

}  // namespace

std::vector<CtcRow> finetune_ctc(const FinetuneCtcOptions& options) {
  // What would make the end of a long run fail is refused before it starts.
  if (!options.out_dir.empty()) check_new_run_dir(options.out_dir);
  if (!options.report_path.empty()) io::check_output_path(options.report_path, "--report");
  auto model = load_hf_model(options.checkpoint);
  auto pretrained = as_audio(model.encoder, options.checkpoint);
  train::set_threads(model.config.train.threads);
  auto finetune = options.finetune;
  finetune.device(train::resolve_device(model.config.train.device));
  const auto vocabulary = eval::english_ctc_vocabulary();

  const auto train = read_transcripts(options.train, options.train_limit);
  std::vector<std::pair<std::string, std::vector<eval::CtcUtterance>>> tests;
  for (const auto& list : options.tests) {
    tests.emplace_back(fs::path(list).stem().string(), read_transcripts(list));
  }
  spdlog::info("finetune-ctc: {} training utterances, {} test list(s)", train.size(),
               tests.size());
  warn_unalignable(train, *pretrained, vocabulary, options.train);

  std::vector<CtcRow> rows;
  const auto run = [&](const std::string& method, audio::AudioEncoderImpl& encoder) {
    const auto start = std::chrono::steady_clock::now();
    // Thousands of updates take an hour on a CPU: a bar with the rate, ETA, loss and lr.
    train::Progress bar(finetune.steps(), 0, "ctc " + method);
    auto with_bar = finetune;
    with_bar.on_step([&bar, hook = finetune.on_step()](const eval::CtcStep& step) {
      if (hook) hook(step);
      std::ostringstream status;
      status << "loss " << std::fixed << std::setprecision(4) << step.loss << "  lr "
             << std::scientific << std::setprecision(2) << step.lr
             << (step.encoder_frozen ? "  (encoder frozen)" : "");
      bar.update(step.step, status.str());
    });
    auto result = eval::ctc_finetune(encoder, train, vocabulary, with_bar);
    bar.finish();
    const double minutes =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60.0;
    for (const auto& [name, utterances] : tests) {
      CtcRow row{name, method,
                 eval::ctc_score(encoder, result.head, utterances, vocabulary,
                                 finetune.batch_size(), finetune.device()),
                 result.final_loss, minutes};
      spdlog::info("finetune-ctc: {}, {}: WER {}%, CER {}%", name, method,
                   percent(row.score.words.rate()), percent(row.score.chars.rate()));
      rows.push_back(std::move(row));
    }
    return result;
  };
  if (options.baseline) {
    torch::manual_seed(uint64_t(model.config.train.seed));
    auto fresh = as_audio(make_encoder_factory(model.config)(), options.checkpoint);
    run("random init", *fresh);
  }
  auto result = run("data2vec", *pretrained);
  if (!options.out_dir.empty()) {
    save_ctc_run(options.out_dir, io::to_yaml(model.config),
                 model.config.model.preset == "hf" ? model.hf_config : nlohmann::json::object(),
                 *pretrained, result.head, vocabulary, result.steps,
                 fs::absolute(options.checkpoint).string());
    spdlog::info("finetune-ctc: the fine-tuned model -> {} (transcribe it; export-hf writes it "
                 "as a Data2VecAudioForCTC)",
                 options.out_dir);
  }
  if (!options.report_path.empty()) {
    std::ostringstream report;
    report << "# data2vec.cpp CTC fine-tuning\n\nEncoder: `" << options.checkpoint
           << "`; trained on `" << options.train << "` (" << train.size() << " utterances), "
           << finetune.steps() << " updates of " << finetune.batch_size() << ", peak lr "
           << finetune.lr() << ", seed " << finetune.seed() << "\n\n"
           << ctc_rows_to_markdown(rows);
    io::write_file_atomically(options.report_path, report.str());
  }
  return rows;
}

std::string ctc_rows_to_markdown(const std::vector<CtcRow>& rows, size_t examples) {
  std::ostringstream out;
  out << "| test | model | WER (%) | CER (%) | words | chars | train loss | minutes |\n"
      << "|---|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& row : rows) {
    out << "| " << row.test << " | " << row.method << " | " << percent(row.score.words.rate())
        << " | " << percent(row.score.chars.rate()) << " | " << row.score.words.reference_length
        << " | " << row.score.chars.reference_length << " | " << std::fixed
        << std::setprecision(3) << row.final_loss << " | " << std::setprecision(1) << row.minutes
        << " |\n";
  }
  for (const auto& row : rows) {
    if (row.method != "data2vec" || examples == 0) continue;
    out << "\n" << row.test << " (data2vec), reference -> hypothesis:\n\n";
    for (size_t i = 0; i < std::min(examples, row.score.examples.size()); ++i) {
      out << "    " << row.score.examples[i].first << "\n    " << row.score.examples[i].second
          << "\n\n";
    }
  }
  return out.str();
}

}  // namespace data2vec::app
