//! mnist-wgpu: the PyTorch MNIST tutorial's MLP, trained with hand-written WGSL kernels.
//!
//! - [`data`]: the IDX files, verified and parsed
//! - [`model`]: the architecture and the flat parameter table
//! - [`cpu`]: the CPU reference, oracle of the tests and the `--device cpu` backend
//! - [`gpu`]: adapter choice, kernels and the GPU backend
//! - [`optim`]: the optimizers (SGD, Adam, Adadelta) as values, their rule's CPU twin
//! - [`train`]: the recipe and the epoch loop both backends share
//!
//! The library also builds for `wasm32-unknown-unknown` (the page in `web/`): there the GPU is
//! the browser's WebGPU, and the modules that need a filesystem, the network or a terminal
//! (checkpoints, downloads, the PNG chart) are left out.

pub mod backends;
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod checkpoint;
pub mod cpu;
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod fetch;
pub mod flags;
pub mod gpu;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod modelfile;
pub mod optim;
pub mod philox;
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
pub mod predict;
pub mod profile;
pub mod recipe;
#[cfg(not(target_arch = "wasm32"))]
pub mod recorder;
pub mod report;
pub mod rng;
pub mod sweep;
pub mod train;
