//! Helpers shared by the GPU tests: a device that fails loudly when there is none, buffers
//! from slices, single-kernel runs, and the f32 accumulation tolerance.
#![allow(dead_code)]

use mnist_wgpu::gpu::kernels::{Op, read_back, step_stride, submit};
use mnist_wgpu::gpu::{AdapterQuery, Gpu, context::pick_adapter};
use mnist_wgpu::rng::Rng;
use wgpu::util::DeviceExt;

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

pub fn buffer<T: bytemuck::Pod>(gpu: &Gpu, label: &str, data: &[T]) -> wgpu::Buffer {
    let mut bytes = bytemuck::cast_slice::<T, u8>(data).to_vec();
    bytes.resize(bytes.len().max(4), 0);
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}

/// A step-uniform buffer with the adapter's stride.
pub fn steps_buffer(gpu: &Gpu, n: usize, batch: usize) -> wgpu::Buffer {
    let table = mnist_wgpu::gpu::kernels::step_table(n, batch, step_stride(gpu));
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("test steps"),
            contents: &table,
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Runs `op` for step `step` and waits.
pub fn run(gpu: &Gpu, op: &Op, step: usize) {
    submit(
        gpu,
        "test",
        std::slice::from_ref(op),
        step..step + 1,
        step_stride(gpu),
    );
}

pub fn read<T: bytemuck::Pod>(gpu: &Gpu, src: &wgpu::Buffer, count: usize) -> Vec<T> {
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("test staging"),
        size: (count * std::mem::size_of::<T>()).max(4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    read_back(gpu, src, 0, count, &staging).expect("read-back")
}

pub fn random(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi)).collect()
}

/// Largest errors of `got` against an f64 reference, where `scale[i]` is the sum of the
/// magnitudes of the terms of element i (Σ|a·b| for a product). A sum of K f32 terms in any
/// order is within K·2⁻²⁴·Σ|terms| of the exact value (Higham's γ_K bound), so the assertion
/// is `|got - ref| <= (K + 2)·2⁻²⁴·scale` (two more roundings for the epilogue) and never fails
/// for a correct kernel, whatever its summation order.
pub struct Errors {
    pub max_abs: f64,
    pub max_rel: f64,
    pub worst_ratio: f64,
}

pub fn compare(what: &str, got: &[f32], reference: &[f64], scale: &[f64], k: usize) -> Errors {
    assert_eq!(got.len(), reference.len(), "{what}: length");
    let unit = (k as f64 + 2.0) * 2f64.powi(-24);
    let mut e = Errors {
        max_abs: 0.0,
        max_rel: 0.0,
        worst_ratio: 0.0,
    };
    for i in 0..got.len() {
        let d = (got[i] as f64 - reference[i]).abs();
        let tol = unit * scale[i] + 1e-30;
        e.max_abs = e.max_abs.max(d);
        e.max_rel = e.max_rel.max(d / reference[i].abs().max(1e-30));
        e.worst_ratio = e.worst_ratio.max(d / tol);
        assert!(
            d <= tol,
            "{what}: element {i}: got {} expected {} (|diff| {d:e} > tolerance {tol:e})",
            got[i],
            reference[i]
        );
    }
    e
}
