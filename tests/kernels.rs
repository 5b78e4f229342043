//! Every WGSL kernel against its CPU twin in `cpu.rs` (evaluated in f64) on random data, on
//! shapes that are and are not multiples of the workgroup and tile sizes, with every matmul
//! inner loop the adapter can run. The checks live beside their launchers in
//! `mnist_wgpu::gpu::ops`; `mnist-wgpu selftest` runs the same ones. Needs a wgpu adapter
//! (lavapipe will do; `WGPU_BACKEND` and `VK_ICD_FILENAMES` pick another).

mod common;

use mnist_wgpu::gpu::check::Check;
use mnist_wgpu::gpu::device::Gpu;
use mnist_wgpu::gpu::ops::{Modules, evaluate, gather, nll_head, optimizer};
use mnist_wgpu::gpu::plan::default_kernels;
use mnist_wgpu::gpu::selftest;
use pollster::block_on;

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
    Modules::new(gpu, default_kernels(gpu)).expect("compiling the shader modules")
}

#[test]
fn linear_products_match_reference() {
    let gpu = common::gpu();
    assert_ok(&gpu, block_on(selftest::linear_checks(&gpu)).unwrap());
}

/// The fused schedule's two dispatches, operation by operation, in every flavour the adapter
/// can run.
#[test]
fn fused_schedule_matches_reference() {
    let gpu = common::gpu();
    let checks = block_on(selftest::fused_checks(&gpu)).unwrap();
    assert!(checks.len() >= 47, "{} fused checks", checks.len());
    assert_ok(&gpu, checks);
}

#[test]
fn gather_matches_reference_exactly() {
    let gpu = common::gpu();
    assert_ok(&gpu, block_on(gather::checks(&gpu, &modules(&gpu))));
}

#[test]
fn nll_head_matches_reference() {
    let gpu = common::gpu();
    assert_ok(&gpu, block_on(nll_head::checks(&gpu, &modules(&gpu))));
}

#[test]
fn evaluate_matches_reference() {
    let gpu = common::gpu();
    assert_ok(&gpu, block_on(evaluate::checks(&gpu, &modules(&gpu))));
}

/// SGD, Adam and Adadelta, each on sets of 2 and 3 models, with and without weight decay.
#[test]
fn optimizers_match_reference() {
    let gpu = common::gpu();
    let checks = block_on(optimizer::checks(&gpu, &modules(&gpu)));
    assert!(checks.len() >= 12, "{} optimizer checks", checks.len());
    assert_ok(&gpu, checks);
}

/// What the driver rejects, and what WebGPU forbids but native wgpu would allow, are errors of
/// one line naming the adapter, never panics.
#[test]
fn gpu_failures_are_one_line_errors() {
    use mnist_wgpu::gpu::check::buffer;
    use mnist_wgpu::gpu::layout::DeviceLayout;
    use mnist_wgpu::gpu::ops::linear::Forward;
    use mnist_wgpu::gpu::ops::optimizer::OptimizerStep;
    use mnist_wgpu::model::Arch;

    let gpu = common::gpu();
    let rejected = gpu.scoped("compiling a broken shader", || {
        gpu.device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("broken"),
                source: wgpu::ShaderSource::Wgsl("@compute @workgroup_size(1) fn main( {".into()),
            })
    });
    let e = rejected
        .map(|_| ())
        .map_err(|e| e.to_string())
        .expect_err("a broken shader is an error");
    assert!(
        e.contains(&gpu.info.name) && e.contains("selftest") && !e.contains('\n'),
        "{e}"
    );

    let m = modules(&gpu);
    let at = DeviceLayout::new(&Arch::mlp(8, &[], 4)).layers[0];
    let (a, b) = (
        buffer(&gpu, "a", &[0f32; 256]),
        buffer(&gpu, "b", &[0f32; 256]),
    );
    // Z^T and its batch-major copy in one buffer: two writable bindings that overlap.
    let aliased = Forward {
        at,
        bp: 4,
        relu: true,
        params: &a,
        h: &a,
        z: &b,
        z_rows: &b,
        models: mnist_wgpu::gpu::dispatch::ModelAxis::ONE,
    };
    let e = aliased
        .dispatch(&gpu, &m, "aliased")
        .map(|_| ())
        .map_err(|e| e.to_string())
        .expect_err("aliasing is refused");
    assert!(e.contains("aliasing"), "{e}");
    // A buffer too small for what the dispatch reaches.
    let small = buffer(&gpu, "small", &[0f32; 4]);
    let hyper = mnist_wgpu::gpu::buffers::hyper_buffer(
        &gpu,
        &[mnist_wgpu::optim::Hyper {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
        }],
    );
    let sgd = mnist_wgpu::optim::Optimizer::Sgd { momentum: 0.9 };
    let state = mnist_wgpu::gpu::buffers::OptimizerState::new(&gpu, sgd, 8);
    let steps = mnist_wgpu::gpu::check::steps_buffer(&gpu, 1, 1, |_| [1.0, 1.0]);
    let step = OptimizerStep {
        axis: mnist_wgpu::gpu::dispatch::ModelAxis {
            models: 1,
            params: 8,
            order: 0,
        },
        hyper: &hyper,
        params: &small,
        grads: &a,
        state: &state,
        steps: &steps,
    };
    let e = step
        .dispatch(&gpu, &m, "optimizer")
        .map(|_| ())
        .map_err(|e| e.to_string())
        .expect_err("an undersized buffer is refused");
    assert!(e.contains("params holds 16 bytes"), "{e}");
    // The fused schedule's evaluation buffers have no gradient rows: training on them is refused.
    use mnist_wgpu::data::Dataset;
    use mnist_wgpu::gpu::buffers::Split;
    use mnist_wgpu::gpu::buffers::normalisation_table;
    use mnist_wgpu::gpu::fused::{FusedActs, FusedSample, SampleOutputs};
    let layout = DeviceLayout::new(&Arch::mlp(8, &[5], 4));
    let data = Dataset {
        images: vec![0; 4 * 8],
        labels: vec![0; 4],
        rows: 2,
        cols: 4,
        normalize: mnist_wgpu::data::Normalize::TUTORIAL,
    };
    let params = buffer(&gpu, "params", &vec![0f32; layout.len]);
    let eval_only = FusedActs::new(&gpu, &layout, 4, false, 1).unwrap();
    let split = Split::new(&gpu, "tiny", &data, 4);
    let sample = FusedSample {
        params: &params,
        acts: &eval_only,
        split: &split,
        norm: &normalisation_table(&gpu, wgpu::BufferUsages::UNIFORM, &split),
        outputs: SampleOutputs::Train,
        per_sample: mnist_wgpu::gpu::plan::PerSample::DEFAULT,
    };
    let e = sample
        .dispatch(&gpu, &m, "fused per-sample")
        .map(|_| ())
        .map_err(|e| e.to_string())
        .expect_err("training on evaluation buffers is refused");
    assert!(e.contains("these buffers hold no gradients"), "{e}");
}
