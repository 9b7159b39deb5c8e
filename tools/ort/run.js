#!/usr/bin/env node
// Runs an ONNX model exported by `brecq export` in ONNX Runtime (onnxruntime-node, CPU) and
// compares it with brecq.
//
// Check mode: the images come as the exact float tensors brecq fed its own model
// (`brecq export ... --reference-data DIR` writes PREFIX.input.f32 [N, C, H, W], PREFIX.labels.i32,
// PREFIX.logits.f32 and PREFIX.json; brecq decodes the JPEGs with stb_image and preprocesses), so
// decoding and resizing differences do not count:
//   node tools/ort/run.js --model M.onnx --ref PREFIX [--batch 100] [--threads 2]
//       [--opt all|extended|basic|disabled] [--write-logits FILE.f32] [--json]
// prints ORT's top-1, brecq's top-1, the share of identical predictions and the largest logit
// difference relative to the largest |logit|.
//
// Benchmark mode: times session.run on a random batch and prints one JSON line.
//   node tools/ort/run.js --model M.onnx --bench --batch 8 --size 224 [--rounds 5] [--threads 2]
//
// Install once: (cd tools/ort && npm install --ignore-scripts)
'use strict';
const fs = require('fs');

const usage = `usage: node run.js --model M.onnx --ref PREFIX [--batch N] [--threads N]
                   [--opt all|extended|basic|disabled] [--write-logits FILE] [--json]
       node run.js --model M.onnx --bench [--batch N] [--size N] [--channels N] [--rounds N]
                   [--threads N] [--opt LEVEL]`;

function parseArgs(argv) {
  const known = {
    '--model': 1, '--ref': 1, '--batch': 1, '--threads': 1, '--opt': 1, '--write-logits': 1,
    '--json': 0, '--bench': 0, '--size': 1, '--channels': 1, '--rounds': 1, '--help': 0,
  };
  const a = {};
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    if (!(k in known)) die(`unknown flag '${k}'; expected one of: ${Object.keys(known).join(', ')}`);
    if (k in a) die(`flag ${k} given more than once`);
    if (known[k] === 0) {
      a[k] = true;
    } else {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--'))
        die(`flag ${k} expects a value`);
      a[k] = argv[++i];
    }
  }
  if (a['--help']) {
    console.log(usage);
    process.exit(0);
  }
  return a;
}

function die(msg) {
  console.error(`run.js: error: ${msg}\n\n${usage}`);
  process.exit(2);
}

function intFlag(a, name, dflt, min) {
  if (!(name in a)) return dflt;
  const v = Number(a[name]);
  if (!Number.isInteger(v) || v < min) die(`flag ${name} expects an integer >= ${min}, got '${a[name]}'`);
  return v;
}

