#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <sstream>

#include "../io/support.hpp"
#include "../support.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/quant/tune.hpp"
#include "tiny_model.hpp"
// The two subcommands, driven through the subcommand table (`brecq tune`, `brecq quantize`).
#include "../../tools/cli/quantize.cpp"
#include "../../tools/cli/tune.cpp"

using namespace brecq;
using namespace brecq::quant;

// Helpers and cases in a named namespace: the suite is a unity build.
namespace brecq::test::tune {

/// root/<class>/img<i>.png for classes "a" and "b", `per_class` random 8x8 (or `size`) images
/// each, seeded.
inline void write_folder(const fs::path& root, int per_class, uint64_t seed, int size = 8) {
  Rng rng(seed);
  for (const char* c : {"a", "b"}) {
    fs::create_directories(root / c);
    for (int i = 0; i < per_class; ++i) {
      std::vector<uint8_t> px(static_cast<size_t>(size * size * 3));
      for (uint8_t& v : px) v = static_cast<uint8_t>(rng.below(256));
      const fs::path p = root / c / ("img" + std::to_string(i) + ".png");
      REQUIRE(stbi_write_png(p.string().c_str(), size, size, 3, px.data(), size * 3));
    }
  }
}

/// An ImageSource that records the path of every image it loads.
class RecordingSource : public ImageSource {
 public:
  explicit RecordingSource(const ImageSource& inner) : inner_(inner) {}
  int64_t size() const override { return inner_.size(); }
  Tensor load(int64_t i) const override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      read_.push_back(inner_.name(i));
      indices_.push_back(i);
    }
    return inner_.load(i);
  }
  int label(int64_t i) const override { return inner_.label(i); }
  std::string name(int64_t i) const override { return inner_.name(i); }
  std::vector<std::string> read() const { return read_; }
  std::vector<int64_t> indices() const { return indices_; }

 private:
  const ImageSource& inner_;
  mutable std::mutex mu_;
  mutable std::vector<std::string> read_;
  mutable std::vector<int64_t> indices_;
};

/// A small space (8 settings) for tiny_resnet, whose input quantizer needs a known range for
/// datafree.
inline TuneParams small_params() {
  TuneParams p;
  p.bits = {.w_bits = 4, .a_bits = 4};
  p.space.methods = {"minmax", "percentile", "datafree"};
  p.space.percentiles = {99.0f, 99.9f};
  p.space.per_channel = {true, false};
  p.space.symmetric = {false};
  p.space.w_range = {RangeInit::minmax};
  p.space.bias_correction = {false};
  p.trials = 5;
  p.images = 24;
  p.heldout = 8;
  p.batch = 8;
  p.input_range = ActivationRange{0.0f, 1.0f};  // plain [0, 1] pixels
  return p;
}

inline bool under(const std::string& path, const fs::path& dir) {
  const std::string d = fs::absolute(dir).lexically_normal().string();
  const std::string p = fs::absolute(path).lexically_normal().string();
  return p.rfind(d, 0) == 0;
}

/// The UsageError message of `brecq tune` with these flags ("" if none is thrown).
inline std::string tune_usage_error(const std::vector<std::string>& argv) {
  try {
    cli::tune_command::run(argv);
  } catch (const cli::UsageError& e) {
    return e.what();
  }
  return "";
}

inline int run_subcommand(const std::string& name, const std::vector<std::string>& argv) {
  for (const cli::Subcommand& s : cli::subcommands())
    if (s.name == name) return s.run(argv);
  FAIL("no subcommand ", name);
  return -1;
}

inline std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

/// A resnet20_cifar state dict with seeded random weights and BatchNorm statistics.
inline std::string random_resnet20(const fs::path& dir) {
  nn::Model m = nn::make_model("resnet20_cifar");
  randomize(m, 11);
  const std::string path = (dir / "r20.safetensors").string();
  nn::save_weights(m, path);
  return path;
}

TEST_CASE("tune: the search reads only the calibration images, its split, never the test folder") {
  TempDir root("tune_reads");
  write_folder(root.path / "calib", 16, 1);
  write_folder(root.path / "test", 16, 2);
  const FolderSource calib((root.path / "calib").string(), {});
  const RecordingSource source(calib);
  const nn::Model fp = tiny_resnet(4, 2);
  const TuneParams p = small_params();
  const TuneReport r = quant::tune(fp, source, p);

  const std::vector<std::string> read = source.read();
  REQUIRE_FALSE(read.empty());
  for (const std::string& path : read) {
    CAPTURE(path);
    CHECK(under(path, root.path / "calib"));
    CHECK_FALSE(under(path, root.path / "test"));
  }
  // What it read is exactly the split: each of its images once, nothing else.
  std::vector<int64_t> split = r.heldout_indices;
  split.insert(split.end(), r.calib_indices.begin(), r.calib_indices.end());
  std::vector<int64_t> got = source.indices();
  std::sort(split.begin(), split.end());
  std::sort(got.begin(), got.end());
  CHECK(got == split);
  // The held-out part and the calibration part are disjoint, of the asked sizes.
  CHECK(r.heldout_indices.size() == static_cast<size_t>(p.heldout));
  CHECK(r.calib_indices.size() == static_cast<size_t>(p.images - p.heldout));
  const std::set<int64_t> held(r.heldout_indices.begin(), r.heldout_indices.end());
  CHECK(held.size() == r.heldout_indices.size());
  for (int64_t i : r.calib_indices) CHECK_FALSE(held.count(i));
  for (int64_t i : split) CHECK((i >= 0 && i < source.size()));
}

