//! The fused schedule: a training step in two dispatches (shaders/fused_step.wgsl and
//! shaders/fused_update.wgsl), built from the per-sample functions of the operations
//! (gather_sample, linear_sample, nll_sample, evaluate_sample, linear_update, optimizer_rule).
//!
//! Everything in a step but the weight gradient is independent per sample, so the first
//! dispatch runs a sample's whole forward pass, loss and backward pass through the activations,
//! `SAMPLES` samples per workgroup, and writes every layer's input rows and output-gradient rows
//! (batch-major) to storage; the second sums dW = dZ^T X over the batch per tile of weights and
//! applies SGD in place. Evaluation is the forward half of the first, in batches as large as the
//! limits allow. How many samples a per-sample workgroup takes, and its invocations, is the
//! plan's [`PerSample`] (auto measures it).

use anyhow::{Result, ensure};

use crate::gpu::buffers::{
    Built, OptimizerState, Split, StepInputs, Verdicts, Weights, init, normalisation_table, zeros,
};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, ModelAxis, need, need_batch, need_vec4};
use crate::gpu::layout::{DeviceLayout, LayerRow, layer_rows, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::plan::PerSample;

/// Invocations per workgroup of the update dispatch (one weight tile each).
pub const UPDATE_WG: u32 = 64;
/// Rows of the layer table (`MAX_LAYERS` of layer_table.wgsl).
pub const MAX_LAYERS: usize = 32;
/// Samples per evaluation dispatch at most.
pub const EVAL_BATCH: usize = 2048;

/// The fused schedule's buffers for batches of `bp` columns, for each of `models` side by side.
pub struct FusedActs {
    pub bp: usize,
    pub layers: usize,
    pub models: usize,
    /// Floats the launchers require of each model: params (the device layout), the input's
    /// pixels, every layer's rows, and every layer's gradient rows (training); each is also the
    /// stride between models.
    pub params_floats: usize,
    pub pixels: usize,
    pub act_floats: usize,
    pub dz_floats: usize,
    /// Weight tiles of the update dispatch.
    pub tiles: usize,
    /// table: [MAX_LAYERS] LayerRow, uniform
    pub table: wgpu::Buffer,
    /// acts: [models] of X_0 [bp, ldw_0], then each layer's output Y_l [bp, pad4(out_l)]
    pub acts: wgpu::Buffer,
    /// dz: [models] of each layer's output gradient dZ_l [bp, pad4(out_l)] (training only)
    pub dz: Option<wgpu::Buffer>,
    /// sample_loss: [models, bp]
    pub sample_loss: wgpu::Buffer,
}

impl FusedActs {
    pub fn new(
        gpu: &Gpu,
        layout: &DeviceLayout,
        bp: usize,
        gradients: bool,
        models: usize,
    ) -> Result<FusedActs> {
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
        let dz = || zeros(gpu, "fused output gradients (rows)", models * dz_floats);
        Ok(FusedActs {
            bp,
            layers: rows.len(),
            models,
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
            acts: zeros(gpu, "fused activations (rows)", models * act_floats),
            dz: gradients.then(dz),
            sample_loss: zeros(gpu, "fused per-sample losses", models * bp),
        })
    }

    pub fn bytes(&self) -> u64 {
        let dz = self.dz.as_ref().map_or(0, |b| b.size());
        self.table.size() + self.acts.size() + dz + self.sample_loss.size()
    }

    /// The gradient rows, which only a training step's buffers have.
    fn gradient_rows(&self, label: &str) -> Result<&wgpu::Buffer> {
        let dz = self.dz.as_ref();
        let dz = dz.ok_or_else(|| anyhow::anyhow!("{label}: these buffers hold no gradients"))?;
        need_vec4(label, "gradient rows", dz, self.models * self.dz_floats)?;
        Ok(dz)
    }

    /// The set's axis: parameters `params_floats` apart, orders `order` apart.
    fn axis(&self, order: usize) -> ModelAxis {
        ModelAxis {
            models: self.models,
            params: self.params_floats,
            order,
        }
    }

    /// The strides between models the kernels take (`layer_table.wgsl`): the parameters' from
    /// the set's axis; the activation and gradient rows' are the per-sample table's own.
    fn strides(&self) -> [(&'static str, f64); 3] {
        let dz = match self.dz {
            Some(_) => self.dz_floats,
            None => 0,
        };
        [
            self.axis(0).p_stride(),
            ("A_STRIDE", self.act_floats as f64),
            ("D_STRIDE", dz as f64),
        ]
    }
}

/// What the per-sample dispatch writes besides the activations: training's gradients and
/// losses, or evaluation's verdicts.
pub enum SampleOutputs<'a> {
    Train,
    /// correct: [models, split] u32; log_probs: [models, split, classes]
    Eval {
        correct: &'a wgpu::Buffer,
        log_probs: &'a wgpu::Buffer,
    },
}

/// The per-sample dispatch: gather, forward, and (training) loss and backward through the
/// activations; (evaluation) each sample's prediction and log-probabilities. Every model of
/// the set at once.
pub struct FusedSample<'a> {
    /// params: [models, layout.len]
    pub params: &'a wgpu::Buffer,
    pub acts: &'a FusedActs,
    pub split: &'a Split,
    /// norm: [256] f32 uniform, `buffers::normalisation_table`
    pub norm: &'a wgpu::Buffer,
    pub outputs: SampleOutputs<'a>,
    /// samples and invocations of each workgroup
    pub per_sample: PerSample,
}

