#pragma once
// The latency cost model: every layer's time in the integer runtime's kernels on this machine,
// per candidate weight bit-width, measured once (a layer of the model's geometry packed from
// random levels of that width, fed random input levels at the activation width, best of several
// runs), and the runtime's measured time of a whole allocation for comparison with the budget.
#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "brecq/kernels/int/conv.hpp"
#include "brecq/mixed/sensitivity.hpp"
#include "brecq/quant/serialize.hpp"
#include "brecq/runtime/executor.hpp"

namespace brecq::mixed {

struct LatencyOptions {
  int64_t batch = 8;
  int threads = 1;
  int a_bits = 8;  ///< input activation bits of the layers (the stem's input: 8)
  int reps = 5;    ///< timed runs per entry; the fastest counts
};

/// Seconds per batch of layer k of group g at bit-width index b: seconds[g][k][b].
struct LatencyTable {
  std::vector<std::vector<std::vector<double>>> seconds{};
};

namespace detail {

template <class F>
inline double fastest(F&& f, int reps) {
  f();  // warm-up
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace detail

/// Measures the table for the layers of `t` in model `fp` (BN folded here as for the
/// sensitivity), for images of height x width.
inline LatencyTable measure_latency(const nn::Model& fp, const SensitivityTable& t, int64_t height,
                                    int64_t width, const LatencyOptions& o) {
  namespace q = kernels::qint;
  check(o.batch >= 1 && o.threads >= 1 && o.reps >= 1 && o.a_bits >= 2 && o.a_bits <= 8,
        "latency: batch, threads and reps >= 1 and activation bits 2..8 expected");
  nn::Model m = fp.clone();
  nn::fold_batchnorm(m);
  // Each layer's input shape, from one forward pass.
  std::map<std::string, Shape> in_shape;
  {
    NoGrad ng;
    nn::ForwardHooks h;
    h.layer_output = [&](const nn::Layer& l, const Tensor& in, const Tensor& y) {
      in_shape.emplace(l.name, in.shape());
      return y;
    };
    m.forward(Tensor::zeros(Shape{1, m.in_channels, height, width}), h);
  }
  std::map<std::string, const nn::Layer*> by_name;
  for (const nn::Layer* l : m.layers()) by_name[l->name] = l;
  Rng rng(17);
  LatencyTable out;
  for (size_t g = 0; g < t.groups.size(); ++g) {
    out.seconds.emplace_back();
    for (size_t k = 0; k < t.groups[g].layers.size(); ++k) {
      const std::string& name = t.groups[g].layers[k];
      check(by_name.count(name) && in_shape.count(name), "latency: layer ", name, " not in ",
            m.arch);
      const nn::Layer& l = *by_name[name];
      const Shape& s = in_shape[name];
      const bool linear = l.weight.ndim() == 2;
      const int64_t h = linear ? 1 : s[2], w = linear ? 1 : s[3];
      const q::ConvGeometry geo =
          linear ? q::ConvGeometry{.in_channels = l.weight.dim(1), .out_channels = l.weight.dim(0)}
                 : q::ConvGeometry{.in_channels = s[1],
                                   .out_channels = l.weight.dim(0),
                                   .kernel_h = l.weight.dim(2),
                                   .kernel_w = l.weight.dim(3),
                                   .stride = l.conv.stride,
                                   .padding = l.conv.padding,
                                   .dilation = l.conv.dilation,
                                   .groups = l.conv.groups};
      const int a = g == 0 ? 8 : o.a_bits;
      std::vector<uint8_t> x(static_cast<size_t>(o.batch * h * w * geo.in_channels));
      for (uint8_t& v : x) v = static_cast<uint8_t>(rng.below(uint64_t{1} << a));
      std::vector<int32_t> acc(
          static_cast<size_t>(o.batch * geo.out_h(h) * geo.out_w(w) * geo.out_channels));
      std::vector<int32_t> zw(static_cast<size_t>(geo.out_channels), 1);
      std::vector<double> per_bits;
      for (int bits : t.bits) {
        // Packed levels, OIHW, as the file stores them (storage width 2, 4 or 8 bits).
        const int sb = q::level_storage_bits(bits), per = 8 / sb;
        std::vector<uint8_t> levels(static_cast<size_t>((l.weight.numel() + per - 1) / per));
        for (uint8_t& v : levels) {
          unsigned byte = 0;
          for (int j = 0; j < per; ++j)
            byte |= static_cast<unsigned>(rng.below(uint64_t{1} << bits)) << (j * sb);
          v = static_cast<uint8_t>(byte);
        }
        const q::PackedConv pc = q::pack_conv(
            geo, {.levels = levels.data(), .bits = bits, .zero_points = zw.data()},
            {.isa = q::best_isa(), .input_zero_point = 1, .input_max_level = (1 << a) - 1});
        q::AlignedBuffer<uint8_t> ws(static_cast<size_t>(q::conv_workspace_bytes(pc, o.threads)));
        per_bits.push_back(detail::fastest(
            [&] {
              q::conv(pc, {.input = x.data(),
                           .batch = o.batch,
                           .height = h,
                           .width = w,
                           .out_s32 = acc.data(),
                           .threads = o.threads,
                           .workspace = ws.data(),
                           .workspace_bytes = static_cast<int64_t>(ws.size())});
            },
            o.reps));
      }
      out.seconds.back().push_back(std::move(per_bits));
    }
  }
  return out;
}

/// The integer runtime's measured seconds per batch of `fp` quantized with per-layer `bits`
/// (round-to-nearest, activations at a_bits from min-max ranges on `calib`): the whole model, as
/// deployed, beside the layer sum the search used.
inline double measure_model_latency(const nn::Model& fp, const std::map<std::string, int>& bits,
                                    const Tensor& calib, const LatencyOptions& o) {
  quant::QuantModel qm(fp.clone(), {.a_bits = o.a_bits, .layer_w_bits = bits});
  qm.init_activations(calib.narrow(0, 0, std::min<int64_t>(calib.dim(0), 8)));
  const runtime::Graph g = quant::to_graph(qm);
  runtime::Executor ex(
      g,
      {.max_batch = o.batch, .height = calib.dim(2), .width = calib.dim(3), .threads = o.threads});
  std::vector<uint8_t> in(
      static_cast<size_t>(o.batch * calib.dim(1) * calib.dim(2) * calib.dim(3)));
  Rng rng(5);
  for (uint8_t& v : in) v = static_cast<uint8_t>(rng.below(256));
  std::vector<float> logits(static_cast<size_t>(o.batch * g.options.num_classes));
  return detail::fastest([&] { ex.run(in.data(), o.batch, logits.data()); }, o.reps);
}

}  // namespace brecq::mixed
