// Fuzzes image decoding through the project's entry point (io/image.hpp decode_image: JPEG and
// PNG via stb_image, the declared-size limit, RGB conversion). Images that declare between 2^16
// pixels and the limit (kMaxImagePixels) are valid and take long to decode (stb_image decodes
// every declared block even when the data ends), so they are skipped to keep the fuzzer fast.
#include "brecq/io/image.hpp"

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto [w, h] = brecq::detail::io::declared_image_size({data, size});
  const uint64_t pixels = static_cast<uint64_t>(w) * static_cast<uint64_t>(h);
  if (pixels > (uint64_t{1} << 16) && pixels <= static_cast<uint64_t>(brecq::kMaxImagePixels))
    return 0;
  brecq::fuzz::accepts([&] {
    const brecq::Image img = brecq::decode_image(brecq::fuzz::bytes(data, size), "fuzz");
    if (img.pixels.size() != static_cast<size_t>(img.height * img.width * 3)) __builtin_trap();
  });
  return 0;
}
