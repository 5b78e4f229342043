#!/usr/bin/env python3
"""PyTorch's side of the CNN parity test (tests/parity_cnn.rs), and the check of our CNN files.

Needs PyTorch (the CPU build is enough), numpy and safetensors from PyPI:

    python3 -m venv venv && venv/bin/pip install torch numpy safetensors

Modes:

    make_cnn_fixtures.py fixtures     writes tests/parity/cnn_small.safetensors and
                                      tests/parity/cnn_small_after50.safetensors (below)
    make_cnn_fixtures.py fixtures-cnn writes tests/parity/cnn.safetensors (below)
    make_cnn_fixtures.py check MODEL  loads MODEL (`mnist-wgpu train --recipe cnn-small` wrote
                                      it) into the 2018 example's Net with
                                      load_state_dict(strict=True) and prints its test count

cnn_small.safetensors: the Net of --recipe cnn-small from torch.manual_seed(SEED) (init.<key>),
50 batches of 64 (batches [50, 64], int32), and for two runs of 50 steps of SGD (lr 0.01,
momentum 0.5) on images normalised (0.1307, 0.3081), each `<run>.losses` [50],
`<run>.param.<key>`, `<run>.momentum.<key>` and `<run>.test_log_probs` [64, 10] (the first 64
test images): `nodrop`, dropout off (p = 0), and `masked`, each dropout layer applying the mask
mnist-wgpu's generator draws (Philox4x32-10 keyed by seed MASK_SEED, the step and the layer's
index; recomputed here). The metadata holds PyTorch's own drift: the same 50 steps in f64,
the largest difference of the f32 run's weights from them as a fraction of each tensor's
change, and of its losses, relative.

cnn_small_after50.safetensors: the `nodrop` run's weights as a state_dict, with the test count
PyTorch computes for them in the metadata.

cnn.safetensors: today's example's Net (--recipe cnn), dropout off, 50 steps of Adadelta (lr
1.0) in batches of 16 from weights both sides compute from one formula (`formula_init`: no 4.8
MB of fc1 in the repository), `batches` [50, 16], `losses`, the final tensors (fc1's weight
every 97th float: `param.fc1.weight.every97`), Adadelta's `square_avg` and `acc_delta` of
conv1, conv2 and fc2, and the first 16 test images' log-probabilities; PyTorch's own f32
against f64 drift in the metadata, as for cnn_small.
"""

import gzip
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
MNIST = HERE.parent.parent / "assets" / "mnist"
SEED, MASK_SEED = 20261205, 7
STEPS, BATCH, LR, MOMENTUM = 50, 64, 0.01, 0.5
# The layers' indices in mnist-wgpu's list of cnn-small (model/nets.rs).
CONV2_DROP, DROPOUT = 4, 10


