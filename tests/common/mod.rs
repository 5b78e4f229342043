//! Helpers shared by the tests: a device that fails loudly when there is none, and scratch
//! directories.
#![allow(dead_code)]

use mnist_wgpu::gpu::{AdapterQuery, Gpu, context::pick_adapter};

/// The default adapter, with (`subgroups: true`) or without the subgroup matmul. A machine
/// with no adapter fails the test with a message saying how to get one.
pub fn gpu(subgroups: bool) -> Gpu {
    let adapter = pick_adapter(&AdapterQuery::default()).unwrap_or_else(|e| {
        panic!("GPU tests need a wgpu adapter: {e}");
    });
    let gpu = Gpu::open(&adapter, subgroups).expect("opening the device");
    if subgroups && !gpu.subgroups {
        eprintln!(
            "note: {} has no usable subgroups; testing the plain matmul",
            gpu.info.name
        );
    }
    gpu
}

/// Both matmul variants where the adapter has subgroups, else the plain one.
pub fn gpus() -> Vec<Gpu> {
    let first = gpu(true);
    if first.subgroups {
        vec![first, gpu(false)]
    } else {
        vec![first]
    }
}

/// An empty scratch directory for one test (this process's own, so test binaries running
/// side by side never share one).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mnist-wgpu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
