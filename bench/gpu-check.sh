#!/usr/bin/env bash
# The GPU check: everything we want to know about a machine's adapter, in one report.
#
#     bench/gpu-check.sh REPORT.txt
#
# Runs, on whatever adapter wgpu picks (set WGPU_BACKEND, WGPU_ADAPTER_NAME or VK_ICD_FILENAMES
# to choose): `adapters`, `selftest` (every family of kernels the adapter can run, both
# schedules), `bench --json` for each family with the layered schedule and for the fused
# schedule, `bench` with `--schedule auto` (what it measures and picks, then `adapters` showing
# the cached choice), `bench --profile` per schedule, `bench --scaling` per schedule (skipped on
# a CPU-type adapter, where it takes a quarter of an hour), a full default `train`, and the same
# recipe in PyTorch on the machine's best device (bench/pytorch_mlp.py: its hand-optimised loop,
# the tutorial's own DataLoader loop, and the 5 epochs). Every section goes to REPORT, with the
# exit code of each step; the script goes on past a failed step and exits 1 at the end if any
# failed.
#
# It stops early, with one line saying why, when the machine has a GPU but wgpu picked a
# CPU-type adapter (lavapipe, SwiftShader): timing a CPU emulation on a GPU machine measures
# nothing we want. That usually means the GPU's Vulkan driver (its ICD) or the Vulkan loader
# (libvulkan1) is missing.
#
# Environment: MNIST_WGPU (the binary; default target/release/mnist-wgpu, built with cargo if
# missing), PYTHON (default python3; PyTorch needed for its part, skipped with a note if
# absent), SECONDS_PER_BENCH (default 5).
set -uo pipefail
cd "$(dirname "$0")/.."

report=${1:?usage: bench/gpu-check.sh REPORT}
bin=${MNIST_WGPU:-target/release/mnist-wgpu}
python=${PYTHON:-python3}
seconds=${SECONDS_PER_BENCH:-5}
export NODEVICE_SELECT=1
failed=0
: >"$report"

say() { printf '%s\n' "$*" | tee -a "$report"; }

# step TITLE COMMAND...: runs the command, its output into the report, and records failure.
step() {
    local title=$1
    shift
    say ""
    say "## $title"
    say "\$ $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee -a "$report"
    local rc=${PIPESTATUS[0]}
    say "(exit code $rc, $((SECONDS - t0)) s)"
    [ "$rc" -eq 0 ] || failed=1
    return "$rc"
}

if [ ! -x "$bin" ]; then
    if command -v cargo >/dev/null; then
        cargo build --release --quiet || { say "error: building $bin failed"; exit 1; }
    else
        say "error: no $bin and no cargo to build it; set MNIST_WGPU to the binary"
        exit 1
    fi
fi

say "# mnist-wgpu GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $(uname -srm) | $(nproc) cores | $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
say "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)"
gpu_present=""
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    gpu_present=$(nvidia-smi -L | head -n 1)
    say "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
elif compgen -G '/dev/nvidia[0-9]*' >/dev/null; then
    gpu_present="an NVIDIA device node (/dev/nvidia0)"
elif command -v lspci >/dev/null && lspci | grep -Ei 'vga|3d|display' | grep -Eqi 'nvidia|amd|ati|intel'; then
    gpu_present=$(lspci | grep -Ei 'vga|3d|display' | head -n 1)
fi
say "GPU on this machine: ${gpu_present:-none found}"
say "Vulkan loader: $(ldconfig -p 2>/dev/null | grep -m1 'libvulkan\.so\.1' | awk '{print $NF}' || true)"
say "Vulkan drivers: ${VK_ICD_FILENAMES:-${VK_DRIVER_FILES:-$(ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | grep json | tr '\n' ' ')}}"

step "adapters" "$bin" adapters
picked=$("$bin" adapters 2>/dev/null | grep '^\*' | head -n 1)
say ""
say "wgpu picks: ${picked:-nothing}"
if [ -z "$picked" ]; then
    say "STOP: wgpu finds no adapter; install the GPU's Vulkan driver and libvulkan1"
    exit 1
