#pragma once
// Runs a runtime::Graph on integers only: u8 NHWC activations (levels of each point), weights
// packed once for the chosen ISA, int32 accumulation, fixed-point requantization fused into each
// conv (kernels/int/requant.hpp), integer residual adds, max pool on levels, integer global
// average pooling and a classifier that returns float logits. Every buffer is sized at
// construction for (max_batch, height, width); run() allocates nothing.
//
//   runtime::Executor ex(graph, {.max_batch = 8, .height = 224, .width = 224, .threads = 2});
//   ex.quantize_input(images, n, levels);  // float NCHW (normalised) -> input point levels
//   ex.run(levels, n, logits);             // logits [n, classes]
//
// With .isa = Isa::ref the same executor runs the scalar reference kernels: a SIMD execution
// and a ref execution of one graph give identical logits (bit for bit).
//
// Mapping of the graph onto kernels (the float simulation's order, graph.hpp):
//   layer inside a block: conv -> activation -> its point: one conv whose epilogue clamps to the
//     activation on the point's grid (ReLU: lo = z, ReLU6: hi = level of 6.0);
//   last layer of a block: conv + residual add + out_activation -> out_point in one epilogue:
//     identity / option A add the block input's levels (term (r - z_r) * s_r / s_out, option A by
//     indexing), projection adds the shortcut conv's int32 accumulator (term * s_w' s_x / s_out);
//   max pool after the block: on the out_point levels (quantization is monotone);
//   head: int32 sums over H * W, then the classifier on the sums (kernels/int/pool.hpp).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "brecq/kernels/int/conv.hpp"
#include "brecq/kernels/int/pool.hpp"
#include "brecq/runtime/graph.hpp"

namespace brecq::runtime {

namespace qint = kernels::qint;

struct ExecutorOptions {
  int64_t max_batch = 1;
  int64_t height = 0;  ///< input size; 0: the graph's options.input_height / input_width
  int64_t width = 0;
  int threads = 1;
  qint::Isa isa = qint::best_isa();
};

/// Levels of the 8-bit (or b-bit) input point, exactly as the simulation's fake quantizer:
/// clamp(nearbyint(x / s) + z, 0, 2^b - 1) in float (rounding half to even).
inline void quantize_levels(const Point& p, const float* x, int64_t n, uint8_t* levels) {
  const float s = p.scale, z = static_cast<float>(p.zero_point),
              qmax = static_cast<float>(p.qmax());
  for (int64_t i = 0; i < n; ++i)
    levels[i] = static_cast<uint8_t>(std::min(std::max(std::nearbyint(x[i] / s) + z, 0.0f), qmax));
}

class Executor {
 public:
  Executor(const Graph& g, const ExecutorOptions& o) : opt_(o) {
    const std::string what = "runtime::Executor";
    validate(g, what);
    validate_integer(g, what);
    check(o.max_batch >= 1, what, ": max_batch must be >= 1, got ", o.max_batch);
    check(o.threads >= 1, what, ": threads must be >= 1, got ", o.threads);
    qint::check_isa(o.isa, what.c_str());
    if (opt_.height == 0) opt_.height = g.options.input_height;
    if (opt_.width == 0) opt_.width = g.options.input_width;
    check(opt_.height >= 1 && opt_.width >= 1, what,
          ": input size unknown (the graph has none), pass height and width; got ", opt_.height,
          "x", opt_.width);
    threads_ = o.threads;
    points_ = g.points;
    input_point_ = g.input_point;
    in_channels_ = g.options.in_channels;
    num_classes_ = g.options.num_classes;
    plan(g, what);
  }

  int64_t max_batch() const { return opt_.max_batch; }
  int64_t height() const { return opt_.height; }
  int64_t width() const { return opt_.width; }
  int64_t in_channels() const { return in_channels_; }
  int64_t num_classes() const { return num_classes_; }
  qint::Isa isa() const { return opt_.isa; }
  const Point& input_point() const { return points_[static_cast<size_t>(input_point_)]; }

