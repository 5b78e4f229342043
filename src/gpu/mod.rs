//! Everything that runs on a wgpu device. Dependencies run one way, down this list:
//!
//! - [`device`], [`error`]: adapter choice, the device, GPU errors as values
//! - [`wgsl`]: the WGSL sources, kernel families, the import step, compiled modules
//! - [`plan`]: how a run computes (schedule and kernel family), and which families fit
//! - [`dispatch`], [`readback`], [`profiler`]: the `Step` uniform, dispatches, submission,
//!   read-backs
//! - [`layout`], [`buffers`]: the parameters' device layout; splits and shared buffers
//! - [`check`], [`ops`]: one module per operation: launcher, CPU twin, check
//! - [`layered`], [`fused`]: the two schedules, each its training step and evaluation;

//! - [`schedules`]: where a plan becomes a schedule
//! - [`evaluator`], [`backend`]: evaluation, and the GPU backend (training beside it)
//! - [`tune`]: `--schedule auto`, measured once per adapter and shape and cached
//! - [`selftest`]: every op's check, for `mnist-wgpu selftest` and the tests

pub mod backend;
pub mod buffers;
pub mod check;
pub mod device;
pub mod dispatch;
pub mod error;
pub mod evaluator;
pub mod fused;
pub mod layered;
pub mod layout;
pub mod net;
pub mod ops;
pub mod plan;
pub mod profiler;
pub mod readback;
pub mod schedules;
pub mod selftest;
pub mod tune;
pub mod wgsl;
