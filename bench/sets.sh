#!/usr/bin/env bash
# Models side by side: ms per step of the whole set and images per second over all models, for
# 1, 2, 4, 8 and 16 models (seeds 1..N) on every adapter here with both schedules (each has a
# model axis in its grid) and on the CPU backend, in one session. One line per run:
#
#     bench/sets.sh [SECONDS]       (default 2 seconds of timed steps per run)
#
# The ratio column is the set's step against N single-model steps of the same adapter.
# Environment: MNIST_WGPU (the binary; default target/release/mnist-wgpu).
set -euo pipefail
bin=${MNIST_WGPU:-target/release/mnist-wgpu}
secs=${1:-2}
swiftshader=/usr/lib/chromium/vk_swiftshader_icd.json
export NODEVICE_SELECT=1
row() {
    local name=$1; shift
    local one=""
    for n in 1 2 4 8 16; do
        local seeds=1
        [ "$n" -gt 1 ] && seeds="1-$n"
        local json
        json=$("$bin" bench "$@" --seeds "$seeds" --warmup 10 --seconds "$secs" --json 2>/dev/null)
        [ "$n" -eq 1 ] && one=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ms_per_step"])' "$json")
        python3 - "$name" "$n" "$json" "$one" <<'PY'
import json, sys
name, n, d, one = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
ms = d["ms_per_step"]
ratio = ms / (n * float(one)) if one else 1.0
print(f"{name:28s} {n:3d} models  {ms:9.3f} ms/step  {d['images_per_s']/1e3:7.1f}k img/s  {ratio:5.2f} x {n} single steps")
PY
    done
}
row "lavapipe fused/subgroup" --schedule fused --kernels subgroup
row "lavapipe layered/subgroup" --schedule layered --kernels subgroup
row "llvmpipe GL fused/plain" --backend gl --schedule fused
row "llvmpipe GL layered/plain" --backend gl --schedule layered --kernels plain
VK_ICD_FILENAMES=$swiftshader row "SwiftShader fused/plain" --schedule fused
VK_ICD_FILENAMES=$swiftshader row "SwiftShader layered/plain" --schedule layered --kernels plain
row "CPU backend (2 threads)" --device cpu
