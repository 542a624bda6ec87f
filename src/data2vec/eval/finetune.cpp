#include "data2vec/eval/finetune.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>
#include <random>

#include "data2vec/eval/batching.h"
#include "data2vec/train/device.h"
#include "data2vec/train/optimizer.h"

namespace data2vec::eval {

namespace F = torch::nn::functional;

int64_t layer_id_from_name(const std::string& name, int64_t num_layers) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', start)) {
    parts.push_back(name.substr(start, dot - start));
    start = dot + 1;
  }
  parts.push_back(name.substr(start));
  // parts.size() - 2: "<i>" must be followed by a further segment ("layer.<i>.").
  for (size_t j = 0; j + 2 < parts.size(); ++j) {
    const auto& index = parts[j + 1];
    if ((parts[j] == "layer" || parts[j] == "layers") && !index.empty() &&
        std::all_of(index.begin(), index.end(), [](unsigned char c) { return std::isdigit(c); })) {
      const int64_t id = std::stoll(index) + 1;
      TORCH_CHECK(id <= num_layers, "layer_id_from_name: '", name, "' is in layer ", id - 1,
                  " but the encoder reports num_layers() = ", num_layers);
      return id;
    }
  }
  static const char* const kEmbeddingParts[] = {
      "embed",    "token",    "patch",   "feature_extractor", "feature_projection",
      "pos_conv", "position", "mask_emb"};
  for (const char* part : kEmbeddingParts) {
    if (name.find(part) != std::string::npos) return 0;
  }
  return num_layers + 1;
}

double layer_lr_scale(int64_t layer_id, int64_t num_layers, double decay) {
  return std::pow(decay, static_cast<double>(num_layers + 1 - layer_id));
}

std::vector<size_t> label_fraction_subset(const std::vector<int64_t>& labels, double fraction,
                                          uint64_t seed) {
  TORCH_CHECK(fraction > 0 && fraction <= 1, "label_fraction must be in (0, 1], got ", fraction);
  std::map<int64_t, std::vector<size_t>> by_class;
  size_t labelled = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0) continue;
    by_class[labels[i]].push_back(i);
    ++labelled;
  }
  TORCH_CHECK(labelled > 0, "label_fraction_subset: no labelled examples (all labels are -1)");
  const size_t target = std::clamp<size_t>(
      static_cast<size_t>(std::llround(fraction * static_cast<double>(labelled))), 1, labelled);

  std::mt19937_64 rng(seed);
  std::vector<std::vector<size_t>*> classes;
  for (auto& entry : by_class) {
    std::shuffle(entry.second.begin(), entry.second.end(), rng);
    classes.push_back(&entry.second);
  }
  // The order decides which classes get the one extra example when target % C != 0.
  std::shuffle(classes.begin(), classes.end(), rng);
  std::vector<size_t> chosen;
  chosen.reserve(target);
  for (size_t round = 0; chosen.size() < target; ++round) {
    for (auto* members : classes) {
      if (round < members->size() && chosen.size() < target) chosen.push_back((*members)[round]);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

double warmup_cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak,
                        double min_lr) {
  if (step < warmup_steps) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  }
  if (step >= total_steps) return min_lr;
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  return min_lr + 0.5 * (peak - min_lr) * (1.0 + std::cos(std::acos(-1.0) * progress));
}

