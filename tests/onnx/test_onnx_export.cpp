// ONNX export (tools/onnx/): the graph read back through the ONNX protobuf schema holds what the
// model computes (ops, QDQ pairs exactly at the enabled activation points, integer weight levels
// and quantizer parameters equal to brecq's), python3-onnx's checker accepts it where installed,
// and ONNX Runtime (tools/ort/run.js) reproduces brecq's logits where node and onnxruntime-node
// are installed. Skipped parts say so.
#include <doctest/doctest.h>
#include <onnx/onnx-ml.pb.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "../../tools/onnx/onnx_export.hpp"
#include "brecq/kernels/fake_quant.hpp"
#include "brecq/nn/fold_bn.hpp"
#include "brecq/nn/models.hpp"

namespace {

using namespace brecq;
namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / "brecq_onnx_tests";
  fs::create_directories(dir);
  return (dir / name).string();
}

onnx::ModelProto read_model(const std::string& path) {
  onnx::ModelProto m;
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.is_open());
  REQUIRE(m.ParseFromIstream(&f));
  return m;
}

std::map<std::string, int> op_counts(const onnx::ModelProto& m) {
  std::map<std::string, int> c;
  for (const auto& n : m.graph().node()) ++c[n.op_type()];
  return c;
}

const onnx::TensorProto& initializer(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer())
    if (t.name() == name) return t;
  FAIL("no initializer ", name);
  throw std::logic_error("unreachable");
}

template <class T>
std::vector<T> values(const onnx::TensorProto& t) {
  std::vector<T> v(t.raw_data().size() / sizeof(T));
  std::memcpy(v.data(), t.raw_data().data(), v.size() * sizeof(T));
  return v;
}

/// A python3 with the onnx module, or "" (the test then skips the checker).
std::string python_with_onnx() {
  for (const char* py : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(py) + " -c 'import onnx' > /dev/null 2>&1").c_str()) == 0)
      return py;
  return "";
}

bool checker_accepts(const std::string& python, const std::string& path) {
  const std::string cmd = python +
                          " -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), "
                          "full_check=True)' " +
                          path;
  return std::system(cmd.c_str()) == 0;
}

bool ort_available() {
  return std::system("node --version > /dev/null 2>&1") == 0 &&
         fs::exists(fs::path(BRECQ_ORT_DIR) / "node_modules" / "onnxruntime-node");
}

/// Writes reference files for run.js (input, zero labels, brecq's logits) and returns its JSON.
std::string run_ort(const std::string& model, const Tensor& x, const Tensor& logits) {
  const std::string prefix = temp_path(fs::path(model).stem().string() + "_ref");
  const int64_t n = x.dim(0), k = logits.dim(1);
  {
    std::ofstream fi(prefix + ".input.f32", std::ios::binary);
    fi.write(reinterpret_cast<const char*>(x.contiguous().data<float>()),
             static_cast<std::streamsize>(x.numel() * 4));
    std::vector<int32_t> labels(static_cast<size_t>(n), 0);
    std::ofstream fl(prefix + ".labels.i32", std::ios::binary);
    fl.write(reinterpret_cast<const char*>(labels.data()), static_cast<std::streamsize>(n * 4));
    std::ofstream fo(prefix + ".logits.f32", std::ios::binary);
    fo.write(reinterpret_cast<const char*>(logits.contiguous().data<float>()),
             static_cast<std::streamsize>(logits.numel() * 4));
    std::ofstream fj(prefix + ".json");
    fj << "{\"images\": " << n << ", \"input_shape\": [" << n << ", " << x.dim(1) << ", "
       << x.dim(2) << ", " << x.dim(3) << "], \"num_classes\": " << k
       << ", \"data\": \"random\", \"preprocess\": \"none\"}\n";
  }
  const std::string out = prefix + ".result.json";
  const std::string cmd = "node " + std::string(BRECQ_ORT_DIR) + "/run.js --model " + model +
                          " --ref " + prefix + " --threads 2 --json > " + out;
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream f(out);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

double json_number(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\":");
  REQUIRE_MESSAGE(at != std::string::npos, "no ", key, " in ", json);
  return std::stod(json.substr(at + key.size() + 3));
}

nn::Model small_model() {
  nn::Model m = nn::make_model("resnet20_cifar");
  nn::init_deterministic(m, 11);
  return m;
}

quant::QuantModel small_quantized(const nn::Model& fp, const Tensor& calib) {
  quant::QuantModel qm(fp, {.w_bits = 2,
                            .a_bits = 4,
                            .w_init = quant::RangeInit::minmax,
                            .a_init = quant::RangeInit::minmax});
  qm.init_activations(calib);
  return qm;
}

}  // namespace