  /// Float NCHW images (normalised as the model expects) -> NCHW levels of the input point.
  void quantize_input(const float* images, int64_t batch, uint8_t* levels) const {
    check(batch >= 1 && batch <= opt_.max_batch, "Executor::quantize_input: batch ", batch,
          " outside [1, ", opt_.max_batch, "]");
    quantize_levels(input_point(), images, batch * in_channels_ * opt_.height * opt_.width, levels);
  }

  /// Threads of the following runs: 1 .. the constructor's count (the workspace's size).
  void set_threads(int threads) {
    check(threads >= 1 && threads <= opt_.threads, "Executor::set_threads: threads ", threads,
          " outside [1, ", opt_.threads, "] (the workspace is sized for the constructor's count)");
    threads_ = threads;
  }
  int threads() const { return threads_; }

  /// input: NCHW levels of the input point [batch, in_channels, height, width]; logits:
  /// [batch, num_classes].
  void run(const uint8_t* input, int64_t batch, float* logits) {
    check(input != nullptr && logits != nullptr, "Executor::run: null input or logits");
    check(batch >= 1 && batch <= opt_.max_batch, "Executor::run: batch ", batch, " outside [1, ",
          opt_.max_batch, "] (max_batch given at construction)");
    const int T = threads_;
    const int32_t qmax = input_point().qmax();
    const int64_t C = in_channels_, HW = opt_.height * opt_.width;
    uint8_t* x = act_[0].data();
    std::atomic<bool> in_range{true};
    parallel_for(0, batch, 1, T, [&](int64_t b, int64_t e) {  // NCHW -> NHWC
      uint8_t top = 0;
      for (int64_t n = b; n < e; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t p = 0; p < HW; ++p) {
            const uint8_t v = input[(n * C + c) * HW + p];
            top = std::max(top, v);
            x[(n * HW + p) * C + c] = v;
          }
      if (top > qmax) in_range = false;
    });
    check(in_range, "Executor::run: input levels exceed ", qmax, " (the input point has ",
          input_point().bits, " bits)");
    int cur = 0;
    for (const BlockPlan& bp : blocks_) cur = run_block(bp, cur, batch, logits, T);
  }

 private:
  struct Step {
    qint::PackedConv pc;
    std::vector<int32_t> mult, res_mult, shift;
    qint::Requant rq{};
    bool s32 = false;
    int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  };
  struct BlockPlan {
    std::vector<Step> main;
    std::vector<Step> shortcut;  ///< projection: one conv with an s32 output
    ShortcutKind shortcut_kind = ShortcutKind::none;
    int64_t in_c = 0, in_h = 0, in_w = 0;
    int32_t in_zero = 0;
    int64_t option_a_stride = 1, option_a_pad = 0;
    bool pool = false;
    MaxPool max_pool{};
    int64_t out_c = 0, out_h = 0, out_w = 0;  ///< before the max pool
    bool head = false;
    qint::PackedLinear linear{};
  };

  static int32_t activation_lo(Activation a, int32_t z) { return a == Activation::none ? 0 : z; }
  static int32_t activation_hi(Activation a, const Point& p) {
    return a == Activation::relu6 ? qint::relu6_level(p.scale, p.zero_point, p.qmax()) : p.qmax();
  }

  const Point& point(int p) const { return points_[static_cast<size_t>(p)]; }

