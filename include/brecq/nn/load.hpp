#pragma once
// Model weights from and to safetensors files, by PyTorch state-dict name.
#include <map>
#include <string>

#include "brecq/io/safetensors.hpp"
#include "brecq/nn/model.hpp"

namespace brecq::nn {

/// Copies the file's tensors into the model by state-dict name (converted to f32; I64
/// num_batches_tracked entries are ignored). Strict by default: every missing, unexpected or
/// wrong-shape tensor is reported by name in one Error that names the file.
inline void load_weights(Model& m, const SafetensorsFile& file, bool strict = true) {
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : file.names()) {
    if (name.ends_with("num_batches_tracked")) continue;
    tensors.emplace(name, file.to_f32(name));
  }
  try {
    m.load_state_dict(tensors, strict);
  } catch (const Error& e) {
    fail("loading weights from '", file.path(), "': ", e.what());
  }
}

inline void load_weights(Model& m, const std::string& path, bool strict = true) {
  load_weights(m, SafetensorsFile(path), strict);
}

/// Writes the model's state dict (weights, biases, BN parameters and running statistics) as F32.
inline void save_weights(const Model& m, const std::string& path,
                         const SafetensorsSaveParams& params = {}) {
  save_safetensors(path, m.state_dict(), params);
}

}  // namespace brecq::nn
