#!/usr/bin/env bash
# The page's training step against the native program's, on the same driver and kernels, in
# one session:
#
#     bench/web.sh [ROUNDS]     (default 2)
#
# Chromium's WebGPU runs on SwiftShader and Firefox's on lavapipe here, both with the plain
# kernels (neither browser gives the page subgroups), so each round times natively
# `mnist-wgpu bench` on lavapipe and on SwiftShader with --kernels plain and each schedule, then
# one epoch of the page in each engine with each schedule (tests/browser, page_speed_for_bench),
# and prints the page / native ratios. Native bench and the page both read the losses back every
# 250 steps, one interval behind.
# Needs the page built (web/build.sh), Chromium, chromium-driver, firefox-esr and geckodriver, as
# the browser tests do. Environment: MNIST_WGPU_SITE (another build of the page to time, e.g. a
# copy of web/dist from an earlier commit), MNIST_WGPU (the binary), SECONDS_PER_BENCH (5).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${MNIST_WGPU:-target/release/mnist-wgpu}
seconds=${SECONDS_PER_BENCH:-5}
rounds=${1:-2}
export NODEVICE_SELECT=1
swiftshader=/usr/lib/chromium/vk_swiftshader_icd.json
lavapipe=$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -n 1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

cargo build -q --release --tests
for round in $(seq "$rounds"); do
    echo "# round $round"
    for schedule in layered fused; do
        for driver in lavapipe swiftshader; do
            icd=$lavapipe
            [ "$driver" = swiftshader ] && icd=$swiftshader
            ms=$(VK_ICD_FILENAMES=$icd "$bin" bench --json --seconds "$seconds" --warmup 100 \
                --schedule "$schedule" --kernels plain 2>/dev/null |
                sed -n 's/.*"ms_per_step": \([0-9.]*\).*/\1/p')
            echo "native $driver $schedule/plain: ${ms:-failed} ms per step" | tee -a "$out"
        done
    done
    cargo test -q --release --test browser -- --ignored --exact page_speed_for_bench \
        --nocapture 2>/dev/null | grep '^page ' | tee -a "$out"
done
echo "# page / native, mean of the rounds (Chromium: SwiftShader, Firefox: lavapipe)"
awk '
    /^native/ { split($3, s, "/"); n[$2 " " s[1]] += $4; nc[$2 " " s[1]]++ }
    /^page/ { split($3, s, "/"); p[$2 " " s[1]] += $4; pc[$2 " " s[1]]++ }
    END {
        for (k in p) {
            split(k, e, " ");
            drv = (e[1] == "chromium") ? "swiftshader" : "lavapipe";
            nat = drv " " e[2];
            if (nc[nat]) printf "%-8s %-7s page %.2f ms, native (%s) %.2f ms: %.2f x\n", e[1], e[2], p[k] / pc[k], drv, n[nat] / nc[nat], (p[k] / pc[k]) / (n[nat] / nc[nat]);
        }
    }' "$out" | sort
