// Layer analysis (quant/analyze.hpp): a planted weight outlier is found and named, SQNR grows
// with the bit-width, the JSON report parses, the statistics are right on known inputs, and bad
// settings are refused.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../support.hpp"
#include "brecq/io/safetensors_core.hpp"
#include "brecq/quant/analyze.hpp"
#include "tiny_model.hpp"

namespace brecq::test::analyze {

/// Calibration batches [n, 3, 8, 8] of seeded Gaussian images.
inline std::vector<Tensor> calib_batches(int batches, int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<Tensor> out;
  for (int b = 0; b < batches; ++b) out.push_back(Tensor::randn(Shape{n, 3, 8, 8}, rng));
  return out;
}

/// The tiny residual model with one weight of `layer` planted at `factor` times the largest.
inline nn::Model with_outlier(const std::string& layer, float factor) {
  nn::Model m = tiny_resnet(4, 5, 11);
  for (nn::Layer* l : m.layers())
    if (l->name == layer) {
      Tensor w = l->weight.contiguous().clone();
      float* p = w.data<float>();
      float mx = 0;
      for (int64_t i = 0; i < w.numel(); ++i) mx = std::max(mx, std::fabs(p[i]));
      p[w.numel() / 2 + 1] = factor * mx;
      l->weight = w;
    }
  return m;
}

inline const quant::LayerAnalysis& find_layer(const quant::AnalysisReport& r,
                                              const std::string& name) {
  for (const quant::LayerAnalysis& a : r.layers)
    if (a.name == name) return a;
  FAIL("no layer ", name);
  return r.layers.front();
}

inline bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST_CASE("analyze: a planted weight outlier is flagged with the outlier reason") {
  // (layer2.0.conv2 has 576 weights: max/std can reach sqrt(576) = 24.)
  const nn::Model m = with_outlier("layer2.0.conv2", 30.0f);
  const quant::LayerAnalyzer a(m, calib_batches(2, 8, 3), {.w_bits = 4, .a_bits = 4});
  const quant::AnalysisReport& r = a.report();
  REQUIRE(r.layers.size() == m.layers().size());
  const quant::LayerAnalysis& bad = find_layer(r, "layer2.0.conv2");
  CAPTURE(bad.weight.max_abs_over_std);
  CHECK(bad.weight.max_abs_over_std > quant::kWeightOutlierRatio);
  CHECK(bad.flagged());
  CHECK(has(bad.causes, "weight outliers"));
  CHECK(has(bad.suggestions, "keep weights at 8 bits"));
  // No other layer has outliers (the same seeded model without the plant).
  for (const quant::LayerAnalysis& l : r.layers)
    if (l.name != bad.name) {
      CAPTURE(l.name);
      CHECK(l.weight.max_abs_over_std < quant::kWeightOutlierRatio);
      CHECK_FALSE(has(l.causes, "weight outliers"));
    }
  // The suggestion can be applied to a QuantModel's settings.
  const quant::QuantSettings s = quant::suggested_settings(r, {.w_bits = 4, .a_bits = 4});
  CHECK(s.layer_w_bits.at("layer2.0.conv2") == 8);
  CHECK_FALSE(s.layer_w_bits.count("conv1"));  // first and last layers keep first_last_bits
  CHECK_FALSE(s.layer_w_bits.count("fc"));
  CHECK_FALSE(s.point_a_bits.count("input"));  // the image keeps input_bits
  const quant::QuantSettings one = quant::suggested_settings(r, {.w_bits = 4, .a_bits = 4}, 1);
  CHECK(one.layer_w_bits.size() + one.point_a_bits.size() == 1);
}

TEST_CASE("analyze: a wide per-channel spread is a cause for per-tensor weights only") {
  nn::Model m = tiny_resnet(4, 5, 11);
  for (nn::Layer* l : m.layers())
    if (l->name == "layer1.0.conv2") {
      Tensor w = l->weight.contiguous().clone();
      const int64_t per = w.numel() / w.dim(0);
      for (int64_t i = 0; i < per; ++i) w.data<float>()[i] *= 20.0f;  // channel 0: 20x wider
      l->weight = w;
    }
  const std::vector<Tensor> calib = calib_batches(1, 8, 3);
  const quant::LayerAnalyzer tensor(m, calib, {.w_bits = 4, .a_bits = 0, .per_channel = false});
  const quant::LayerAnalyzer channel(m, calib, {.w_bits = 4, .a_bits = 0});
  const quant::LayerAnalysis& t = find_layer(tensor.report(), "layer1.0.conv2");
  const quant::LayerAnalysis& c = find_layer(channel.report(), "layer1.0.conv2");
  CHECK(t.weight.channel_spread > quant::kChannelSpreadRatio);
  CHECK(t.weight.wide_channels == doctest::Approx(0.25));  // 1 of 4 channels
  CHECK(has(t.causes, "wide per-channel spread"));
  CHECK(has(t.suggestions, "per-channel weights"));
  CHECK_FALSE(has(c.causes, "wide per-channel spread"));
}

TEST_CASE("analyze: SQNR of every layer is higher at 8 bits than at 2 bits") {
  const nn::Model m = tiny_resnet(4, 5, 5);
  const std::vector<Tensor> calib = calib_batches(2, 8, 9);
  const quant::LayerAnalyzer a8(m, calib, {.w_bits = 8, .a_bits = 8});
  const quant::LayerAnalyzer a2(m, calib, {.w_bits = 2, .a_bits = 2});
  const auto& r8 = a8.report().layers;
  const auto& r2 = a2.report().layers;
  REQUIRE(r8.size() == r2.size());
  for (size_t i = 0; i < r8.size(); ++i) {
    CAPTURE(r8[i].name);
    CHECK(r8[i].weight_sqnr > r2[i].weight_sqnr + 20);
    CHECK(r8[i].weight_sqnr_gauss > r2[i].weight_sqnr_gauss + 20);
    CHECK(r8[i].logit_sqnr_w > r2[i].logit_sqnr_w);
    CHECK(r8[i].logit_sqnr_a > r2[i].logit_sqnr_a);
    CHECK(r8[i].logit_sqnr > r2[i].logit_sqnr);
    CHECK(r8[i].out_sqnr > r2[i].out_sqnr);
    // Quantizing weights and input together is noisier than either alone.
    CHECK(r2[i].logit_sqnr <= std::min(r2[i].logit_sqnr_w, r2[i].logit_sqnr_a) + 1.0);
  }
  // A Gaussian at 2 bits: about 9 dB; at 8 bits about 40 dB.
  CHECK(r2.back().weight_sqnr_gauss > 8);
  CHECK(r2.back().weight_sqnr_gauss < 14);
  CHECK(r8.back().weight_sqnr_gauss > 35);
}

TEST_CASE("analyze: only the named layer and its input point are quantized") {
  const nn::Model m = tiny_resnet(4, 5, 5);
  const std::vector<Tensor> calib = calib_batches(1, 4, 2);
  const quant::LayerAnalyzer a(m, calib, {.w_bits = 2, .a_bits = 2});
  const nn::Model& f = a.folded_model();
  const Tensor fp = f.forward(calib[0]);
  // Neither part quantized: exactly the FP model.
  for (size_t i = 0; i < a.report().layers.size(); ++i) {
    const Tensor y = a.forward_only(calib[0], i, false, false);
    CHECK(std::isinf(quant::detail::sqnr_db(fp, y)));
  }
  // Input points: the image for the stem, the block input for a block's first layer and for its
  // shortcut, the previous layer's output inside a block.
  const auto& L = a.report().layers;
  CHECK(find_layer(a.report(), "conv1").in_point_name == "input");
  CHECK(find_layer(a.report(), "layer1.0.conv2").in_point_name == "layer1.0.conv1");
  CHECK(find_layer(a.report(), "layer2.0.conv1").in_point_name == "layer1.0");
  CHECK(find_layer(a.report(), "layer2.0.downsample").in_point_name == "layer1.0");
  CHECK(find_layer(a.report(), "fc").in_point_name == "layer2.0");
  CHECK(L.size() == 7);
}

TEST_CASE("analyze: accuracy drops, ranking and the JSON report") {
  const nn::Model m = with_outlier("layer2.0.conv2", 40.0f);
  const std::vector<Tensor> calib = calib_batches(2, 8, 4);
  quant::LayerAnalyzer a(m, calib, {.w_bits = 2, .a_bits = 4});
  // Labels: the FP model's own predictions, so that the FP top-1 is 100 %.
  Rng rng(21);
  const Tensor images = Tensor::randn(Shape{40, 3, 8, 8}, rng);
  std::vector<int> labels;
  {
    NoGrad ng;
    for (int64_t c : quant::detail::argmax_rows(a.folded_model().forward(images)))
      labels.push_back(static_cast<int>(c));
  }
  const TensorDataset ds(images, labels);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < 40; ++i) idx.push_back(i);
  a.measure_accuracy(ds, idx, 16);
  quant::AnalysisReport& r = a.report();
  r.eval_source = "test \"set\"";
  CHECK(r.eval_images == 40);
  CHECK(r.fp_top1 == doctest::Approx(100.0));
  REQUIRE(r.ranking.size() == r.layers.size());
  for (size_t k = 0; k + 1 < r.ranking.size(); ++k)
    CHECK(r.layers[r.ranking[k]].drop >= r.layers[r.ranking[k + 1]].drop);
  for (const quant::LayerAnalysis& l : r.layers) {
    CHECK(l.accuracy_measured);
    CHECK(l.drop == doctest::Approx(l.flips));  // labels = FP predictions
  }
  // Ranked by the changed predictions instead (random-weight models).
  quant::LayerAnalyzer b(m, calib, {.w_bits = 2, .a_bits = 4, .rank_by_flips = true});
  b.measure_accuracy(ds, idx, 16);
  const quant::AnalysisReport& rb = b.report();
  for (size_t k = 0; k + 1 < rb.ranking.size(); ++k)
    CHECK(rb.layers[rb.ranking[k]].flips >= rb.layers[rb.ranking[k + 1]].flips);
  CHECK(r.spearman_score_drop >= -1.0);
  CHECK(r.spearman_score_drop <= 1.0);