fi
if [[ "$picked" == *"| Cpu |"* ]] && [ -n "$gpu_present" ]; then
    say "STOP: this machine has a GPU ($gpu_present) but wgpu picked a CPU-type adapter: the"
    say "      GPU's Vulkan driver was not found (check libvulkan1 and the vendor's ICD json, or"
    say "      VK_ICD_FILENAMES); timing a CPU emulation here would measure nothing useful"
    exit 1
fi

step "selftest (every family of kernels this adapter can run, both schedules)" "$bin" selftest
families=$("$bin" adapters 2>/dev/null | grep -A4 '^\*' | sed -n 's/.*kernels it can run: \([^|]*\).*/\1/p' | tr -d ',')
for k in $families; do
    step "bench --json --kernels $k --schedule layered" \
        "$bin" bench --json --kernels "$k" --schedule layered --seconds "$seconds"
done
step "bench --json --schedule fused" "$bin" bench --json --schedule fused --seconds "$seconds"
# The fused schedule's per-sample workgroups, one model and 64 side by side: fewer samples
# per workgroup should pay on a wide GPU (what auto's search finds, measured here in full).
for p in 16x64 8x64 4x64 2x32 1x32; do
    for seeds in 1 1-64; do
        step "bench --json --schedule fused --per-sample $p --seeds $seeds" \
            "$bin" bench --json --schedule fused --per-sample "$p" --seeds "$seeds" --seconds 2
    done
done
step "bench --schedule auto (measures every schedule and family, keeps the fastest)" \
    "$bin" bench --retune --seconds "$seconds"
step "adapters (with the cached choice)" "$bin" adapters
for s in layered fused; do
    step "bench --profile --schedule $s" "$bin" bench --profile --schedule "$s" --seconds 2
done
if [[ "$picked" == *"| Cpu |"* ]]; then
    say ""
    say "## bench --scaling"
    say "skipped: a CPU-type adapter takes a quarter of an hour for it (run it by hand if wanted)"
else
    for s in layered fused; do
        step "bench --scaling --schedule $s" "$bin" bench --scaling --schedule "$s"
    done
fi
# The CNNs on the layered schedule (the fused one refuses them): a step, and its kernels.
for r in cnn-small cnn; do
    step "bench --json --recipe $r --device gpu" \
        "$bin" bench --json --recipe "$r" --device gpu --schedule layered --seconds "$seconds"
done
step "bench --profile --recipe cnn-small --device gpu" \
    "$bin" bench --profile --recipe cnn-small --device gpu --schedule layered --seconds 2
run_dir=$(mktemp -d)
step "train (the default recipe)" "$bin" train --no-save --run-dir "$run_dir/run"
step "train --recipe cnn-small --device gpu (3 epochs)" \
    "$bin" train --recipe cnn-small --device gpu --no-save --run-dir "$run_dir/cnn"
rm -rf "$run_dir"
step "train --device cpu (the CPU backend, for scale)" "$bin" train --device cpu --no-save --quiet

if "$python" -c 'import torch, numpy' 2>/dev/null; then
    step "PyTorch: hand-optimised loop, tutorial's DataLoader loop, 5 epochs (best device)" \
        "$python" bench/pytorch_mlp.py --device auto --seconds "$seconds" --dataloader --train
    step "PyTorch on the CPU, 1 thread (hand-optimised loop)" \
        "$python" bench/pytorch_mlp.py --device cpu --seconds "$seconds"
    dev=$("$python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
    for r in cnn-small cnn; do
        step "PyTorch: $r, a step ($dev)" \
            "$python" bench/pytorch_cnn.py "$r" --device "$dev" --seconds "$seconds"
    done
else
    say ""
    say "## PyTorch"
    say "skipped: $python cannot import torch and numpy (pip install torch numpy, or set PYTHON)"
fi

say ""
if [ "$failed" -ne 0 ]; then
    say "some steps failed: see their exit codes above"
    exit 1
fi
say "every step passed; report in $report"
