// Fuzzes the MNIST-format loader (io/idx.hpp): gzip (header fields, inflate, ISIZE, CRC32) and
// IDX parsing, through FashionMnist::from_bytes. Input: a 4-byte little-endian length L, then L
// bytes of the images file, then the labels file (L is clamped to what follows).
#include "brecq/io/idx.hpp"

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  size_t n = data[0] | (size_t{data[1]} << 8) | (size_t{data[2]} << 16) | (size_t{data[3]} << 24);
  n = std::min(n, size - 4);
  const std::span<const uint8_t> images(data + 4, n), labels(data + 4 + n, size - 4 - n);
  brecq::fuzz::accepts([&] {
    const auto m =
        brecq::FashionMnist::from_bytes(images, labels, {}, "fuzz-images", "fuzz-labels");
    if (m.size() > 0) m.get(m.size() - 1);
  });
  return 0;
}
