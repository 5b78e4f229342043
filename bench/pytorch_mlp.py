#!/usr/bin/env python3
"""The tutorial's recipe in PyTorch on the CPU, hand-optimised, with figures comparable to
`mnist-wgpu bench` and `mnist-wgpu train`.

Hand-optimised means: the whole training set is loaded once, normalised as ToTensor() and
Normalize((0.5,), (0.5,)) would, and kept as one float tensor; each step indexes a batch out
of it (no DataLoader, no per-image transforms). The model, loss and optimizer are the
tutorial's: 784-128-128-64-64-10 with ReLU and LogSoftmax, NLLLoss, SGD lr 0.003 momentum 0.9,
batch 32, shuffled.

    python3 bench/pytorch_mlp.py                 # warm-up, then timed steps (like `bench`)
    python3 bench/pytorch_mlp.py --train         # also the whole 5 epochs (like `train`)
    python3 bench/pytorch_mlp.py --threads 2     # torch.set_num_threads (default 1)
    python3 bench/pytorch_mlp.py --device cuda   # or mps, cpu; auto: the best there is
    python3 bench/pytorch_mlp.py --dataloader    # also the tutorial's own DataLoader loop

On a GPU every timed section ends with a synchronisation, so the figures are wall time of the
work, not of its queueing.

Needs torch and numpy (pip install torch numpy).
"""

import argparse
import gzip
import pathlib
import resource
import time

import numpy as np
import torch
from torch import nn

MNIST = pathlib.Path(__file__).resolve().parent.parent / "assets" / "mnist"


def idx(name):
    raw = gzip.open(MNIST / f"{name}.gz").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(prefix, device):
    x = torch.from_numpy(idx(f"{prefix}-images-idx3-ubyte").copy()).to(torch.float32)
    x = x.div(255).sub(0.5).div(0.5).view(-1, 784).contiguous()
    y = torch.from_numpy(idx(f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    return x.to(device), y.to(device)


def pick_device(name):
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


class TutorialMnist(torch.utils.data.Dataset):
    """The training set as the tutorial's datasets.MNIST with ToTensor() and
    Normalize((0.5,), (0.5,)) gives it: one uint8 image at a time, converted per item."""

    def __init__(self):
        self.images = idx("train-images-idx3-ubyte")
        self.labels = idx("train-labels-idx1-ubyte").astype(np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(self.images[i].copy()).to(torch.float32).div(255).unsqueeze(0)
        return x.sub(0.5).div(0.5), int(self.labels[i])


def dataloader_epoch(device, seconds):
    """The tutorial's training loop, DataLoader, .item() per step and all, for one epoch or
    `seconds`, whichever ends first; returns (steps, seconds)."""
    torch.manual_seed(1)
    m = model().to(device)
    opt = torch.optim.SGD(m.parameters(), lr=0.003, momentum=0.9)
    loss_fn = nn.NLLLoss()
    loader = torch.utils.data.DataLoader(TutorialMnist(), batch_size=32, shuffle=True)
    steps, running, t0 = 0, 0.0, time.perf_counter()
    for images, labels in loader:
        images = images.view(images.shape[0], -1).to(device)
        labels = labels.to(device)
        opt.zero_grad()
        loss = loss_fn(m(images), labels)
        loss.backward()
        opt.step()
        running += loss.item()
        steps += 1
        if time.perf_counter() - t0 > seconds:
            break
    return steps, time.perf_counter() - t0


def model():
    sizes = [784, 128, 128, 64, 64, 10]
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(a, b), nn.ReLU() if i + 2 < len(sizes) else nn.LogSoftmax(dim=1)]
    return nn.Sequential(*layers)


def flops_per_image():
    macs = [784 * 128, 128 * 128, 128 * 64, 64 * 64, 64 * 10]
    return 2 * (sum(macs) + (sum(macs) - macs[0]) + sum(macs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--train", action="store_true", help="also run the 5 epochs and evaluate")
    ap.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps, cpu")
    ap.add_argument("--dataloader", action="store_true",
                    help="also time the tutorial's own loop (DataLoader, per-item transforms)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    device = pick_device(args.device)
    t0 = time.perf_counter()
    x, y = load("train", device)
    tx, ty = load("t10k", device)
    m = model().to(device)
    opt = torch.optim.SGD(m.parameters(), lr=0.003, momentum=0.9)
    loss_fn = nn.NLLLoss()
    startup = time.perf_counter() - t0
    bs = args.batch_size

    def step(idx_):
        opt.zero_grad()
        loss = loss_fn(m(x[idx_]), y[idx_])
        loss.backward()
        opt.step()
        return loss

    order = torch.randperm(len(x), device=device)
    batches = [order[i:i + bs] for i in range(0, len(x), bs)]
    for i in range(args.warmup):
        step(batches[i % len(batches)])
    sync(device)
    steps, t1 = 0, time.perf_counter()
    while time.perf_counter() - t1 < args.seconds:
        # 250 steps between clock reads, as mnist-wgpu reads its losses back every 250
        for _ in range(250):
            step(batches[steps % len(batches)])
            steps += 1
        sync(device)
    secs = time.perf_counter() - t1
    ips = steps * bs / secs
    with torch.no_grad():
        e0 = time.perf_counter()
        m(tx).argmax(dim=1)
        sync(device)
        eval_s = time.perf_counter() - e0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    name = torch.cuda.get_device_name() if device.type == "cuda" else device.type.upper()
    print(f"torch {torch.__version__} | {name} | {args.threads} thread(s) | batch {bs}")
    print(f"start-up       {startup:.2f} s (data as one tensor, model)")
    print(f"training       {steps} steps in {secs:.2f} s: {ips / 1e3:.1f}k img/s, "
          f"{1e3 * secs / steps:.3f} ms/step, {ips * flops_per_image() / 1e9:.2f} GFLOP/s")
    print(f"evaluation     {len(tx)} images in {eval_s:.3f} s")
    print(f"peak memory    {rss:.0f} MB resident")
    if args.dataloader:
        n, secs = dataloader_epoch(device, args.seconds)
        print(f"tutorial loop  {n} steps in {secs:.2f} s: {n * bs / secs / 1e3:.1f}k img/s, "
              f"{1e3 * secs / n:.3f} ms/step (DataLoader, per-item transforms, loss.item())")
    if args.train:
        torch.manual_seed(1)
        m2 = model().to(device)
        opt = torch.optim.SGD(m2.parameters(), lr=0.003, momentum=0.9)
        t2 = time.perf_counter()
        for epoch in range(5):
            e = time.perf_counter()
            running = 0.0
            perm = torch.randperm(len(x), device=device)
            for i in range(0, len(x), bs):
                b = perm[i:i + bs]
                opt.zero_grad()
                loss = loss_fn(m2(x[b]), y[b])
                loss.backward()
                opt.step()
                running += loss.item()
            n = (len(x) + bs - 1) // bs
            print(f"Epoch {epoch} - Training loss: {running / n:.4f}   ({time.perf_counter() - e:5.1f} s)")
        sync(device)
        train_s = time.perf_counter() - t2
        with torch.no_grad():
            acc = (m2(tx).argmax(dim=1) == ty).float().mean().item()
        print(f"Training time {train_s:.1f} s")
        print(f"Model Accuracy {100 * acc:.2f} %")


if __name__ == "__main__":
    main()