  using brecq::detail::io::Json;
  const std::string text = quant::analysis_json(r);
  const Json doc = brecq::detail::io::JsonParser(text, "analysis").parse_document();
  REQUIRE(doc.kind == Json::Kind::object);
  auto field = [](const Json& o, const std::string& k) -> const Json& {
    for (size_t i = 0; i < o.keys.size(); ++i)
      if (o.keys[i] == k) return o.items[i];
    FAIL("no key ", k);
    return o;
  };
  CHECK(field(doc, "format").text == quant::kAnalysisFormat);
  CHECK(field(doc, "eval_source").text == "test \"set\"");
  CHECK(field(doc, "w_bits").text == "2");
  const Json& layers = field(doc, "layers");
  REQUIRE(layers.kind == Json::Kind::array);
  REQUIRE(layers.items.size() == r.layers.size());
  CHECK(field(doc, "ranking").items.size() == r.layers.size());
  bool outlier_found = false;
  for (const Json& l : layers.items) {
    CHECK(field(field(l, "sqnr_db"), "weight").kind == Json::Kind::number);
    CHECK(field(l, "drop").kind == Json::Kind::number);
    if (field(l, "name").text == "layer2.0.conv2")
      for (const Json& c : field(l, "causes").items) outlier_found |= c.text == "weight outliers";
  }
  CHECK(outlier_found);
  // The table names every layer and the diagnosis.
  const std::string table = quant::analysis_table(r);
  for (const quant::LayerAnalysis& l : r.layers) CHECK(table.find(l.name) != std::string::npos);
  CHECK(table.find("weight outliers") != std::string::npos);
}

