#!/usr/bin/env bash
# What "behaviour unchanged, bit for bit" means, as one file per build:
#
#     bench/fingerprint.sh OUT.txt          then    diff before.txt after.txt
#
# Short trainings (2 epochs on the first 3001 training and 1000 test images of MNIST, so that
# the last batch is partial) with every schedule and kernel family each adapter here runs, on
# two shapes (the tutorial's, and hidden 37,19 with batch 13), on lavapipe, llvmpipe through
# GL, SwiftShader and the CPU backend. One line each: the run, the SHA-256 of the saved
# tensors and their metadata (which names the adapter and plan), and the per-epoch training loss, test loss and test accuracy as metrics.csv prints
# them. A family the build no longer has prints its exit code and first line instead. The
# saved file's metadata names the plan, so `lavapipe auto` must equal the line it chose.
# Environment: MNIST_WGPU (the binary; default target/release/mnist-wgpu).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/fingerprint.sh OUT.txt}
bin=${MNIST_WGPU:-target/release/mnist-wgpu}
export NODEVICE_SELECT=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The small split, cut from the committed MNIST files.
python3 - "$work/data" <<'EOF'
import gzip, os, struct, sys
dst = sys.argv[1]
os.makedirs(dst)
for name, n, header in [("train-images-idx3-ubyte", 3001, 16), ("train-labels-idx1-ubyte", 3001, 8),
                        ("t10k-images-idx3-ubyte", 1000, 16), ("t10k-labels-idx1-ubyte", 1000, 8)]:
    data = gzip.open(f"assets/mnist/{name}.gz").read()
    dims = list(struct.unpack(">" + "I" * (header // 4), data[:header]))
    dims[1] = n
    size = 1 if header == 8 else dims[2] * dims[3]
    open(f"{dst}/{name}", "wb").write(struct.pack(">" + "I" * len(dims), *dims) + data[header:header + n * size])
EOF

lavapipe=$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -n 1)
swiftshader=/usr/lib/chromium/vk_swiftshader_icd.json

# digest FILE: SHA-256 of a safetensors file's header (its JSON with keys sorted, since the
# writer's key order varies) and tensor bytes. The metadata keys that name the optimizer and
# the data's presentation (added after db4d12e) are left out, so that builds before and after
# them compare.
digest() {
    python3 - "$1" <<'PY'
import hashlib, json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
for key in ["optimizer", "weight_decay", "gamma", "normalize", "shuffle"]:
    header.get("__metadata__", {}).pop(key, None)
header = json.dumps(header, sort_keys=True).encode()
print(hashlib.sha256(header + data[8 + n:]).hexdigest()[:16])
PY
}

# plan_of FILE: the plan a model file's metadata names (`kernels: subgroup | schedule: fused`).
plan_of() {
    python3 - "$1" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
adapter = json.loads(data[8:8 + n])["__metadata__"]["adapter"]
print(adapter[adapter.index("kernels:"):])
PY
}

# one LABEL ICD FLAGS...: one short training, one line.
one() {
    local label=$1 icd=$2
    shift 2
    for shape in "tutorial" "odd"; do
        local extra=()
        [ "$shape" = odd ] && extra=(--hidden 37,19 --batch-size 13)
        rm -rf "$work/run" "$work/model.safetensors"
        if VK_ICD_FILENAMES=$icd "$bin" train --dataset idx --data-dir "$work/data" --epochs 2 \
            --quiet --run-dir "$work/run" --save "$work/model.safetensors" "${extra[@]}" "$@" \
            >"$work/log" 2>&1; then
            local sum losses
            sum=$(digest "$work/model.safetensors")
            losses=$(tail -n +2 "$work/run/metrics.csv" | cut -d, -f2-4 | tr '\n' ' ')
            # auto's line names the plan it chose: a different choice explains a different digest.
            [[ $label == *auto ]] && sum="$sum ($(plan_of "$work/model.safetensors"))"
            printf '%-36s %-8s %s %s\n' "$label" "$shape" "$sum" "$losses"
        else
            printf '%-36s %-8s exit %s: %s\n' "$label" "$shape" "$?" "$(head -n 1 "$work/log")"
        fi
    done
}

: >"$out"
{
    if [ -n "$lavapipe" ]; then
        for k in subgroup plain wide; do one "lavapipe layered/$k" "$lavapipe" --schedule layered --kernels "$k"; done
        for k in subgroup plain; do one "lavapipe fused/$k" "$lavapipe" --schedule fused --kernels "$k"; done
        # auto measures in a cache of its own: its run must equal the fixed run it chose.
        MNIST_WGPU_CACHE_DIR="$work/cache" one "lavapipe auto" "$lavapipe" --schedule auto
    fi
    for k in plain wide; do one "llvmpipe-gl layered/$k" "" --backend gl --schedule layered --kernels "$k"; done
    one "llvmpipe-gl fused/plain" "" --backend gl --schedule fused --kernels plain
    if [ -f "$swiftshader" ]; then
        for k in plain wide; do one "swiftshader layered/$k" "$swiftshader" --schedule layered --kernels "$k"; done
        one "swiftshader fused/plain" "$swiftshader" --schedule fused --kernels plain
    fi
    one "cpu backend" "" --device cpu
} | tee "$out"
