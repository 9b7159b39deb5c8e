#pragma once
// From a sensitivity table to per-layer bits: cost models (model size in bits, bit-operations),
// the search problem under one budget, and the bits file `brecq mixed` writes and `brecq
// quantize --bits-config` reads.
#include <map>
#include <string>
#include <vector>

#include "brecq/mixed/latency.hpp"
#include "brecq/mixed/search.hpp"
#include "brecq/mixed/sensitivity.hpp"

namespace brecq::mixed {

enum class CostKind {
  size,    ///< weight storage in bits (each layer's weights x its bit-width)
  bops,    ///< bit-operations per image: MACs x weight bits x input activation bits
  latency  ///< seconds per batch in the integer runtime's kernels, measured (LatencyTable)
};

inline const char* cost_name(CostKind k) {
  return k == CostKind::size ? "size" : k == CostKind::bops ? "bops" : "latency";
}

struct CostModel {
  CostKind kind = CostKind::size;
  int act_bits = 4;  ///< input activation bits of every layer but the first group's (8: image)
  const LatencyTable* latency = nullptr;  ///< with kind latency
};

/// The cost of layer k of group g at `bits`.
inline double layer_cost(const SensitivityTable& t, size_t g, size_t k, int bits,
                         const CostModel& c) {
  const GroupSensitivity& s = t.groups[g];
  if (c.kind == CostKind::size) return static_cast<double>(s.params[k]) * bits;
  if (c.kind == CostKind::latency) {
    check(c.latency && c.latency->seconds.size() == t.groups.size(),
          "bit allocation: the latency cost model needs a latency table of the same model");
    const auto it = std::find(t.bits.begin(), t.bits.end(), bits);
    check(it != t.bits.end(), "bit allocation: no latency measured for ", bits, " bits");
    return c.latency->seconds[g][k][static_cast<size_t>(it - t.bits.begin())];
  }
  const int a = g == 0 ? 8 : c.act_bits;
  return static_cast<double>(s.macs[k]) * bits * a;
}

/// The search problem: one SearchGroup per table group; with first_last_bits > 0 the first
/// group (the stem) and the last (the classifier) keep that many bits (the paper's setting), so
/// each has one option. option_ids[g][i] is the table option of the problem's option i.
struct AllocationProblem {
  std::vector<SearchGroup> groups;
  std::vector<std::vector<int64_t>> option_ids;
};

inline AllocationProblem make_problem(const SensitivityTable& t, const CostModel& c,
                                      int first_last_bits) {
  check(!t.groups.empty(), "bit allocation: the sensitivity table is empty");
  AllocationProblem p;
  for (size_t g = 0; g < t.groups.size(); ++g) {
    const GroupSensitivity& s = t.groups[g];
    const bool fixed = first_last_bits > 0 && (g == 0 || g + 1 == t.groups.size());
    SearchGroup sg{s.name};
    std::vector<int64_t> ids;
    for (int64_t o = 0; o < static_cast<int64_t>(s.loss.size()); ++o) {
      double cost = 0;
      bool keep = true;
      for (size_t k = 0; k < s.layers.size(); ++k) {
        const int b = option_bits(t.bits, o, k);
        keep = keep && (!fixed || b == first_last_bits);
        cost += layer_cost(t, g, k, b, c);
      }
      if (!keep) continue;
      sg.loss.push_back(s.loss[static_cast<size_t>(o)]);
      sg.cost.push_back(cost);
      ids.push_back(o);
    }
    check(!ids.empty(), "bit allocation: first/last layer bits ", first_last_bits,
          " are not among the measured bit-widths");
    p.groups.push_back(std::move(sg));
    p.option_ids.push_back(std::move(ids));
  }
  return p;
}

/// The cost of every layer at `bits` (the first and last group at first_last_bits when > 0):
/// the reference budgets of uniform precision.
inline double uniform_cost(const SensitivityTable& t, const CostModel& c, int bits,
                           int first_last_bits) {
  double cost = 0;
  for (size_t g = 0; g < t.groups.size(); ++g) {
    const bool edge = first_last_bits > 0 && (g == 0 || g + 1 == t.groups.size());
    for (size_t k = 0; k < t.groups[g].layers.size(); ++k)
      cost += layer_cost(t, g, k, edge ? first_last_bits : bits, c);
  }
  return cost;
}

/// Per-layer bits of an allocation, by layer name.
inline std::map<std::string, int> layer_bits(const SensitivityTable& t, const AllocationProblem& p,
                                             const Allocation& a) {
  std::map<std::string, int> out;
  for (size_t g = 0; g < t.groups.size(); ++g) {
    const int64_t o = p.option_ids[g][static_cast<size_t>(a.option[g])];
    for (size_t k = 0; k < t.groups[g].layers.size(); ++k)
      out[t.groups[g].layers[k]] = option_bits(t.bits, o, k);
  }
  return out;
}

// ---- the bits file ------------------------------------------------------------------------------

inline constexpr const char* kBitsFormat = "brecq-bits-1";

/// What a bits file records besides the bits: how they were chosen.
struct BitsSummary {
  std::string model, cost;
  double budget = 0, cost_value = 0, sensitivity = 0, size_bits = 0, bops = 0;
};

inline void write_bits_file(const std::string& path, const std::map<std::string, int>& bits,
                            const BitsSummary& s) {
  runtime::detail::JsonWriter w;
  w.begin_object().field("format", kBitsFormat).field("model", s.model).field("cost", s.cost);
  w.key("budget").raw(runtime::detail::json_double(s.budget));
  w.key("cost_value").raw(runtime::detail::json_double(s.cost_value));
  w.key("sensitivity").raw(runtime::detail::json_double(s.sensitivity));
  w.key("size_bits").raw(runtime::detail::json_double(s.size_bits));
  w.key("bops").raw(runtime::detail::json_double(s.bops));
  w.key("layers").begin_object();
  for (const auto& [name, b] : bits) w.field(name, b);
  w.end_object().end_object();
  detail::write_text_atomic(path, w.str());
}

/// The per-layer weight bits of a bits file's text, checked against model m: every name a layer
/// of m, every bit-width 2..8. Other fields of the file are informative and not read. `path`
/// names the file in errors.
inline std::map<std::string, int> parse_bits_file(const std::string& text, const std::string& path,
                                                  const nn::Model& m) {
  using brecq::detail::io::Json;
  const Json doc = brecq::detail::io::JsonParser(text, "bits file " + path).parse_document();
  check(doc.kind == Json::Kind::object, "bits file ", path, ": expected a JSON object, got ",
        brecq::detail::io::json_kind_name(doc.kind));
  const Json* layers = nullptr;
  for (size_t i = 0; i < doc.keys.size(); ++i) {
    if (doc.keys[i] == "format")
      check(doc.items[i].kind == Json::Kind::string && doc.items[i].text == kBitsFormat,
            "bits file ", path, ": format '", doc.items[i].text, "', expected '", kBitsFormat, "'");
    if (doc.keys[i] == "layers") layers = &doc.items[i];
  }
  check(layers && layers->kind == Json::Kind::object, "bits file ", path,
        ": expected an object \"layers\" mapping layer names to bit-widths");
  std::string names;
  for (const nn::Layer* l : m.layers()) names += (names.empty() ? "" : ", ") + l->name;
  std::map<std::string, int> out;
  for (size_t i = 0; i < layers->keys.size(); ++i) {
    const std::string& name = layers->keys[i];
    const Json& v = layers->items[i];
    bool found = false;
    for (const nn::Layer* l : m.layers()) found = found || l->name == name;
    check(found, "bits file ", path, ": no layer named '", name, "' in ", m.arch,
          "; layers: ", names);
    const bool integer = v.kind == Json::Kind::number &&
                         v.text.find_first_of(".eE") == std::string::npos && v.text.size() <= 3;
    const int b = integer ? std::stoi(v.text) : -1;
    check(integer && b >= 2 && b <= 8, "bits file ", path, ": layer ", name,
          ": expected a bit-width 2..8, got ",
          v.kind == Json::Kind::number || v.kind == Json::Kind::string
              ? v.text
              : std::string(brecq::detail::io::json_kind_name(v.kind)));
    out[name] = b;
  }
  check(!out.empty(), "bits file ", path, ": \"layers\" is empty");
  return out;
}

/// The per-layer weight bits of the bits file `path` (see parse_bits_file).
inline std::map<std::string, int> read_bits_file(const std::string& path, const nn::Model& m) {
  return parse_bits_file(detail::read_text(path, "bits file"), path, m);
}

}  // namespace brecq::mixed