def idx(name):
    raw = gzip.open(MNIST / f"{name}.gz").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(split):
    """ToTensor() then Normalize((0.1307,), (0.3081,)), in float32 like torchvision."""
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(idx(f"{prefix}-images-idx3-ubyte").copy())
    y = torch.from_numpy(idx(f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    x = x.to(torch.float32).div(255).sub(0.1307).div(0.3081)
    return x.view(-1, 1, 28, 28), y


class Net(nn.Module):
    """pytorch/examples mnist/main.py as of 2018, its forward taking dropout masks (or none)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x, masks=None):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = self.conv2(x)
        if masks is not None:
            x = x * masks[0]
        x = F.relu(F.max_pool2d(x, 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        if masks is not None:
            x = x * masks[1]
        return F.log_softmax(self.fc2(x), dim=1)


M32 = np.uint64(0xFFFFFFFF)


def philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10's first output word, elementwise over uint64 arrays holding u32s."""
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    w0, w1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for r in range(10):
        if r > 0:
            k0, k1 = (k0 + w0) & M32, (k1 + w1) & M32
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & M32
    return c0


def keep(n, layer, step, p):
    """Which of n elements mnist-wgpu's Mask::keeps keeps: 24 bits of the first word as a
    uniform in [0, 1), at least p."""
    e = np.arange(n, dtype=np.uint64)
    z = np.zeros(n, dtype=np.uint64)
    word = philox(e, z + np.uint64(layer), z + np.uint64(step), z, MASK_SEED, 0)
    u = (word >> np.uint64(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))
    return u >= np.float32(p)


def masks(step, dtype):
    """The step's masks, scaled by 1/(1-p): Dropout2d's per (sample, channel) of conv2's
    output, Dropout's per element of fc1's."""
    m2 = torch.from_numpy(keep(BATCH * 20, CONV2_DROP, step, 0.5)).view(BATCH, 20, 1, 1)
    mf = torch.from_numpy(keep(BATCH * 50, DROPOUT, step, 0.5)).view(BATCH, 50)
    return m2.to(dtype) * 2.0, mf.to(dtype) * 2.0


def train(init, x, y, batches, masked, dtype):
    torch.set_num_threads(1)
    m = Net().to(dtype)
    m.load_state_dict({k: v.to(dtype) for k, v in init.items()})
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    for s, b in enumerate(batches):
        opt.zero_grad()
        out = m(x[b].to(dtype), masks(s, dtype) if masked else None)
        loss = F.nll_loss(out, y[b])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    momentum = {k: opt.state[p]["momentum_buffer"] for k, p in m.named_parameters()}
    return m, np.array(losses), momentum


def drift(init, f32, f64, l32, l64):
    worst = 0.0
    for k in init:
        change = (f64[k] - init[k].double()).abs().max().item()
        worst = max(worst, ((f32[k].double() - f64[k]).abs().max().item()) / change)
    return worst, float(np.max(np.abs(l32 - l64) / np.abs(l64)))


def fixtures():
    x, y = load("train")
    tx, ty = load("test")
    torch.manual_seed(SEED)
    init = {k: v.detach().clone() for k, v in Net().state_dict().items()}
    batches = torch.from_numpy(np.random.default_rng(SEED).permutation(60000)[: STEPS * BATCH].reshape(STEPS, BATCH))
    out = {f"init.{k}": v.contiguous() for k, v in init.items()}
    out["batches"] = batches.to(torch.int32)
    meta = {"torch": torch.__version__, "seed": str(SEED), "mask_seed": str(MASK_SEED)}
    for run, masked in [("nodrop", False), ("masked", True)]:
        m, losses, momentum = train(init, x, y, batches.long(), masked, torch.float32)
        m64, losses64, _ = train(init, x, y, batches.long(), masked, torch.float64)
        sd, sd64 = m.state_dict(), m64.state_dict()
        w, l = drift(init, sd, sd64, losses, losses64)
        meta[f"{run}.drift_weights"], meta[f"{run}.drift_loss"] = f"{w:.3e}", f"{l:.3e}"
        out[f"{run}.losses"] = torch.from_numpy(losses.astype(np.float32))
        for k, v in sd.items():
            out[f"{run}.param.{k}"] = v.detach().contiguous()
            out[f"{run}.momentum.{k}"] = momentum[k].detach().contiguous()
        with torch.no_grad():
            out[f"{run}.test_log_probs"] = m(tx[:64]).contiguous()
        if run == "nodrop":
            with torch.no_grad():
                correct = int((m(tx).argmax(dim=1) == ty).sum())
            state = {k: v.detach().contiguous() for k, v in sd.items()}
            save_file(state, HERE / "cnn_small_after50.safetensors", {"torch": torch.__version__, "correct": str(correct)})
            print(f"after 50 steps, dropout off: {correct}/10000 in PyTorch")
        print(f"{run}: PyTorch f32 against f64: weights {w:.2e} of change, losses {l:.2e}")
    save_file(out, HERE / "cnn_small.safetensors", meta)


class Cnn(nn.Module):
    """pytorch/examples mnist/main.py today, with dropout off (as `--dropout 0`)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


CNN_STEPS, CNN_BATCH, EVERY = 50, 16, 97


def formula_init(model):
    """Each tensor's element i: ((i * 7919 + 13 * t) % 1000 / 1000 - 0.5) * 2 / sqrt(fan_in),
    t the tensor's index in the state_dict, computed in f64 and rounded once to f32, as
    tests/parity_cnn.rs computes it."""
    out = {}
    for t, (k, v) in enumerate(model.state_dict().items()):
        fan_in = model.state_dict()[k.replace("bias", "weight")][0].numel()
        i = np.arange(v.numel(), dtype=np.int64)
        u = ((i * 7919 + 13 * t) % 1000).astype(np.float64) / 1000.0 - 0.5
        out[k] = torch.from_numpy((u * 2.0 / np.sqrt(float(fan_in))).astype(np.float32)).view(v.shape)
    return out


def train_cnn(init, x, y, batches, dtype):
    torch.set_num_threads(1)
    m = Cnn().to(dtype)
    m.load_state_dict({k: v.to(dtype) for k, v in init.items()})
    opt = torch.optim.Adadelta(m.parameters(), lr=1.0)
    losses = []
    for b in batches:
        opt.zero_grad()
        loss = F.nll_loss(m(x[b].to(dtype)), y[b])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    state = {k: opt.state[p] for k, p in m.named_parameters()}
    return m, np.array(losses), state


def fixtures_cnn():
    x, y = load("train")
    tx, _ = load("test")
    init = formula_init(Cnn())
    rng = np.random.default_rng(SEED + 1)
    batches = torch.from_numpy(rng.permutation(60000)[: CNN_STEPS * CNN_BATCH].reshape(CNN_STEPS, CNN_BATCH))
    m, losses, state = train_cnn(init, x, y, batches.long(), torch.float32)
    m64, losses64, _ = train_cnn(init, x, y, batches.long(), torch.float64)
    sd, sd64 = m.state_dict(), m64.state_dict()
    w, l = drift(init, sd, sd64, losses, losses64)
    meta = {"torch": torch.__version__, "seed": str(SEED + 1), "drift_weights": f"{w:.3e}", "drift_loss": f"{l:.3e}"}
    out = {"batches": batches.to(torch.int32), "losses": torch.from_numpy(losses.astype(np.float32))}
    for k, v in sd.items():
        v = v.detach().contiguous()
        if k == "fc1.weight":
            out["param.fc1.weight.every97"] = v.flatten()[::EVERY].contiguous()
            out["init.fc1.weight.every97"] = init[k].flatten()[::EVERY].contiguous()
        else:
            out[f"param.{k}"] = v
            out[f"init.{k}"] = init[k].contiguous()
        if not k.startswith("fc1"):
            out[f"square_avg.{k}"] = state[k]["square_avg"].detach().contiguous()
            out[f"acc_delta.{k}"] = state[k]["acc_delta"].detach().contiguous()
    with torch.no_grad():
        out["test_log_probs"] = m(tx[:16]).contiguous()
    save_file(out, HERE / "cnn.safetensors", meta)
    print(f"cnn: PyTorch f32 against f64: weights {w:.2e} of change, losses {l:.2e}")


def check(path):
    tx, ty = load("test")
    m = Net()
    m.load_state_dict(load_file(path), strict=True)
    m.eval()
    with torch.no_grad():
        correct = int((m(tx).argmax(dim=1) == ty).sum())
    print(f"{path}: loaded with strict=True; {correct}/10000 = {correct / 100:.2f} % in PyTorch {torch.__version__}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["fixtures"]:
        fixtures()
    elif sys.argv[1:2] == ["fixtures-cnn"]:
        fixtures_cnn()
    elif sys.argv[1:2] == ["check"] and len(sys.argv) == 3:
        check(sys.argv[2])
    else:
        sys.exit(__doc__)
