// Shape, Storage, Tensor (views, copies, strides, alignment, errors), Rng and parallel_for.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../support.hpp"
#include "brecq/tensor/parallel.hpp"
#include "brecq/tensor/rng.hpp"
#include "brecq/tensor/tensor.hpp"

namespace {

using namespace brecq;

using brecq::test::check_error;

/// 0, 1, 2, ... in a new tensor.
Tensor iota(Shape shape) {
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  return Tensor::from_vector(std::move(shape), v);
}

}  // namespace

TEST_CASE("Shape: sizes, negative indices, strides, printing, errors") {
  const Shape s{2, 3, 4};
  CHECK(s.ndim() == 3);
  CHECK(s.numel() == 24);
  CHECK(s[-1] == 4);
  CHECK(s[0] == 2);
  CHECK(s.contiguous_strides() == std::vector<int64_t>{12, 4, 1});
  CHECK(s.str() == "[2, 3, 4]");
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{}.str() == "[]");
  CHECK(Shape{3, 0}.numel() == 0);
  check_error([&] { (void)s[3]; }, {"dimension index 3", "[2, 3, 4]"});
  check_error([&] { (void)s[-4]; }, {"-4", "[2, 3, 4]"});
  check_error([] { (void)Shape{2, -1}; }, {"[2, -1]", "negative"});
}

TEST_CASE("storage is 64-byte aligned for every size and dtype") {
  for (int64_t n : {0, 1, 3, 17, 64, 1000}) {
    for (DType t : {DType::f32, DType::i32, DType::i8, DType::u8}) {
      Tensor x = Tensor::empty({n}, t);
      CHECK(reinterpret_cast<uintptr_t>(x.impl().storage->data()) % 64 == 0);
      CHECK(x.nbytes() == static_cast<size_t>(n) * dtype_size(t));
    }
  }
  CHECK(Storage::alignment == 64);
  CHECK(dtype_size(DType::i8) == 1);
  CHECK(dtype_name(DType::u8) == "u8");
}

TEST_CASE("factories") {
  CHECK(Tensor::zeros({2, 2}).to_vector() == std::vector<float>(4, 0.0f));
  CHECK(Tensor::ones({3}).to_vector() == std::vector<float>(3, 1.0f));
  CHECK(Tensor::full({2}, 2.5f).to_vector() == std::vector<float>{2.5f, 2.5f});
  Tensor s = Tensor::scalar(4.0f);
  CHECK(s.ndim() == 0);
  CHECK(s.item() == 4.0f);
  const int8_t raw[3] = {-1, 2, -3};
  Tensor q = Tensor::from_data(Shape{3}, raw);
  CHECK(q.dtype() == DType::i8);
  CHECK(q.data<int8_t>()[2] == -3);
  check_error([] { Tensor::from_vector({2, 2}, {1, 2, 3}); }, {"from_vector", "[2, 2]", "4", "3"});
  check_error([&] { q.data<float>(); }, {"i8", "f32"});
  check_error([] { (void)Tensor::ones({2}).item(); }, {"item", "[2]"});
  check_error([] { (void)Tensor().shape(); }, {"undefined"});
}

TEST_CASE("strides, contiguity and element access") {
  Tensor t = iota({2, 3, 4});
  CHECK(t.strides() == std::vector<int64_t>{12, 4, 1});
  CHECK(t.is_contiguous());
  CHECK(t.at({1, 2, 3}) == 23.0f);
  Tensor n = t.narrow(2, 1, 2);  // [2, 3, 2] with strides {12, 4, 1}
  CHECK(n.strides() == std::vector<int64_t>{12, 4, 1});
  CHECK(n.offset() == 1);
  CHECK_FALSE(n.is_contiguous());
  CHECK(n.at({1, 2, 1}) == 22.0f);
  CHECK(n.to_vector() == std::vector<float>{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22});
  // Size-1 dimensions do not break contiguity.
  CHECK(t.narrow(0, 1, 1).is_contiguous());
  CHECK(t.narrow(0, 1, 1).narrow(1, 2, 1).is_contiguous());
  check_error([&] { (void)t.at({0, 3, 0}); }, {"at", "index 3", "dim 1", "[2, 3, 4]"});
  check_error([&] { (void)t.at({0, 0}); }, {"at", "2 entries", "[2, 3, 4]"});
}

TEST_CASE("views share storage; clone does not") {
  Tensor t = iota({2, 6});
  Tensor v = t.view({3, 4});
  CHECK(v.same_storage(t));
  CHECK(v.shape() == Shape{3, 4});
  v.data<float>()[5] = -1.0f;
  CHECK(t.at({0, 5}) == -1.0f);

  Tensor n = t.narrow(1, 2, 3);
  CHECK(n.same_storage(t));
  n.copy_from(Tensor::full({2, 3}, 7.0f));
  CHECK(t.to_vector() == std::vector<float>{0, 1, 7, 7, 7, -1, 6, 7, 7, 7, 7, 11});

  Tensor c = n.clone();
  CHECK_FALSE(c.same_storage(t));
  CHECK(c.is_contiguous());
  CHECK(c.to_vector() == n.to_vector());
  c.data<float>()[0] = 100.0f;
  CHECK(t.at({0, 2}) == 7.0f);

  Tensor d = t.detach();
  CHECK(d.same_storage(t));
  CHECK(n.contiguous().is_contiguous());
  CHECK_FALSE(n.contiguous().same_storage(t));
  CHECK(t.contiguous().same_storage(t));

  check_error([&] { (void)t.view({5, 2}); }, {"view", "[2, 6]", "[5, 2]"});
  check_error([&] { (void)n.view({6}); }, {"view", "contiguous", "[2, 3]"});
  check_error([&] { (void)t.narrow(1, 4, 3); }, {"narrow", "[4, 7)", "dim 1", "[2, 6]"});
  check_error([&] { (void)t.narrow(2, 0, 1); }, {"dimension index 2", "[2, 6]"});
  check_error([&] { n.fill(0.0f); }, {"fill", "[2, 3]"});
}

