//! Helpers shared by the tests: a device that fails loudly when there is none, and scratch
//! directories.
#![allow(dead_code)]

use mnist_wgpu::gpu::{AdapterQuery, Gpu, context::pick_adapter};

/// The default adapter (with subgroups where it has them). A machine with no adapter fails
/// the test with a message saying how to get one.
pub fn gpu() -> Gpu {
    let adapter = pick_adapter(&AdapterQuery::default()).unwrap_or_else(|e| {
        panic!("GPU tests need a wgpu adapter: {e}");
    });
    Gpu::open(&adapter, true).expect("opening the device")
}

/// The default adapter with every matmul inner loop it can run: with and without subgroups
/// where it has them.
pub fn gpus() -> Vec<Gpu> {
    let first = gpu();
    match first.subgroups {
        true => {
            let adapter = pick_adapter(&AdapterQuery::default()).unwrap();
            vec![
                first,
                Gpu::open(&adapter, false).expect("opening the device"),
            ]
        }
        false => vec![first],
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