impl FusedSample<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        let (a, s) = (self.acts, self.split);
        need_batch(label, a.bp)?;
        ensure!(
            s.pixels == a.pixels,
            "{label}: images of {} pixels for a model of {}",
            s.pixels,
            a.pixels
        );
        let (models, shape) = (a.models, self.per_sample);
        let groups = (a.bp as u32).div_ceil(shape.samples);
        let most = gpu.limits.max_compute_workgroups_per_dimension;
        ensure!(
            groups <= most,
            "{label}: {} columns of {} samples per workgroup need {groups} workgroups, over the \
             adapter's {most} (use --per-sample with more samples, or a smaller batch)",
            a.bp,
            shape.samples
        );
        // Training reads each model's order; evaluation one order for all.
        let x = a.axis(match self.outputs {
            SampleOutputs::Train => s.len,
            SampleOutputs::Eval { .. } => 0,
        });
        x.need_params(label, "params", self.params, a.params_floats)?;
        x.need_acts(label, "activation rows", &a.acts, a.act_floats)?;
        need(label, "normalisation table", self.norm, 256 * 4)?;
        let orders = match self.outputs {
            SampleOutputs::Train => models,
            SampleOutputs::Eval { .. } => 1,
        };
        need(label, "order", &s.order, orders * s.len * 4)?;
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
                bindings.push((8, Bind::ReadWrite(a.gradient_rows(label)?)));
                bindings.push((9, Bind::ReadWrite(&a.sample_loss)));
                "train_sample"
            }
            SampleOutputs::Eval { correct, log_probs } => {
                need(label, "correct", correct, models * s.len * 4)?;
                bindings.push((10, Bind::ReadWrite(correct)));
                bindings.push((11, Bind::ReadWrite(log_probs)));
                "eval_sample"
            }
        };
        let mut constants = vec![
            ("BP", a.bp as f64),
            ("SAMPLES", shape.samples as f64),
            ("WG", shape.invocations as f64),
            ("LAYERS", a.layers as f64),
            ("PIXELS", s.pixels as f64),
            ("WORDS", words as f64),
            x.o_stride(),
            ("SPLIT", s.len as f64),
        ];
        constants.extend(a.strides());
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.fused_step,
                entry,
                constants: &constants,
                bindings: &bindings,
                groups: [groups, 1, models as u32],
            },
        )
    }
}

/// The per-parameter dispatch: every weight and bias gets its gradient summed over the batch
/// and the optimizer's step, each model with its own hyper-parameters; the step's mean loss
/// goes to `losses[step.index, model]`.
pub struct FusedUpdate<'a> {
    pub acts: &'a FusedActs,
    /// params: [models, layout.len], and the optimizer's state beside them
    pub params: &'a wgpu::Buffer,
    pub state: &'a OptimizerState,
    /// steps: the split's step uniforms
    pub steps: &'a wgpu::Buffer,
    /// losses: [steps per epoch, models]
    pub losses: &'a wgpu::Buffer,
    pub steps_per_epoch: usize,
    /// hyper: [models] (lr, momentum, weight decay, 0) f32, `buffers::hyper_buffer`
    pub hyper: &'a wgpu::Buffer,
}

