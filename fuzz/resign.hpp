#pragma once
// For the quantized-model harnesses: a version-2 file carries a checksum over its graph and
// tensors, so almost every mutation of a valid file is refused by the checksum before the graph
// is parsed. resigned() rebuilds a mutated file with a fresh checksum, so that the fuzzer also
// reaches the graph parser and the field-by-field validation behind it.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "brecq/io/safetensors_core.hpp"
#include "brecq/runtime/load.hpp"

namespace brecq::fuzz {

/// The file image of f with its checksum recomputed (other metadata, the format included, kept),
/// or nothing when f has no graph metadata or its checksum is already right.
inline std::optional<std::vector<uint8_t>> resigned(const SafetensorsReader& f) {
  std::map<std::string, std::string> meta = f.metadata();
  const auto graph = meta.find("graph");
  if (graph == meta.end()) return std::nullopt;
  runtime::detail::Checksum sum;  // as runtime::detail::signed_file_bytes computes it
  sum.add_string(graph->second);
  std::vector<SafetensorsRawTensor> tensors;
  for (const std::string& name : f.names()) {  // in name order
    const SafetensorsTensorInfo& i = f.info(name);
    const auto b = f.bytes(name);
    sum.add_tensor(name, i.dtype, i.shape, b.data(), b.size());
    tensors.push_back({name, i.dtype, i.shape, {b.begin(), b.end()}});
  }
  if (meta["checksum"] == sum.str()) return std::nullopt;
  meta["checksum"] = sum.str();
  return serialize_safetensors_raw(tensors, meta);
}

}  // namespace brecq::fuzz
