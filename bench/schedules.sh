#!/usr/bin/env bash
# Every schedule and kernel family on the software adapters this machine has, in one session:
#
#     bench/schedules.sh [ROUNDS]     (default 2)
#
# For each round, `mnist-wgpu bench --json` with every --schedule/--kernels pair on lavapipe,
# llvmpipe through GL and SwiftShader (Debian's chromium ships its Vulkan driver), then the CPU
# backend; one line each: ms per step, dispatches per step, seconds to evaluate the test set.
# Rounds alternate so that a busy moment of the machine does not fall on one side only.
# Environment: MNIST_WGPU (the binary; default target/release/mnist-wgpu), SECONDS_PER_BENCH
# (default 3), WARMUP (steps, default 50), RECIPE (default mlp; a CNN runs the layered
# schedule only: the fused one refuses it).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${MNIST_WGPU:-target/release/mnist-wgpu}
seconds=${SECONDS_PER_BENCH:-3}
warmup=${WARMUP:-50}
recipe=${RECIPE:-mlp}
rounds=${1:-2}
export NODEVICE_SELECT=1
swiftshader=/usr/lib/chromium/vk_swiftshader_icd.json

# one LABEL ICD FLAGS...: one bench, one line.
one() {
    local label=$1 icd=$2
    shift 2
    local line
    line=$(VK_ICD_FILENAMES=$icd "$bin" bench --json --recipe "$recipe" --seconds "$seconds" --warmup "$warmup" "$@" 2>/dev/null |
        sed -n 's/.*"ms_per_step": \([0-9.]*\).*"dispatches_per_step": \([0-9]*\).*"eval_seconds": \([0-9.]*\).*/\1 ms per step, \2 dispatches, evaluation \3 s/p')
    printf '%-28s %s\n' "$label" "${line:-failed}"
}

lavapipe=$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -n 1)
for round in $(seq "$rounds"); do
    echo "# round $round"
    if [ -n "$lavapipe" ]; then
        for k in subgroup plain wide; do one "lavapipe layered/$k" "$lavapipe" --device gpu --schedule layered --kernels "$k"; done
        [ "$recipe" = mlp ] && for k in subgroup plain; do one "lavapipe fused/$k" "$lavapipe" --schedule fused --kernels "$k"; done
    fi
    for k in plain wide; do one "llvmpipe-gl layered/$k" "" --device gpu --backend gl --schedule layered --kernels "$k"; done
    [ "$recipe" = mlp ] && one "llvmpipe-gl fused/plain" "" --backend gl --schedule fused --kernels plain
    if [ -f "$swiftshader" ]; then
        for k in plain wide; do one "swiftshader layered/$k" "$swiftshader" --device gpu --schedule layered --kernels "$k"; done
        [ "$recipe" = mlp ] && one "swiftshader fused/plain" "$swiftshader" --schedule fused --kernels plain
    fi
    one "cpu backend" "" --device cpu
done
