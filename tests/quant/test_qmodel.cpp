#include <doctest/doctest.h>

#include "brecq/quant/qmodel.hpp"
#include "tiny_model.hpp"

using namespace brecq;
using namespace brecq::quant;

namespace {

Tensor images(int64_t n, uint64_t seed = 11) {
  Rng rng(seed);
  return Tensor::randn(Shape{n, 3, 8, 8}, rng);
}

bool same(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  const Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

}  // namespace

TEST_CASE("forward modes: FP, weights only, deployed, and quantized up to a point") {
  const nn::Model fp = test::tiny_resnet();
  QuantModel qm(fp, {.w_bits = 2, .a_bits = 4});
  const Tensor x = images(6);
  NoGrad ng;
  // With BatchNorm folded the FP mode is the FP model (up to the folding's rounding).
  const Tensor ref = fp.forward(x), out_fp = qm.forward(x, ForwardMode::fp());
  for (int64_t i = 0; i < ref.numel(); ++i)
    CHECK(out_fp.data<float>()[i] == doctest::Approx(ref.data<float>()[i]).epsilon(1e-4));
  // The deployed model needs its activation ranges; the error names the point.
  CHECK_THROWS_WITH_AS(qm.forward(x), doctest::Contains("(input) is not initialised"), Error);
  const Tensor w = qm.forward(x, ForwardMode::weights_only());
  CHECK_FALSE(same(w, out_fp));
  qm.init_activations(x);
  const Tensor wa = qm.forward(x);
  CHECK_FALSE(same(wa, w));
  // Quantized up to the last layer and point: the deployed model; up to nothing: FP.
  ForwardMode all{.last_layer = 100, .last_point = 100}, none{.last_layer = -1, .last_point = -1};
  CHECK(same(qm.forward(x, all), wa));
  CHECK(same(qm.forward(x, none), out_fp));
  // The mode is a value: passes in other modes leave the deployed model as it was.
  CHECK(same(qm.forward(x), wa));
  // QDrop: drop probability without a generator is refused; with one the output moves.
  CHECK_THROWS_WITH_AS(qm.forward(x, {.drop = 0.5f}), doctest::Contains("without a generator"),
                       Error);
  Rng rng(3);
  CHECK_FALSE(same(qm.forward(x, {.drop = 0.5f, .drop_rng = &rng}), wa));
}

TEST_CASE("soft rounding in a mode: the layers named use the rounding being learned") {
  QuantModel qm(test::tiny_resnet(), {.w_bits = 2});
  const nn::Layer& l = *qm.model.layers()[1];
  const AdaRound r = AdaRound::init(l.weight, qm.weight_q[static_cast<size_t>(l.id)]);
  NoGrad ng;
  const ForwardMode soft{.soft = {{l.id, &r}}};
  // At its start soft rounding reproduces the unrounded weight (inside the grid).
  const Tensor ws = qm.weight(l, soft), wh = qm.weight(l, {});
  CHECK(same(wh, qm.quantized_weight(l)));
  CHECK_FALSE(same(ws, wh));
  CHECK(same(qm.weight(*qm.model.layers()[2], soft), qm.quantized_weight(*qm.model.layers()[2])));
  CHECK(same(qm.weight(l, ForwardMode::fp()), l.weight));
}

TEST_CASE("observers: min-max over several batches equals min-max over their union") {
  const Tensor a = images(3, 1), b = images(5, 2);
  for (bool per_channel : {false, true}) {
    CAPTURE(per_channel);
    const QuantizerConfig c{.bits = 4, .per_channel = per_channel, .init = RangeInit::minmax};
    UniformQuantizer two{c}, one{c};
    MinMaxObserver o(c);
    if (per_channel) {
      o.observe(a);  // one tensor: [C, ...] channels first
      init_range(one, a);
    } else {
      o.observe(a);
      o.observe(b);
      init_range(one, cat({reshape(a, {a.numel()}), reshape(b, {b.numel()})}, 0));
    }
    o.decide(two);
    CHECK(same(two.scale, one.scale));
    CHECK(same(two.zero_point, one.zero_point));
  }
  MinMaxObserver o({.bits = 4, .per_channel = true});
  o.observe(images(3));
  CHECK_THROWS_WITH_AS(o.observe(images(4)), doctest::Contains("3 channels before, now 4"), Error);
  UniformQuantizer q{{.bits = 4}};
  CHECK_THROWS_WITH_AS(MinMaxObserver({.bits = 4}).decide(q), doctest::Contains("no batch"), Error);
}

TEST_CASE("observers: the L2.4 search over several batches searches their union") {
  const QuantizerConfig c{.bits = 3};
  const Tensor a = images(2, 4), b = images(3, 5);
  LpSearchObserver o(c);
  o.observe(a);
  o.observe(b);
  UniformQuantizer q{c}, ref{c};
  o.decide(q);
  init_range(ref, cat({reshape(a, {a.numel()}), reshape(b, {b.numel()})}, 0));
  CHECK(same(q.scale, ref.scale));
  LpSearchObserver w({.bits = 3, .per_channel = true});
  w.observe(a);
  CHECK_THROWS_WITH_AS(w.observe(b), doctest::Contains("one tensor"), Error);
}

TEST_CASE("activation ranges from several batches: each point sees them all") {
  const Tensor x = images(8);
  QuantModel one(test::tiny_resnet(), {.w_bits = 4, .a_bits = 4});
  QuantModel split(test::tiny_resnet(), {.w_bits = 4, .a_bits = 4});
  one.init_activations(x);
  // Min-max everywhere: the union of two halves is the whole batch.
  const ActivationInit minmax{
      .observer = [](const QuantizerConfig& c) { return std::make_unique<MinMaxObserver>(c); }};
  QuantModel whole(test::tiny_resnet(), {.w_bits = 4, .a_bits = 4});
  whole.init_activations(x, minmax);
  split.init_activations({x.narrow(0, 0, 3), x.narrow(0, 3, 5)}, minmax);
  int differ_from_search = 0;
  for (size_t p = 0; p < whole.act_q.size(); ++p) {
    CAPTURE(p);
    REQUIRE(split.act_q[p].initialized());
    CHECK(split.act_q[p].scale.item() ==
          doctest::Approx(whole.act_q[p].scale.item()).epsilon(1e-6));
    CHECK(split.act_q[p].zero_point.item() == whole.act_q[p].zero_point.item());
    differ_from_search += one.act_q[p].scale.item() != whole.act_q[p].scale.item();
  }
  CHECK(differ_from_search > 0);  // the default observer searches (the input's is min-max)
  CHECK_THROWS_WITH_AS(split.init_activations(std::vector<Tensor>{}),
                       doctest::Contains("no calibration batch"), Error);
}

TEST_CASE("bit-widths of single layers and points are set by name") {
  QuantModel qm(test::tiny_resnet(), {.w_bits = 4,
                                      .a_bits = 4,
                                      .layer_w_bits = {{"layer1.0.conv2", 3}, {"fc", 6}},
                                      .point_a_bits = {{"layer2.0", 5}, {"input", 6}}});
  CHECK(qm.weight_q[static_cast<size_t>(qm.layer("layer1.0.conv1").id)].config.bits == 4);
  CHECK(qm.weight_q[static_cast<size_t>(qm.layer("layer1.0.conv2").id)].config.bits == 3);
  CHECK(qm.weight_q[static_cast<size_t>(qm.layer("fc").id)].config.bits == 6);
  CHECK(qm.weight_q[static_cast<size_t>(qm.layer("conv1").id)].config.bits == 8);
  CHECK(qm.act_q[static_cast<size_t>(qm.point("layer2.0"))].config.bits == 5);
  CHECK(qm.act_q[static_cast<size_t>(qm.point("layer1.0"))].config.bits == 4);
  CHECK(qm.act_q[static_cast<size_t>(qm.point("input"))].config.bits == 6);
  CHECK(qm.point("input") == qm.model.input_point);
  CHECK(qm.point_name(qm.point("layer1.0.conv1")) == "layer1.0.conv1");
  // A weight-only model quantizes just the points named.
  QuantModel w(test::tiny_resnet(), {.w_bits = 4, .point_a_bits = {{"layer1.0", 4}}});
  CHECK(w.quantizes_activations());
  CHECK(w.act_enabled[static_cast<size_t>(w.point("layer1.0"))]);
  CHECK_FALSE(w.act_enabled[static_cast<size_t>(w.point("layer2.0"))]);
  CHECK_THROWS_WITH_AS(QuantModel(test::tiny_resnet(), {.layer_w_bits = {{"layer3.conv1", 4}}}),
                       doctest::Contains("no layer named 'layer3.conv1'; layers: conv1, "
                                         "layer1.0.conv1, layer1.0.conv2"),
                       Error);
  CHECK_THROWS_WITH_AS(QuantModel(test::tiny_resnet(), {.point_a_bits = {{"out", 4}}}),
                       doctest::Contains("no activation point named 'out'; points: input, stem, "
                                         "layer1.0.conv1, layer1.0, layer2.0.conv1, layer2.0"),
                       Error);
  CHECK_THROWS_WITH_AS(QuantModel(test::tiny_resnet(), {.layer_w_bits = {{"fc", 9}}}),
                       doctest::Contains("weight bits of layer fc: expected 2..8, got 9"), Error);
  CHECK_THROWS_WITH_AS(QuantModel(test::tiny_resnet(), {.point_a_bits = {{"stem", 1}}}),
                       doctest::Contains("activation bits of point stem: expected 2..8, got 1"),
                       Error);
}

TEST_CASE("BatchNorm folding is a choice: unfolded, the model keeps its BatchNorm layers") {
  const nn::Model fp = test::tiny_resnet();
  QuantModel folded(fp, {.w_bits = 4}), kept(fp, {.w_bits = 4, .fold_batchnorm = false});
  for (const nn::Layer* l : kept.model.layers()) CHECK(l->bn.has_value() == (l->name != "fc"));
  for (const nn::Layer* l : folded.model.layers()) CHECK_FALSE(l->bn.has_value());
  NoGrad ng;
  const Tensor x = images(4);
  // FP mode of the unfolded model is the FP model exactly; its weights are quantized unfolded.
  CHECK(same(kept.forward(x, ForwardMode::fp()), fp.forward(x)));
  const nn::Layer& l = *kept.model.layers()[1];
  CHECK(same(l.weight, fp.layers()[1]->weight));
  CHECK_FALSE(same(kept.quantized_weight(l), folded.quantized_weight(*folded.model.layers()[1])));
  const Tensor y = kept.forward(x, ForwardMode::weights_only());
  for (float v : y.to_vector()) CHECK(std::isfinite(v));
}
