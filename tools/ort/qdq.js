#!/usr/bin/env node
// Checks ONNX Runtime's QuantizeLinear/DequantizeLinear against brecq's fake quantization on
// given values (written by tests/onnx/test_onnx_export.cpp):
//   node tools/ort/qdq.js MODEL.onnx CASES.bin
// MODEL: inputs x [n], lo, hi, s (float scalars), z (uint8 scalar); y = DQ(Q(Clip(x, lo, hi))).
// CASES: int32 cases, int32 n, then per case float32 s, z, lo, hi, x[n], brecq's y[n].
// Prints one JSON line: values, mismatches, exact ties of x / s, values outside [lo, hi].
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

(async () => {
  const [model, cases] = process.argv.slice(2);
  if (!model || !cases) {
    console.error('usage: node qdq.js MODEL.onnx CASES.bin');
    process.exit(2);
  }
  const b = fs.readFileSync(cases);
  const S = b.readInt32LE(0), N = b.readInt32LE(4);
  const f = new Float32Array(b.length / 4 - 2);
  new Uint8Array(f.buffer).set(b.subarray(8));
  if (f.length !== S * (4 + 2 * N)) throw new Error(`${cases}: ${f.length} floats, expected ${S * (4 + 2 * N)}`);
  const sess = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  const scalar = (v) => new ort.Tensor('float32', new Float32Array([v]), []);
  let off = 0, mismatches = 0, ties = 0, outside = 0;
  for (let c = 0; c < S; ++c) {
    const [s, z, lo, hi] = f.subarray(off, off + 4);
    const x = f.slice(off + 4, off + 4 + N), y = f.subarray(off + 4 + N, off + 4 + 2 * N);
    off += 4 + 2 * N;
    const r = await sess.run({
      x: new ort.Tensor('float32', x, [N]), lo: scalar(lo), hi: scalar(hi), s: scalar(s),
      z: new ort.Tensor('uint8', new Uint8Array([z]), []),
    });
    for (let i = 0; i < N; ++i) {
      if (r.y.data[i] !== y[i]) ++mismatches;
      const q = Math.fround(x[i] / s);  // (exact ties only: the double quotient is then exact)
      if (q - Math.floor(q) === 0.5 && x[i] / s === q) ++ties;
      if (x[i] < lo || x[i] > hi) ++outside;
    }
  }
  console.log(JSON.stringify({ values: S * N, mismatches, ties, outside }));
})().catch((e) => {
  console.error(`qdq.js: error: ${e.message}`);
  process.exit(1);
});