TEST_CASE("analyze: statistics on known values") {
  // Spearman: monotone = 1, reversed = -1, ties averaged.
  CHECK(quant::spearman({1, 2, 3, 4}, {10, 20, 30, 45}) == doctest::Approx(1.0));
  CHECK(quant::spearman({1, 2, 3, 4}, {4, 3, 2, 1}) == doctest::Approx(-1.0));
  CHECK(quant::spearman({1, 2, 3}, {5, 5, 5}) == 0.0);
  CHECK(quant::spearman({1, 2, 3, 4}, {1, 1, 2, 2}) == doctest::Approx(0.894427).epsilon(1e-5));
  // Weights [4 channels, 2]: ranges 2, 2, 2, 8 -> spread 4, one channel above 3 x median.
  const Tensor w =
      Tensor::from_vector(Shape{4, 2}, {-1.0f, 1.0f, 0.0f, 2.0f, -2.0f, 0.0f, -4.0f, 4.0f});
  const quant::WeightStats s = quant::weight_stats(w);
  CHECK(s.channels == 4);
  CHECK(s.channel_spread == doctest::Approx(4.0));
  CHECK(s.wide_channels == doctest::Approx(0.25));
  // mean 0, std sqrt((1+1+0+4+4+0+16+16)/8) = sqrt(5.25); max|w| = 4.
  CHECK(s.max_abs_over_std == doctest::Approx(4.0 / std::sqrt(5.25)));
  // Activations 0..999 and one value 10000: percentiles and tail ratio.
  std::vector<float> v;
  for (int i = 0; i < 1000; ++i) v.push_back(static_cast<float>(i));
  v.push_back(10000.0f);
  const quant::ActStats a = quant::act_stats(v);
  CHECK(a.min == 0.0);
  CHECK(a.max == 10000.0);
  CHECK(a.p_high == doctest::Approx(999.0));  // position 0.999 * 1000 = 999
  CHECK(a.tail_ratio == doctest::Approx(10000.0 / 999.0));
}