torch::Tensor random_shift(const torch::Tensor& images, int64_t max_shift, std::mt19937_64& rng) {
  TORCH_CHECK(images.dim() == 4 && images.is_floating_point(),
              "random_shift: expected float images [B,C,H,W], got ", images.sizes(), " ",
              images.scalar_type());
  TORCH_CHECK(max_shift >= 0, "random_shift: max_shift must be >= 0, got ", max_shift);
  if (max_shift == 0) return images;
  const int64_t h = images.size(2), w = images.size(3);
  std::uniform_int_distribution<int64_t> draw(-max_shift, max_shift);
  std::vector<torch::Tensor> out;
  out.reserve(static_cast<size_t>(images.size(0)));
  for (int64_t b = 0; b < images.size(0); ++b) {
    const auto image = images[b];  // [C,H,W]
    const int64_t dy = draw(rng), dx = draw(rng);
    auto moved = torch::full_like(image, image.min().item<double>());
    // Source rows [max(0,-dy), h - max(0,dy)) land at [max(0,dy), h - max(0,-dy)); same for x.
    const int64_t rows = h - std::abs(dy), cols = w - std::abs(dx);
    if (rows > 0 && cols > 0) {
      moved.narrow(1, std::max<int64_t>(0, dy), rows)
          .narrow(2, std::max<int64_t>(0, dx), cols)
          .copy_(image.narrow(1, std::max<int64_t>(0, -dy), rows)
                     .narrow(2, std::max<int64_t>(0, -dx), cols));
    }
    out.push_back(moved);
  }
  return torch::stack(out);
}

torch::Tensor classification_loss(const torch::Tensor& logits, const torch::Tensor& labels,
                                  double label_smoothing) {
  return F::cross_entropy(
      logits.to(torch::kFloat), labels,
      F::CrossEntropyFuncOptions().ignore_index(-1).label_smoothing(label_smoothing));
}

namespace {

bool decays(const std::string& name, const torch::Tensor& p) {
  if (p.dim() <= 1) return false;  // biases, norms, layer scales, CLS / mask tokens
  for (const char* part : {"token", "position", "pos_embed", "mask_emb"}) {
    if (name.find(part) != std::string::npos) return false;
  }
  return true;
}

// One AdamW group per (lr scale, decay or not).
struct ParamGroups {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> lr_scales;  // per group
};

ParamGroups make_param_groups(EncoderImpl& encoder, torch::nn::LinearImpl& head,
                              const FinetuneOptions& o) {
  const int64_t layers = encoder.num_layers();
  std::map<std::pair<int64_t, bool>, std::vector<torch::Tensor>> by_key;
  for (const auto& item : encoder.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    by_key[{layer_id_from_name(item.key(), layers), decays(item.key(), item.value())}].push_back(
        item.value());
  }
  by_key[{layers + 1, true}].push_back(head.weight);
  by_key[{layers + 1, false}].push_back(head.bias);
  ParamGroups out;
  for (auto& [key, params] : by_key) {
    auto options = std::make_unique<torch::optim::AdamWOptions>(o.lr());
    options->betas({o.beta1(), o.beta2()}).weight_decay(key.second ? o.weight_decay() : 0.0);
    out.groups.emplace_back(std::move(params), std::move(options));
    out.lr_scales.push_back(layer_lr_scale(key.first, layers, o.layer_decay()));
  }
  return out;
}

// Accuracy of head(pooled encoder features) on `indices` of `dataset` (all when empty), leaving
// out unlabelled examples.
double score(EncoderImpl& encoder, torch::nn::Linear& head, const Dataset& dataset,
             std::vector<size_t> indices, int64_t limit, const FinetuneOptions& o,
             int64_t& num_skipped) {
  auto options = ExtractOptions()
                     .batch_size(o.batch_size())
                     .device(o.device())
                     .bf16(o.bf16())
                     .pool(o.pool())
                     .indices(std::move(indices))
                     .limit(limit);
  auto set = extract_features(encoder, dataset, options);
  num_skipped += set.num_skipped;
  if (set.labels.numel() == 0) return 0.0;
  auto labelled = set.labels.ge(0).nonzero().squeeze(1);
  torch::NoGradGuard no_grad;
  head->eval();
  auto logits = head(set.features.index_select(0, labelled).to(o.device()));  // [N,C]
  return accuracy(logits.argmax(1), set.labels.index_select(0, labelled));
}

}  // namespace

