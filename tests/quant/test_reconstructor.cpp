#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>

#include "../support.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/quant/brecq.hpp"
#include "tiny_model.hpp"

using namespace brecq;
using namespace brecq::quant;

namespace {

Tensor calibration(int64_t n = 64) {
  Rng rng(99);
  return Tensor::randn(Shape{n, 3, 8, 8}, rng);
}

ReconstructionSettings short_settings() {
  ReconstructionSettings s;
  s.iters_w = 120;
  s.iters_a = 40;
  s.batch = 16;
  s.progress = nullptr;
  s.act_init_images = 32;
  return s;
}

using brecq::test::temp_path;

/// The saved state of two quantized models is bit for bit the same.
void check_same_quantized(const QuantModel& x, const QuantModel& y) {
  auto a = quantized_tensors(x), b = quantized_tensors(y);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    CHECK(a[i].first == b[i].first);
    REQUIRE(a[i].second.nbytes() == b[i].second.nbytes());
    CHECK(std::memcmp(a[i].second.raw_data(), b[i].second.raw_data(), a[i].second.nbytes()) == 0);
  }
}

}  // namespace

TEST_CASE("Fisher-weighted loss equals the MSE loss when every gradient is one") {
  Rng rng(1);
  Tensor a = Tensor::randn(Shape{4, 3, 5, 5}, rng), b = Tensor::randn(Shape{4, 3, 5, 5}, rng);
  const float mse = reconstruction_loss(a, b, Tensor(), 2.0f).item();
  const float fisher = reconstruction_loss(a, b, Tensor::ones(a.shape()), 2.0f).item();
  CHECK(fisher == doctest::Approx(mse).epsilon(1e-6));
  // sum over channels, mean over batch and positions (the official lp_loss)
  double expect = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    expect += std::pow(a.data<float>()[i] - b.data<float>()[i], 2.0);
  CHECK(mse == doctest::Approx(expect / (4 * 25)).epsilon(1e-5));
}

TEST_CASE("granularities cut the same model description into units") {
  nn::Model m = test::tiny_resnet();
  CHECK(LayerGranularity::units(m).size() == 6);  // 2 + 2 + downsample + fc; stem excluded
  CHECK(BlockGranularity::units(m).size() == 3);
  CHECK(StageGranularity::units(m).size() == 3);
  CHECK(NetworkGranularity::units(m).size() == 1);
  CHECK(NetworkGranularity::units(m)[0].last_block == m.blocks.size());
}