TEST_CASE("onnx export: FP model, BatchNorm folded or kept") {
  nn::Model fp = small_model();
  const std::string python = python_with_onnx();
  if (python.empty()) MESSAGE("python3-onnx not installed: checker part skipped");
  for (bool keep : {false, true}) {
    CAPTURE(keep);
    const std::string path = temp_path(keep ? "fp_keep.onnx" : "fp_fold.onnx");
    const onnx_export::ExportSummary s = onnx_export::export_fp(fp, keep, path);
    const onnx::ModelProto m = read_model(path);
    CHECK(m.opset_import(0).version() == onnx_export::kOpset);
    CHECK(m.graph().input(0).name() == "input");
    CHECK(m.graph().output(0).name() == "logits");
    std::map<std::string, int> ops = op_counts(m);
    CHECK(ops == s.ops);
    CHECK(ops["Conv"] == 19);
    CHECK(ops["Gemm"] == 1);
    CHECK(ops["Slice"] == 2);  // the two option-A shortcuts
    CHECK(ops["Pad"] == 2);
    CHECK(ops["Add"] == 9);
    CHECK(ops["BatchNormalization"] == (keep ? 19 : 0));
    CHECK(ops.count("QuantizeLinear") == 0);
    CHECK(s.bytes == static_cast<int64_t>(fs::file_size(path)));
    // Folded weights are the folded model's.
    if (!keep) {
      nn::Model folded = fp.clone();
      nn::fold_batchnorm(folded);
      const nn::Layer& l = *folded.layers()[3];
      const std::vector<float> w = values<float>(initializer(m, l.name + ".weight"));
      REQUIRE(static_cast<int64_t>(w.size()) == l.weight.numel());
      for (int64_t i = 0; i < l.weight.numel(); i += 97)
        CHECK(w[static_cast<size_t>(i)] == l.weight.data<float>()[i]);
    }
    if (!python.empty()) CHECK(checker_accepts(python, path));
  }
}

TEST_CASE("onnx export: quantized model in QDQ form") {
  nn::Model fp = small_model();
  Rng rng(3);
  const Tensor calib = Tensor::uniform(Shape{8, 3, 32, 32}, rng, -2.0f, 2.0f);
  quant::QuantModel qm = small_quantized(fp, calib);
  const std::string path = temp_path("w2a4.onnx");
  const onnx_export::ExportSummary s = onnx_export::export_quantized(qm, path);
  const onnx::ModelProto m = read_model(path);
  std::map<std::string, int> ops = op_counts(m);
  const int layers = static_cast<int>(qm.model.layers().size());
  int points = 0, narrow = 0;
  for (size_t p = 0; p < qm.act_q.size(); ++p)
    if (qm.act_enabled[p]) ++points, narrow += qm.act_q[p].config.bits < 8;
  CHECK(points == qm.model.num_points());  // every point on: input, stem, 2 per block
  CHECK(s.activation_points == points);
  CHECK(s.quantized_weights == layers);
  CHECK(ops["QuantizeLinear"] == points);
  CHECK(ops["DequantizeLinear"] == points + layers);
  CHECK(ops["Clip"] == narrow);
  CHECK(s.grid_clips == narrow);
  CHECK(narrow == points - 2);  // the input and the stem output are 8-bit

  // Integer weight levels, scales and zero points are brecq's.
  for (const nn::Layer* l : qm.model.layers()) {
    CAPTURE(l->name);
    const quant::UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l->id)];
    const onnx::TensorProto& lv = initializer(m, l->name + ".weight_levels");
    CHECK(lv.data_type() == onnx::TensorProto::UINT8);
    const Tensor want = qm.weight_levels(*l);
    const std::vector<uint8_t> got = values<uint8_t>(lv);
    REQUIRE(static_cast<int64_t>(got.size()) == want.numel());
    CHECK(std::memcmp(got.data(), want.data<uint8_t>(), got.size()) == 0);
    const std::vector<float> sc = values<float>(initializer(m, l->name + ".weight_scale"));
    const std::vector<uint8_t> zp = values<uint8_t>(initializer(m, l->name + ".weight_zero_point"));
    REQUIRE(static_cast<int64_t>(sc.size()) == q.channels());
    for (int64_t c = 0; c < q.channels(); ++c) {
      CHECK(sc[static_cast<size_t>(c)] == q.scale.data<float>()[c]);
      CHECK(zp[static_cast<size_t>(c)] == q.zero_point.data<float>()[c]);
    }
  }
  // The grid Clip of a 4-bit point bounds it at the dequantized ends of its grid.
  const nn::Layer& l = qm.model.blocks[1].layers[0];
  const quant::UniformQuantizer& aq = qm.act_q[static_cast<size_t>(l.act_point)];
  const std::string tag = l.name + ".out.q" + std::to_string(l.act_point);
  const float s0 = aq.scale.data<float>()[0], z0 = aq.zero_point.data<float>()[0];
  CHECK(values<float>(initializer(m, tag + ".hi"))[0] == (aq.qmax() - z0) * s0);
  CHECK(values<float>(initializer(m, tag + ".lo"))[0] == (0.0f - z0) * s0);
  CHECK(values<float>(initializer(m, tag + ".scale"))[0] == s0);

  const std::string python = python_with_onnx();
  if (python.empty())
    MESSAGE("python3-onnx not installed: checker part skipped");
  else
    CHECK(checker_accepts(python, path));

  // A disabled point disappears from the graph.
  qm.act_enabled[static_cast<size_t>(l.act_point)] = false;
  const onnx_export::ExportSummary s2 =
      onnx_export::export_quantized(qm, temp_path("w2a4_off.onnx"));
  CHECK(s2.activation_points == points - 1);
  CHECK(s2.ops.at("QuantizeLinear") == points - 1);
  CHECK(s2.grid_clips == narrow - 1);
}

