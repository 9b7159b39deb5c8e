// brecq qat: quantization-aware training, the trained baseline BRECQ is measured against: the
// fake-quantized model fine-tuned (straight-through rounding, LSQ steps, BatchNorm folded in the
// graph with frozen statistics) by distillation from the FP model on the calibration images, or
// by cross-entropy on a labelled training folder; writes the same quantized file as `brecq
// quantize`, so that `brecq eval --quantized` and `brecq infer` take it. A checkpoint OUT.ckpt
// after every epoch; rerunning the same command resumes.
#include "brecq/quant/qat.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/quant/serialize.hpp"
#include "quant_flags.hpp"

namespace {

using namespace brecq;

std::string number(double x) {
  std::ostringstream s;
  s << x;
  return s.str();
}

std::vector<cli::Flag> flags() {
  const quant::QatSettings d;
  return cli::fp_model_flags(
      cli::bit_flags(
          4, 4,
          {{.name = "--train",
            .value_name = "DIR",
            .help = "labelled training folder (root/<class>/<image>, labels from the sorted class "
                    "folders), instead of --calib"},
           {.name = "--out",
            .value_name = "FILE",
            .help = "quantized model output (safetensors)",
            .required = true},
           {.name = "--epochs",
            .value_name = "N",
            .help = "passes over the training images",
            .default_value = std::to_string(d.epochs)},
           {.name = "--batch",
            .value_name = "N",
            .help = "images per step",
            .default_value = std::to_string(d.batch)},
           {.name = "--optimizer",
            .value_name = "sgd|adam",
            .help = "for weights and steps alike",
            .default_value = "adam"},
           {.name = "--lr",
            .value_name = "X",
            .help = "learning rate of weights, biases and BatchNorm (cosine to 0)",
            .default_value = number(d.lr)},
           {.name = "--lr-steps",
            .value_name = "X",
            .help = "learning rate of the weight and activation step sizes (cosine to 0)",
            .default_value = number(d.lr_steps)},
           {.name = "--momentum",
            .value_name = "M",
            .help = "SGD momentum, in [0, 1)",
            .default_value = number(d.momentum)},
           {.name = "--weight-decay",
            .value_name = "X",
            .help = "on weights, biases and BatchNorm",
            .default_value = number(d.weight_decay)},
           {.name = "--loss",
            .value_name = "kd|ce",
            .help = "kd: KL to the FP model's predictions (unlabelled images); ce: cross-entropy "
                    "with the labels of --train (default: ce with --train, kd otherwise)"},
           {.name = "--weight-steps",
            .value_name = "learned|fixed",
            .help = "weight step sizes learned by LSQ, or kept at their initial L2.4 search",
            .default_value = "learned"},
           {.name = "--augment",
            .value_name = "on|off",
            .help = "random crop (zero padding by --augment-pad) and horizontal flip",
            .default_value = "on"},
           {.name = "--augment-pad",
            .value_name = "N",
            .help = "padding of the random crop",
            .default_value = std::to_string(d.augment_pad)},
           {.name = "--calib-size",
            .value_name = "N",
            .help = "calibration images (with --calib)",
            .default_value = "1024"},
           {.name = "--train-size",
            .value_name = "N",
            .help = "training images taken from --train (seeded shuffle), 0 for all",
            .default_value = "0"},
           {.name = "--act-init-images",
            .value_name = "N",
            .help = "images for the activation range initialisation",
            .default_value = std::to_string(d.act_init_images)},
           {.name = "--seed",
            .value_name = "N",
            .help = "image choice, shuffles and augmentation",
            .default_value = "1029"},
           cli::preprocess_flag(),
           {.name = "--data",
            .value_name = "DIR",
            .help = "evaluate the start and the result here"},
           cli::no_progress_flag()}),
      "unlabelled; or --train");
}

int run(const std::vector<std::string>& argv) {
  cli::Args args("qat",
                 "Quantization-aware training (a baseline for BRECQ): the fake-quantized model "
                 "fine-tuned with\nstraight-through rounding, LSQ step sizes and BatchNorm "
                 "folded in the graph (statistics\nfrozen), by distillation from the FP model on "
                 "the calibration images or cross-entropy on\n--train. A checkpoint OUT.ckpt is "
                 "written after every epoch; rerunning the same command\nresumes. Models: " +
                     nn::model_names_list() + ".",
                 flags());
  if (!args.parse(argv)) return 0;
  const auto start = std::chrono::steady_clock::now();

  const std::string model_name = args.get_choice("--model", nn::model_names());
  const std::string weights = args.get_file("--weights");
  const std::string out = args.get_output("--out");
  if (args.has("--calib") == args.has("--train"))
    args.fail(std::string("expected exactly one of --calib DIR (unlabelled, distillation) and "
                          "--train DIR (labelled), got ") +
              (args.has("--calib") ? "both" : "neither"));
  const bool labelled = args.has("--train");
  const std::string dir = labelled ? args.get_dir("--train") : args.get_dir("--calib");
  const quant::QuantSettings qs = cli::quant_bits(args);
  quant::QatSettings s;
  s.epochs = args.get_int("--epochs", 1, 100000);
  s.batch = args.get_int("--batch", 1, 1 << 20);
  s.optimizer = quant::parse_qat_optimizer(args.get_choice("--optimizer", {"sgd", "adam"}));
  s.lr = args.get_float("--lr", 0.0f, 10.0f);
  s.lr_steps = args.get_float("--lr-steps", 0.0f, 10.0f);
  s.momentum = args.get_float("--momentum", 0.0f, 0.999f);
  s.weight_decay = args.get_float("--weight-decay", 0.0f, 1.0f);
  const std::string loss = args.has("--loss") ? args.get_choice("--loss", {"kd", "ce"})
                                              : std::string(labelled ? "ce" : "kd");
  if (loss == "ce" && !labelled)
    args.fail(
        "flag --loss ce needs labels: give --train DIR instead of --calib (calibration images "
        "are taken as unlabelled, as in BRECQ), got --loss ce with --calib");
  s.loss = quant::parse_qat_loss(loss);
  s.learn_weight_steps = args.get_choice("--weight-steps", {"learned", "fixed"}) == "learned";
  const bool augment = args.get_choice("--augment", {"on", "off"}) == "on";
  s.augment_pad = augment ? args.get_int("--augment-pad", 0, 1024) : 0;
  s.augment_flip = augment;
  if (!augment && args.has("--augment-pad"))
    args.fail("flag --augment-pad needs --augment on, got --augment off");
  const int64_t calib_size = args.get_int("--calib-size", 1);
  const int64_t train_size = args.get_int("--train-size", 0);
  if (labelled && args.has("--calib-size"))
    args.fail("flag --calib-size applies to --calib; with --train use --train-size");
  if (!labelled && args.has("--train-size"))
    args.fail("flag --train-size applies to --train; with --calib use --calib-size");
  s.act_init_images = args.get_int("--act-init-images", 1);
  s.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  if (args.has("--no-progress")) s.progress = nullptr;
  const ImagePreprocess pre = cli::image_preprocess(args, model_name);

  const ImageFolder folder(dir, pre);
  const int64_t n = labelled ? (train_size > 0 ? train_size : folder.size()) : calib_size;
  check(n <= folder.size(), "flag ", labelled ? "--train-size" : "--calib-size", " asks for ", n,
        " images but ", labelled ? "--train" : "--calib", " '", dir, "' holds ", folder.size());
  if (s.act_init_images > n)
    args.fail("flag --act-init-images asks for " + std::to_string(s.act_init_images) +
              " images, more than the " + std::to_string(n) + " training images");

  std::ostringstream key;
  key << "qat model=" << model_name << " weights=" << std::filesystem::absolute(weights).string()
      << " bytes=" << std::filesystem::file_size(weights) << (labelled ? " train=" : " calib=")
      << dir << " n=" << n << " w=" << qs.w_bits << " a=" << qs.a_bits
      << " fl=" << qs.first_last_bits << " in=" << qs.input_bits << " epochs=" << s.epochs
      << " batch=" << s.batch << " optimizer=" << args.get("--optimizer") << " lr=" << s.lr
      << " lr_steps=" << s.lr_steps << " momentum=" << s.momentum << " wd=" << s.weight_decay
      << " loss=" << loss << " weight_steps=" << args.get("--weight-steps")
      << " augment=" << (augment ? "on" : "off") << " pad=" << s.augment_pad
      << " act_init=" << s.act_init_images << " seed=" << s.seed;
  std::printf("brecq %s\n  threads %d\n", key.str().c_str(), num_threads());
  std::fflush(stdout);

  const driver::LoadedModel fp = driver::load_model(model_name, weights);
  std::optional<LabeledImages> data;  // streamed: decoded batch by batch at each evaluation
  if (args.has("--data")) {
    data.emplace(args.get_dir("--data"), pre);
    check(data->max_label() < fp.model.num_classes, "--data folder '", args.get("--data"),
          "' has class index ", data->max_label(), " but ", model_name, " has only ",
          fp.model.num_classes, " outputs");
  }
  Batch images = load_image_folder(
      dir,
      {.preprocess = pre, .limit = n == folder.size() ? 0 : n, .shuffle = true, .seed = s.seed});
  if (labelled)
    check(images.labels.empty() ||
              *std::max_element(images.labels.begin(), images.labels.end()) < fp.model.num_classes,
          "--train folder '", dir, "' has ", folder.classes().size(), " classes but ", model_name,
          " has only ", fp.model.num_classes, " outputs");
  if (s.augment_pad >= images.images.dim(2) || s.augment_pad >= images.images.dim(3))
    args.fail("flag --augment-pad expects less than the image size " +
              std::to_string(images.images.dim(2)) + "x" + std::to_string(images.images.dim(3)) +
              ", got '" + std::to_string(s.augment_pad) + "'");
  quant::QatData train{.images = images.images};
  if (labelled) train.labels = images.labels;

  auto report = [&](const std::string& what, const quant::QuantModel& qm) {
    if (!data) return;
    const nn::Accuracy a = driver::evaluate(driver::quantized_forward(qm), *data,
                                            {.label = what, .progress = s.progress});
    std::printf("%s\n", driver::accuracy_line(what, a).c_str());
    std::fflush(stdout);
  };
  if (data) {
    const quant::QatTrainer at_start(fp.model, qs, train, s);
    report("start (nearest, L2.4)", at_start.quantized());
  }
  const quant::QatRunOptions run{
      .checkpoint = out + ".ckpt",
      .key = "weights=" + std::filesystem::absolute(weights).string() + " dir=" + dir,
      .on_epoch_done = [](const quant::QatEpochReport& e) {
        std::printf("epoch %lld: mean training loss %.5g (%.1f s)\n",
                    static_cast<long long>(e.epoch), e.train_loss, e.seconds);
        std::fflush(stdout);
      }};
  quant::QatResult r = quant::run_qat(fp.model, qs, std::move(train), s, run);
  std::printf("%s loss over the training images: %.5g -> %.5g; training %.1f s", loss.c_str(),
              r.report.loss_before, r.report.loss_after, r.report.seconds);
  if (r.report.resumed_epochs)
    std::printf(" (resumed after %lld epochs)", static_cast<long long>(r.report.resumed_epochs));
  std::printf("\n");
  if (qs.a_bits > 0)
    std::printf("conv biases on the int32 accumulator grid: largest change %.3g\n",
                quant::snap_biases(r.model));
  quant::save_quantized(r.model, fp.options, out, {{"settings", key.str()}});
  std::printf("wrote %s\nwall time %.1f s\n", out.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  std::fflush(stdout);
  report("QAT", r.model);
  return 0;
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"qat",
     "quantization-aware training (LSQ, straight-through rounding, distillation) to a quantized "
     "file",
     run});

}  // namespace
