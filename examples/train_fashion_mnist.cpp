// Trains the project's models on Fashion-MNIST with this library only: the default model, a
// CIFAR-stem ResNet-18 (3x3 stride-1 conv1, no max-pool, four stages of two BasicBlocks), or a
// MobileNetV2 with CIFAR strides (stride-1 stem and first 24-channel block). BatchNorm in training
// mode, cross-entropy, tape backward, SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a
// cosine learning rate, random-crop + horizontal-flip augmentation. Seeded: the same command gives
// the same weights for a fixed OMP_NUM_THREADS. Saves the weights as F16 safetensors, with the
// options the shapes cannot tell in the metadata (driver::load_model reads them).
//
//   train_fashion_mnist --width 16 --epochs 20 --out models/fashion_mnist_resnet18_w16.safetensors
//   train_fashion_mnist --arch mobilenet_v2 --width-mult 0.5 --out
//   models/fashion_mnist_mbv2.safetensors
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "../tools/cli/args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/io/idx.hpp"
#include "brecq/nn/evaluate.hpp"
#include "brecq/nn/load.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/nn/optim.hpp"
#include "brecq/ops/loss.hpp"
#include "brecq/quant/progress.hpp"

namespace {

using namespace brecq;

struct AugmentParams {
  int64_t pad = 2;    ///< random crop from the image zero-padded by this many pixels (0 = off)
  bool flip = true;   ///< horizontal flip with probability 1/2
  float fill = 0.0f;  ///< value of the padding (the normalized black background)
};

/// A batch of training images [N, 1, H, W] gathered by index, randomly shifted by up to `pad`
/// pixels (= crop of the padded image) and flipped; deterministic given rng.
Tensor augmented_batch(const Tensor& images, std::span<const int64_t> idx, const AugmentParams& a,
                       Rng& rng) {
  const int64_t H = images.dim(2), W = images.dim(3), n = static_cast<int64_t>(idx.size());
  Tensor out = Tensor::empty(Shape{n, 1, H, W});  // [N, 1, H, W]
  const float* src = images.data<float>();
  float* dst = out.data<float>();
  const auto span = static_cast<uint64_t>(2 * a.pad + 1);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t dy = static_cast<int64_t>(rng.below(span)) - a.pad;
    const int64_t dx = static_cast<int64_t>(rng.below(span)) - a.pad;
    const bool flip = a.flip && rng.below(2) == 1;
    const float* s = src + idx[static_cast<size_t>(k)] * H * W;
    float* d = dst + k * H * W;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sy = y + dy, sx0 = x + dx, sx = flip ? W - 1 - sx0 : sx0;
        d[y * W + x] = sy >= 0 && sy < H && sx0 >= 0 && sx0 < W ? s[sy * W + sx] : a.fill;
      }
  }
  return out;
}

