#!/usr/bin/env python3
"""PyTorch's side of the parity test, and the check of our model files in PyTorch.

Needs PyTorch (the CPU build is enough), numpy and safetensors from PyPI:

    python3 -m venv venv && venv/bin/pip install torch numpy safetensors

Modes:

    make_fixtures.py fixtures      writes the parity fixtures under tests/parity/ (see below)
    make_fixtures.py tutorial      trains the tutorial's recipe for 5 epochs in PyTorch and
                                   writes tests/parity/torch_tutorial.safetensors
    make_fixtures.py check MODEL   loads MODEL (e.g. one `mnist-wgpu train` wrote) into the
                                   tutorial's nn.Sequential with load_state_dict(strict=True)
                                   and prints its test accuracy and loss

The fixtures (every file records the torch version in its metadata):

    init.safetensors      the initial state_dict, from torch.manual_seed(SEED)
    after50.safetensors   the state_dict after 50 SGD steps of batch 32; its metadata holds the
                          test accuracy and loss PyTorch computes for it
    steps.safetensors     batches [50, 32] (indices into the training set, int32), losses [50],
                          momentum.<key> (the optimizer's momentum buffers after the 50 steps),
                          test_log_probs [64, 10] (the after-50 model on the first 64 test images)
    optimizers.safetensors  the same 50 batches from the same initial weights with the other
                          optimizers, PyTorch's defaults: <name>.losses [50], <name>.param.<key>
                          (the weights after 50 steps) and <name>.<state>.<key> (each state
                          tensor), for adam (lr 0.001) and adadelta (lr 1.0, weight decay 0.001,
                          so that weight decay is checked too); with its own batches and
                          init.<key> (the same as steps' and init's when torch makes them
                          alike); the metadata names each recipe

    make_fixtures.py optimizers    writes only optimizers.safetensors
"""

import gzip
import pathlib
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
MNIST = HERE.parent.parent / "assets" / "mnist"
SEED = 20261127
STEPS, BATCH = 50, 32
LR, MOMENTUM = 0.003, 0.9