/// The file's bytes as a typed array of `Type` with `count` elements, checked.
function readRaw(path, Type, count) {
  if (!fs.existsSync(path)) die(`no such file '${path}'`);
  const buf = fs.readFileSync(path);
  const want = count * Type.BYTES_PER_ELEMENT;
  if (buf.length !== want)
    throw new Error(`'${path}' has ${buf.length} bytes, expected ${want} (${count} values)`);
  const out = new Type(count);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

function argmax(row) {
  let best = 0;
  for (let c = 1; c < row.length; ++c) if (row[c] > row[best]) best = c;
  return best;
}

async function session(ort, a) {
  const levels = ['all', 'extended', 'basic', 'disabled'];
  const opt = a['--opt'] || 'all';
  if (!levels.includes(opt)) die(`flag --opt expects one of: ${levels.join(', ')}; got '${opt}'`);
  if (!a['--model']) die('missing required flag --model M.onnx');
  if (!fs.existsSync(a['--model'])) die(`flag --model: no such file '${a['--model']}'`);
  return ort.InferenceSession.create(a['--model'], {
    intraOpNumThreads: intFlag(a, '--threads', 2, 1),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: opt,
  });
}

async function check(ort, a) {
  const prefix = a['--ref'];
  const meta = JSON.parse(fs.readFileSync(`${prefix}.json`, 'utf8'));
  const [n, c, h, w] = meta.input_shape;
  const k = meta.num_classes;
  const per = c * h * w;
  const input = readRaw(`${prefix}.input.f32`, Float32Array, n * per);
  const labels = readRaw(`${prefix}.labels.i32`, Int32Array, n);
  const ref = readRaw(`${prefix}.logits.f32`, Float32Array, n * k);
  const sess = await session(ort, a);
  const batch = intFlag(a, '--batch', 100, 1);
  const out = new Float32Array(n * k);
  const t0 = process.hrtime.bigint();
  for (let b = 0; b < n; b += batch) {
    const m = Math.min(batch, n - b);
    const x = new ort.Tensor('float32', input.subarray(b * per, (b + m) * per), [m, c, h, w]);
    const r = await sess.run({ [sess.inputNames[0]]: x });
    const y = r[sess.outputNames[0]];
    if (y.dims.length !== 2 || y.dims[0] !== m || y.dims[1] !== k)
      throw new Error(`model output has shape [${y.dims}], expected [${m}, ${k}]`);
    out.set(y.data, b * k);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  let ortTop1 = 0, brecqTop1 = 0, same = 0, maxDiff = 0, maxAbs = 0;
  for (let i = 0; i < n; ++i) {
    const o = out.subarray(i * k, (i + 1) * k), r = ref.subarray(i * k, (i + 1) * k);
    const po = argmax(o), pr = argmax(r);
    ortTop1 += po === labels[i];
    brecqTop1 += pr === labels[i];
    same += po === pr;
    for (let j = 0; j < k; ++j) {
      maxDiff = Math.max(maxDiff, Math.abs(o[j] - r[j]));
      maxAbs = Math.max(maxAbs, Math.abs(r[j]));
    }
  }
  if (a['--write-logits']) fs.writeFileSync(a['--write-logits'], Buffer.from(out.buffer));
  const res = {
    model: a['--model'], images: n, opt: a['--opt'] || 'all', threads: intFlag(a, '--threads', 2, 1),
    ort_top1: 100 * ortTop1 / n, brecq_top1: 100 * brecqTop1 / n,
    identical_predictions: 100 * same / n, max_abs_diff: maxDiff, max_abs_logit: maxAbs,
    rel_diff: maxAbs > 0 ? maxDiff / maxAbs : maxDiff, seconds,
  };
  if (a['--json']) {
    console.log(JSON.stringify(res));
    return;
  }
  console.log(`model        ${res.model} (ONNX Runtime ${require('onnxruntime-node/package.json').version}, opt ${res.opt}, ${res.threads} threads)`);
  console.log(`images       ${n} from ${prefix} (${meta.data}, preprocess ${meta.preprocess})`);
  console.log(`top-1        ORT ${res.ort_top1.toFixed(2)} %, brecq ${res.brecq_top1.toFixed(2)} %`);
  console.log(`predictions  ${res.identical_predictions.toFixed(2)} % identical (${same} of ${n})`);
  console.log(`logits       max |ORT - brecq| ${maxDiff.toExponential(3)}, max |logit| ${maxAbs.toFixed(4)}, ratio ${res.rel_diff.toExponential(3)}`);
  console.log(`time         ${seconds.toFixed(2)} s`);
}

async function bench(ort, a) {
  const sess = await session(ort, a);
  const n = intFlag(a, '--batch', 8, 1), size = intFlag(a, '--size', 224, 1);
  const c = intFlag(a, '--channels', 3, 1), rounds = intFlag(a, '--rounds', 5, 1);
  const data = new Float32Array(n * c * size * size);
  let s = 1;  // a fixed LCG: the same batch every run
  for (let i = 0; i < data.length; ++i) {
    s = (s * 1664525 + 1013904223) >>> 0;
    data[i] = (s / 4294967296) * 4 - 2;
  }
  const feeds = { [sess.inputNames[0]]: new ort.Tensor('float32', data, [n, c, size, size]) };
  await sess.run(feeds);  // warm-up
  const t = [];
  for (let r = 0; r < rounds; ++r) {
    const t0 = process.hrtime.bigint();
    await sess.run(feeds);
    t.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  t.sort((x, y) => x - y);
  console.log(JSON.stringify({
    runtime: `onnxruntime ${require('onnxruntime-node/package.json').version}`, model: a['--model'],
    batch: n, size, threads: intFlag(a, '--threads', 2, 1), opt: a['--opt'] || 'all',
    best_s: t[0], median_s: t[Math.floor(t.length / 2)],
  }));
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    console.error('run.js: error: onnxruntime-node is not installed: (cd tools/ort && npm install --ignore-scripts)');
    process.exit(3);
  }
  if (a['--bench']) return bench(ort, a);
  if (!a['--ref']) die('expected --ref PREFIX (from brecq export --reference-data) or --bench');
  return check(ort, a);
}

main().catch((e) => {
  console.error(`run.js: error: ${e.message}`);
  process.exit(1);
});