FinetuneResult finetune(const std::shared_ptr<EncoderImpl>& encoder, const Dataset& train,
                        const Dataset& test, const FinetuneOptions& o) {
  TORCH_CHECK(encoder, "finetune: null encoder");
  TORCH_CHECK(o.epochs() >= 0 && o.batch_size() > 0, "finetune: epochs must be >= 0 and ",
              "batch_size > 0, got ", o.epochs(), " and ", o.batch_size());
  TORCH_CHECK(o.head_only_epochs() >= 0 && o.head_only_epochs() <= o.epochs(),
              "finetune: head_only_epochs must be in 0..epochs (", o.epochs(), "), got ",
              o.head_only_epochs());
  TORCH_CHECK(o.mixup() >= 0, "finetune: mixup must be >= 0, got ", o.mixup());
  TORCH_CHECK(o.shift() >= 0, "finetune: shift must be >= 0, got ", o.shift());
  TORCH_CHECK(o.label_smoothing() >= 0 && o.label_smoothing() < 1,
              "finetune: label_smoothing must be in [0, 1), got ", o.label_smoothing());
  FinetuneResult r;
  torch::manual_seed(o.seed());

  // The subset; reading every label costs one pass, needed for a fraction or unknown classes.
  std::vector<size_t> subset;
  int64_t classes = o.num_classes() > 0 ? o.num_classes() : train.num_classes();
  if (o.label_fraction() < 1.0 || classes <= 0) {
    std::vector<int64_t> labels(train.size(), -1);
    for (size_t i = 0; i < train.size(); ++i) {
      try {
        labels[i] = train.get(i, 0).label;
      } catch (const BadSample& e) {
        spdlog::warn("finetune: skipping bad example {}: {}", train.describe(i), e.what());
        ++r.num_skipped;
      }
    }
    if (classes <= 0) classes = *std::max_element(labels.begin(), labels.end()) + 1;
    subset = label_fraction_subset(labels, o.label_fraction(), o.seed());
  } else {
    subset.resize(train.size());
    std::iota(subset.begin(), subset.end(), size_t{0});
  }
  TORCH_CHECK(classes > 0, "finetune: the train dataset has no labels (all -1)");
  TORCH_CHECK(!subset.empty(), "finetune: empty train dataset");
  r.train_examples = static_cast<int64_t>(subset.size());

  const int64_t dim = encoder->embed_dim() * pooled_vectors(o.pool());
  r.head = torch::nn::Linear(dim, classes);
  {
    torch::NoGradGuard no_grad;
    r.head->weight.normal_(0.0, 0.01);
    r.head->bias.zero_();
  }
  encoder->to(o.device());
  r.head->to(o.device());
  auto groups = make_param_groups(*encoder, *r.head, o);
  const auto lr_scales = groups.lr_scales;
  train::FusedAdamW optimizer(std::move(groups.groups));

  const int64_t b = o.batch_size();
  const int64_t steps_per_epoch = (r.train_examples + b - 1) / b;
  const int64_t total_steps = steps_per_epoch * o.epochs();
  const int64_t warmup_steps = std::min<int64_t>(
      total_steps, std::llround(o.warmup_epochs() * static_cast<double>(steps_per_epoch)));
  const int64_t prefix = encoder->num_prefix_tokens();
  spdlog::info("finetune: {} examples ({:g}% of the labels), {} classes, {} epochs x {} steps",
               r.train_examples, 100.0 * o.label_fraction(), classes, o.epochs(), steps_per_epoch);

  std::mt19937_64 shuffle_rng(o.seed() ^ 0x9e3779b97f4a7c15ULL);
  // lam ~ Beta(a, a) as X / (X + Y) with X, Y ~ Gamma(a, 1).
  std::mt19937_64 mixup_rng(o.seed() ^ 0x3c6ef372fe94f82bULL);
  std::gamma_distribution<double> mixup_gamma(o.mixup() > 0 ? o.mixup() : 1.0, 1.0);
  std::mt19937_64 shift_rng(o.seed() ^ 0x78dde6e5fd29f05bULL);
  for (int64_t epoch = 0; epoch < o.epochs(); ++epoch) {
    const bool head_only = epoch < o.head_only_epochs();
    encoder->train(!head_only);
    r.head->train();
    std::vector<size_t> order = subset;
    std::shuffle(order.begin(), order.end(), shuffle_rng);
    double loss_sum = 0;
    int64_t loss_count = 0;
    // Augmentation seed per (run seed, epoch): the same example looks different each epoch.
    const uint64_t epoch_seed = o.seed() * 1000003ULL + static_cast<uint64_t>(epoch) + 1;
    for_each_batch(
        train, order, b, [&](size_t) { return epoch_seed; },
        [&](size_t, ReadBatch& read) {
          r.num_skipped += static_cast<int64_t>(read.skipped.size());
          if (read.empty()) return;
          auto input = read.batch.input.to(o.device());
          const auto labels = read.batch.labels.to(o.device());
          if (o.shift() > 0 && !head_only) {
            TORCH_CHECK(input.source.dim() == 4 && input.source.is_floating_point(),
                        "finetune: shift moves images [B,C,H,W], got ", input.source.sizes(), " ",
                        input.source.scalar_type());
            input.source = random_shift(input.source, o.shift(), shift_rng);
          }
          // Mixup only once the encoder trains: the head-only epochs fit a probe of clean inputs.
          double lam = 1.0;
          torch::Tensor partner;  // row b is mixed with row partner[b]
          if (o.mixup() > 0 && !head_only) {
            TORCH_CHECK(input.source.is_floating_point() && !input.padding_mask.defined(),
                        "finetune: mixup needs unpadded floating-point inputs (images), got ",
                        input.source.scalar_type(),
                        input.padding_mask.defined() ? " with padding" : "");
            const double x = mixup_gamma(mixup_rng), y = mixup_gamma(mixup_rng);
            lam = x / (x + y);
            partner = torch::randperm(input.batch_size(), torch::TensorOptions()
                                                              .dtype(torch::kLong)
                                                              .device(o.device()));
            input.source = lam * input.source + (1 - lam) * input.source.index_select(0, partner);
          }
          const double lr =
              warmup_cosine_lr(r.steps, total_steps, warmup_steps, o.lr(), o.min_lr());
          for (size_t g = 0; g < optimizer.param_groups().size(); ++g) {
            static_cast<torch::optim::AdamWOptions&>(optimizer.param_groups()[g].options())
                .lr(lr * lr_scales[g]);
          }
          torch::Tensor loss;
          {
            train::AutocastGuard autocast(o.device(), o.bf16() ? "bf16" : "fp32");
            auto features = [&] {
              // A frozen encoder gets no gradients, so its AdamW state and weights stay put.
              std::optional<torch::NoGradGuard> frozen;
              if (head_only) frozen.emplace();
              return pool_features(encoder->extract_features(input, torch::Tensor()), prefix,
                                   o.pool());
            }();
            auto logits = r.head(features);  // [B,C]
            loss = classification_loss(logits, labels, o.label_smoothing());
            if (partner.defined()) {
              loss = lam * loss + (1 - lam) * classification_loss(
                                                  logits, labels.index_select(0, partner),
                                                  o.label_smoothing());
            }
          }
          optimizer.zero_grad();
          loss.backward();
          if (o.clip_grad_norm() > 0) {
            auto params = encoder->parameters();
            for (const auto& p : r.head->parameters()) params.push_back(p);
            train::clip_grad_norm(params, o.clip_grad_norm());
          }
          optimizer.step();
          ++r.steps;
          const double value = loss.item<double>();
          loss_sum += value;
          ++loss_count;
          if (o.on_step()) o.on_step()({r.steps, epoch, value, lr, total_steps});
        });
    r.final_loss = loss_count > 0 ? loss_sum / static_cast<double>(loss_count) : 0.0;
    spdlog::info("finetune: epoch {} mean loss {:.4f}", epoch + 1, r.final_loss);
  }

  r.train_acc = score(*encoder, r.head, train, subset, o.train_eval_limit(), o, r.num_skipped);
  r.test_acc = score(*encoder, r.head, test, {}, 0, o, r.num_skipped);
  encoder->eval();
  spdlog::info("finetune: top-1 train {:.4f} test {:.4f} after {} steps", r.train_acc, r.test_acc,
               r.steps);
  return r;
}

}  // namespace data2vec::eval
