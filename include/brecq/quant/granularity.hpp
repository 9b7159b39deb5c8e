#pragma once
// Reconstruction units for each granularity, computed from the model description alone.
// The first layer (the stem) is never reconstructed; the head (last FC) is its own unit except
// in network-wise reconstruction, where everything after the stem is one unit.
#include <string>
#include <utility>
#include <vector>

#include "brecq/nn/model.hpp"

namespace brecq::quant {

/// What one reconstruction step learns: the layers whose rounding it learns, the activation
/// points whose steps it learns, and where it is cut out of the model: blocks [first, last), or
/// one layer inside block `first` (a layer unit is a unit with one layer and that cut).
struct Unit {
  std::string name;
  size_t first_block = 0, last_block = 0;  ///< blocks [first, last) the unit lies in
  std::vector<const nn::Layer*> layers{};  ///< forward order
  std::vector<int> points{};               ///< activation points inside the unit
  bool layer_cut = false;                  ///< input and output are those of layers[0]

  /// Blocks [first, last) of m.
  static Unit blocks(const nn::Model& m, std::string name, size_t first, size_t last) {
    Unit u{std::move(name), first, last};
    for (size_t b = first; b < last; ++b) {
      for (const nn::Layer& l : m.blocks[b].layers) {
        u.layers.push_back(&l);
        if (l.act_point >= 0) u.points.push_back(l.act_point);
      }
      for (const nn::Layer& l : m.blocks[b].shortcut_layers) u.layers.push_back(&l);
      if (m.blocks[b].out_point >= 0) u.points.push_back(m.blocks[b].out_point);
    }
    return u;
  }
  /// Layer l of block b.
  static Unit layer(const nn::Layer& l, size_t b) {
    Unit u{l.name, b, b + 1, {&l}};
    if (l.act_point >= 0) u.points.push_back(l.act_point);
    u.layer_cut = true;
    return u;
  }

  /// The unit's output from its input.
  Tensor forward(const nn::Model& m, const Tensor& in, const nn::ForwardHooks& h) const {
    return layer_cut ? nn::forward_layer(*layers[0], in, h)
                     : m.forward_blocks(in, first_block, last_block, h);
  }

  /// Runs m on x up to the unit; returns (unit input, unit output).
  std::pair<Tensor, Tensor> io(const nn::Model& m, const Tensor& x,
                               const nn::ForwardHooks& h) const {
    std::pair<Tensor, Tensor> out;
    nn::ForwardHooks hc = h;
    if (layer_cut)
      hc.layer_output = [&](const nn::Layer& l, const Tensor& in, const Tensor& y) {
        if (&l == layers[0]) out = {in, y};
        return y;
      };
    Tensor in = m.forward_blocks(x, 0, first_block, h);
    Tensor y = m.forward_blocks(in, first_block, last_block, hc);
    return layer_cut ? out : std::pair<Tensor, Tensor>{in, y};
  }

  /// The whole model's output with the unit's output z replaced by leaf(z) (a tensor to
  /// differentiate at); nothing before the unit is recorded on the tape.
  template <class Leaf>
  Tensor forward_through(const nn::Model& m, const Tensor& x, const nn::ForwardHooks& h,
                         Leaf&& leaf) const {
    Tensor in;
    {
      NoGrad ng;
      in = m.forward_blocks(x, 0, first_block, h);
    }
    if (!layer_cut) {
      Tensor z;
      {
        NoGrad ng;
        z = m.forward_blocks(in, first_block, last_block, h);
      }
      return m.forward_blocks(leaf(z), last_block, m.blocks.size(), h);
    }
    nn::ForwardHooks hc = h;
    hc.layer_output = [&](const nn::Layer& l, const Tensor&, const Tensor& y) {
      return &l == layers[0] ? leaf(y) : y;
    };
    return m.forward_blocks(in, first_block, m.blocks.size(), hc);
  }
};

struct LayerGranularity {
  static constexpr const char* name = "layer";
  static std::vector<Unit> units(const nn::Model& m) {
    std::vector<Unit> out;
    for (size_t b = 1; b < m.blocks.size(); ++b) {
      for (const nn::Layer& l : m.blocks[b].layers) out.push_back(Unit::layer(l, b));
      for (const nn::Layer& l : m.blocks[b].shortcut_layers) out.push_back(Unit::layer(l, b));
    }
    return out;
  }
};

struct BlockGranularity {
  static constexpr const char* name = "block";
  static std::vector<Unit> units(const nn::Model& m) {
    std::vector<Unit> out;
    for (size_t b = 1; b < m.blocks.size(); ++b)
      out.push_back(Unit::blocks(m, m.blocks[b].name, b, b + 1));
    return out;
  }
};

struct StageGranularity {
  static constexpr const char* name = "stage";
  static std::vector<Unit> units(const nn::Model& m) {
    std::vector<Unit> out;
    for (size_t b = 1; b < m.blocks.size();) {
      size_t e = b + 1;
      while (e < m.blocks.size() && m.blocks[e].stage == m.blocks[b].stage) ++e;
      out.push_back(Unit::blocks(m,
                                 "stage" + std::to_string(m.blocks[b].stage) + " (" +
                                     m.blocks[b].name + ".." + m.blocks[e - 1].name + ")",
                                 b, e));
      b = e;
    }
    return out;
  }
};

struct NetworkGranularity {
  static constexpr const char* name = "network";
  static std::vector<Unit> units(const nn::Model& m) {
    if (m.blocks.size() < 2) return {};
    return {Unit::blocks(m, "network", 1, m.blocks.size())};
  }
};

/// Calls f(G{}) with the granularity G named at run time: layer, block, stage or network.
template <class F>
inline decltype(auto) with_granularity(const std::string& granularity, F&& f) {
  if (granularity == "layer") return f(LayerGranularity{});
  if (granularity == "block") return f(BlockGranularity{});
  if (granularity == "stage") return f(StageGranularity{});
  if (granularity == "network") return f(NetworkGranularity{});
  fail("granularity: expected layer, block, stage or network, got '", granularity, "'");
}

/// The units of the granularity named at run time.
inline std::vector<Unit> units_for(const std::string& granularity, const nn::Model& m) {
  return with_granularity(granularity, [&](auto g) { return decltype(g)::units(m); });
}

}  // namespace brecq::quant