TEST_CASE("copy_from between any strides") {
  Tensor src = iota({3, 5});
  Tensor nsrc = src.narrow(1, 1, 3);  // [3, 3], non-contiguous
  Tensor dst = Tensor::zeros({3, 3});
  dst.copy_from(nsrc);
  CHECK(dst.to_vector() == std::vector<float>{1, 2, 3, 6, 7, 8, 11, 12, 13});
  // non-contiguous -> non-contiguous
  Tensor big = Tensor::zeros({3, 6});
  Tensor ndst = big.narrow(1, 2, 3);
  ndst.copy_from(nsrc);
  CHECK(big.to_vector() ==
        std::vector<float>{0, 0, 1, 2, 3, 0, 0, 0, 6, 7, 8, 0, 0, 0, 11, 12, 13, 0});
  // contiguous -> non-contiguous; integer dtype
  const int32_t raw[4] = {1, 2, 3, 4};
  Tensor ib = Tensor::zeros({2, 4}, DType::i32);
  ib.narrow(1, 1, 2).copy_from(Tensor::from_data(Shape{2, 2}, raw));
  CHECK(std::vector<int32_t>(ib.data<int32_t>(), ib.data<int32_t>() + 8) ==
        std::vector<int32_t>{0, 1, 2, 0, 0, 3, 4, 0});
  // overlapping contiguous copy within one storage (memmove)
  Tensor row = iota({6});
  row.narrow(0, 1, 4).copy_from(row.narrow(0, 0, 4));
  CHECK(row.to_vector() == std::vector<float>{0, 0, 1, 2, 3, 5});
  check_error([&] { dst.copy_from(src); }, {"copy_from", "[3, 3]", "[3, 5]"});
  check_error([&] { ib.copy_from(Tensor::zeros({2, 4})); }, {"copy_from", "i32", "f32"});
}

TEST_CASE("autograd state on tensors") {
  Tensor t = Tensor::ones({2});
  CHECK_FALSE(t.requires_grad());
  CHECK(t.is_leaf());
  t.set_requires_grad(true);
  CHECK(t.requires_grad());
  CHECK_FALSE(t.detach().requires_grad());
  CHECK_FALSE(t.grad().defined());
  check_error([] { Tensor::zeros({2}, DType::i8).set_requires_grad(true); },
              {"set_requires_grad", "f32"});
}

TEST_CASE("Rng: splitmix64 reference values, ranges, determinism") {
  Rng r0(0);
  CHECK(r0.next_u64() == 0xE220A8397B1DCDAFull);
  CHECK(r0.next_u64() == 0x6E789E6AA1B965F4ull);
  CHECK(r0.next_u64() == 0x06C45D188009454Full);
  Rng a(42), b(42);
  double mean = 0.0, sq = 0.0;
  int mismatches = 0, out_of_range = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const float u = a.uniform(), v = a.uniform(-2.0f, 3.0f);
    const uint64_t k = a.below(7);
    const double z = a.normal();
    mismatches +=
        u != b.uniform() || v != b.uniform(-2.0f, 3.0f) || k != b.below(7) || z != b.normal();
    out_of_range += u < 0.0f || u >= 1.0f || v < -2.0f || v >= 3.0f || k >= 7;
    mean += z;
    sq += z * z;
  }
  CHECK(mismatches == 0);
  CHECK(out_of_range == 0);
  mean /= n;
  CHECK(std::fabs(mean) < 0.05);
  CHECK(std::sqrt(sq / n - mean * mean) == doctest::Approx(1.0).epsilon(0.05));
  CHECK(Rng(1).below(0) == 0);
}

TEST_CASE("parallel_for covers a range exactly once for any thread count") {
  const int saved = num_threads();
  for (int threads : {1, 2, 3, 7}) {
    set_num_threads(threads);
    for (int64_t n : {0, 1, 5, 100, 1001}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n) + 3);
      parallel_for(3, 3 + n, 4, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      });
      int bad = 0;
      for (int64_t i = 0; i < n + 3; ++i) bad += hits[static_cast<size_t>(i)] != (i >= 3 ? 1 : 0);
      CHECK_MESSAGE(bad == 0, threads, " threads, n = ", n);
    }
  }
  set_num_threads(saved);
}

TEST_CASE("file-backed tensors: a mapped, unlinked temporary file; a bad folder is named") {
  const std::string dir = brecq::test::temp_path("file_backed");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    Tensor t = Tensor::empty(Shape{3, 1000}, FileBacked{dir});
    CHECK(t.impl().storage->file_backed());
    CHECK(reinterpret_cast<uintptr_t>(t.raw_data()) % Storage::alignment == 0);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
    const Tensor view = t.narrow(0, 2, 1).contiguous();
    CHECK(view.data<float>()[0] == 2000.0f);
    CHECK(std::filesystem::is_empty(dir));  // nothing to leave behind, even if killed
    CHECK(!Tensor::empty(Shape{4}).impl().storage->file_backed());
  }
  std::filesystem::remove_all(dir);
  const std::string message = "cannot create a temporary file in '" + dir + "'";
  CHECK_THROWS_WITH_AS(Tensor::empty(Shape{4}, FileBacked{dir}), doctest::Contains(message.c_str()),
                       Error);
}
