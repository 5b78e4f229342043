//! The fused schedule: a training step in two dispatches (shaders/fused_step.wgsl and
//! shaders/fused_update.wgsl), built from the per-sample functions of the operations
//! (gather_sample, linear_sample, nll_sample, evaluate_sample, linear_update, sgd_rule).
//!
//! Everything in a step but the weight gradient is independent per sample, so the first
//! dispatch runs a sample's whole forward pass, loss and backward pass through the activations,
//! `SAMPLES` samples per workgroup, and writes every layer's input rows and output-gradient rows
//! (batch-major) to storage; the second sums dW = dZ^T X over the batch per tile of weights and
//! applies SGD in place. Evaluation is the forward half of the first, in batches as large as the
//! limits allow.

use anyhow::{Result, ensure};

use crate::gpu::context::Gpu;
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::program::{Bind, Dispatch, Op, need, need_batch, need_vec4};
use crate::gpu::tensors::{Split, init, zeros};

/// Samples per workgroup of the per-sample dispatch, and its invocations.
pub const SAMPLES: u32 = 16;
pub const WG: u32 = 64;
/// Invocations per workgroup of the update dispatch (one weight tile each).
pub const UPDATE_WG: u32 = 64;
/// Rows of the layer table (`MAX_LAYERS` of layer_table.wgsl).
pub const MAX_LAYERS: usize = 32;
/// Samples per evaluation dispatch at most.
pub const EVAL_BATCH: usize = 2048;

/// One layer of the table both dispatches read; WGSL twin `Layer` in layer_table.wgsl.
/// Offsets are in floats.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerRow {
    pub inp: u32,
    pub out: u32,
    pub w_off: u32,
    pub b_off: u32,
    pub ldw: u32,
    pub x_off: u32,
    pub y_off: u32,
    pub dz_off: u32,
    pub tile0: u32,
    pub pad: [u32; 3],
}

/// The table of `layout` for batches of `bp` columns, and the weight tiles in all.
pub fn layer_rows(layout: &DeviceLayout, bp: usize) -> (Vec<LayerRow>, usize) {
    let (mut x, mut dz, mut tiles) = (0, 0, 0);
    let rows = layout
        .layers
        .iter()
        .map(|l| {
            let y = x + bp * l.ldw;
            let row = LayerRow {
                inp: l.inp as u32,
                out: l.out as u32,
                w_off: l.w_off as u32,
                b_off: l.b_off as u32,
                ldw: l.ldw as u32,
                x_off: x as u32,
                y_off: y as u32,
                dz_off: dz as u32,
                tile0: tiles as u32,
                pad: [0; 3],
            };
            x = y;
            dz += bp * pad4(l.out);
            tiles += l.out.div_ceil(8) * l.ldw.div_ceil(8).next_multiple_of(8);
            row
        })
        .collect();
    (rows, tiles)
}

/// The fused schedule's buffers for batches of `bp` columns.
pub struct FusedActs {
    pub bp: usize,
    pub layers: usize,
    /// Floats the launchers require: params (the device layout), the input's pixels, every
    /// layer's rows, and every layer's gradient rows (training).
    pub params_floats: usize,
    pub pixels: usize,
    pub act_floats: usize,
    pub dz_floats: usize,
    /// Weight tiles of the update dispatch.
    pub tiles: usize,
    /// table: [MAX_LAYERS] LayerRow, uniform
    pub table: wgpu::Buffer,
    /// acts: X_0 [bp, ldw_0], then each layer's output Y_l [bp, pad4(out_l)]
    pub acts: wgpu::Buffer,
    /// dz: each layer's output gradient dZ_l [bp, pad4(out_l)] (training only)
    pub dz: wgpu::Buffer,
    /// sample_loss: [bp]
    pub sample_loss: wgpu::Buffer,
}

impl FusedActs {
    pub fn new(gpu: &Gpu, layout: &DeviceLayout, bp: usize, gradients: bool) -> Result<FusedActs> {
        ensure!(
            layout.layers.len() <= MAX_LAYERS,
            "the fused schedule takes models of at most {MAX_LAYERS} layers; this one has {} \
             (use --schedule layered)",
            layout.layers.len()
        );
        let (rows, tiles) = layer_rows(layout, bp);
        let mut table = vec![LayerRow::default(); MAX_LAYERS];
        table[..rows.len()].copy_from_slice(&rows);
        let last = rows.last().expect("a model has layers");
        let act_floats = last.y_off as usize + bp * pad4(last.out as usize);
        let dz_floats = last.dz_off as usize + bp * pad4(last.out as usize);
        Ok(FusedActs {
            bp,
            layers: rows.len(),
            params_floats: layout.len,
            pixels: rows[0].inp as usize,
            act_floats,
            dz_floats,
            tiles,
            table: init(
                gpu,
                "fused layer table",
                bytemuck::cast_slice(&table),
                wgpu::BufferUsages::UNIFORM,
            ),
            acts: zeros(gpu, "fused activations (rows)", act_floats),
            // Evaluation writes no gradient: a token buffer, which Train refuses to bind.
            dz: zeros(
                gpu,
                "fused output gradients (rows)",
                if gradients { dz_floats } else { 4 },
            ),
            sample_loss: zeros(gpu, "fused per-sample losses", bp),
        })
    }

    pub fn bytes(&self) -> u64 {
        self.table.size() + self.acts.size() + self.dz.size() + self.sample_loss.size()
    }
}