TEST_CASE("tune: the CLI takes no test folder") {
  for (const char* flag : {"--data", "--test"}) {
    const std::string msg = tune_usage_error({"--model", "resnet20_cifar", "--weights", "w",
                                              "--calib", "c", "--out", "o", flag, "somewhere"});
    CAPTURE(msg);
    CHECK(contains(msg, flag));
    CHECK(contains(msg, "never reads test images"));
  }
  CHECK(contains(tune_usage_error({"--data=x"}), "--data"));
}

TEST_CASE("tune: the seeded search is reproducible; the best trial is the max of the trials") {
  TempDir root("tune_seed");
  write_folder(root.path / "calib", 16, 3);
  const FolderSource calib((root.path / "calib").string(), {});
  const nn::Model fp = tiny_resnet(4, 2);
  TuneParams p = small_params();
  const TuneReport a = quant::tune(fp, calib, p);
  const TuneReport b = quant::tune(fp, calib, p);
  REQUIRE(a.trials.size() == 5);
  REQUIRE(b.trials.size() == a.trials.size());
  for (size_t t = 0; t < a.trials.size(); ++t) {
    CHECK(a.trials[t].setting.describe() == b.trials[t].setting.describe());
    CHECK(a.trials[t].score == b.trials[t].score);
  }
  CHECK(a.best == b.best);
  CHECK(a.heldout_indices == b.heldout_indices);
  // Distinct settings, drawn from the space.
  std::set<std::string> seen;
  for (const TuneTrial& t : a.trials) seen.insert(t.setting.describe());
  CHECK(seen.size() == a.trials.size());

  // Best: the first trial with the highest score; the model kept scores what the trial did.
  double top = -1;
  size_t first = 0;
  for (size_t t = 0; t < a.trials.size(); ++t)
    if (a.trials[t].score > top) top = a.trials[t].score, first = t;
  CHECK(a.best == first);
  CHECK(a.trials[a.best].score == top);
  REQUIRE(a.best_model.has_value());
  const TuneSetting& s = a.trials[a.best].setting;
  CHECK(a.best_model->settings.first_last_bits == s.first_last_bits);
  // Recompute the best trial's held-out agreement from its model and the FP model.
  std::vector<int64_t> idx = a.heldout_indices;
  const Batch held = gather(quant::tune_detail::SourceDataset{&calib, false}, idx);
  const std::vector<int> fp_pred = quant::tune_detail::argmax_rows(fp.forward(held.images));
  const std::vector<int> q_pred =
      quant::tune_detail::argmax_rows(a.best_model->forward(held.images));
  int64_t same = 0;
  for (size_t i = 0; i < fp_pred.size(); ++i) same += fp_pred[i] == q_pred[i];
  CHECK(a.trials[a.best].score ==
        doctest::Approx(100.0 * static_cast<double>(same) / static_cast<double>(idx.size())));
  CHECK(a.fp_score == 100.0);

  // Another seed: another split (and draw).
  p.seed = 7;
  const TuneReport c = quant::tune(fp, calib, p);
  CHECK(c.heldout_indices != a.heldout_indices);

  // Grid: every setting of the space, in enumerate's order.
  p.search = TuneSearch::grid;
  const TuneReport g = quant::tune(fp, calib, p);
  const std::vector<TuneSetting> all = enumerate(p.space);
  REQUIRE(g.trials.size() == all.size());
  CHECK(all.size() == 8);  // minmax 2 + percentile 2x2 + datafree 2
  for (size_t t = 0; t < all.size(); ++t)
    CHECK(g.trials[t].setting.describe() == all[t].describe());

  // The report lists every trial and the best.
  const std::string json = tune_report_json(a, small_params());
  CHECK(contains(json, "\"best\": " + std::to_string(a.best)));
  CHECK(contains(json, "\"search\": \"random\""));
  CHECK(std::count(json.begin(), json.end(), '{') == 1 + static_cast<long>(a.trials.size()));
}

