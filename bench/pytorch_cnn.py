#!/usr/bin/env python3
"""The CNN recipes of `mnist-wgpu train --recipe cnn-small|cnn` in PyTorch, for comparison
on the same machine: the time of a training step, and the accuracy over seeds.

As bench/pytorch_mlp.py, hand-optimised: the whole training set loaded once, normalised as
ToTensor() and Normalize((0.1307,), (0.3081,)), kept as one tensor of [60000, 1, 28, 28];
each step indexes a shuffled batch of 64 out of it. The nets and recipes are
pytorch/examples' mnist/main.py: cnn-small its Net of 2018 (SGD lr 0.01 momentum 0.5), cnn
today's (Adadelta lr 1.0, StepLR gamma 0.7).

    python3 bench/pytorch_cnn.py cnn-small                      # timed steps (like `bench`)
    python3 bench/pytorch_cnn.py cnn-small --train --seeds 0-9  # also whole runs per seed
    python3 bench/pytorch_cnn.py cnn --threads 2 --device cuda  # threads default 1

Needs torch and numpy (pip install torch numpy).
"""

import argparse
import gzip
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MNIST = pathlib.Path(__file__).resolve().parent.parent / "assets" / "mnist"


def idx(name):
    raw = gzip.open(MNIST / f"{name}.gz").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(prefix, device):
    x = torch.from_numpy(idx(f"{prefix}-images-idx3-ubyte").copy()).to(torch.float32)
    x = x.div(255).sub(0.1307).div(0.3081).view(-1, 1, 28, 28).contiguous()
    y = torch.from_numpy(idx(f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    return x.to(device), y.to(device)


class Small(nn.Module):
    """pytorch/examples mnist/main.py's Net as of 2018."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


class Net(nn.Module):
    """Today's pytorch/examples mnist/main.py Net."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


RECIPES = {
    "cnn-small": dict(net=Small, epochs=3, opt=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5), gamma=1.0),
    "cnn": dict(net=Net, epochs=14, opt=lambda p: torch.optim.Adadelta(p, lr=1.0), gamma=0.7),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(m, opt, x, y):
    opt.zero_grad()
    loss = F.nll_loss(m(x), y)
    loss.backward()
    opt.step()
    return loss


@torch.no_grad()
def accuracy(m, tx, ty):
    m.eval()
    correct = sum(int((m(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum()) for i in range(0, len(ty), 1000))
    m.train()
    return correct / len(ty)


def timed_steps(recipe, x, y, device, seconds):
    torch.manual_seed(1)
    m = recipe["net"]().to(device)
    opt = recipe["opt"](m.parameters())
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(len(y), generator=g).to(device)
    for s in range(20):
        step(m, opt, x[order[s * 64:(s + 1) * 64]], y[order[s * 64:(s + 1) * 64]])
    sync(device)
    t0, s = time.perf_counter(), 20
    while time.perf_counter() - t0 < seconds:
        b = order[(s * 64) % 59968:][:64]
        step(m, opt, x[b], y[b])
        s += 1
    sync(device)
    return (time.perf_counter() - t0) / (s - 20) * 1000


def train(recipe, seed, x, y, tx, ty, device):
    torch.manual_seed(seed)
    m = recipe["net"]().to(device)
    opt = recipe["opt"](m.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=recipe["gamma"])
    for _ in range(recipe["epochs"]):
        order = torch.randperm(len(y)).to(device)
        for s in range(0, len(y), 64):
            b = order[s:s + 64]
            step(m, opt, x[b], y[b])
        sched.step()
    return accuracy(m, tx, ty)


def seeds(s):
    if "-" in s:
        a, b = s.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(v) for v in s.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", choices=sorted(RECIPES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--seeds", type=seeds, default=[1])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    recipe = RECIPES[a.recipe]
    x, y = load("train", device)
    tx, ty = load("t10k", device)
    ms = timed_steps(recipe, x, y, device, a.seconds)
    print(f"pytorch {torch.__version__} {a.recipe} | {device} | {a.threads} threads | {ms:.2f} ms per step of 64 | {64 / ms * 1000:.0f} img/s")
    if a.train:
        accs = []
        for seed in a.seeds:
            t0 = time.perf_counter()
            acc = train(recipe, seed, x, y, tx, ty, device)
            accs.append(acc * 100)
            print(f"seed {seed}: test accuracy {acc * 100:.2f} % ({time.perf_counter() - t0:.1f} s)", flush=True)
        if len(accs) > 1:
            accs = np.array(accs)
            print(f"mean ± std of {len(accs)} seeds: {accs.mean():.2f} ± {accs.std(ddof=1):.2f} % ({accs.min():.2f} .. {accs.max():.2f})")


if __name__ == "__main__":
    main()