TEST_CASE(
    "every granularity reconstructs W2A4 and lowers the reconstruction loss below nearest "
    "rounding") {
  const Tensor calib = calibration();
  for (const char* g : {"layer", "block", "stage", "network"}) {
    CAPTURE(g);
    QuantModel qm(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
    BrecqReport rep = run_brecq(g, qm, calib, short_settings());
    double before = 0, after = 0;
    for (const UnitReport& r : rep.units)
      if (r.pass == "weights") before += r.loss_before, after += r.loss_after;
    CHECK(after < before);
    CHECK(qm.quantizes_activations());
    for (size_t p = 0; p < qm.act_q.size(); ++p) CHECK(qm.act_q[p].initialized());
    NoGrad ng;
    Tensor logits = qm.forward(calib.narrow(0, 0, 4));
    CHECK(logits.shape() == Shape{4, 5});
    for (float v : logits.to_vector()) CHECK(std::isfinite(v));
  }
}

TEST_CASE("Fisher loss runs with weights >= 1 taken from the KL gradient") {
  QuantModel qm(test::tiny_resnet(), {.w_bits = 2, .a_bits = 0});
  ReconstructionSettings s = short_settings();
  s.loss = ReconLoss::fisher;
  BrecqReport rep = run_brecq("block", qm, calibration(), s);
  CHECK(rep.units.size() == 3);
  double before = 0, after = 0;
  for (const UnitReport& r : rep.units) {
    CHECK(r.loss_after <= r.loss_before * 1.001);
    before += r.loss_before, after += r.loss_after;
  }
  CHECK(after < before);
}

TEST_CASE("an interrupted run resumes from its checkpoint and ends with the same result") {
  const Tensor calib = calibration();
  const std::string ckpt = temp_path("resume.ckpt");
  std::filesystem::remove(ckpt);
  ReconstructionSettings s = short_settings();

  QuantModel full(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  run_brecq("layer", full, calib, s);

  QuantModel interrupted(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  struct Interrupt {};
  BrecqRunOptions o{.checkpoint = ckpt, .key = "test"};
  o.on_unit_done = [](const std::string& pass, size_t done) {
    if (pass == "activations" && done == 2) throw Interrupt{};
  };
  CHECK_THROWS_AS(run_brecq("layer", interrupted, calib, s, o), Interrupt);
  CHECK(std::filesystem::exists(ckpt));

  QuantModel resumed(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  BrecqReport rep = run_brecq("layer", resumed, calib, s, {.checkpoint = ckpt, .key = "test"});
  CHECK(rep.resumed_weight_units == 6);
  CHECK(rep.resumed_act_units == 2);
  CHECK_FALSE(std::filesystem::exists(ckpt));
  check_same_quantized(full, resumed);
}

TEST_CASE("the activation part rerun on saved rounding ends where the full run ended") {
  const Tensor calib = calibration();
  const ReconstructionSettings s = short_settings();
  QuantModel full(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  run_brecq("block", full, calib, s);
  const std::string path = temp_path("rounding.safetensors");
  save_quantized(full, {}, path);

  QuantModel rerun(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  load_weight_rounding(rerun, path);
  BrecqReport rep = run_brecq("block", rerun, calib, s, {.rounding_installed = true});
  for (const UnitReport& r : rep.units) CHECK(r.pass == "activations");
  CHECK(rep.units.size() == 2);  // the two blocks; the FC has no activation point to learn
  check_same_quantized(full, rerun);

  // Rounding learned for other bit-widths or other FP weights is refused.
  QuantModel w3(test::tiny_resnet(), {.w_bits = 3, .a_bits = 4});
  CHECK_THROWS_WITH_AS(load_weight_rounding(w3, path),
                       doctest::Contains("this run quantizes it to 3 bits"), Error);
  nn::Model other = test::tiny_resnet();
  other.blocks[1].layers[0].bn->bias = Tensor::ones(other.blocks[1].layers[0].bn->bias.shape());
  QuantModel moved(other, {.w_bits = 2, .a_bits = 4});
  CHECK_THROWS_WITH_AS(load_weight_rounding(moved, path), doctest::Contains("other FP weights"),
                       Error);
  std::filesystem::remove(path);
}

TEST_CASE("the qdrop recipe learns rounding and activation steps in one pass and resumes exactly") {
  const Tensor calib = calibration();
  ReconstructionSettings s = short_settings();
  s.recipe = Recipe::qdrop;
  s.qdrop = 0.5f;
  s.lr_a_joint = 1e-3f;  // few iterations: a visible step change
  QuantModel init(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  {
    Reconstructor<BlockGranularity> rec(init, calib, s);
    REQUIRE(rec.joint());
    rec.init_activations();  // from the FP model: what the joint pass starts from
  }
  QuantModel full(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  BrecqReport rep = run_brecq("block", full, calib, s);
  REQUIRE(rep.units.size() == 3);
  double before = 0, after = 0;
  for (const UnitReport& r : rep.units) {
    CAPTURE(r.unit);
    CHECK(r.pass == "weights");                     // no separate activation pass
    CHECK(r.loss_after <= r.loss_before * 1.0001);  // the 8-bit head may stay at nearest rounding
    before += r.loss_before, after += r.loss_after;
  }
  CHECK(after < before);
  CHECK(full.quantizes_activations());
  int moved = 0;
  for (size_t p = 0; p < full.act_q.size(); ++p) {
    REQUIRE(full.act_q[p].initialized());
    moved += full.act_q[p].scale.item() != init.act_q[p].scale.item();
  }
  CHECK(moved >= 4);  // the points inside the reconstructed blocks (the stem's output is not)

  const std::string ckpt = temp_path("qdrop.ckpt");
  std::filesystem::remove(ckpt);
  QuantModel interrupted(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  struct Interrupt {};
  BrecqRunOptions o{.checkpoint = ckpt, .key = "qdrop"};
  o.on_unit_done = [](const std::string&, size_t done) {
    if (done == 2) throw Interrupt{};
  };
  CHECK_THROWS_AS(run_brecq("block", interrupted, calib, s, o), Interrupt);
  QuantModel resumed(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  CHECK(run_brecq("block", resumed, calib, s, {.checkpoint = ckpt, .key = "qdrop"})
            .resumed_weight_units == 2);
  check_same_quantized(full, resumed);
}

TEST_CASE("the qdrop recipe learns each unit on the quantized model's inputs") {
  const Tensor calib = calibration();
  ReconstructionSettings s = short_settings();
  s.recipe = Recipe::qdrop;
  s.qdrop = 0.5f;
  s.iters_w = 0;  // rounding stays nearest, steps stay at their initial values
  QuantModel qm(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  const BrecqReport rep = run_brecq("block", qm, calib, s);
  REQUIRE(rep.units.back().unit == "head");
  // The head's loss before learning, recomputed on the whole quantized model's logits against
  // the FP model's: its input must come from the quantized blocks before it.
  NoGrad ng;
  const Tensor quantized = qm.forward(calib);  // the deployed model
  const Tensor fp = qm.forward(calib, ForwardMode::fp());
  const double expect = reconstruction_loss(quantized, fp, Tensor(), s.p_w).item();
  REQUIRE(expect > 1e-3);
  CHECK(rep.units.back().loss_before == doctest::Approx(expect).epsilon(1e-4));
}

TEST_CASE("a checkpoint written with other settings is refused with both settings named") {
  const std::string ckpt = temp_path("mismatch.ckpt");
  QuantModel qm(test::tiny_resnet(), {.w_bits = 2});
  ReconstructionSettings s = short_settings();
  s.iters_w = 5;
  struct Interrupt {};
  BrecqRunOptions o{.checkpoint = ckpt, .key = "settings A"};
  o.on_unit_done = [](const std::string&, size_t) { throw Interrupt{}; };
  CHECK_THROWS_AS(run_brecq("block", qm, calibration(), s, o), Interrupt);
  QuantModel other(test::tiny_resnet(), {.w_bits = 2});
  CHECK_THROWS_WITH_AS(
      run_brecq("block", other, calibration(), s, {.checkpoint = ckpt, .key = "settings B"}),
      doctest::Contains("settings B"), Error);
  std::filesystem::remove(ckpt);
}

TEST_CASE("run_brecq called as in the README refuses a checkpoint written with other settings") {
  const std::string ckpt = temp_path("readme.ckpt");
  std::filesystem::remove(ckpt);
  const Tensor calib = calibration();
  ReconstructionSettings s = short_settings();
  s.iters_w = 5;
  struct Interrupt {};
  auto interrupted = [&](const ReconstructionSettings& rs) {
    QuantModel qm(test::tiny_resnet(), {.w_bits = 2});
    BrecqRunOptions o{.checkpoint = ckpt};
    o.on_unit_done = [](const std::string&, size_t) { throw Interrupt{}; };
    CHECK_THROWS_AS(run_brecq("block", qm, calib, rs, o), Interrupt);
    REQUIRE(std::filesystem::exists(ckpt));
  };
  auto resume = [&](const QuantModel& start, const Tensor& data, const ReconstructionSettings& rs,
                    const std::string& granularity = "block") {
    QuantModel qm = start;
    return run_brecq(granularity, qm, data, rs, {.checkpoint = ckpt});
  };
  // The fields of this run's identity that the checkpoint's lacks, from the refusal.
  auto differs = [&](const QuantModel& start, const Tensor& data, const ReconstructionSettings& rs,
                     const std::string& granularity = "block") {
    try {
      resume(start, data, rs, granularity);
    } catch (const Error& e) {
      const std::string m = e.what();
      const size_t at = m.find("differs: ");
      REQUIRE(at != std::string::npos);
      return m.substr(at + 9, m.find('\n', at) - at - 9);
    }
    FAIL("the checkpoint was not refused");
    return std::string();
  };
  const QuantModel fresh(test::tiny_resnet(), {.w_bits = 2});
  ReconstructionSettings other = s;
  other.lambda = 0.02f;
  interrupted(s);
  CHECK(differs(fresh, calib, other) == "lambda=0.0199999996");
  CHECK(differs(fresh, calib, s, "layer") == "granularity=layer");
  CHECK(differs(fresh, calibration(65), s).ends_with(" n=65"));
  Tensor moved = calib.clone();
  moved.data<float>()[7] += 1.0f;
  CHECK(differs(fresh, moved, s).starts_with("calib="));
  CHECK(
      differs(QuantModel(test::tiny_resnet(4, 5, 8), {.w_bits = 2}), calib, s).starts_with("fp="));
  const std::string bits = differs(QuantModel(test::tiny_resnet(), {.w_bits = 3}), calib, s);
  CHECK(bits.starts_with("state="));
  CHECK(bits.ends_with(" w_bits=3"));
  const int threads = num_threads();
  set_num_threads(threads + 1);
  CHECK(differs(fresh, calib, s) == "threads=" + std::to_string(threads + 1));
  set_num_threads(threads);
  // The same settings resume, and end as an uninterrupted run.
  const BrecqReport rep = resume(fresh, calib, s);
  CHECK(rep.resumed_weight_units == 1);
  CHECK_FALSE(std::filesystem::exists(ckpt));
  QuantModel resumed = fresh, full = fresh;
  interrupted(s);
  run_brecq("block", resumed, calib, s, {.checkpoint = ckpt});
  run_brecq("block", full, calib, s);
  check_same_quantized(full, resumed);
}

TEST_CASE("architecture presets: applied unless the caller chose the setting, and named") {
  ReconstructionSettings s;
  const std::string line = apply_preset(s, "mobilenet_v2", {});
  CHECK(s.lambda == doctest::Approx(0.1f));
  CHECK(line.find("preset for mobilenet_v2: rounding regulariser lambda 0.1") == 0);
  CHECK(line.find("issue #16") != std::string::npos);
  ReconstructionSettings chosen;
  chosen.lambda = 0.01f;
  CHECK(apply_preset(chosen, "mobilenet_v2", {.lambda = true})
            .find("overridden by the explicit "
                  "lambda 0.01") != std::string::npos);
  CHECK(chosen.lambda == doctest::Approx(0.01f));
  ReconstructionSettings plain;
  CHECK(apply_preset(plain, "resnet20_cifar", {}).empty());
  CHECK(plain.lambda == doctest::Approx(ReconstructionSettings{}.lambda));
  CHECK_THROWS_WITH_AS(apply_preset(plain, "mobilenet_v3", {}),
                       doctest::Contains("unknown model 'mobilenet_v3'"), Error);
}

TEST_CASE("granularity names are validated") {
  QuantModel qm(test::tiny_resnet(), {.w_bits = 4});
  CHECK_THROWS_WITH_AS(run_brecq("blocks", qm, calibration(), short_settings()),
                       doctest::Contains("got 'blocks'"), Error);
}

TEST_CASE(
    "MobileNetV2 and ResNet-18 (random weights) run BRECQ W2A4 end to end and lower the "
    "reconstruction loss") {
  struct Case {
    nn::Model model;
    size_t units;  // reconstructed at block granularity: every block but the stem, and the head
  };
  Case cases[] = {
      {nn::mobilenet_v2({.num_classes = 10, .width_mult = 0.35}), 19},  // 17 blocks, last 1x1, fc
      {nn::resnet18({.num_classes = 10, .base_width = 8}), 9}};         // 8 BasicBlocks, fc
  Rng rng(3);
  const Tensor calib = Tensor::randn(Shape{32, 3, 32, 32}, rng);
  for (Case& c : cases) {
    CAPTURE(c.model.arch);
    Rng init(5);
    nn::init_kaiming(c.model, init);
    // BatchNorm statistics of the calibration data (momentum 1: one pass sets them), so that the
    // signal neither vanishes nor explodes through the random network.
    for (nn::Layer* l : c.model.layers())
      if (l->bn) l->bn->momentum = 1.0f;
    {
      NoGrad ng;
      c.model.forward(calib, {.training = true});
    }
    ReconstructionSettings s = short_settings();
    s.iters_w = 40;
    s.iters_a = 10;
    s.batch = 8;
    s.act_init_images = 16;
    QuantModel qm(c.model, {.w_bits = 2, .a_bits = 4});
    BrecqReport rep = run_brecq("block", qm, calib, s);
    size_t weight_units = 0;
    double before = 0, after = 0;
    for (const UnitReport& r : rep.units) {
      if (r.pass != "weights") continue;
      ++weight_units;
      CAPTURE(r.unit);
      CHECK(r.loss_before > 1e-6);
      // 40 iterations leave some units at nearest rounding (the AdaRound start): never worse
      CHECK(r.loss_after <= r.loss_before * 1.0001);
      before += r.loss_before, after += r.loss_after;
    }
    CHECK(after < before);
    CHECK(weight_units == c.units);
    NoGrad ng;
    for (float v : qm.forward(calib.narrow(0, 0, 2)).to_vector()) CHECK(std::isfinite(v));
  }
}

TEST_CASE("progress goes to the sink given in the settings, one finished report per unit pass") {
  const Tensor calib = calibration();
  QuantModel qm(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  ReconstructionSettings s = short_settings();
  s.iters_w = 30;
  s.iters_a = 10;
  std::vector<std::string> finished;
  int64_t reports = 0, last_done = 0, last_total = 0;
  s.progress = [&](const ProgressEvent& e) {
    CHECK(e.total > 0);
    CHECK(e.done <= e.total);
    CHECK(e.elapsed_s >= 0.0);
    if (e.finished) {
      CHECK(e.done == e.total);
      finished.emplace_back(e.label);
      return;
    }
    ++reports, last_done = e.done, last_total = e.total;
    CHECK(e.status.find("rec ") == 0);  // the caller's status: the current losses
  };
  const BrecqReport rep = run_brecq("block", qm, calib, s);
  REQUIRE(finished.size() == rep.units.size());
  CHECK(reports >= static_cast<int64_t>(rep.units.size()));  // the last step is always reported
  CHECK(last_done == last_total);
  for (size_t i = 0; i < rep.units.size(); ++i) {
    CAPTURE(finished[i]);
    CHECK(finished[i].find(rep.units[i].unit) != std::string::npos);
  }
}

TEST_CASE("unit caches in memory-mapped files give the same result as in memory") {
  const Tensor calib = calibration();
  const std::string dir = temp_path("unit_cache");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  for (const Recipe recipe : {Recipe::brecq, Recipe::qdrop}) {
    CAPTURE(static_cast<int>(recipe));
    ReconstructionSettings s = short_settings();
    s.recipe = recipe;
    s.qdrop = recipe == Recipe::qdrop ? 0.5f : 0.0f;
    s.loss = ReconLoss::fisher;  // the Fisher weights are cached too
    QuantModel in_memory(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
    run_brecq("block", in_memory, calib, s);
    s.cache_dir = dir;
    QuantModel mapped(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
    run_brecq("block", mapped, calib, s);
    check_same_quantized(in_memory, mapped);
  }
  CHECK(std::filesystem::is_empty(dir));  // the temporary files are unlinked at creation
  std::filesystem::remove_all(dir);

  ReconstructionSettings missing = short_settings();
  missing.cache_dir = dir;
  QuantModel qm(test::tiny_resnet(), {.w_bits = 2, .a_bits = 4});
  CHECK_THROWS_WITH_AS(run_brecq("block", qm, calib, missing),
                       doctest::Contains("activation cache folder: expected an existing folder"),
                       Error);
}

TEST_CASE("RowStack refuses batches that do not fit and an unfilled result") {
  quant::detail::RowStack rows(3, "");
  rows.push(Tensor::full(Shape{2, 4}, 1.0f));
  CHECK_THROWS_WITH_AS(rows.push(Tensor::full(Shape{1, 5}, 1.0f)),
                       doctest::Contains("does not fit"), Error);
  CHECK_THROWS_WITH_AS(rows.push(Tensor::full(Shape{2, 4}, 1.0f)),
                       doctest::Contains("does not fit"), Error);
  CHECK_THROWS_WITH_AS(rows.take(), doctest::Contains("2 of 3 rows filled"), Error);
  rows.push(Tensor::full(Shape{1, 4}, 2.0f));
  const Tensor t = rows.take();
  CHECK(t.shape() == Shape{3, 4});
  CHECK(t.data<float>()[7] == 1.0f);
  CHECK(t.data<float>()[8] == 2.0f);
}

TEST_CASE("brecq quantize and the library called here write the same quantized model") {
  // Two programs, one computation: the command line's defaults are the library's, and nothing
  // in the build lets the two programs round differently (tests/build/test_fp_contract.cpp).
#ifndef BRECQ_QUANTIZE_CLI
  MESSAGE("skipped: brecq_quantize_cli is not part of this build");
#else
  const std::string shared = BRECQ_SHARED_DIR;
  const std::string weights = shared + "/models/resnet20_cifar10.safetensors";
  const std::string calib_dir = shared + "/data/cifar10/calib";
  if (!std::filesystem::exists(BRECQ_QUANTIZE_CLI) || !std::filesystem::exists(weights) ||
      !std::filesystem::is_directory(calib_dir)) {
    MESSAGE("skipped: needs " BRECQ_QUANTIZE_CLI " and ../shared's ResNet-20 and calibration");
    return;
  }
  const std::string out = temp_path("cross_program.safetensors");
  std::filesystem::remove(out);
  const std::string cmd = std::string(BRECQ_QUANTIZE_CLI) +
                          " quantize --model resnet20_cifar --weights '" + weights + "' --calib '" +
                          calib_dir +
                          "' --calib-size 32 --act-init-images 16 --w-bits 2 --a-bits 4"
                          " --iters-w 30 --iters-a 10 --seed 5 --no-progress --out '" +
                          out + "' > " + out + ".log 2>&1";
  INFO(cmd);
  REQUIRE(std::system(cmd.c_str()) == 0);

  QuantModel here(driver::load_model("resnet20_cifar", weights).model, {.w_bits = 2, .a_bits = 4});
  ReconstructionSettings s;
  s.iters_w = 30;
  s.iters_a = 10;
  s.act_init_images = 16;
  s.seed = 5;
  s.progress = nullptr;
  const Batch calib = load_image_folder(
      calib_dir,
      {.preprocess = ImagePreprocess::cifar(), .limit = 32, .shuffle = true, .seed = s.seed});
  run_brecq("block", here, calib.images, s);
  snap_biases(here);  // as brecq quantize does before writing
  CHECK(quantized_difference(here, load_quantized(out)) == "");  // by value: -0 == 0
  std::filesystem::remove(out);
  std::filesystem::remove(out + ".log");
#endif
}
