#pragma once
// safetensors (https://github.com/huggingface/safetensors) reader and writer for Tensors, on top
// of the Tensor-free io/safetensors_core.hpp (layout, validation, JSON header).
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "brecq/io/safetensors_core.hpp"
#include "brecq/tensor/tensor.hpp"

namespace brecq {

/// A validated safetensors file held in memory, with its tensors as Tensors. Copies share the
/// bytes.
class SafetensorsFile : public SafetensorsReader {
 public:
  /// Reads and validates `path`.
  explicit SafetensorsFile(const std::string& path) : SafetensorsReader(path) {}

  /// Validates a safetensors image held in memory; `name` appears in error messages.
  static SafetensorsFile from_bytes(std::vector<uint8_t> bytes, std::string name = "<memory>") {
    SafetensorsFile f;
    f.init_from_bytes(std::move(bytes), std::move(name));
    return f;
  }

  /// The tensor converted to float32: F32, F16 and BF16 exactly; F64 rounded; integer and BOOL
  /// values converted (exact up to 2^24 in magnitude).
  Tensor to_f32(const std::string& name) const {
    using detail::io::load_le;
    using detail::io::StDType;
    const auto& i = info(name);
    const auto* e = detail::io::find_st_dtype(i.dtype);  // validated in parse()
    Tensor t = Tensor::empty(Shape(i.shape), DType::f32);
    float* out = t.data<float>();
    const uint8_t* p = bytes(name).data();
    const int64_t n = i.numel();
    const size_t es = e->size;
    auto convert = [&](auto load) {
      for (int64_t k = 0; k < n; ++k) out[k] = load(p + static_cast<size_t>(k) * es);
    };
    switch (e->type) {
      case StDType::f32:
        if (n) std::memcpy(out, p, static_cast<size_t>(n) * 4);
        break;
      case StDType::f64:
        convert([](const uint8_t* q) { return static_cast<float>(load_le<double>(q)); });
        break;
      case StDType::f16:
        convert(
            [](const uint8_t* q) { return detail::io::f16_bits_to_float(load_le<uint16_t>(q)); });
        break;
      case StDType::bf16:
        convert(
            [](const uint8_t* q) { return detail::io::bf16_bits_to_float(load_le<uint16_t>(q)); });
        break;
      case StDType::i64:
        convert([](const uint8_t* q) { return static_cast<float>(load_le<int64_t>(q)); });
        break;
      case StDType::i32:
        convert([](const uint8_t* q) { return static_cast<float>(load_le<int32_t>(q)); });
        break;
      case StDType::i16:
        convert([](const uint8_t* q) { return static_cast<float>(load_le<int16_t>(q)); });
        break;
      case StDType::i8:
        convert([](const uint8_t* q) { return static_cast<float>(static_cast<int8_t>(*q)); });
        break;
      case StDType::u64:
        convert([](const uint8_t* q) { return static_cast<float>(load_le<uint64_t>(q)); });
        break;
      case StDType::u32:
        convert([](const uint8_t* q) { return static_cast<float>(load_le<uint32_t>(q)); });
        break;
      case StDType::u16:
        convert([](const uint8_t* q) { return static_cast<float>(load_le<uint16_t>(q)); });
        break;
      case StDType::u8:
        convert([](const uint8_t* q) { return static_cast<float>(*q); });
        break;
      case StDType::boolean:
        convert([](const uint8_t* q) { return *q ? 1.0f : 0.0f; });
        break;
    }
    return t;
  }

  /// The tensor in its own element type: F32 -> f32, I32 -> i32, I8 -> i8, U8 -> u8.
  /// Other dtypes have no Tensor equivalent: use to_f32.
  Tensor get(const std::string& name) const {
    const auto& i = info(name);
    DType dt;
    if (i.dtype == "F32")
      dt = DType::f32;
    else if (i.dtype == "I32")
      dt = DType::i32;
    else if (i.dtype == "I8")
      dt = DType::i8;
    else if (i.dtype == "U8")
      dt = DType::u8;
    else
      fail("safetensors file '", path(), "': tensor '", name, "' has dtype ", i.dtype,
           ", get() needs F32, I32, I8 or U8 (use to_f32 to convert)");
    Tensor t = Tensor::empty(Shape(i.shape), dt);
    if (t.nbytes()) std::memcpy(t.raw_data(), bytes(name).data(), t.nbytes());
    return t;
  }