  /// Packs layer l (input point in_p) with its requantization to out_p (or s32 output).
  Step make_step(const Layer& l, int in_p, int out_p, Activation extra, int64_t in_h, int64_t in_w,
                 const std::string& what) const {
    check(l.kind == LayerKind::conv, what, ": layer ", l.name,
          " is linear outside the head; the integer runtime runs linear layers only as the "
          "classifier after the global pool");
    const Point& xin = point(in_p);
    Step s;
    const qint::ConvGeometry geo{.in_channels = l.in_channels,
                                 .out_channels = l.out_channels,
                                 .kernel_h = l.kernel_h,
                                 .kernel_w = l.kernel_w,
                                 .stride = l.stride,
                                 .padding = l.padding,
                                 .dilation = l.dilation,
                                 .groups = l.groups};
    const size_t C = static_cast<size_t>(l.out_channels);
    std::vector<int32_t> bias(C, 0);
    for (size_t c = 0; c < l.bias.size(); ++c)
      bias[c] = qint::quantize_bias(l.bias[c], l.weight_scale[c], xin.scale);
    s.pc = qint::pack_conv(geo,
                           {.levels = l.weight_levels.data(),
                            .bits = l.weight_bits,
                            .zero_points = l.weight_zero_point.data()},
                           {.isa = opt_.isa,
                            .input_zero_point = xin.zero_point,
                            .input_max_level = xin.qmax(),
                            .bias = bias.data()});
    s.in_h = in_h;
    s.in_w = in_w;
    s.out_h = geo.out_h(in_h);
    s.out_w = geo.out_w(in_w);
    if (out_p < 0) {
      s.s32 = true;
      return s;
    }
    const Point& y = point(out_p);
    s.mult.resize(C);
    s.shift.resize(C);
    for (size_t c = 0; c < C; ++c) {
      const auto fp =
          qint::quantize_multiplier(static_cast<double>(l.weight_scale[c]) * xin.scale / y.scale);
      s.mult[c] = fp.multiplier;
      s.shift[c] = fp.shift;
    }
    s.rq.out_zero = y.zero_point;
    s.rq.lo =
        std::max(activation_lo(l.activation, y.zero_point), activation_lo(extra, y.zero_point));
    s.rq.hi = std::min(activation_hi(l.activation, y), activation_hi(extra, y));
    return s;
  }

  /// Residual multipliers of the last main layer: common shift with the accumulator's.
  void add_residual(Step& s, const Layer& l, double in_scale, const std::vector<double>& m2,
                    double out_scale) const {
    const size_t C = s.mult.size();
    s.res_mult.resize(C);
    for (size_t c = 0; c < C; ++c) {
      const auto fp = qint::quantize_multiplier_pair(
          static_cast<double>(l.weight_scale[c]) * in_scale / out_scale, m2[c]);
      s.mult[c] = fp.multiplier;
      s.res_mult[c] = fp.residual_multiplier;
      s.shift[c] = fp.shift;
    }
  }