/// The normalisation of a pixel value as a uniform table of 64 vec4.
pub fn normalisation_uniform(gpu: &Gpu) -> wgpu::Buffer {
    let table = crate::data::normalize_table();
    init(
        gpu,
        "normalisation table (uniform)",
        bytemuck::cast_slice(&table),
        wgpu::BufferUsages::UNIFORM,
    )
}

/// What the per-sample dispatch writes besides the activations: training's gradients and
/// losses, or evaluation's verdicts.
pub enum SampleOutputs<'a> {
    Train,
    /// correct: [split] u32; log_probs: [split, classes]
    Eval {
        correct: &'a wgpu::Buffer,
        log_probs: &'a wgpu::Buffer,
    },
}

/// The per-sample dispatch: gather, forward, and (training) loss and backward through the
/// activations; (evaluation) each sample's prediction and log-probabilities.
pub struct FusedSample<'a> {
    pub params: &'a wgpu::Buffer,
    pub acts: &'a FusedActs,
    pub split: &'a Split,
    /// norm: [normalisation_uniform]
    pub norm: &'a wgpu::Buffer,
    pub outputs: SampleOutputs<'a>,
}

impl FusedSample<'_> {
    pub fn op(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Op> {
        let (a, s) = (self.acts, self.split);
        need_batch(label, a.bp)?;
        ensure!(
            s.pixels == a.pixels,
            "{label}: images of {} pixels for a model of {}",
            s.pixels,
            a.pixels
        );
        need_vec4(label, "params", self.params, a.params_floats)?;
        need_vec4(label, "activation rows", &a.acts, a.act_floats)?;
        need(label, "normalisation table", self.norm, 256 * 4)?;
        let words = s.pixels.div_ceil(4);
        let mut bindings = vec![
            (0, Bind::Read(self.params)),
            (1, Bind::Uniform(&a.table)),
            (2, Bind::Read(&s.images)),
            (3, Bind::Read(&s.order)),
            (4, Bind::Read(&s.labels)),
            (5, Bind::Uniform(self.norm)),
            (6, Bind::Step(&s.steps)),
            (7, Bind::ReadWrite(&a.acts)),
        ];
        let entry = match self.outputs {
            SampleOutputs::Train => {
                need_vec4(label, "gradient rows", &a.dz, a.dz_floats)?;
                bindings.push((8, Bind::ReadWrite(&a.dz)));
                bindings.push((9, Bind::ReadWrite(&a.sample_loss)));
                "train_sample"
            }
            SampleOutputs::Eval { correct, log_probs } => {
                need(label, "correct", correct, s.len * 4)?;
                bindings.push((10, Bind::ReadWrite(correct)));
                bindings.push((11, Bind::ReadWrite(log_probs)));
                "eval_sample"
            }
        };
        Op::new(
            gpu,
            Dispatch {
                label: label.to_string(),
                module: &m.fused_step,
                entry,
                constants: &[
                    ("BP", a.bp as f64),
                    ("SAMPLES", SAMPLES as f64),
                    ("WG", WG as f64),
                    ("LAYERS", a.layers as f64),
                    ("PIXELS", s.pixels as f64),
                    ("WORDS", words as f64),
                ],
                bindings: &bindings,
                groups: [(a.bp as u32).div_ceil(SAMPLES), 1, 1],
            },
        )
    }
}

/// The per-parameter dispatch: every weight and bias gets its gradient summed over the batch
/// and PyTorch's momentum SGD step; the step's mean loss goes to `losses[step.index]`.
pub struct FusedUpdate<'a> {
    pub acts: &'a FusedActs,
    pub params: &'a wgpu::Buffer,
    pub momentum: &'a wgpu::Buffer,
    /// steps: the split's step uniforms
    pub steps: &'a wgpu::Buffer,
    /// losses: [steps per epoch]
    pub losses: &'a wgpu::Buffer,
    pub steps_per_epoch: usize,
    pub lr: f64,
    pub mu: f64,
}

impl FusedUpdate<'_> {
    pub fn op(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Op> {
        let a = self.acts;
        need(label, "losses", self.losses, self.steps_per_epoch * 4)?;
        need_vec4(label, "params", self.params, a.params_floats)?;
        need_vec4(label, "momentum", self.momentum, a.params_floats)?;
        need_vec4(label, "gradient rows", &a.dz, a.dz_floats)?;
        let groups = (a.tiles as u32).div_ceil(UPDATE_WG);
        let row = groups.clamp(1, gpu.limits.max_compute_workgroups_per_dimension);
        Op::new(
            gpu,
            Dispatch {
                label: label.to_string(),
                module: &m.fused_update,
                entry: "update",
                constants: &[
                    ("LAYERS", a.layers as f64),
                    ("BP", a.bp as f64),
                    ("TILES", a.tiles as f64),
                    ("WG", UPDATE_WG as f64),
                    ("ROW_GROUPS", row as f64),
                    ("LR", self.lr),
                    ("MU", self.mu),
                ],
                bindings: &[
                    (0, Bind::ReadWrite(self.params)),
                    (1, Bind::ReadWrite(self.momentum)),
                    (2, Bind::Uniform(&a.table)),
                    (3, Bind::Step(self.steps)),
                    (4, Bind::Read(&a.acts)),
                    (5, Bind::Read(&a.dz)),
                    (6, Bind::Read(&a.sample_loss)),
                    (7, Bind::ReadWrite(self.losses)),
                ],
                groups: [row, groups.div_ceil(row).max(1), 1],
            },
        )
    }
}