TEST_CASE("onnx export: errors") {
  nn::Model fp = small_model();
  Rng rng(3);
  const Tensor calib = Tensor::uniform(Shape{4, 3, 32, 32}, rng, -2.0f, 2.0f);
  quant::QuantModel qm = small_quantized(fp, calib);
  CHECK_THROWS_WITH(onnx_export::export_fp(fp, false, "/nonexistent-dir/x.onnx"),
                    doctest::Contains("cannot open '/nonexistent-dir/x.onnx'"));
  {
    quant::QuantModel q(fp, {.w_bits = 2, .a_bits = 4});  // activation ranges not initialised
    CHECK_THROWS_WITH(onnx_export::export_quantized(q, temp_path("e.onnx")),
                      doctest::Contains("must have an initialised per-tensor quantizer"));
  }
  {
    quant::QuantModel q = qm;
    q.act_q[2].zero_point = Tensor::full(Shape{1}, 2.5f);
    CHECK_THROWS_WITH(onnx_export::export_quantized(q, temp_path("e.onnx")),
                      doctest::Contains("zero point must be an integer"));
  }
  {
    quant::QuantModel q = qm;
    q.act_q[2].scale = Tensor();
    CHECK_THROWS_WITH(onnx_export::export_quantized(q, temp_path("e.onnx")),
                      doctest::Contains("initialised per-tensor quantizer"));
  }
}

TEST_CASE("onnx export: ONNX Runtime reproduces brecq (node + onnxruntime-node)") {
  if (!ort_available()) {
    MESSAGE(
        "node or tools/ort/node_modules/onnxruntime-node missing: ONNX Runtime check "
        "skipped (cd tools/ort && npm install --ignore-scripts)");
    return;
  }
  nn::Model fp = small_model();
  Rng rng(5);
  const Tensor x = Tensor::uniform(Shape{16, 3, 32, 32}, rng, -2.0f, 2.0f);
  NoGrad ng;
  for (bool keep : {false, true}) {
    const std::string path = temp_path(keep ? "ort_fp_keep.onnx" : "ort_fp_fold.onnx");
    onnx_export::export_fp(fp, keep, path);
    const std::string r = run_ort(path, x, fp.forward(x));
    CAPTURE(r);
    CHECK(json_number(r, "rel_diff") < 1e-4);
    CHECK(json_number(r, "identical_predictions") == 100.0);
  }
  quant::QuantModel qm = small_quantized(fp, x);
  const std::string path = temp_path("ort_w2a4.onnx");
  onnx_export::export_quantized(qm, path);
  const std::string r = run_ort(path, x, qm.forward(x));
  CAPTURE(r);
  // Float sums in another order can move a value across a 4-bit step; the levels are computed
  // the same way, so nearly every prediction and almost all of the logits agree.
  CHECK(json_number(r, "identical_predictions") >= 15.0 / 16.0 * 100.0);
}

