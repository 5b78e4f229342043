//! Everything that runs on a wgpu device.

pub mod context;
pub mod kernels;
pub mod trainer;

pub use context::{AdapterQuery, Api, Gpu, GpuError};
pub use trainer::GpuBackend;
pub mod selftest;
