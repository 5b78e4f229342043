#!/usr/bin/env bash
# Builds the web page into web/dist/, a folder any static file server can serve as it is:
#   index.html, app.js, chart.js, style.css   the page (from web/www/)
#   pkg/                                      the wasm bundle (wasm-bindgen --target web)
#   data/                                     MNIST's four .gz files (same origin; the page
#                                             checks their SHA-256 as the native program does)
# Installs the wasm32 target and the wasm-bindgen-cli matching Cargo.lock when missing.
# Serve it with: cargo run --release -- serve   (http://127.0.0.1:8000/)
set -euo pipefail
cd "$(dirname "$0")/.."

# wasm-bindgen-cli must be the exact version of the wasm-bindgen crate in Cargo.lock.
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "== rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
    echo "== cargo install wasm-bindgen-cli --version $version (a few minutes, once)"
    cargo install -q wasm-bindgen-cli --version "$version"
fi

echo "== cargo build -p mnist-wgpu-web --target wasm32-unknown-unknown --release"
cargo build -q --release -p mnist-wgpu-web --target wasm32-unknown-unknown

dist=web/dist
rm -rf "$dist"
mkdir -p "$dist/data"
wasm-bindgen --target web --no-typescript --out-dir "$dist/pkg" \
    target/wasm32-unknown-unknown/release/mnist_wgpu_web.wasm
if command -v wasm-opt >/dev/null; then
    wasm-opt -O3 "$dist/pkg/mnist_wgpu_web_bg.wasm" -o "$dist/pkg/mnist_wgpu_web_bg.wasm"
fi
cp web/www/* "$dist/"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "assets/mnist/$f.gz" ]; then
        cp "assets/mnist/$f.gz" "$dist/data/"
    else
        gzip -c "assets/mnist/$f" >"$dist/data/$f.gz"
    fi
done
wasm="$dist/pkg/mnist_wgpu_web_bg.wasm"
echo "built $dist: $(stat -c %s "$wasm") bytes of wasm ($(gzip -9c "$wasm" | wc -c) gzipped)"