namespace {

/// y = DequantizeLinear(QuantizeLinear(Clip(x, lo, hi), s, z), s, z), all but x scalar inputs.
void write_qdq_model(const std::string& path) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  m.add_opset_import()->set_version(onnx_export::kOpset);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("qdq");
  auto input = [&](const char* name, int type, bool vector) {
    onnx::ValueInfoProto* v = g->add_input();
    v->set_name(name);
    v->mutable_type()->mutable_tensor_type()->set_elem_type(type);
    onnx::TensorShapeProto* shape = v->mutable_type()->mutable_tensor_type()->mutable_shape();
    if (vector) shape->add_dim()->set_dim_param("n");
  };
  input("x", onnx::TensorProto::FLOAT, true);
  for (const char* n : {"lo", "hi", "s"}) input(n, onnx::TensorProto::FLOAT, false);
  input("z", onnx::TensorProto::UINT8, false);
  auto node = [&](const char* op, std::vector<std::string> in, const char* out) {
    onnx::NodeProto* n = g->add_node();
    n->set_op_type(op);
    for (const std::string& i : in) n->add_input(i);
    n->add_output(out);
  };
  node("Clip", {"x", "lo", "hi"}, "c");
  node("QuantizeLinear", {"c", "s", "z"}, "q");
  node("DequantizeLinear", {"q", "s", "z"}, "y");
  onnx::ValueInfoProto* y = g->add_output();
  y->set_name("y");
  y->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  y->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_param("n");
  std::ofstream f(path, std::ios::binary);
  REQUIRE(m.SerializeToOstream(&f));
}

}  // namespace

TEST_CASE("onnx export: ONNX Runtime's QuantizeLinear rounds like brecq (ties, grid Clip)") {
  if (!ort_available()) {
    MESSAGE("node or tools/ort/node_modules/onnxruntime-node missing: rounding check skipped");
    return;
  }
  // Values at and a few ulps around the midpoints (k + 1/2) s, inside and outside the grid, for
  // 2..8 bits and random scales and zero points; y = brecq's fake quantization.
  const int32_t cases = 42, n = 2048;
  Rng rng(17);
  std::vector<float> rec;
  int64_t reciprocal_differs = 0;
  for (int c = 0; c < cases; ++c) {
    const int bits = 2 + c % 7;
    const float qmax = static_cast<float>((1 << bits) - 1);
    const float s = c < 3 ? std::ldexp(1.0f, -c - 1) : 0.001f + 0.5f * rng.uniform();
    const float z = static_cast<float>(c % 5 == 0 ? 0 : static_cast<int>(rng.uniform() * qmax));
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (float& v : x) {
      const float k = std::floor(rng.uniform() * (2.0f * qmax + 8.0f)) - qmax - 4.0f;
      v = (k + 0.5f) * s;
      for (int d = static_cast<int>(rng.uniform() * 5.0f) - 2; d != 0; d += d > 0 ? -1 : 1)
        v = std::nextafter(v, d > 0 ? INFINITY : -INFINITY);
    }
    kernels::fake_quant(x.data(), n, s, z, qmax, y.data());
    for (int i = 0; i < n; ++i) {  // the x * (1 / s) variant the check must tell apart
      const float q = std::min(
          std::max(std::nearbyint(x[static_cast<size_t>(i)] * (1.0f / s)) + z, 0.0f), qmax);
      reciprocal_differs += (q - z) * s != y[static_cast<size_t>(i)];
    }
    for (float v : {s, z, (0.0f - z) * s, (qmax - z) * s}) rec.push_back(v);
    rec.insert(rec.end(), x.begin(), x.end());
    rec.insert(rec.end(), y.begin(), y.end());
  }
  const std::string model = temp_path("qdq.onnx"), data = temp_path("qdq_cases.bin"),
                    out = temp_path("qdq_result.json");
  write_qdq_model(model);
  {
    std::ofstream f(data, std::ios::binary);
    f.write(reinterpret_cast<const char*>(&cases), 4);
    f.write(reinterpret_cast<const char*>(&n), 4);
    f.write(reinterpret_cast<const char*>(rec.data()),
            static_cast<std::streamsize>(rec.size() * 4));
  }
  REQUIRE(std::system(
              ("node " + std::string(BRECQ_ORT_DIR) + "/qdq.js " + model + " " + data + " > " + out)
                  .c_str()) == 0);
  std::ifstream f(out);
  const std::string r(std::istreambuf_iterator<char>(f), {});
  CAPTURE(r);
  CHECK(json_number(r, "values") == cases * n);
  CHECK(json_number(r, "mismatches") == 0);
  CHECK(json_number(r, "ties") > 1000);     // exact ties were exercised
  CHECK(json_number(r, "outside") > 1000);  // and the grid Clip
  CHECK(reciprocal_differs > 100);          // a multiply by 1 / s would have been caught
}
