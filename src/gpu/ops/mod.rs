//! The operations of training, one module each: its WGSL (under `shaders/`), a typed launcher
//! that checks its preconditions and returns an [`Dispatch`](crate::gpu::dispatch::Dispatch), a pointer to
//! its CPU twin in `src/cpu/` (the optimizer's in `src/optim.rs`), and its self-test check
//! against that twin.
//!
//! | op | WGSL | CPU twin |
//! |---|---|---|
//! | [`gather`] | batch.wgsl | `cpu::gather` |
//! | [`linear`] forward | linear_forward.wgsl | `cpu::linear_forward` |
//! | [`linear`] backward | linear_backward.wgsl | `cpu::linear_backward`, `cpu::relu_backward` |
//! | [`nll_head`] | nll_head.wgsl | `cpu::log_softmax`, `cpu::nll_loss_grad` |
//! | [`evaluate`] | evaluate.wgsl | `cpu::argmax`, `cpu::log_softmax` |
//! | [`optimizer`] | optimizer.wgsl, its rule in optimizer_rule.wgsl | `optim::step` |
//! | [`conv`] forward, input grad, weight grad | conv.wgsl | `cpu::conv::conv2d_forward`, `conv2d_backward` |
//! | [`pool`] forward, backward | maxpool.wgsl | `cpu::conv::maxpool2` |
//! | [`dropout`] | dropout.wgsl, philox.wgsl | `cpu::conv::dropout_factors` |
//! | [`relu`] forward, backward (a ReLU after a conv or a pool) | relu.wgsl | `cpu::layers` |
//! | [`rows`] (a Linear's batch-major input) | rows.wgsl | `gpu::check::transpose` |
//!
//! The fused schedule (`gpu::fused`) calls each operation's per-sample (or per-parameter)
//! WGSL function from two entry modules, fused_step.wgsl and fused_update.wgsl:
//!
//! | op | its fused function | CPU twin |
//! |---|---|---|
//! | gather | gather_sample.wgsl `gather_samples` | `cpu::gather` |
//! | linear forward | linear_sample.wgsl `forward_layer` | `cpu::linear_forward` |
//! | linear backward (input) | linear_sample.wgsl `input_grad_layer` | `cpu::linear_backward`, `cpu::relu_backward` |
//! | linear backward (weight) + optimizer | linear_update.wgsl `update_tile` + optimizer_rule.wgsl | `cpu::linear_backward`, `optim::step` |
//! | nll head | nll_sample.wgsl `nll_samples` | `cpu::log_softmax`, `cpu::nll_loss_grad` |
//! | evaluate | evaluate_sample.wgsl `evaluate_samples` | `cpu::argmax`, `cpu::log_softmax` |
//!
//! Each op's `check_fused` (in `linear::fused` for the linear layer) checks what its fused
//! function wrote in one fused step against the same CPU twin as its layered kernel;
//! `gpu::selftest::fused_step_checks` runs the step and hands each op its tensors.

pub mod conv;
pub mod dropout;
pub mod evaluate;
pub mod gather;
pub mod kind;
pub mod linear;
pub mod nll_head;
pub mod optimizer;
pub mod pool;
pub mod relu;
pub mod rows;

use anyhow::Result;

use crate::gpu::device::Gpu;
use crate::gpu::wgsl::{Kernels, Module, module};

/// The layer kinds a list may hold beyond Linear (`kind`), each its operation module's
/// `KIND`: the walk reads a layer by asking each in turn, `Modules` compiles their WGSL and
/// selftest runs their checks. A new kind is one line here.
pub const KINDS: [&kind::Kind; 4] = [&conv::KIND, &pool::KIND, &relu::KIND, &dropout::KIND];

/// Workgroup size of the elementwise kernels (gather, loss, evaluation).
pub const WG: u32 = 64;

/// Every shader module, compiled once per device for one matmul inner loop.
pub struct Modules {
    pub kernels: Kernels,
    pub forward: Module,
    pub backward: Module,
    pub gather: Module,
    pub nll_head: Module,
    pub evaluate: Module,
    pub optimizer: Module,
    /// The fused schedule's two entry modules (no matmul inner loop).
    pub fused_step: Module,
    pub fused_update: Module,
    /// A Linear's batch-major input, where a layer of `KINDS` wrote it (`gpu::net`).
    pub rows: Module,
    /// The modules of [`KINDS`], in its order.
    pub layers: Vec<Module>,
}

impl Modules {
    /// The modules of the matmul kernels `kernels` (the subgroup loop needs a device opened
    /// with subgroups).
    pub fn new(gpu: &Gpu, kernels: Kernels) -> Result<Modules> {
        let tile = kernels;
        Ok(Modules {
            kernels,
            forward: module(gpu, "linear_forward.wgsl", tile)?,
            backward: module(gpu, "linear_backward.wgsl", tile)?,
            gather: module(gpu, "batch.wgsl", tile)?,
            nll_head: module(gpu, "nll_head.wgsl", tile)?,
            evaluate: module(gpu, "evaluate.wgsl", tile)?,
            optimizer: module(gpu, "optimizer.wgsl", tile)?,
            fused_step: module(gpu, "fused_step.wgsl", tile)?,
            fused_update: module(gpu, "fused_update.wgsl", tile)?,
            rows: module(gpu, "rows.wgsl", tile)?,
            layers: (KINDS.iter())
                .map(|k| module(gpu, k.module, tile))
                .collect::<Result<_>>()?,
        })
    }

    /// The module of a kind of [`KINDS`], by its file's name.
    pub fn layer(&self, file: &str) -> &Module {
        (self.layers.iter())
            .find(|m| m.name == file)
            .expect("every kind's module is compiled")
    }
}
