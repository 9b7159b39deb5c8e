#!/usr/bin/python3
"""Golden forward outputs and gradients of brecq's ops, optimizer trajectories and LR schedules,
computed with PyTorch, for tests/ops/test_golden.cpp and tests/nn/test_optim.cpp.

Run with Debian's python (it has torch):  /usr/bin/python3 tools/make_golden_ops.py
Writes tests/data/golden_ops.bin. Deterministic: inputs come from a splitmix64 generator that is
bit-identical to brecq::Rng, so the C++ tests regenerate them from the case name and the file
only holds results.

Per op case `name` (inputs drawn in order from Rng(fnv1a64(name)), then a seed tensor shaped like
the output, uniform in [0.5, 1.5)):
  name/input_sums  sum of each input (catches a C++ table that drifted from this one)
  name/out         forward output
  name/grad<i>     d sum(out * seed) / d input i, for every input that takes a gradient
  name/after<i>    value of input i after the call, for inputs the op updates (running stats)

File format (little endian): b"BRQGOLD1", u32 count, then per tensor: u32 name length, name
(utf-8), u32 ndim, i64 dims[ndim], f32 values[numel] (row-major).
"""
import math
import os
import struct

import torch
import torch.nn.functional as F

MASK64 = (1 << 64) - 1


class Rng:
    """brecq::Rng (include/brecq/tensor/rng.hpp), bit for bit."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next_u64() >> 40) * 2.0 ** -24

    def below(self, n):
        return self.next_u64() % n


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def numel(shape):
    return math.prod(shape)


def uniform(rng, shape, lo, hi):
    """Tensor::uniform(shape, rng, lo, hi). hi - lo is a power of two, so lo + (hi - lo) * u has
    one rounding in float32 whatever the compiler does (FMA or not), and the exact double sum
    rounded to float32 gives the same value."""
    width = hi - lo
    assert width > 0 and math.frexp(width)[0] == 0.5, f"width {width} must be a power of two"
    vals = [lo + width * rng.uniform() for _ in range(numel(shape))]
    return torch.tensor(vals, dtype=torch.float32).reshape(shape)


def quarters(rng, shape):
    """Multiples of 0.25 in [-5, 5] (exact in float32): rounding ties included."""
    vals = [(int(rng.below(41)) - 20) * 0.25 for _ in range(numel(shape))]
    return torch.tensor(vals, dtype=torch.float32).reshape(shape)


# ---- input specs: (kind, shape, lo, hi, takes_grad) ---------------------------------------------
def U(*shape, lo=-1.0, hi=1.0, grad=True):
    return ("u", shape, lo, hi, grad)


def Q(*shape):
    return ("q", shape, 0.0, 0.0, True)


def make_input(rng, spec):
    kind, shape, lo, hi, _ = spec
    return uniform(rng, shape, lo, hi) if kind == "u" else quarters(rng, shape)


def bn(training):
    def f(x, w, b, rm, rv):
        return F.batch_norm(x, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5)
    return f


def bn_specs():
    return [U(3, 4, 2, 3), U(4, lo=0.5, hi=1.5), U(4), U(4, lo=-0.5, hi=0.5, grad=False),
            U(4, lo=0.5, hi=1.5, grad=False)]


LABELS = [2, 0, 4, 1]

# name, input specs, function, inputs the op updates in place. Mirrored by the table in
# tests/ops/test_golden.cpp (same names, same specs, in the same order).
CASES = [
    # elementwise, with broadcasting
    ("add_bcast_4d", [U(2, 3, 4, 5), U(1, 3, 1, 1)], lambda a, b: a + b),
    ("add_bcast_rank", [U(5), U(2, 1, 5)], lambda a, b: a + b),
    ("sub_scalar_tensor", [U(3, 4), U()], lambda a, b: a - b),
    ("sub_bcast_left", [U(1, 4), U(3, 4)], lambda a, b: a - b),
    ("mul_bcast_4d", [U(2, 3, 4, 5), U(1, 3, 1, 1)], lambda a, b: a * b),
    ("mul_outer", [U(3, 1), U(1, 4)], lambda a, b: a * b),
    ("div_bcast", [U(2, 3, 4), U(3, 1, lo=0.5, hi=1.5)], lambda a, b: a / b),
    ("maximum_bcast", [U(2, 3, 4), U(3, 4)], torch.maximum),
    ("neg", [U(3, 7)], torch.neg),
    ("relu", [U(3, 7)], torch.relu),
    ("relu6", [U(3, 7, lo=-4.0, hi=12.0)], F.relu6),
    ("sigmoid", [U(3, 7, lo=-4.0, hi=4.0)], torch.sigmoid),
    ("clamp", [U(3, 7)], lambda x: torch.clamp(x, -0.5, 0.5)),
    ("abs", [U(3, 7)], torch.abs),
    ("pow_frac", [U(3, 7, lo=0.5, hi=1.5)], lambda x: torch.pow(x, 2.5)),
    ("pow_int", [U(3, 7)], lambda x: torch.pow(x, 3.0)),
    ("square", [U(3, 7)], torch.square),
    ("sqrt", [U(3, 7, lo=0.5, hi=2.5)], torch.sqrt),
    ("exp", [U(3, 7)], torch.exp),
    ("log", [U(3, 7, lo=0.5, hi=2.5)], torch.log),
    ("round", [Q(4, 10)], torch.round),
    ("floor", [Q(4, 10)], torch.floor),
    ("round_ste", [Q(4, 10)], lambda x: x + (torch.round(x) - x).detach()),
    ("floor_ste", [U(4, 10, lo=-4.0, hi=4.0)], lambda x: x + (torch.floor(x) - x).detach()),
    # gradients exactly at the kinks follow torch's conventions
    ("relu_at_kinks", [Q(4, 25)], torch.relu),
    ("relu6_at_kinks", [Q(4, 25)], lambda x: F.relu6(x + 1.0)),
    ("clamp_at_kinks", [Q(4, 25)], lambda x: torch.clamp(x, -0.5, 0.5)),
    ("abs_at_kinks", [Q(4, 25)], torch.abs),
    # reductions
    ("sum_all", [U(3, 4, 5)], torch.sum),
    ("mean_all", [U(3, 4, 5)], torch.mean),
    ("sum_dims", [U(2, 3, 4, 5)], lambda x: torch.sum(x, dim=(1, 3))),
    ("sum_dims_keepdim", [U(2, 3, 4)], lambda x: torch.sum(x, dim=(0, 2), keepdim=True)),
    ("mean_dims_negative", [U(2, 3, 4, 5)], lambda x: torch.mean(x, dim=(-1, 0))),
    # shape
    ("reshape", [U(2, 3, 4)], lambda x: torch.reshape(x, (4, -1))),
    ("flatten", [U(2, 3, 2, 2)], lambda x: torch.flatten(x, 1)),
    ("narrow", [U(3, 5, 4)], lambda x: torch.narrow(x, 1, 1, 3)),
    ("subsample_2x2", [U(2, 3, 5, 7)], lambda x: x[:, :, ::2, ::2]),
    ("subsample_1x3", [U(1, 2, 4, 7)], lambda x: x[:, :, ::1, ::3]),
    ("pad_channels", [U(2, 3, 2, 3)], lambda x: F.pad(x, (0, 0, 0, 0, 1, 2))),
    ("cat_dim1", [U(2, 3, 4), U(2, 1, 4), U(2, 2, 4)], lambda *xs: torch.cat(xs, 1)),
    ("cat_dim0", [U(1, 3), U(2, 3)], lambda *xs: torch.cat(xs, 0)),
    # matmul / linear
    ("matmul", [U(3, 5), U(5, 4)], torch.matmul),
    ("matmul_tiles", [U(9, 20), U(20, 35)], torch.matmul),
    ("linear", [U(4, 6), U(3, 6), U(3)], F.linear),
    ("linear_nobias_batch1", [U(1, 7), U(5, 7)], F.linear),
    # conv2d
    ("conv_basic", [U(2, 3, 5, 5), U(4, 3, 3, 3), U(4)], lambda x, w, b: F.conv2d(x, w, b)),
    ("conv_stride2_pad1", [U(2, 3, 7, 6), U(4, 3, 3, 3), U(4)],
     lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1)),
    ("conv_pad2", [U(1, 2, 4, 5), U(2, 2, 3, 3)], lambda x, w: F.conv2d(x, w, padding=2)),
    ("conv_pad2_dilation2", [U(1, 2, 7, 7), U(3, 2, 3, 3), U(3)],
     lambda x, w, b: F.conv2d(x, w, b, padding=2, dilation=2)),
    ("conv_groups2", [U(2, 4, 5, 5), U(6, 2, 3, 3), U(6)],
     lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=2)),
    ("conv_depthwise", [U(2, 3, 6, 5), U(3, 1, 3, 3), U(3)],
     lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=3)),
    ("conv_depthwise_x2", [U(1, 2, 5, 5), U(4, 1, 3, 3)],
     lambda x, w: F.conv2d(x, w, padding=1, groups=2)),
    ("conv_1x1_stride2_batch1", [U(1, 3, 9, 7), U(5, 3, 1, 1), U(5)],
     lambda x, w, b: F.conv2d(x, w, b, stride=2)),
    ("conv_rect_kernel", [U(1, 3, 6, 7), U(4, 3, 2, 3)], lambda x, w: F.conv2d(x, w, padding=1)),
    ("conv_wide", [U(2, 8, 6, 19), U(16, 8, 3, 3), U(16)], lambda x, w, b: F.conv2d(x, w, b, padding=1)),
    # pooling (uniform 24-bit inputs: no ties in a window)
    ("max_pool_k2", [U(2, 3, 6, 5)], lambda x: F.max_pool2d(x, 2)),
    ("max_pool_k3_s2_p1", [U(1, 2, 7, 6)], lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("avg_pool_k3_s2_p1", [U(2, 2, 7, 6)], lambda x: F.avg_pool2d(x, 3, 2, 1)),
    ("avg_pool_k2_s1", [U(1, 3, 4, 5)], lambda x: F.avg_pool2d(x, 2, 1)),
    ("global_avg_pool", [U(2, 3, 4, 5)], lambda x: x.mean((2, 3))),
    # batch norm: x, weight, bias, running_mean, running_var
    ("batch_norm_train", bn_specs(), bn(True), [3, 4]),
    ("batch_norm_eval", bn_specs(), bn(False)),
    # softmax family and losses
    ("log_softmax", [U(3, 5, lo=-2.0, hi=2.0)], lambda x: F.log_softmax(x, 1)),
    ("softmax", [U(3, 5, lo=-2.0, hi=2.0)], lambda x: F.softmax(x, 1)),
    ("cross_entropy", [U(4, 5, lo=-2.0, hi=2.0)],
     lambda x: F.cross_entropy(x, torch.tensor(LABELS))),
    ("kl_div", [U(3, 6, lo=-2.0, hi=2.0), U(3, 6, lo=-2.0, hi=2.0)],
     lambda q, p: F.kl_div(F.log_softmax(q, 1), F.softmax(p, 1), reduction="batchmean")),
    ("mse_loss", [U(3, 4), U(3, 4)], F.mse_loss),
    # BRECQ's lp_loss: channel sum, mean over batch and positions; gradient into pred only
    ("lp_loss", [U(3, 4), U(3, 4, grad=False)], lambda a, b: (a - b).abs().pow(2.4).sum(1).mean()),
    ("lp_loss_p2_4d", [U(2, 3, 2, 2), U(2, 3, 2, 2, grad=False)],
     lambda a, b: (a - b).abs().pow(2.0).sum(1).mean()),
    ("lp_loss_weighted_4d", [U(2, 3, 2, 2), U(2, 3, 2, 2, grad=False),
                             U(2, 3, 2, 2, lo=0.5, hi=1.5, grad=False)],
     lambda a, b, w: (w * w * (a - b).abs().pow(2.4)).sum(1).mean()),
]


def run_case(name, specs, fn, mutated=()):
    rng = Rng(fnv1a64(name))
    inputs = [make_input(rng, s) for s in specs]
    sums = torch.tensor([float(t.double().sum()) for t in inputs], dtype=torch.float32)
    for t, s in zip(inputs, specs):
        t.requires_grad_(s[4])
    out = fn(*inputs)
    seed = uniform(rng, tuple(out.shape), 0.5, 1.5)
    (out * seed).sum().backward()
    res = {f"{name}/input_sums": sums, f"{name}/out": out.detach()}
    for i, (t, s) in enumerate(zip(inputs, specs)):
        if s[4]:
            res[f"{name}/grad{i}"] = t.grad if t.grad is not None else torch.zeros_like(t)
    for i in mutated:
        res[f"{name}/after{i}"] = inputs[i].detach()
    return res


# ---- optimizers: 10 steps on a small least-squares problem --------------------------------------
OPTIMIZERS = [
    ("sgd_plain", lambda ps: torch.optim.SGD(ps, lr=0.1)),
    ("sgd_momentum", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    ("sgd_nesterov_wd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01,
                                                   nesterov=True)),
    ("sgd_dampening_wd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3,
                                                    weight_decay=0.05)),
    ("adam", lambda ps: torch.optim.Adam(ps, lr=0.05)),
    ("adam_wd", lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6,
                                            weight_decay=0.1)),
]
OPTIM_STEPS = 10


def run_optimizers():
    rng = Rng(fnv1a64("optim"))
    x, y = uniform(rng, (8, 4), -1.0, 1.0), uniform(rng, (8, 3), -1.0, 1.0)
    w0, b0 = uniform(rng, (3, 4), -0.5, 0.5), uniform(rng, (3,), -0.5, 0.5)
    res = {}
    for name, make in OPTIMIZERS:
        w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
        opt = make([w, b])
        ws, bs, losses = [], [], []
        for _ in range(OPTIM_STEPS):
            opt.zero_grad()
            loss = F.mse_loss(F.linear(x, w, b), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            ws.append(w.detach().clone())
            bs.append(b.detach().clone())
        res[f"optim/{name}/w"] = torch.stack(ws)
        res[f"optim/{name}/b"] = torch.stack(bs)
        res[f"optim/{name}/loss"] = torch.tensor(losses)
    return res


def run_schedules():
    def lrs(make_sched, steps):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make_sched(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return torch.tensor(out, dtype=torch.float32)

    return {
        "lr/cosine": lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, 0.001), 25),
        "lr/step": lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5), 12),
    }


def write(path, tensors):
    with open(path, "wb") as f:
        f.write(b"BRQGOLD1")
        f.write(struct.pack("<I", len(tensors)))
        for name, t in tensors.items():
            t = t.detach().to(torch.float32).contiguous()
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<I", t.dim()))
            f.write(struct.pack(f"<{t.dim()}q", *t.shape))
            f.write(struct.pack(f"<{t.numel()}f", *t.reshape(-1).tolist()))


def main():
    torch.set_num_threads(1)
    tensors = {}
    rng = Rng(fnv1a64("rng"))
    tensors["rng/uniform"] = torch.tensor([rng.uniform() for _ in range(8)], dtype=torch.float32)
    names = set()
    for case in CASES:
        assert case[0] not in names, case[0]
        names.add(case[0])
        tensors.update(run_case(*case))
    # The round cases must include ties (x.5), which round half to even.
    xr = quarters(Rng(fnv1a64("round")), (4, 10))
    assert int(((xr - xr.floor()) == 0.5).sum()) >= 4, "round case needs .5 inputs"
    kinks = {"relu_at_kinks": [0.0], "relu6_at_kinks": [-1.0, 5.0], "clamp_at_kinks": [-0.5, 0.5],
             "abs_at_kinks": [0.0]}
    for name, points in kinks.items():
        xk = quarters(Rng(fnv1a64(name)), (4, 25))
        for kink in points:
            assert bool((xk == kink).any()), f"{name} needs an input at {kink}"
    tensors.update(run_optimizers())
    tensors.update(run_schedules())
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "golden_ops.bin")
    write(path, tensors)
    print(f"wrote {len(tensors)} tensors to {os.path.normpath(path)} "
          f"({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
