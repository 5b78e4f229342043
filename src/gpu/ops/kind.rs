//! What a layer kind offers the layered schedule's walk (`gpu::net`): each kind's operation
//! module states one [`Kind`] (its WGSL module, how it reads a layer of the list into a
//! [`Node`], its checks) and `ops::KINDS` lists them. The walk, the modules compiled per
//! device and selftest all read that list, so a new kind is its operation module, its WGSL,
//! its CPU twin and its arm of `model::Layer`, and a line in `KINDS`.
//!
//! Linear is not a kind of this list: the walk runs it with the ReLU or loss head after it, in
//! the kernels the tutorial's MLP has always run (`ops::linear`, `ops::nll_head`).

use std::fmt::Debug;

use anyhow::Result;
use futures_util::future::LocalBoxFuture;

use crate::gpu::check::Check;
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Dispatch, ModelAxis};
use crate::gpu::ops::Modules;
use crate::model::{Layer, Shape};

/// One layer kind beyond Linear.
pub struct Kind {
    /// The WGSL module its dispatches run (a file of `shaders/`), compiled once per device.
    pub module: &'static str,
    /// The node of a layer of this kind, None for a layer of another.
    pub node: fn(&Site) -> Option<Box<dyn Node>>,
    /// Its kernels against the CPU twin, as selftest runs them.
    pub checks: for<'a> fn(&'a Gpu, &'a Modules) -> LocalBoxFuture<'a, Vec<Check>>,
}

/// Where a layer sits in its list: what its node is built from.
#[derive(Clone, Debug)]
pub struct Site {
    pub layer: Layer,
    /// Its index in the list (which keys dropout's masks and names its dispatches).
    pub index: usize,
    /// The input sample's shape.
    pub x_shape: Shape,
    /// Its tensors' offsets in a model's parameters, floats, in `Layer::params` order (each
    /// tensor one flat block).
    pub tensors: Vec<usize>,
}

/// What every node's dispatches share in one training step or evaluation batch.
#[derive(Clone, Copy)]
pub struct Cx<'a> {
    pub gpu: &'a Gpu,
    pub m: &'a Modules,
    /// The batch, padded to a multiple of 4: every tensor is `[features, bp]` per model.
    pub bp: usize,
    pub axis: ModelAxis,
    /// params: [models, axis.params], the device layout
    pub params: &'a wgpu::Buffer,
    /// The split's step uniforms and the models' dropout keys (training only).
    pub steps: &'a wgpu::Buffer,
    pub keys: Option<&'a wgpu::Buffer>,
}

/// A node's tensors, every model's one after another: its input x and output y
/// (`[features, bp]` each), what it kept for its backward, and its dispatches' label.
pub struct Tensors<'a> {
    pub x: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub kept: Option<&'a wgpu::Buffer>,
    pub label: &'a str,
}

/// A node's gradients: its output's (dy), its input's to write (dx; None when the input is
/// the batch's), and every model's parameter gradients (`[models, axis.params]`).
pub struct Grads<'a> {
    pub dy: &'a wgpu::Buffer,
    pub dx: Option<&'a wgpu::Buffer>,
    pub grads: &'a wgpu::Buffer,
}

/// One layer as the walk runs it: its dispatches forward and backward.
pub trait Node: Debug {
    fn forward(&self, cx: &Cx<'_>, t: &Tensors<'_>) -> Result<Vec<Dispatch>>;

    fn backward(&self, cx: &Cx<'_>, t: &Tensors<'_>, g: &Grads<'_>) -> Result<Vec<Dispatch>>;

    /// Whether its output is a ReLU's (positive where nonzero), given whether its input is: a
    /// Linear after it masks its input gradient by that.
    fn relu_out(&self, relu_in: bool) -> bool {
        relu_in
    }

    /// Whether its backward needs a tensor of its output's size kept by its forward
    /// (max-pooling's winners).
    fn keeps(&self) -> bool {
        false
    }

    /// Whether it is the identity when evaluating (dropout): no dispatch, its output its input.
    fn only_training(&self) -> bool {
        false
    }
}