TEST_CASE("analyze: bad settings are refused") {
  const nn::Model m = tiny_resnet(4, 5, 5);
  const std::vector<Tensor> calib = calib_batches(1, 4, 2);
  check_error([&] { quant::LayerAnalyzer(m, calib, {.w_bits = 1}); }, {"weight bits", "1"});
  check_error([&] { quant::LayerAnalyzer(m, calib, {.w_bits = 4, .a_bits = 9}); },
              {"activation bits", "9"});
  check_error([&] { quant::LayerAnalyzer(m, calib, {.act_images = 0}); },
              {"activation images", "0"});
  check_error([&] { quant::LayerAnalyzer(m, {}, {}); }, {"no calibration batch"});
  Rng rng(1);
  check_error(
      [&] {
        quant::LayerAnalyzer(m, {Tensor::randn(Shape{2, 1, 8, 8}, rng)}, {});
      },
      {"calibration batches", "[2, 1, 8, 8]"});
  quant::LayerAnalyzer a(m, calib, {.w_bits = 4, .a_bits = 0});
  CHECK(a.report().layers.front().act.values == 0);  // weights only: no activation measured
  const TensorDataset ds(Tensor::randn(Shape{2, 3, 8, 8}, rng), {0, 7});
  const std::vector<int64_t> idx{0, 1};
  check_error([&] { a.measure_accuracy(ds, idx); }, {"label 7", "5 classes"});
  check_error([&] { a.measure_accuracy(ds, std::vector<int64_t>{}); }, {"no held-out image"});
}

}  // namespace brecq::test::analyze