std::string hms(double seconds) { return quant::format_time(seconds); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(const std::vector<std::string>& argv) {
  cli::Args args(
      "train_fashion_mnist",
      "Trains resnet18_cifar or mobilenet_v2 (CIFAR strides; in_channels 1, 10 classes) on\n"
      "Fashion-MNIST with brecq and saves the weights as F16 safetensors (metadata: arch, width,\n"
      "strides, normalization, accuracy).",
      {{.name = "--data",
        .value_name = "DIR",
        .help = "Fashion-MNIST IDX files",
        .default_value = std::string(FashionMnist::default_dir)},
       {.name = "--out",
        .value_name = "FILE",
        .help = "weights output (safetensors, F16)",
        .required = true},
       {.name = "--arch",
        .value_name = "resnet18_cifar|mobilenet_v2",
        .help = "architecture",
        .default_value = "resnet18_cifar"},
       {.name = "--width",
        .value_name = "N",
        .help = "resnet18_cifar: base width (64 = torchvision's ResNet-18)",
        .default_value = "16"},
       {.name = "--width-mult",
        .value_name = "X",
        .help = "mobilenet_v2: width multiplier",
        .default_value = "1"},
       {.name = "--epochs", .value_name = "N", .help = "training epochs", .default_value = "20"},
       {.name = "--batch", .value_name = "N", .help = "batch size", .default_value = "128"},
       {.name = "--lr",
        .value_name = "X",
        .help = "peak learning rate (cosine to 0, per step)",
        .default_value = "0.1"},
       {.name = "--pad",
        .value_name = "N",
        .help = "random-crop padding in pixels (0 = off)",
        .default_value = "2"},
       {.name = "--no-flip", .help = "no random horizontal flips"},
       {.name = "--train-limit",
        .value_name = "N",
        .help = "train on the first N images only (0 = all 60,000; for timing)",
        .default_value = "0"},
       {.name = "--seed", .value_name = "N", .help = "random seed", .default_value = "1"}});
  if (!args.parse(argv)) return 0;
  const std::string data_dir = args.get_dir("--data");
  const std::string out = args.get("--out");
  const auto out_dir = std::filesystem::absolute(out).parent_path();
  if (!std::filesystem::is_directory(out_dir))
    args.fail("flag --out expects a file in an existing folder, got '" + out + "'");
  const std::string arch = args.get_choice("--arch", {"resnet18_cifar", "mobilenet_v2"});
  const bool mobilenet = arch == "mobilenet_v2";
  if (mobilenet && args.has("--width"))
    args.fail("flag --width is resnet18_cifar's base width; mobilenet_v2 takes --width-mult");
  if (!mobilenet && args.has("--width-mult"))
    args.fail("flag --width-mult is mobilenet_v2's; resnet18_cifar takes --width");
  const int64_t width = args.get_int("--width", 1, 512);
  const float width_mult = args.get_float("--width-mult", 0.0f, 4.0f);
  if (width_mult == 0.0f)
    args.fail("flag --width-mult expects a number in (0, 4], got '" + args.get("--width-mult") +
              "'");
  const int64_t epochs = args.get_int("--epochs", 1, 1000);
  const int64_t batch = args.get_int("--batch", 2, 4096);
  const int64_t pad = args.get_int("--pad", 0, 8);
  const int64_t train_limit = args.get_int("--train-limit", 0);
  const auto seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  const float lr = args.get_float("--lr", 0.0f, 10.0f);
  if (lr == 0.0f)
    args.fail("flag --lr expects a number in (0, 10], got '" + args.get("--lr") + "'");

  const MnistParams norm{.normalize = true};
  const FashionMnist train = FashionMnist::load(MnistSplit::train, norm, data_dir);
  const FashionMnist test = FashionMnist::load(MnistSplit::test, norm, data_dir);
  const int64_t n_train = train_limit > 0 ? std::min(train_limit, train.size()) : train.size();

  const nn::ModelOptions model_options =
      mobilenet ? nn::ModelOptions{.num_classes = 10,
                                   .in_channels = 1,
                                   .width_mult = width_mult,
                                   .small_input_stem = true}
                : nn::ModelOptions{.num_classes = 10, .in_channels = 1, .base_width = width};
  nn::Model model = nn::make_model(arch, model_options);
  Rng init_rng(seed);
  nn::init_kaiming(model, init_rng);
  std::vector<Tensor> params = model.parameters();
  int64_t n_params = 0;
  for (Tensor& p : params) {
    p.set_requires_grad(true);
    n_params += p.numel();
  }
  Sgd opt(params, {.lr = lr, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = true});
  const AugmentParams aug{
      .pad = pad, .flip = !args.has("--no-flip"), .fill = -norm.mean / norm.std};
  const int64_t steps_per_epoch = n_train / batch;  // drop the last partial batch
  if (steps_per_epoch == 0)
    args.fail("flag --batch expects at most the " + std::to_string(n_train) +
              " training images, got " + std::to_string(batch));
  const int64_t total_steps = epochs * steps_per_epoch;
  const std::string size_text =
      mobilenet ? "mobilenet_v2 width " + args.get("--width-mult") + ", CIFAR strides"
                : "resnet18_cifar base width " + std::to_string(width);
  std::printf(
      "%s (%lld parameters), %lld training images, batch %lld,"
      " %lld epochs, lr %g cosine, SGD nesterov momentum 0.9 wd 5e-4, crop pad %lld, flip %s,"
      " seed %llu, %d threads\n",
      size_text.c_str(), static_cast<long long>(n_params), static_cast<long long>(n_train),
      static_cast<long long>(batch), static_cast<long long>(epochs), lr,
      static_cast<long long>(pad), aug.flip ? "on" : "off", static_cast<unsigned long long>(seed),
      num_threads());
  std::fflush(stdout);

  nn::ForwardHooks train_hooks;
  train_hooks.training = true;  // BatchNorm: batch statistics, running statistics updated
  const auto forward_eval = [&](const Tensor& x) { return model.forward(x); };
  const auto start = std::chrono::steady_clock::now();
  Rng aug_rng(seed * 0x9E3779B97F4A7C15ull + 1);
  int64_t step = 0;
  nn::Accuracy final_test;
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int64_t> order =
        seeded_permutation(n_train, seed + 1000 + static_cast<uint64_t>(epoch));
    nn::Accuracy train_acc;
    double loss_sum = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
      const std::span<const int64_t> idx(order.data() + b * batch, static_cast<size_t>(batch));
      std::vector<int> labels;
      for (int64_t i : idx) labels.push_back(train.labels()[static_cast<size_t>(i)]);
      const Tensor x = augmented_batch(train.images(), idx, aug, aug_rng);
      opt.set_lr(cosine_lr(lr, step, total_steps));
      const Tensor logits = model.forward(x, train_hooks);
      const Tensor loss = cross_entropy(logits, labels);
      loss_sum += loss.item();
      nn::score(logits.detach(), labels, train_acc);
      backward(loss);
      opt.step();
      opt.zero_grad();
    }
    const double train_seconds = seconds_since(t0);
    final_test = nn::evaluate(forward_eval, test, {.batch = 500});
    std::printf(
        "epoch %3lld/%lld  loss %.4f  train %6.2f %%  test %6.2f %%  lr %.4f  %6.1f s"
        " (+%.1f s test)  total %s\n",
        static_cast<long long>(epoch + 1), static_cast<long long>(epochs),
        loss_sum / static_cast<double>(steps_per_epoch), train_acc.top1_percent(),
        final_test.top1_percent(), opt.lr(), train_seconds, final_test.seconds,
        hms(seconds_since(start)).c_str());
    std::fflush(stdout);
  }

  const double total = seconds_since(start);
  char acc_text[32];
  std::snprintf(acc_text, sizeof acc_text, "%.2f", final_test.top1_percent());
  std::map<std::string, std::string> meta{{"arch", arch},
                                          {"in_channels", "1"},
                                          {"dataset", "fashion-mnist"},
                                          {"normalize_mean", std::to_string(norm.mean)},
                                          {"normalize_std", std::to_string(norm.std)},
                                          {"epochs", std::to_string(epochs)},
                                          {"seed", std::to_string(seed)},
                                          {"test_top1_f32", acc_text}};
  if (mobilenet) {
    meta["width_mult"] = args.get("--width-mult");
    meta["small_input_stem"] = "1";
  } else {
    meta["base_width"] = std::to_string(width);
  }
  nn::save_weights(model, out, {.metadata = meta, .float_storage = FloatStorage::f16});
  // What users get: the F16 file loaded back.
  const nn::Model saved = driver::load_model(arch, out).model;
  const nn::Accuracy a =
      nn::evaluate([&](const Tensor& x) { return saved.forward(x); }, test, {.batch = 500});
  std::printf("trained in %s; wrote %s (%.1f KiB, F16): test top-1 %.2f %% (F32 %.2f %%)\n",
              hms(total).c_str(), out.c_str(),
              static_cast<double>(std::filesystem::file_size(out)) / 1024.0, a.top1_percent(),
              final_test.top1_percent());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return brecq::cli::run_program("train_fashion_mnist", argc, argv, run);
}