impl FusedUpdate<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        let (a, models) = (self.acts, self.acts.models);
        need(
            label,
            "losses",
            self.losses,
            models * self.steps_per_epoch * 4,
        )?;
        need(label, "hyper-parameters", self.hyper, models * 16)?;
        let x = a.axis(0);
        x.need_params(label, "params", self.params, a.params_floats)?;
        let names = self.state.optimizer.state_names();
        for (name, b) in names.iter().zip(self.state.tensors()) {
            x.need_params(label, name, b, a.params_floats)?;
        }
        let dz = a.gradient_rows(label)?;
        let groups = (a.tiles as u32).div_ceil(UPDATE_WG);
        let row = groups.clamp(1, gpu.limits.max_compute_workgroups_per_dimension);
        let mut constants = vec![
            ("LAYERS", a.layers as f64),
            ("BP", a.bp as f64),
            ("TILES", a.tiles as f64),
            ("WG", UPDATE_WG as f64),
            ("ROW_GROUPS", row as f64),
            ("MODELS", models as f64),
        ];
        constants.extend(a.strides());
        constants.extend(self.state.optimizer.constants());
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.fused_update,
                entry: "update",
                constants: &constants,
                bindings: &[
                    (0, Bind::ReadWrite(self.params)),
                    (1, Bind::ReadWrite(&self.state.a)),
                    (2, Bind::Uniform(&a.table)),
                    (3, Bind::Step(self.steps)),
                    (4, Bind::Read(&a.acts)),
                    (5, Bind::Read(dz)),
                    (6, Bind::Read(&a.sample_loss)),
                    (7, Bind::ReadWrite(self.losses)),
                    (8, Bind::Read(self.hyper)),
                    (9, Bind::ReadWrite(&self.state.b)),
                ],
                groups: [row, groups.div_ceil(row).max(1), models as u32],
            },
        )
    }
}

/// One training step, two dispatches, the first per sample, the second per parameter:
///
/// ```text
/// images, labels = batch            \
/// output = model(images)             | train_sample: per sample, SAMPLES per       X, Y_l,
/// loss = criterion(output, labels)   | workgroup (gather, forward, loss, backward  losses_s,
/// loss.backward() (activations)     /  through the activations)                    dZ_l
/// loss.backward() (weights)         \  update: per tile of weights, dW summed      params,
/// optimizer.step()                  /  over the batch, then the optimizer; the     state
///                                       mean loss
/// ```
pub fn training(
    gpu: &Gpu,
    m: &Modules,
    per_sample: PerSample,
    w: &Weights<'_>,
    s: &StepInputs<'_>,
) -> Result<Built> {
    let acts = FusedActs::new(gpu, w.layout, pad4(s.split.batch), true, w.models)?;
    let norm = normalisation_table(gpu, wgpu::BufferUsages::UNIFORM, s.split);
    let sample = FusedSample {
        params: w.params,
        acts: &acts,
        split: s.split,
        norm: &norm,
        outputs: SampleOutputs::Train,
        per_sample,
    };
    let update = FusedUpdate {
        acts: &acts,
        params: w.params,
        state: s.state,
        steps: &s.split.steps,
        losses: s.losses,
        steps_per_epoch: s.steps_per_epoch,
        hyper: s.hyper,
    };
    Ok(Built {
        dispatches: vec![
            sample.dispatch(gpu, m, "forward + loss + backward (per sample)")?,
            update.dispatch(gpu, m, "weight gradients + optimizer (per parameter)")?,
        ],
        bytes: vec![("activations + gradients".to_string(), acts.bytes())],
        grads: None,
    })
}

/// One evaluation batch in one dispatch: gather, forward and verdicts per sample.
pub fn evaluation(
    gpu: &Gpu,
    m: &Modules,
    per_sample: PerSample,
    w: &Weights<'_>,
    split: &Split,
    v: &Verdicts<'_>,
) -> Result<Built> {
    let acts = FusedActs::new(gpu, w.layout, pad4(split.batch), false, w.models)?;
    let norm = normalisation_table(gpu, wgpu::BufferUsages::UNIFORM, split);
    let sample = FusedSample {
        params: w.params,
        acts: &acts,
        split,
        norm: &norm,
        outputs: SampleOutputs::Eval {
            correct: v.correct,
            log_probs: v.log_probs,
        },
        per_sample,
    };
    Ok(Built {
        dispatches: vec![sample.dispatch(gpu, m, "evaluate (per sample)")?],
        bytes: vec![("activations".to_string(), acts.bytes())],
        grads: None,
    })
}

/// Samples per evaluation dispatch when `batch` are asked for on a split of `n`: halved while
/// the rows of all the models of `w` would pass the adapter's storage binding limit (a set of
/// 16 models of the tutorial's shape needs 155 MB at 2048 samples).
pub fn evaluation_batch(gpu: &Gpu, w: &Weights<'_>, batch: usize, n: usize) -> usize {
    let limit = gpu.limits.max_storage_buffer_binding_size;
    let bytes = |b: usize| {
        let (rows, _) = layer_rows(w.layout, pad4(b));
        let last = rows
            .last()
            .map_or(0, |r| r.y_off as usize + pad4(b) * pad4(r.out as usize));
        (4 * w.models * last) as u64
    };
    let mut batch = batch.clamp(1, n.max(1));
    while batch > 4 && bytes(batch) > limit {
        batch = batch.div_ceil(2);
    }
    batch
}

/// While training, evaluation asks for [`EVAL_BATCH`]: it builds pipelines of its own anyway.
pub fn evaluation_batch_in_training(_training_batch: usize) -> usize {
    EVAL_BATCH
}