  void plan(const Graph& g, const std::string& what) {
    int64_t h = opt_.height, w = opt_.width, c = in_channels_;
    int in_p = input_point_;
    size_t act_bytes = 0, s32_elems = 0;
    int64_t ws = 0, sums = 0;
    auto need = [&](int64_t ch, int64_t hh, int64_t ww) {
      act_bytes = std::max(act_bytes, static_cast<size_t>(opt_.max_batch * ch * hh * ww));
    };
    need(c, h, w);
    for (const Block& b : g.blocks) {
      const std::string who = what + ": block " + b.name;
      BlockPlan bp;
      bp.in_c = c;
      bp.in_h = h;
      bp.in_w = w;
      bp.in_zero = point(in_p).zero_point;
      if (b.kind == BlockKind::head || b.global_pool_before) {
        check(b.global_pool_before && b.layers.size() == 1 &&
                  b.layers[0].kind == LayerKind::linear && b.shortcut == ShortcutKind::none &&
                  !b.max_pool_after && b.out_activation == Activation::none,
              who,
              ": the integer runtime supports a head of global average pool + one linear layer");
        const Layer& l = b.layers[0];
        check(l.activation == Activation::none, who, ": the classifier has activation ",
              activation_name(l.activation), ", expected none");
        const Point& xin = point(in_p);
        bp.head = true;
        bp.linear = qint::pack_linear({.levels = l.weight_levels.data(),
                                       .bits = l.weight_bits,
                                       .zero_points = l.weight_zero_point.data()},
                                      {.in = l.in_channels,
                                       .out = l.out_channels,
                                       .weight_scale = l.weight_scale.data(),
                                       .bias = l.bias.empty() ? nullptr : l.bias.data(),
                                       .input_scale = xin.scale,
                                       .input_zero_point = xin.zero_point});
        sums = std::max(sums, opt_.max_batch * l.in_channels);
        blocks_.push_back(std::move(bp));
        continue;
      }
      check(b.out_point >= 0, who, ": no output point");
      if (b.shortcut != ShortcutKind::none)
        check(b.layers.back().activation == Activation::none, who,
              ": the last layer before the residual add has activation ",
              activation_name(b.layers.back().activation), "; expected none");
      check(b.layers.back().act_point == -1, who, ": the last layer ", b.layers.back().name,
            " has its own point before the block's; expected none");
      bp.shortcut_kind = b.shortcut;
      bp.option_a_stride = b.option_a_stride;
      bp.option_a_pad = b.option_a_pad;
      if (b.shortcut == ShortcutKind::projection) {
        check(b.shortcut_layers.size() == 1, who, ": projection shortcut of ",
              b.shortcut_layers.size(), " layers; the integer runtime supports one conv");
        Step s = make_step(b.shortcut_layers[0], in_p, -1, Activation::none, h, w, who);
        s32_elems = std::max(s32_elems, static_cast<size_t>(opt_.max_batch * s.out_h * s.out_w *
                                                            b.shortcut_layers[0].out_channels));
        ws = std::max(ws, qint::conv_workspace_bytes(s.pc, opt_.threads));
        bp.shortcut.push_back(std::move(s));
      }
      int cur_p = in_p;
      int64_t ch = h, cw = w;
      for (size_t i = 0; i < b.layers.size(); ++i) {
        const Layer& l = b.layers[i];
        const bool last = i + 1 == b.layers.size();
        const int out_p = last ? b.out_point : l.act_point;
        Step s =
            make_step(l, cur_p, out_p, last ? b.out_activation : Activation::none, ch, cw, who);
        if (last && b.shortcut != ShortcutKind::none) {
          const double so = point(out_p).scale;
          std::vector<double> m2(static_cast<size_t>(l.out_channels));
          for (size_t k = 0; k < m2.size(); ++k)
            m2[k] = b.shortcut == ShortcutKind::projection
                        ? static_cast<double>(b.shortcut_layers[0].weight_scale[k]) *
                              point(in_p).scale / so
                        : static_cast<double>(point(in_p).scale) / so;
          add_residual(s, l, point(cur_p).scale, m2, so);
        }
        s.rq.multiplier = s.mult.data();
        s.rq.shift = s.shift.data();
        s.rq.residual_multiplier = s.res_mult.empty() ? nullptr : s.res_mult.data();
        ws = std::max(ws, qint::conv_workspace_bytes(s.pc, opt_.threads));
        ch = s.out_h;
        cw = s.out_w;
        need(l.out_channels, ch, cw);
        cur_p = out_p;
        bp.main.push_back(std::move(s));
      }
      bp.out_c = b.layers.back().out_channels;
      bp.out_h = ch;
      bp.out_w = cw;
      // The shapes graph.hpp infers must agree (the residual operand in particular).
      const ActShape expect = block_output_shape(b, {c, h, w, false}, who);
      if (b.max_pool_after) {
        bp.pool = true;
        bp.max_pool = *b.max_pool_after;
      }
      c = bp.out_c;
      h = expect.h;
      w = expect.w;
      check(expect.c == c, who, ": output channels disagree");
      need(c, h, w);
      in_p = b.out_point;
      blocks_.push_back(std::move(bp));
    }
    check(!blocks_.empty() && blocks_.back().head, what, ": the graph does not end in a head");
    // The move above left Requant pointers aimed at the vectors' buffers, which moved with them.
    for (BlockPlan& bp : blocks_)
      for (Step& s : bp.main) {
        s.rq.multiplier = s.mult.data();
        s.rq.shift = s.shift.data();
        s.rq.residual_multiplier = s.res_mult.empty() ? nullptr : s.res_mult.data();
      }
    for (auto& a : act_) a = qint::AlignedBuffer<uint8_t>(act_bytes);
    s32_ = qint::AlignedBuffer<int32_t>(std::max<size_t>(s32_elems, 1));
    sums_ = qint::AlignedBuffer<int32_t>(static_cast<size_t>(std::max<int64_t>(sums, 1)));
    workspace_ = qint::AlignedBuffer<uint8_t>(static_cast<size_t>(std::max<int64_t>(ws, 1)));
  }

