#include "data2vec/eval/ctc_finetune.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <string_view>

#include "data2vec/train/optimizer.h"

namespace data2vec::eval {

CtcVocabulary english_ctc_vocabulary() {
  const std::vector<std::string> tokens = {
      "<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L",
      "U",     "M",   "W",    "C",     "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"};
  std::map<std::string, int64_t> ids;
  for (size_t i = 0; i < tokens.size(); ++i) ids[tokens[i]] = int64_t(i);
  return CtcVocabulary(ids);
}

namespace {

// Left and right single quotation marks and the modifier letter apostrophe.
bool is_typographic_apostrophe(std::string_view ch) {
  return ch == "\u2018" || ch == "\u2019" || ch == "\u02bc";
}

// Quotes, hyphens and dashes, minus, ellipsis, guillemets and the Unicode spaces: punctuation,
// dropped as ASCII punctuation is.
bool is_typographic_punctuation(std::string_view ch) {
  static const std::set<std::string_view> marks = {
      "\u201a", "\u201c", "\u201d", "\u201e", "\u2010", "\u2011", "\u2012", "\u2013",
      "\u2014", "\u2015", "\u2212", "\u2026", "\u00ab", "\u00bb", "\u2039", "\u203a",
      "\u00a0", "\u2009", "\u200a", "\u200b", "\u202f", "\u2060", "\ufeff"};
  return is_typographic_apostrophe(ch) || marks.count(ch) > 0;
}

}  // namespace

std::vector<std::string> words_outside_alphabet(const std::string& text) {
  std::vector<std::string> found;
  for (const auto& ch : utf8_characters(text)) {
    const auto first = static_cast<unsigned char>(ch[0]);
    const bool dropped_word = first < 0x80 ? std::isdigit(first) != 0
                                           : !is_typographic_punctuation(ch);
    if (!dropped_word) continue;
    // A byte of no UTF-8 character (utf8_characters gives ill-formed bytes one by one, as from a
    // Latin-1 transcript) is shown as \xNN, not as itself.
    const bool stray_byte = ch.size() == 1 && first >= 0x80;
    const auto shown = stray_byte ? fmt::format("\\x{:02X}", first) : ch;
    if (std::find(found.begin(), found.end(), shown) == found.end()) found.push_back(shown);
  }
  return found;
}

bool ctc_alignable(const std::vector<int64_t>& ids, int64_t frames) {
  int64_t needed = int64_t(ids.size());
  for (size_t i = 1; i < ids.size(); ++i) needed += ids[i] == ids[i - 1] ? 1 : 0;
  return needed <= frames;
}

std::string normalize_transcript(const std::string& text_given) {
  std::string text;
  for (const auto& ch : utf8_characters(text_given)) {
    if (is_typographic_apostrophe(ch)) {
      text += '\'';
    } else {
      text += ch;
    }
  }
  std::string out;
  for (const unsigned char c : text) {
    const bool keep = std::isalpha(c) || c == '\'';
    if (keep && c < 128) {
      out += char(std::toupper(c));
    } else if (!out.empty() && out.back() != ' ') {
      out += ' ';
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

double tri_stage_lr(int64_t step, int64_t total_steps, double peak, const TriStageOptions& o) {
  TORCH_CHECK(total_steps > 0, "tri_stage_lr: total_steps must be > 0");
  const auto steps = [&](double fraction) {
    return int64_t(fraction * double(total_steps));  // fairseq: int(max_update * ratio)
  };
  const int64_t warmup = steps(o.warmup_frac()), hold = steps(o.hold_frac()),
                decay = steps(o.decay_frac());
  const double init_lr = o.init_scale() * peak;
  if (step < warmup) {
    return init_lr + (peak - init_lr) / double(warmup) * double(step);
  }
  if (step < warmup + hold) return peak;
  if (step <= warmup + hold + decay && decay > 0) {
    const double factor = -std::log(o.final_scale()) / double(decay);
    return peak * std::exp(-factor * double(step - warmup - hold));
  }
  return peak * o.final_scale();
}

void freeze_feature_encoder(audio::AudioEncoderImpl& encoder) {
  for (auto& p : encoder.feature_extractor->parameters()) p.set_requires_grad(false);
}

torch::nn::Linear make_ctc_head(int64_t dim, int64_t vocab_size) {
  TORCH_CHECK(dim > 0 && vocab_size > 1, "make_ctc_head: need D > 0 and V > 1, got ", dim, ", ",
              vocab_size);
  return torch::nn::Linear(dim, vocab_size);  // PyTorch's default init, as HF's nn.Linear
}

CtcForward ctc_forward(audio::AudioEncoderImpl& encoder, torch::nn::Linear& head,
                       const std::vector<torch::Tensor>& waves, const torch::Device& device,
                       bool apply_mask, at::Generator* generator, bool encoder_grad) {
  TORCH_CHECK(!waves.empty(), "ctc_forward: empty batch");
  int64_t longest = 0;
  for (const auto& w : waves) longest = std::max(longest, w.size(0));
  auto batch = torch::zeros({int64_t(waves.size()), longest});       // [B,S]
  auto padding = torch::ones({int64_t(waves.size()), longest}, torch::kBool);  // [B,S]
  auto samples = torch::empty({int64_t(waves.size())}, torch::kLong);          // [B]
  for (size_t i = 0; i < waves.size(); ++i) {
    const int64_t n = waves[i].size(0);
    batch[int64_t(i)].slice(0, 0, n).copy_(waves[i]);
    padding[int64_t(i)].slice(0, 0, n).fill_(false);
    samples[int64_t(i)] = n;
  }
  const EncoderInput input{batch.to(device), padding.any().item<bool>() ? padding.to(device)
                                                                         : torch::Tensor()};
  torch::Tensor mask;
  if (apply_mask) {
    TORCH_CHECK(generator, "ctc_forward: masking needs a generator");
    mask = encoder.apply_mask(input, *generator).mask;  // [B,T]
  }
  torch::Tensor x;  // [B,T,D]
  {
    torch::AutoGradMode grad_mode(encoder_grad && torch::GradMode::is_enabled());
    x = encoder.extract_features(input, mask).x;
  }
  return {head(x), encoder.frame_lengths(samples)};  // [B,T,V], [B]
}

torch::Tensor ctc_batch_loss(const CtcForward& forward, const std::vector<std::string>& texts,
                             const CtcVocabulary& vocabulary) {
  TORCH_CHECK(int64_t(texts.size()) == forward.logits.size(0), "ctc_batch_loss: ", texts.size(),
              " transcripts for a batch of ", forward.logits.size(0));
  std::vector<int64_t> targets, target_lengths;
  for (const auto& text : texts) {
    const auto ids = vocabulary.encode(text);
    targets.insert(targets.end(), ids.begin(), ids.end());
    target_lengths.push_back(int64_t(ids.size()));
  }
  const auto log_probs =
      torch::log_softmax(forward.logits.to(torch::kFloat), -1).transpose(0, 1);  // [T,B,V]
  const auto device = log_probs.device();
  return torch::ctc_loss(log_probs, torch::tensor(targets).to(device),
                         forward.frame_lengths.to(device), torch::tensor(target_lengths).to(device),
                         vocabulary.blank(), at::Reduction::Mean, /*zero_infinity=*/true);
}

CtcFinetuneResult ctc_finetune(audio::AudioEncoderImpl& encoder,
                               const std::vector<CtcUtterance>& train,
                               const CtcVocabulary& vocabulary, const CtcFinetuneOptions& o) {
  TORCH_CHECK(!train.empty(), "ctc_finetune: no training utterances");
  TORCH_CHECK(o.steps() > 0 && o.batch_size() > 0, "ctc_finetune: steps and batch_size must be > 0");
  torch::manual_seed(o.seed());
  CtcFinetuneResult r;
  r.head = make_ctc_head(encoder.embed_dim(), vocabulary.size());
  freeze_feature_encoder(encoder);
  encoder.to(o.device());
  r.head->to(o.device());

  std::vector<torch::Tensor> params;
  for (const auto& p : encoder.parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  std::vector<torch::Tensor> head_params = r.head->parameters();
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (auto* group : {&params, &head_params}) {
    auto options = std::make_unique<torch::optim::AdamWOptions>(o.lr());
    options->betas({o.beta1(), o.beta2()}).eps(o.eps()).weight_decay(o.weight_decay());
    groups.emplace_back(*group, std::move(options));
  }
  train::FusedAdamW optimizer(std::move(groups));
  auto generator = at::make_generator<at::CPUGeneratorImpl>(o.seed() + 1);

  std::mt19937_64 rng(o.seed() ^ 0x9e3779b97f4a7c15ULL);
  std::vector<size_t> order;
  size_t next = 0;
  const int64_t tenth = std::max<int64_t>(1, o.steps() / 10);
  double first_sum = 0, last_sum = 0;
  spdlog::info("ctc_finetune: {} utterances, {} updates of {}, peak lr {:g}, head {} -> {}",
               train.size(), o.steps(), o.batch_size(), o.lr(), encoder.embed_dim(),
               vocabulary.size());
  for (int64_t step = 0; step < o.steps(); ++step) {
    std::vector<torch::Tensor> waves;
    std::vector<std::string> texts;
    while (int64_t(waves.size()) < std::min<int64_t>(o.batch_size(), int64_t(train.size()))) {
      if (next == order.size()) {  // a new pass in a new order
        order.resize(train.size());
        std::iota(order.begin(), order.end(), size_t{0});
        std::shuffle(order.begin(), order.end(), rng);
        next = 0;
      }
      waves.push_back(train[order[next]].wave);
      texts.push_back(train[order[next]].text);
      ++next;
    }
    const double lr = tri_stage_lr(step, o.steps(), o.lr(), o.schedule());
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    // A frozen transformer runs without a graph (in train mode, as fairseq): only the head learns.
    const bool frozen = step < o.freeze_encoder_steps();
    encoder.train();
    r.head->train();
    const auto loss = ctc_batch_loss(
        ctc_forward(encoder, r.head, waves, o.device(), o.mask(), &generator, !frozen), texts,
        vocabulary);
    const double value = loss.item<double>();
    // One non-finite loss makes every weight NaN after the step: stop while the model is whole.
    if (!std::isfinite(value)) {
      throw std::runtime_error(fmt::format(
          "ctc_finetune: the loss is not finite ({}) at update {} of {} (lr {:.3g}): a "
          "non-finite input or a learning rate too high (--lr); the model is not saved",
          value, step + 1, o.steps(), lr));
    }
    optimizer.zero_grad();
    loss.backward();
    if (o.clip_grad_norm() > 0) {
      auto all = params;
      all.insert(all.end(), head_params.begin(), head_params.end());
      train::clip_grad_norm(all, o.clip_grad_norm());
    }
    optimizer.step();
    ++r.steps;
    if (step < tenth) first_sum += value;
    if (step >= o.steps() - tenth) last_sum += value;
    if (o.on_step()) o.on_step()({r.steps, value, lr, frozen});
  }
  r.first_loss = first_sum / double(tenth);
  r.final_loss = last_sum / double(tenth);
  encoder.eval();
  r.head->eval();
  spdlog::info("ctc_finetune: loss {:.4f} (first 10%) -> {:.4f} (last 10%)", r.first_loss,
               r.final_loss);
  return r;
}

CtcScore ctc_score(audio::AudioEncoderImpl& encoder, torch::nn::Linear& head,
                   const std::vector<CtcUtterance>& test, const CtcVocabulary& vocabulary,
                   int64_t batch_size, const torch::Device& device) {
  TORCH_CHECK(batch_size > 0, "ctc_score: batch_size must be > 0");
  const bool was_training = encoder.is_training();
  encoder.eval();
  head->eval();
  torch::NoGradGuard no_grad;
  CtcScore score;
  for (size_t start = 0; start < test.size(); start += size_t(batch_size)) {
    const size_t end = std::min(test.size(), start + size_t(batch_size));
    std::vector<torch::Tensor> waves;
    for (size_t i = start; i < end; ++i) waves.push_back(test[i].wave);
    const auto forward = ctc_forward(encoder, head, waves, device);
    const auto logits = forward.logits.cpu();
    for (size_t i = start; i < end; ++i) {
      const int64_t b = int64_t(i - start);
      const int64_t frames = std::min(forward.frame_lengths[b].item<int64_t>(), logits.size(1));
      const auto hypothesis = vocabulary.decode(
          ctc_greedy_ids(logits[b].slice(0, 0, frames), vocabulary.blank()));  // [T,V]
      const auto w = word_errors(test[i].text, hypothesis);
      const auto c = char_errors(test[i].text, hypothesis);
      score.words.errors += w.errors;
      score.words.reference_length += w.reference_length;
      score.chars.errors += c.errors;
      score.chars.reference_length += c.reference_length;
      score.examples.emplace_back(test[i].text, hypothesis);
    }
  }
  encoder.train(was_training);
  return score;
}

}  // namespace data2vec::eval
