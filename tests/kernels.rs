//! Every WGSL kernel against its CPU twin in `cpu.rs` (evaluated in f64) on random data, on
//! shapes that are and are not multiples of the workgroup and tile sizes, with every matmul
//! inner loop the adapter can run. The checks live beside their launchers in
//! `mnist_wgpu::gpu::ops`; `mnist-wgpu selftest` runs the same ones. Needs a wgpu adapter
//! (lavapipe will do; `WGPU_BACKEND` and `VK_ICD_FILENAMES` pick another).

mod common;

use mnist_wgpu::gpu::Gpu;
use mnist_wgpu::gpu::check::Check;
use mnist_wgpu::gpu::ops::{Modules, evaluate, gather, nll_head, sgd};
use mnist_wgpu::gpu::selftest;

fn assert_ok(gpu: &Gpu, checks: Vec<Check>) {
    assert!(!checks.is_empty());
    if let Err(failed) = selftest::failures(&checks) {
        panic!("on {}:\n{failed}", gpu.info.name);
    }
    let worst = checks
        .iter()
        .map(|c| if c.tol > 0.0 { c.max_err / c.tol } else { 0.0 })
        .fold(0.0, f64::max);
    eprintln!(
        "{} on {gpu}: {} checks, largest error / tolerance {worst:.3}",
        checks[0].kernel,
        checks.len()
    );
}

fn modules(gpu: &Gpu) -> Modules {
    Modules::new(gpu, gpu.tile_loop()).expect("compiling the shader modules")
}

#[test]
fn linear_products_match_reference() {
    let gpu = common::gpu();
    assert_ok(&gpu, selftest::linear_checks(&gpu).unwrap());
}

#[test]
fn gather_matches_reference_exactly() {
    let gpu = common::gpu();
    assert_ok(&gpu, gather::checks(&gpu, &modules(&gpu)));
}

#[test]
fn nll_head_matches_reference() {
    let gpu = common::gpu();
    assert_ok(&gpu, nll_head::checks(&gpu, &modules(&gpu)));
}

#[test]
fn evaluate_matches_reference() {
    let gpu = common::gpu();
    assert_ok(&gpu, evaluate::checks(&gpu, &modules(&gpu)));
}

#[test]
fn sgd_matches_reference() {
    let gpu = common::gpu();
    assert_ok(&gpu, sgd::checks(&gpu, &modules(&gpu)));
}