  void conv(const Step& s, const uint8_t* in, int64_t batch, uint8_t* out_u8, int32_t* out_s32,
            const qint::Residual& r, int T) {
    qint::conv(s.pc, {.input = in,
                      .batch = batch,
                      .height = s.in_h,
                      .width = s.in_w,
                      .out_u8 = out_u8,
                      .out_s32 = out_s32,
                      .requant = out_u8 ? &s.rq : nullptr,
                      .residual = r,
                      .threads = T,
                      .workspace = workspace_.data(),
                      .workspace_bytes = static_cast<int64_t>(workspace_.size())});
  }

  /// Runs one block on activation buffer `in`; returns the buffer holding its output.
  int run_block(const BlockPlan& bp, int in, int64_t batch, float* logits, int T) {
    const uint8_t* x = act_[in].data();
    if (bp.head) {
      const int64_t hw = bp.in_h * bp.in_w;
      qint::global_sum_pool({.input = x,
                             .sums = sums_.data(),
                             .batch = batch,
                             .hw = hw,
                             .channels = bp.in_c,
                             .threads = T});
      qint::linear_logits(
          bp.linear,
          {.sums = sums_.data(), .logits = logits, .batch = batch, .hw = hw, .threads = T});
      return in;
    }
    if (!bp.shortcut.empty()) conv(bp.shortcut[0], x, batch, nullptr, s32_.data(), {}, T);
    int cur = in;
    for (size_t i = 0; i < bp.main.size(); ++i) {
      const int out = other(in, cur);
      qint::Residual r{};
      if (i + 1 == bp.main.size()) {
        if (bp.shortcut_kind == ShortcutKind::projection)
          r = {.kind = qint::ResidualKind::s32, .s32 = s32_.data()};
        else if (bp.shortcut_kind != ShortcutKind::none)
          r = {.kind = qint::ResidualKind::u8,
               .u8 = x,
               .zero_point = bp.in_zero,
               .height = bp.in_h,
               .width = bp.in_w,
               .channels = bp.in_c,
               .stride = bp.shortcut_kind == ShortcutKind::option_a ? bp.option_a_stride : 1,
               .channel_pad = bp.shortcut_kind == ShortcutKind::option_a ? bp.option_a_pad : 0};
      }
      conv(bp.main[i], act_[cur].data(), batch, act_[out].data(), nullptr, r, T);
      cur = out;
    }
    if (bp.pool) {
      const int out = other(cur, cur);
      qint::max_pool({.input = act_[cur].data(),
                      .output = act_[out].data(),
                      .batch = batch,
                      .height = bp.out_h,
                      .width = bp.out_w,
                      .channels = bp.out_c,
                      .kernel = bp.max_pool.kernel,
                      .stride = bp.max_pool.stride,
                      .padding = bp.max_pool.padding,
                      .threads = T});
      cur = out;
    }
    return cur;
  }

  /// A buffer index that is neither a nor b.
  static int other(int a, int b) {
    for (int i = 0; i < 3; ++i)
      if (i != a && i != b) return i;
    return -1;
  }

  ExecutorOptions opt_;
  int threads_ = 1;
  std::vector<Point> points_;
  int input_point_ = -1;
  int64_t in_channels_ = 0, num_classes_ = 0;
  std::vector<BlockPlan> blocks_;
  qint::AlignedBuffer<uint8_t> act_[3];
  qint::AlignedBuffer<int32_t> s32_, sums_;
  qint::AlignedBuffer<uint8_t> workspace_;
};

}  // namespace brecq::runtime