 private:
  SafetensorsFile() = default;
};

// ---- writer -------------------------------------------------------------------------------------

/// How a float32 tensor is stored.
enum class FloatStorage { f32, f16, bf16 };

struct SafetensorsSaveParams {
  std::map<std::string, std::string> metadata{};   ///< written as "__metadata__" when not empty
  FloatStorage float_storage = FloatStorage::f32;  ///< default for f32 tensors
  std::map<std::string, FloatStorage> storage{};   ///< per-tensor override (f32 tensors only)
};

/// The bytes of a safetensors file: tensors in name order, data packed in the same order,
/// header padded with spaces to a multiple of 8 bytes. i32/i8/u8 tensors are stored as
/// I32/I8/U8; f32 tensors as F32, F16 or BF16 (round to nearest even) per `params`.
inline std::vector<uint8_t> serialize_safetensors(
    const std::vector<std::pair<std::string, Tensor>>& tensors,
    const SafetensorsSaveParams& params = {}) {
  std::map<std::string, const Tensor*> sorted;
  for (const auto& [name, t] : tensors) {
    check(name != "__metadata__",
          "save_safetensors: '__metadata__' is reserved, not a tensor name");
    check(t.defined(), "save_safetensors: tensor '", name, "' is undefined");
    check(sorted.emplace(name, &t).second, "save_safetensors: duplicate tensor name '", name, "'");
  }
  for (const auto& [name, s] : params.storage) {
    auto it = sorted.find(name);
    check(it != sorted.end(), "save_safetensors: storage override for '", name,
          "', which is not among the tensors");
    check(it->second->dtype() == DType::f32 || s == FloatStorage::f32, "save_safetensors: tensor '",
          name, "' is ", dtype_name(it->second->dtype()),
          ", only f32 tensors can be stored as F16/BF16");
  }

  std::vector<SafetensorsRawTensor> raw;
  raw.reserve(sorted.size());
  for (const auto& [name, t] : sorted) {
    SafetensorsRawTensor r{.name = name, .dtype = "F32"};
    for (int64_t d = 0; d < t->ndim(); ++d) r.shape.push_back(t->dim(d));
    Tensor c = t->contiguous();
    FloatStorage storage = FloatStorage::f32;
    switch (c.dtype()) {
      case DType::f32: {
        auto it = params.storage.find(name);
        storage = it != params.storage.end() ? it->second : params.float_storage;
        r.dtype = storage == FloatStorage::f32   ? "F32"
                  : storage == FloatStorage::f16 ? "F16"
                                                 : "BF16";
        break;
      }
      case DType::i32:
        r.dtype = "I32";
        break;
      case DType::i8:
        r.dtype = "I8";
        break;
      case DType::u8:
        r.dtype = "U8";
        break;
    }
    if (c.dtype() == DType::f32 && storage != FloatStorage::f32) {
      r.bytes.resize(static_cast<size_t>(c.numel()) * 2);
      const float* src = c.data<float>();
      for (int64_t i = 0; i < c.numel(); ++i) {
        const uint16_t h = storage == FloatStorage::f16 ? detail::io::float_to_f16_bits(src[i])
                                                        : detail::io::float_to_bf16_bits(src[i]);
        std::memcpy(r.bytes.data() + 2 * i, &h, 2);
      }
    } else {
      const auto* p = reinterpret_cast<const uint8_t*>(c.raw_data());
      r.bytes.assign(p, p + c.nbytes());
    }
    raw.push_back(std::move(r));
  }
  return serialize_safetensors_raw(raw, params.metadata);
}

/// Writes `tensors` to `path` (see serialize_safetensors for the layout).
inline void save_safetensors(const std::string& path,
                             const std::vector<std::pair<std::string, Tensor>>& tensors,
                             const SafetensorsSaveParams& params = {}) {
  write_file_bytes(path, serialize_safetensors(tensors, params));
}

}  // namespace brecq