def idx(name):
    raw = gzip.open(MNIST / f"{name}.gz").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(split):
    """Images as the tutorial sees them: ToTensor() then Normalize((0.5,), (0.5,)), flattened."""
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(idx(f"{prefix}-images-idx3-ubyte").copy())
    y = torch.from_numpy(idx(f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    # ToTensor: float / 255; Normalize: (x - mean) / std, both in float32 like torchvision.
    x = x.to(torch.float32).div(255).sub(0.5).div(0.5)
    return x.view(x.shape[0], -1), y


def model(hidden=(128, 128, 64, 64)):
    sizes = [784, *hidden, 10]
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        layers.append(nn.ReLU() if i + 2 < len(sizes) else nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


def meta(**extra):
    return {"torch": torch.__version__, "numpy": np.__version__, **{k: str(v) for k, v in extra.items()}}


def state(m):
    return {k: v.detach().contiguous() for k, v in m.state_dict().items()}


@torch.no_grad()
def evaluate(m, x, y):
    """The tutorial's test loop, batched: predicted class = first largest probability."""
    logp = m(x)
    pred = logp.argmax(dim=1)
    correct = int((pred == y).sum())
    loss = float(nn.functional.nll_loss(logp, y, reduction="sum")) / len(y)
    return correct, len(y), loss


def train_steps(m, opt, x, y, batches):
    criterion = nn.NLLLoss()
    losses = []
    for b in batches:
        opt.zero_grad()
        loss = criterion(m(x[b]), y[b])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def setup():
    """Data, the tutorial's model from the fixed seed, and its optimizer; one thread, so runs
    repeat exactly."""
    torch.set_num_threads(1)
    x, y = load("train")
    tx, ty = load("test")
    torch.manual_seed(SEED)
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)
    return x, y, tx, ty, m, opt


def save_trained(m, name, tx, ty, **extra):
    """Saves the state_dict with the test accuracy and loss PyTorch computes for it."""
    correct, total, loss = evaluate(m, tx, ty)
    save_file(state(m), HERE / name,
              metadata=meta(batch_size=BATCH, lr=LR, momentum=MOMENTUM, seed=SEED, **extra,
                            accuracy=f"{correct / total:.4f}", correct=correct,
                            test_loss=f"{loss:.6f}"))
    return f"accuracy {100 * correct / total:.2f} % ({correct}/{total}) | test loss {loss:.4f}"


def fixtures():
    x, y, tx, ty, m, opt = setup()
    save_file(state(m), HERE / "init.safetensors", metadata=meta(seed=SEED))
    g = torch.Generator().manual_seed(SEED)
    batches = torch.randperm(len(x), generator=g)[: STEPS * BATCH].view(STEPS, BATCH)
    losses = train_steps(m, opt, x, y, batches)
    result = save_trained(m, "after50.safetensors", tx, ty, steps=STEPS)
    steps = {
        "batches": batches.to(torch.int32).contiguous(),
        "losses": torch.tensor(losses, dtype=torch.float32),
        "test_log_probs": m(tx[:64]).detach().contiguous(),
    }
    for k, p in m.named_parameters():
        steps[f"momentum.{k}"] = opt.state[p]["momentum_buffer"].contiguous()
    save_file(steps, HERE / "steps.safetensors", metadata=meta(seed=SEED, lr=LR, momentum=MOMENTUM))
    print(f"torch {torch.__version__}: {STEPS} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
          f"after50 {result}")


# The other optimizers' 50-step fixtures: (name, constructor, state tensor names).
OPTIMIZERS = [
    ("adam", lambda p: torch.optim.Adam(p, lr=0.001), ["exp_avg", "exp_avg_sq"]),
    ("adadelta", lambda p: torch.optim.Adadelta(p, lr=1.0, weight_decay=0.001),
     ["square_avg", "acc_delta"]),
]


def optimizers():
    x, y, _, _, _, _ = setup()
    g = torch.Generator().manual_seed(SEED)
    batches = torch.randperm(len(x), generator=g)[: STEPS * BATCH].view(STEPS, BATCH)
    out = {"batches": batches.to(torch.int32).contiguous()}
    recipes = {}
    for name, make, names in OPTIMIZERS:
        torch.manual_seed(SEED)
        m = model()
        for k, v in state(m).items():
            out[f"init.{k}"] = v.clone()
        opt = make(m.parameters())
        losses = train_steps(m, opt, x, y, batches)
        out[f"{name}.losses"] = torch.tensor(losses, dtype=torch.float32)
        for k, p in m.named_parameters():
            out[f"{name}.param.{k}"] = p.detach().contiguous()
            for s in names:
                out[f"{name}.{s}.{k}"] = opt.state[p][s].contiguous()
        recipes[name] = str(opt.defaults)
        print(f"torch {torch.__version__}: {name}: {STEPS} steps, loss {losses[0]:.4f} -> "
              f"{losses[-1]:.4f}")
    save_file(out, HERE / "optimizers.safetensors", metadata=meta(seed=SEED, **recipes))


def tutorial():
    """The whole recipe in PyTorch: 5 epochs, batch 32, shuffled, SGD lr 0.003 momentum 0.9."""
    x, y, tx, ty, m, opt = setup()
    for epoch in range(5):
        order = torch.randperm(len(x)).split(BATCH)
        losses = train_steps(m, opt, x, y, order)
        print(f"Epoch {epoch} - Training loss: {sum(losses) / len(losses):.4f}")
    print(f"PyTorch {save_trained(m, 'torch_tutorial.safetensors', tx, ty, epochs=5)}")


def check(path):
    sd = load_file(path)
    hidden = [sd[f"{2 * i}.weight"].shape[0] for i in range(len(sd) // 2 - 1)]
    m = model(hidden)
    m.load_state_dict(sd, strict=True)
    tx, ty = load("test")
    correct, total, loss = evaluate(m, tx, ty)
    print(f"PyTorch {torch.__version__}: {path}: load_state_dict(strict=True) ok | "
          f"Model Accuracy {100 * correct / total:.2f} %   ({correct}/{total}) | test loss {loss:.4f}")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "fixtures"
    if mode == "fixtures":
        fixtures()
    elif mode == "optimizers":
        optimizers()
    elif mode == "tutorial":
        tutorial()
    elif mode == "check" and len(sys.argv) == 3:
        check(sys.argv[2])
    else:
        sys.exit(__doc__)
