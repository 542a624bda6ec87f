// CTC fine-tuning: the tri-stage schedule against hand values, the head's shapes, the frozen conv
// front end, the loss plateau of long steady letters, and a tiny fine-tune on tones made here that
// must learn to spell them.
#include <gtest/gtest.h>

#include <cmath>

#include "data2vec/eval/ctc_finetune.h"

namespace data2vec::eval {
namespace {

audio::AudioEncoderOptions tiny_options() {
  return audio::AudioEncoderOptions()
      .conv_layers({{16, 10, 5}, {16, 4, 4}, {16, 4, 4}})  // 80 samples per frame
      .dim(32)
      .depth(1)
      .num_heads(2)
      .mlp_dim(64)
      .dropout(0.0)
      .attention_dropout(0.0)
      .layerdrop(0.0)
      .pos_conv_depth(1)
      .pos_conv_kernel(5)
      .pos_conv_groups(4);
}

TEST(TriStageLr, HandValues) {
  // 100 updates: warm-up 10, hold 40, decay 50; peak 2, init 0.02, final 0.1.
  const double peak = 2.0;
  EXPECT_DOUBLE_EQ(tri_stage_lr(0, 100, peak), 0.02);
  EXPECT_DOUBLE_EQ(tri_stage_lr(5, 100, peak), 0.02 + (2.0 - 0.02) / 10 * 5);  // 1.01
  EXPECT_DOUBLE_EQ(tri_stage_lr(9, 100, peak), 0.02 + (2.0 - 0.02) / 10 * 9);
  EXPECT_DOUBLE_EQ(tri_stage_lr(10, 100, peak), 2.0);
  EXPECT_DOUBLE_EQ(tri_stage_lr(49, 100, peak), 2.0);
  EXPECT_DOUBLE_EQ(tri_stage_lr(50, 100, peak), 2.0);  // decay starts at exp(0)
  // Half-way through the decay: peak * sqrt(final_scale).
  EXPECT_NEAR(tri_stage_lr(75, 100, peak), 2.0 * std::sqrt(0.05), 1e-12);
  EXPECT_NEAR(tri_stage_lr(100, 100, peak), 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(tri_stage_lr(150, 100, peak), 0.1);
  // Other phases: 20/0/80 with init 0.5, final 0.01 over 10 updates.
  const auto o = TriStageOptions().warmup_frac(0.2).hold_frac(0.0).decay_frac(0.8).init_scale(
      0.5).final_scale(0.01);
  EXPECT_DOUBLE_EQ(tri_stage_lr(1, 10, 1.0, o), 0.75);
  EXPECT_DOUBLE_EQ(tri_stage_lr(2, 10, 1.0, o), 1.0);
  EXPECT_NEAR(tri_stage_lr(6, 10, 1.0, o), 0.1, 1e-12);  // exp(-ln(100) / 8 * 4)
}

TEST(CtcHead, Shapes) {
  torch::manual_seed(0);
  audio::AudioEncoderImpl encoder(tiny_options());
  auto head = make_ctc_head(32, 32);
  EXPECT_EQ(head->weight.sizes(), torch::IntArrayRef({32, 32}));
  EXPECT_EQ(head->bias.sizes(), torch::IntArrayRef({32}));
  const auto forward =
      ctc_forward(encoder, head, {torch::randn({1600}), torch::randn({800})}, torch::kCPU);
  // (1600 - 10) / 5 + 1 = 319, (319 - 4) / 4 + 1 = 79, (79 - 4) / 4 + 1 = 19 frames.
  EXPECT_EQ(forward.logits.sizes(), torch::IntArrayRef({2, 19, 32}));  // [B,T,V]
  EXPECT_EQ(forward.frame_lengths[0].item<int64_t>(), encoder.num_frames(1600));
  EXPECT_EQ(forward.frame_lengths[1].item<int64_t>(), encoder.num_frames(800));
  EXPECT_EQ(english_ctc_vocabulary().size(), 32);
  EXPECT_EQ(english_ctc_vocabulary().blank(), 0);
  EXPECT_EQ(english_ctc_vocabulary().encode("AT IT'S"),
            (std::vector<int64_t>{7, 6, 4, 10, 6, 27, 12}));
  EXPECT_EQ(normalize_transcript("  Hello, world -- it's 9 o'clock!"), "HELLO WORLD IT'S O'CLOCK");
}

TEST(CtcFinetune, TranscriptsSayWhatTheAlphabetDrops) {
  // Typographic apostrophes are apostrophes (they split "don't" in two before); digits and
  // letters outside A-Z are named, typographic punctuation is not.
  EXPECT_EQ(normalize_transcript("Don\u2019t \u2018quote\u2019 it\u02bcs"), "DON'T 'QUOTE' IT'S");
  // A Latin-1 byte is named as a byte, not printed raw into the log.
  EXPECT_EQ(words_outside_alphabet("caf\xe9 \u2010 \u2212 \u200b"),
            (std::vector<std::string>{"\\xE9"}));
  // A character cut short at the end, an overlong form: byte by byte too.
  EXPECT_EQ(words_outside_alphabet("ab\xE2\x82"), (std::vector<std::string>{"\\xE2", "\\x82"}));
  EXPECT_EQ(words_outside_alphabet("\xC0\xAF"), (std::vector<std::string>{"\\xC0", "\\xAF"}));
  EXPECT_EQ(words_outside_alphabet("At 9 o'clock, caf\u00e9 \u201cna\u00efve\u201d \u2014 "
                                   "19 \u00e9"),
            (std::vector<std::string>{"9", "\u00e9", "\u00ef", "1"}));
  EXPECT_TRUE(words_outside_alphabet("It\u2019s \u201cfine\u201d \u2014 really\u2026 ok!")
                  .empty());
}

TEST(CtcFinetune, AlignableWhenTheFramesHoldEveryLabelAndEachRepeatsBlank) {
  // CTC emits a blank between two equal labels: "LL" needs 3 frames, "LA" 2.
  EXPECT_TRUE(ctc_alignable({15, 7}, 2));
  EXPECT_FALSE(ctc_alignable({15, 15}, 2));
  EXPECT_TRUE(ctc_alignable({15, 15}, 3));
  EXPECT_FALSE(ctc_alignable({15, 15, 15, 7}, 5));
  EXPECT_TRUE(ctc_alignable({}, 0));
  // The same count as LibTorch's CTC loss: finite at the bound, infinite one frame below it.
  const auto vocabulary = english_ctc_vocabulary();
  const auto ids = vocabulary.encode("HELLO");  // L L: one repeat, 6 frames needed
  for (const int64_t frames : {5, 6}) {
    const auto log_probs = torch::log_softmax(torch::randn({frames, 1, 32}), -1);
    const auto loss = torch::ctc_loss(log_probs, torch::tensor(ids).unsqueeze(0),
                                      torch::tensor({frames}), torch::tensor({int64_t(ids.size())}),
                                      0, at::Reduction::Sum);
    EXPECT_EQ(std::isfinite(loss.item<double>()), ctc_alignable(ids, frames)) << frames;
  }
}

TEST(CtcFinetune, FrozenFeatureEncoderGetsNoGradient) {
  torch::manual_seed(0);
  audio::AudioEncoderImpl encoder(tiny_options());
  freeze_feature_encoder(encoder);
  auto head = make_ctc_head(32, 32);
  const auto vocabulary = english_ctc_vocabulary();
  const auto loss = ctc_batch_loss(
      ctc_forward(encoder, head, {torch::randn({3200}), torch::randn({2400})}, torch::kCPU),
      {"AT", "TEA"}, vocabulary);
  ASSERT_TRUE(std::isfinite(loss.item<double>()));
  loss.backward();
  int64_t frozen = 0, trained = 0;
  for (const auto& item : encoder.named_parameters()) {
    const auto& grad = item.value().grad();
    if (item.key().rfind("feature_extractor.", 0) == 0) {
      EXPECT_FALSE(grad.defined() && grad.abs().sum().item<double>() > 0) << item.key();
      ++frozen;
    } else if (item.key() != "masked_spec_embed") {  // used only under a mask
      ASSERT_TRUE(grad.defined()) << item.key();
      EXPECT_GT(grad.abs().sum().item<double>(), 0) << item.key();
      ++trained;
    }
  }
  EXPECT_GT(frozen, 0);
  EXPECT_GT(trained, 0);
  EXPECT_GT(head->weight.grad().abs().sum().item<double>(), 0);
}

TEST(CtcFinetune, ANonFiniteLossStopsBeforeTheWeightsTurnNaN) {
  // Before, the run went on with NaN weights, exited 0 and saved a model that transcribes nothing.
  torch::manual_seed(0);
  audio::AudioEncoderImpl encoder(tiny_options());
  const auto before = encoder.named_parameters()["encoder.layers.0.attention.query.weight"].clone();
  auto wave = torch::randn({3200});
  wave[100] = std::nanf("");
  std::string message;
  try {
    ctc_finetune(encoder, {{"nan.wav", wave, "AT"}}, english_ctc_vocabulary(),
                 CtcFinetuneOptions().steps(3).batch_size(1));
  } catch (const std::exception& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("the loss is not finite ("), std::string::npos) << message;
  EXPECT_NE(message.find(") at update 1 of 3"), std::string::npos) << message;
  EXPECT_TRUE(encoder.named_parameters()["encoder.layers.0.attention.query.weight"].equal(before));
}

// CTC's likelihood when every frame of a letter gets the same distribution (the letter with
// probability p, else blank), as a model does that cannot tell the frames of a steady sound apart:
// the letter must be emitted in one run, P = sum_k (n - k + 1) p^k (1 - p)^(n - k) over run
// lengths k = 1..n. For a letter of n >= 5 frames this has a local maximum near p = 1/n, about
// 1/e: a plateau at ~1 nat per letter where blank wins every frame's argmax and greedy decoding
// reads nothing. For n <= 4 it rises monotonically to 1 at p = 1 (the letter on every frame).
TEST(CtcLoss, ConstantFramesOfALongLetterPlateauNearOneNat) {
  const auto vocabulary = english_ctc_vocabulary();
  const auto loss_at = [&](double p, int64_t n) {
    auto logits = torch::full({1, n, vocabulary.size()}, -1e4);  // [B,T,V]
    logits.select(2, vocabulary.blank()).fill_(std::log(1 - p));
    logits.select(2, vocabulary.encode("E")[0]).fill_(std::log(p));
    return ctc_batch_loss({logits, torch::tensor({n})}, {"E"}, vocabulary).item<double>();
  };
  const auto closed_form = [](double p, int64_t n) {
    double sum = 0;
    for (int64_t k = 1; k <= n; ++k)
      sum += double(n - k + 1) * std::pow(p, k) * std::pow(1 - p, n - k);
    return -std::log(sum);
  };
  for (const int64_t n : {4, 30}) {
    for (const double p : {0.01, 0.035, 0.3, 0.9}) {
      EXPECT_NEAR(loss_at(p, n), closed_form(p, n), 1e-4) << "n " << n << " p " << p;
    }
  }
  // 30 frames (the 0.15 s tones at 80 samples per frame): a local minimum of 0.95 nat at p = 0.035
  // (a run that stopped there had 0.035 to 0.04 on each tone frame and a loss of 0.95 per letter).
  EXPECT_NEAR(loss_at(0.035, 30), 0.949, 1e-3);
  EXPECT_LT(loss_at(0.035, 30), loss_at(0.02, 30));
  EXPECT_LT(loss_at(0.035, 30), loss_at(0.06, 30));
  EXPECT_GT(loss_at(0.3, 30), 3.0);  // the barrier on the way to the letter on every frame
  EXPECT_LT(loss_at(0.99, 30), 0.3);
  // 4 frames: downhill all the way.
  for (double p = 0.01; p < 0.99; p += 0.01) EXPECT_GT(loss_at(p, 4), loss_at(p + 0.01, 4)) << p;
}

// A letter is a tone: E = 400 Hz, T = 1500 Hz, 320 samples (0.02 s, 4 frames of 80 samples) each
// at 16 kHz, with a little noise; one word per utterance, 0.05 s of silence after it. Four frames
// per letter is what read speech gives at wav2vec 2.0's 20 ms frames (~12 characters a second);
// 0.15 s letters (30 frames) sat on the plateau above in 300 updates (blank on every frame).
std::vector<CtcUtterance> tone_utterances(uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<CtcUtterance> out;
  for (const std::string text : {"E", "T", "ET", "TE", "TET"}) {
    std::vector<torch::Tensor> parts;
    for (const char c : text) {
      const double hz = c == 'E' ? 400.0 : 1500.0;
      const auto t = torch::arange(320, torch::kFloat) / 16000.0;
      parts.push_back(torch::sin(t * (2 * M_PI * hz)));
    }
    parts.push_back(torch::zeros({800}));
    auto wave = torch::cat(parts);
    wave = wave + 0.05 * torch::randn(wave.sizes(), generator);
    wave = (wave - wave.mean()) / wave.std();
    out.push_back({text, wave, text});
  }
  return out;
}

// 8 noise draws of each word (40 utterances): with 4 the training set was spelt exactly but new
// noise sometimes cost a third of the characters (letters doubled or dropped). Peak lr 3e-3: 1e-2
// spells them too, with a noisier last tenth of the loss.
TEST(CtcFinetune, SpellsTones) {
  torch::manual_seed(0);
  audio::AudioEncoderImpl encoder(tiny_options());
  const auto vocabulary = english_ctc_vocabulary();
  std::vector<CtcUtterance> train, test;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    for (auto& u : tone_utterances(seed)) train.push_back(u);
  }
  for (uint64_t seed = 9; seed <= 12; ++seed) {
    for (auto& u : tone_utterances(seed)) test.push_back(u);
  }
  int64_t frozen_steps = 0;
  auto result = ctc_finetune(
      encoder, train, vocabulary,
      CtcFinetuneOptions().steps(300).batch_size(8).lr(3e-3).freeze_encoder_steps(10).on_step(
          [&](const CtcStep& s) { frozen_steps += s.encoder_frozen; }));
  EXPECT_EQ(result.steps, 300);
  EXPECT_EQ(frozen_steps, 10);
  EXPECT_LT(result.final_loss, 0.2 * result.first_loss)
      << "first " << result.first_loss << " final " << result.final_loss;
  // Well below the ~1 nat per letter plateau.
  EXPECT_LT(result.final_loss, 0.3);
  // The training utterances are spelt exactly; new noise costs at most a few characters.
  const auto seen = ctc_score(encoder, result.head, train, vocabulary, 4);
  ASSERT_EQ(seen.examples.size(), train.size());
  for (const auto& [reference, hypothesis] : seen.examples) EXPECT_EQ(hypothesis, reference);
  const auto unseen = ctc_score(encoder, result.head, test, vocabulary, 4);
  EXPECT_EQ(unseen.words.reference_length, 20);
  EXPECT_LE(unseen.chars.rate(), 0.1)
      << unseen.chars.errors << " of " << unseen.chars.reference_length;
}

}  // namespace
}  // namespace data2vec::eval
