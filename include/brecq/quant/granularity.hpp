#pragma once
// Reconstruction units for each granularity, computed from the model description alone.
// The first layer (the stem) is never reconstructed; the head (last FC) is its own unit except
// in network-wise reconstruction, where everything after the stem is one unit.
#include <string>
#include <vector>

#include "brecq/nn/model.hpp"

namespace brecq::quant {

/// A contiguous range of blocks, or a single layer inside one block.
struct Unit {
  std::string name;
  size_t first_block = 0, last_block = 0;  ///< blocks [first, last); for a layer: its block
  const nn::Layer* layer = nullptr;        ///< set for layer units
};

struct LayerGranularity {
  static constexpr const char* name = "layer";
  static std::vector<Unit> units(const nn::Model& m) {
    std::vector<Unit> out;
    for (size_t b = 1; b < m.blocks.size(); ++b) {
      for (const nn::Layer& l : m.blocks[b].layers) out.push_back({l.name, b, b + 1, &l});
      for (const nn::Layer& l : m.blocks[b].shortcut_layers) out.push_back({l.name, b, b + 1, &l});
    }
    return out;
  }
};

struct BlockGranularity {
  static constexpr const char* name = "block";
  static std::vector<Unit> units(const nn::Model& m) {
    std::vector<Unit> out;
    for (size_t b = 1; b < m.blocks.size(); ++b)
      out.push_back({m.blocks[b].name, b, b + 1, nullptr});
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
      out.push_back({"stage" + std::to_string(m.blocks[b].stage) + " (" + m.blocks[b].name + ".." +
                         m.blocks[e - 1].name + ")",
                     b, e, nullptr});
      b = e;
    }
    return out;
  }
};

struct NetworkGranularity {
  static constexpr const char* name = "network";
  static std::vector<Unit> units(const nn::Model& m) {
    if (m.blocks.size() < 2) return {};
    return {Unit{"network", 1, m.blocks.size(), nullptr}};
  }
};

/// The units of the granularity named at run time: layer, block, stage or network.
inline std::vector<Unit> units_for(const std::string& granularity, const nn::Model& m) {
  if (granularity == "layer") return LayerGranularity::units(m);
  if (granularity == "block") return BlockGranularity::units(m);
  if (granularity == "stage") return StageGranularity::units(m);
  if (granularity == "network") return NetworkGranularity::units(m);
  fail("granularity: expected layer, block, stage or network, got '", granularity, "'");
}

}  // namespace brecq::quant