TEST_CASE("tune: labels score the held-out images against the class folders") {
  TempDir root("tune_labels");
  write_folder(root.path / "calib", 12, 4);
  const FolderSource calib((root.path / "calib").string(), {});
  const nn::Model fp = tiny_resnet(4, 2);
  TuneParams p = small_params();
  p.score = TuneScore::labels;
  p.trials = 2;
  const TuneReport r = quant::tune(fp, calib, p);
  const Batch held = gather(quant::tune_detail::SourceDataset{&calib, true}, r.heldout_indices);
  nn::Accuracy a;
  nn::score(fp.forward(held.images), held.labels, a);
  CHECK(r.fp_score == doctest::Approx(a.top1_percent()));
  for (const TuneTrial& t : r.trials) CHECK((t.score >= 0 && t.score <= 100));
}

TEST_CASE("tune: bad parameters are refused") {
  TempDir root("tune_bad");
  write_folder(root.path / "calib", 4, 5);
  const FolderSource calib((root.path / "calib").string(), {});
  const nn::Model fp = tiny_resnet(4, 2);
  auto refused = [&](const std::function<void(TuneParams&)>& change,
                     const std::vector<std::string>& parts) {
    TuneParams p = small_params();
    p.images = 8;
    p.heldout = 2;
    change(p);
    check_error([&] { quant::tune(fp, calib, p); }, parts);
  };
  refused([](TuneParams& p) { p.images = 9; }, {"images", "[2, 8]", "9"});
  refused([](TuneParams& p) { p.heldout = 8; }, {"heldout", "[1, 7]", "8"});
  refused([](TuneParams& p) { p.trials = 9; }, {"trials", "[1, 8]", "9"});
  refused([](TuneParams& p) { p.bits.a_bits = 0; }, {"activation bits", "0"});
  refused([](TuneParams& p) { p.space.methods = {"kl", "best"}; }, {"method", "'best'"});
  refused([](TuneParams& p) { p.space.per_channel.clear(); }, {"at least one value"});
  refused([](TuneParams& p) { p.space.percentiles = {0.0f}; }, {"percentile", "(0, 100]"});
  refused([](TuneParams& p) { p.space.first_last_bits = {9}; }, {"first/last", "9"});
  refused(
      [](TuneParams& p) {
        p.input_range.reset();
        p.search = TuneSearch::grid;
      },
      {"datafree", "input_range"});
}

TEST_CASE("tune: the CLI refuses bad flags, naming the flag, what it expects and what it got") {
  TempDir root("tune_flags");
  write_folder(root.path / "calib", 4, 6);
  const std::string weights = random_resnet20(root.path);
  const std::vector<std::string> base{"--model",   "resnet20_cifar",
                                      "--weights", weights,
                                      "--calib",   (root.path / "calib").string(),
                                      "--out",     (root.path / "o.safetensors").string()};
  auto error = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = base;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return tune_usage_error(argv);
  };
  struct Case {
    std::vector<std::string> flags;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases{
      {{"--methods", "kl,best"}, {"--methods", "minmax, ema, percentile, mse, kl", "'best'"}},
      {{"--methods", "kl,kl"}, {"--methods", "once", "'kl'"}},
      {{"--methods", "kl,"}, {"--methods", "'kl,'"}},
      {{"--percentiles", "99,101"}, {"--percentiles", "(0, 100]", "'101'"}},
      {{"--percentiles", "x"}, {"--percentiles", "'x'"}},
      {{"--per-channel-weights", "yes"}, {"--per-channel-weights", "on, off", "'yes'"}},
      {{"--symmetric-weights", "on,maybe"}, {"--symmetric-weights", "'maybe'"}},
      {{"--w-range", "mse"}, {"--w-range", "lp, minmax", "'mse'"}},
      {{"--first-last-bits", "9"}, {"--first-last-bits", "[2, 8]", "'9'"}},
      {{"--bias-correction", "1"}, {"--bias-correction", "on, off", "'1'"}},
      {{"--search", "bayes"}, {"--search", "random, grid", "'bayes'"}},
      {{"--search", "grid", "--trials", "3"}, {"--trials", "grid", "3"}},
      {{"--trials", "0"}, {"--trials", "[1, ", "'0'"}},
      {{"--trials", "100000"}, {"--trials", "'100000'"}},
      {{"--score", "test"}, {"--score", "agreement, labels", "'test'"}},
      {{"--calib-size", "100", "--heldout", "10"}, {"--calib-size", "8 images", "'100'"}},
      {{"--calib-size", "8", "--heldout", "8"}, {"--heldout", "[1, 7]", "'8'"}},
      {{"--a-bits", "0"}, {"--a-bits", "[2, 8]", "'0'"}},
      {{"--w-bits", "1"}, {"--w-bits", "[2, 8]", "'1'"}},
      {{"--input-bits", "1"}, {"--input-bits", "'1'"}},
      {{"--batch", "0"}, {"--batch", ">= 1", "'0'"}},
      {{"--seed", "-1"}, {"--seed", "'-1'"}},
      {{"--momentum", "1"}, {"--momentum", "'1'"}},
      {{"--report", (root.path / "no" / "r.json").string()}, {"--report", "existing folder"}}};
  for (const Case& c : cases) {
    const std::string msg = error(c.flags);
    CAPTURE(msg);
    CAPTURE(c.flags[0]);
    REQUIRE_FALSE(msg.empty());
    for (const std::string& part : c.parts) CHECK_MESSAGE(contains(msg, part), "missing ", part);
  }
  CHECK(contains(tune_usage_error({"--calib", "c"}), "missing required flag"));
}

