//! Helpers shared by the tests: a device that fails loudly when there is none, and scratch
//! directories.
#![allow(dead_code)]

use std::process::{Command, Output};

use mnist_wgpu::data::Dataset;
use mnist_wgpu::gpu::backend::GpuBackend;
use mnist_wgpu::gpu::device::{AdapterQuery, Gpu, pick_adapter};
use mnist_wgpu::gpu::plan::{Plan, Schedule, default_kernels, runnable_kernels};
use mnist_wgpu::model::Arch;
use mnist_wgpu::recipe::Recipe;

/// The default adapter (with subgroups where it has them). A machine with no adapter fails
/// the test with a message saying how to get one.
pub fn gpu() -> Gpu {
    let adapter = pick_adapter(&AdapterQuery::default()).unwrap_or_else(|e| {
        panic!("GPU tests need a wgpu adapter: {e}");
    });
    Gpu::open(&adapter).expect("opening the device")
}

/// The default adapter with the layered schedule and the kernels chosen for it.
pub fn layered() -> (Gpu, Plan) {
    let gpu = gpu();
    let plan = Plan::new(Schedule::Layered, default_kernels(&gpu));
    (gpu, plan)
}

/// The default adapter with the fused schedule.
pub fn fused() -> (Gpu, Plan) {
    let gpu = gpu();
    let plan = Plan::new(Schedule::Fused, default_kernels(&gpu));
    (gpu, plan)
}

/// The default adapter with the layered schedule once for every family of matmul kernels it
/// can run.
pub fn layered_all() -> Vec<(Gpu, Plan)> {
    let gpu = gpu();
    runnable_kernels(&gpu)
        .into_iter()
        .map(|k| (gpu.clone(), Plan::new(Schedule::Layered, k)))
        .collect()
}

/// The default adapter once per way to train: the layered schedule with every family of
/// matmul kernels it can run, then the fused schedule.
pub fn every_schedule() -> Vec<(Gpu, Plan)> {
    let mut out = layered_all();
    out.push(fused());
    out
}

/// The GPU backend of `plan` on `gpu`, training `r` from `params` on `train`.
pub fn backend(
    (gpu, plan): (Gpu, Plan),
    arch: &Arch,
    r: &Recipe,
    params: &[f32],
    train: &Dataset,
    test: &Dataset,
) -> anyhow::Result<GpuBackend> {
    GpuBackend::new(
        &gpu,
        plan,
        arch,
        std::slice::from_ref(r),
        params,
        train,
        test,
    )
}

/// An empty scratch directory for one test (this process's own, so test binaries running
/// side by side never share one).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mnist-wgpu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The binary as a user runs it (with Mesa's device-select layer off, as `main` also does),
/// keeping `--schedule auto`'s measurements in this test process's own cache directory rather
/// than the user's.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnist-wgpu"));
    c.env("NODEVICE_SELECT", "1");
    let cache = std::env::temp_dir().join(format!("mnist-wgpu-test-cache-{}", std::process::id()));
    c.env("MNIST_WGPU_CACHE_DIR", cache);
    c
}

/// Exit code (-1 for a signal), stdout and stderr of a finished command.
pub fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `args` in `dir`: exit code, stdout, stderr.
pub fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    outcome(
        bin()
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running mnist-wgpu"),
    )
}

/// An F32 tensor's values.
pub fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    (view.data().chunks_exact(4))
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The flat table of `arch` from the tensors `prefix<key>` (a fixture's, in PyTorch's layout).
pub fn table(
    arch: &Arch,
    tensors: &std::collections::HashMap<String, safetensors::tensor::TensorView<'_>>,
    prefix: &str,
) -> Vec<f32> {
    let mut flat = vec![0f32; arch.param_count()];
    for e in arch.table() {
        flat[e.range()].copy_from_slice(&f32s(&tensors[&format!("{prefix}{}", e.name)]));
    }
    flat
}
