//! mnist-wgpu: the PyTorch MNIST tutorial's MLP, trained with hand-written WGSL kernels.
//!
//! - [`data`]: the IDX files, verified and parsed
//! - [`model`]: the architecture and the flat parameter table
//! - [`cpu`]: the CPU reference, oracle of the tests and the `--device cpu` backend
//! - [`gpu`]: adapter choice, kernels and the GPU backend
//! - [`train`]: the recipe and the epoch loop both backends share

pub mod bench;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod fetch;
pub mod gpu;
pub mod metrics;
pub mod model;
pub mod modelfile;
pub mod plot;
pub mod predict;
pub mod profile;
pub mod rng;
pub mod train;
