//! Everything that runs on a wgpu device.
//!
//! - [`context`]: adapter choice, the device, GPU errors as values
//! - [`wgsl`]: WGSL sources, kernel families and schedules, the import step
//! - [`program`]: the `Step` uniform, `Op`, submission
//! - [`layout`]: the parameters' device layout (rows padded to vec4)
//! - [`ops`]: one module per operation: WGSL, launcher, CPU twin, check
//! - [`step`]: the training step and the evaluation batch as lists of dispatches, for both
//!   schedules
//! - [`fused`]: the fused schedule's buffers and its two dispatches; [`fused_check`] its checks
//! - [`tune`]: `--schedule auto`, measured once per adapter and shape and cached
//! - [`trainer`], [`evaluator`]: the GPU backend and its evaluation
//! - [`selftest`]: every op's check, for `mnist-wgpu selftest` and the tests

pub mod check;
pub mod context;
pub mod error;
pub mod evaluator;
pub mod fused;
pub mod fused_check;
pub mod layout;
pub mod ops;
pub mod profiler;
pub mod program;
pub mod readback;
pub mod selftest;
pub mod step;
pub mod tensors;
pub mod trainer;
pub mod tune;
pub mod wgsl;

pub use context::{AdapterQuery, Api, Gpu, GpuError};
pub use trainer::GpuBackend;
