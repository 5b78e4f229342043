//! Every WGSL kernel against the CPU reference (in f64) on random data, on shapes that are and
//! are not multiples of the workgroup and tile sizes, with both matmul inner loops where the
//! adapter has subgroups. The checks themselves live in `mnist_wgpu::gpu::selftest`, which
//! `mnist-wgpu selftest` runs on a user's adapter. Needs a wgpu adapter (lavapipe will do).

mod common;

use mnist_wgpu::gpu::Gpu;
use mnist_wgpu::gpu::kernels::Kernels;
use mnist_wgpu::gpu::selftest::{self, Check};

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
        "{}: {} checks, largest error / tolerance {worst:.3}",
        checks[0].kernel,
        checks.len()
    );
}

#[test]
fn matmul_products_match_reference() {
    for gpu in common::gpus() {
        let k = Kernels::new(&gpu);
        assert_ok(&gpu, selftest::matmul_checks(&gpu, &k));
    }
}

#[test]
fn gather_matches_reference_exactly() {
    let gpu = common::gpu(true);
    let k = Kernels::new(&gpu);
    assert_ok(&gpu, selftest::gather_checks(&gpu, &k));
}

#[test]
fn nll_loss_and_gradient_match_reference() {
    let gpu = common::gpu(true);
    let k = Kernels::new(&gpu);
    assert_ok(&gpu, selftest::nll_checks(&gpu, &k));
}

#[test]
fn evaluate_matches_reference() {
    let gpu = common::gpu(true);
    let k = Kernels::new(&gpu);
    assert_ok(&gpu, selftest::evaluate_checks(&gpu, &k));
}

#[test]
fn sgd_matches_reference() {
    let gpu = common::gpu(true);
    let k = Kernels::new(&gpu);
    assert_ok(&gpu, selftest::sgd_checks(&gpu, &k));
}