TEST_CASE("tune: the CLI writes the best setting's quantized file and a JSON report") {
  TempDir root("tune_cli");
  write_folder(root.path / "calib", 8, 7);
  const std::string weights = random_resnet20(root.path);
  const std::string out = (root.path / "best.safetensors").string();
  const std::string report = (root.path / "report.json").string();
  const std::vector<std::string> argv{"--model",
                                      "resnet20_cifar",
                                      "--weights",
                                      weights,
                                      "--calib",
                                      (root.path / "calib").string(),
                                      "--out",
                                      out,
                                      "--report",
                                      report,
                                      "--calib-size",
                                      "16",
                                      "--heldout",
                                      "6",
                                      "--batch",
                                      "8",
                                      "--methods",
                                      "minmax,datafree",
                                      "--w-range",
                                      "minmax",
                                      "--bias-correction",
                                      "off",
                                      "--symmetric-weights",
                                      "off,on",
                                      "--trials",
                                      "3"};
  REQUIRE(run_subcommand("tune", argv) == 0);
  const SafetensorsFile f(out);
  REQUIRE(f.metadata().count("method"));
  CHECK(f.metadata().at("method").rfind("tuned calibration baseline: method=", 0) == 0);
  const QuantModel qm = load_quantized(out);
  CHECK(qm.settings.w_bits == 4);
  CHECK(qm.settings.a_bits == 4);
  const std::string json = read_text(report);
  CHECK(contains(json, "\"trials\": [{\"index\": 0"));
  CHECK(contains(json, "\"best_setting\": "));
  CHECK(contains(json, "\"heldout_images\": 6"));
  CHECK(contains(json, "\"calibration_images\": 10"));
  CHECK(contains(json, "\"index\": 2"));
  CHECK_FALSE(contains(json, "\"index\": 3"));
}

TEST_CASE("quantize --method adaround is layer-wise reconstruction, named as such") {
  TempDir root("adaround_alias");
  write_folder(root.path / "calib", 4, 8);
  const std::string weights = random_resnet20(root.path);
  auto args = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a{"--model",
                               "resnet20_cifar",
                               "--weights",
                               weights,
                               "--calib",
                               (root.path / "calib").string(),
                               "--out",
                               (root.path / out).string(),
                               "--w-bits",
                               "4",
                               "--a-bits",
                               "4",
                               "--calib-size",
                               "8",
                               "--act-init-images",
                               "4",
                               "--batch",
                               "4",
                               "--iters-w",
                               "2",
                               "--iters-a",
                               "2",
                               "--no-progress"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  REQUIRE(run_subcommand("quantize", args("alias.safetensors", {"--method", "adaround"})) == 0);
  REQUIRE(run_subcommand("quantize", args("layer.safetensors", {"--granularity", "layer"})) == 0);
  const std::string name = "layer-wise AdaRound (Nagel et al. 2020)";
  CHECK(SafetensorsFile((root.path / "alias.safetensors").string()).metadata().at("method") ==
        name);
  CHECK(SafetensorsFile((root.path / "layer.safetensors").string()).metadata().at("method") ==
        name);
  // The alias is exactly --granularity layer: the same bytes.
  CHECK(read_text(root.path / "alias.safetensors") == read_text(root.path / "layer.safetensors"));

  auto refused = [&](std::vector<std::string> extra, const std::vector<std::string>& parts) {
    std::string msg;
    try {
      run_subcommand("quantize", args("x.safetensors", std::move(extra)));
    } catch (const cli::UsageError& e) {
      msg = e.what();
    }
    CAPTURE(msg);
    REQUIRE_FALSE(msg.empty());
    for (const std::string& p : parts) CHECK_MESSAGE(contains(msg, p), "missing ", p);
  };
  refused({"--method", "adaround", "--granularity", "block"},
          {"--method adaround", "--granularity layer", "'block'"});
  refused({"--method", "adaround", "--recipe", "qdrop"},
          {"--method adaround", "--recipe brecq", "'qdrop'"});
  refused({"--method", "adaquant"}, {"--method", "brecq, adaround", "'adaquant'"});
}

}  // namespace brecq::test::tune
