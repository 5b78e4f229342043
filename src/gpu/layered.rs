//! The layered schedule: one dispatch per layer-wide product, 12 a step for the tutorial's
//! model, with the matmul kernels of the plan's family.
//!
//! Activations are feature-major, `H_l^T: [s_l, bp]`, with `bp` the batch rounded up to 4, so
//! a batch runs along the columns each invocation owns as one vec4; the forward product also
//! writes the batch-major copy `H_l: [bp, pad4(s_l)]`, the B operand of the next weight
//! gradient. Columns of a batch past its valid count carry zero input and zero gradient, so a
//! last partial batch needs no other pipelines.
//!
//! A set of models runs in the same dispatches: the grid's z is the model, every activation
//! buffer holds one tensor per model, model after model, and the parameters, gradients and
//! optimizer state one device layout per model (`ModelAxis`).

use anyhow::Result;

use crate::gpu::buffers::{
    Built, Split, StepInputs, Verdicts, Weights, normalisation_table, zeros,
};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Dispatch, ModelAxis};
use crate::gpu::layout::pad4;
use crate::gpu::ops::Modules;
use crate::gpu::ops::evaluate::Evaluate;
use crate::gpu::ops::gather::Gather;
use crate::gpu::ops::linear::{Backward, Forward, InputGrad};
use crate::gpu::ops::nll_head::NllHead;
use crate::gpu::ops::optimizer::OptimizerStep;

/// The activations of one batch of `bp` columns and, when training, their gradients, for
/// each model of a set (one tensor per model in each buffer).
pub struct Activations {
    pub bp: usize,
    /// h_t[l]: H_l^T [s_l, bp], feature-major; h_t[0] is the input X^T
    pub h_t: Vec<wgpu::Buffer>,
    /// h_rows[l]: H_l [bp, pad4(s_l)], batch-major, zero past s_l
    pub h_rows: Vec<wgpu::Buffer>,
    /// dz[l]: dZ_l^T [s_{l+1}, bp], the gradient of layer l's output (empty when evaluating)
    pub dz: Vec<wgpu::Buffer>,
}

impl Activations {
    /// For the layer sizes `sizes` (input first) of `models` models.
    pub fn new(
        gpu: &Gpu,
        sizes: &[usize],
        bp: usize,
        gradients: bool,
        models: usize,
    ) -> Activations {
        let (s, k) = (sizes, models);
        Activations {
            bp,
            h_t: (0..s.len())
                .map(|l| zeros(gpu, &format!("H{l}^T"), k * s[l] * bp))
                .collect(),
            h_rows: (0..s.len())
                .map(|l| zeros(gpu, &format!("H{l}"), k * bp * pad4(s[l])))
                .collect(),
            dz: match gradients {
                true => (0..s.len() - 1)
                    .map(|l| zeros(gpu, &format!("dZ{l}^T"), k * s[l + 1] * bp))
                    .collect(),
                false => Vec::new(),
            },
        }
    }

    /// The input's two copies and the batch's columns, as the gather writes them.
    fn input(&self) -> (&wgpu::Buffer, &wgpu::Buffer, usize) {
        (&self.h_t[0], &self.h_rows[0], self.bp)
    }

    pub fn bytes(&self) -> u64 {
        self.h_t
            .iter()
            .chain(&self.h_rows)
            .chain(&self.dz)
            .map(|b| b.size())
            .sum()
    }
}

/// One training step, in the order of the tutorial's loop (L layers, here L = 5):
///
/// ```text
/// images, labels = batch            gather                          X^T, X
/// output = model(images)            forward 0 .. L-2                H^T_l, H_l (ReLU fused)
/// loss = criterion(output, labels)  forward L-1 + nll loss + grad   dZ^T_{L-1}, losses[step]
/// loss.backward()                   backward L-1 .. 1               dX (masked), dW, db
///                                   backward 0 (weight)             dW, db
/// optimizer.step()                  optimizer                       params, optimizer state
/// ```
pub fn training(gpu: &Gpu, m: &Modules, w: &Weights<'_>, s: &StepInputs<'_>) -> Result<Built> {
    let layers = &w.layout.layers;
    let last = layers.len() - 1;
    let models = w.models;
    // Each model its own order of the epoch, one split's length apart.
    let axis = ModelAxis {
        models,
        params: w.layout.len,
        order: if models > 1 { s.split.len } else { 0 },
    };
    let a = Activations::new(gpu, &w.layout.sizes(), pad4(s.split.batch), true, models);
    let grads = zeros(gpu, "grads", models * w.layout.len);
    let table = normalisation_table(gpu, wgpu::BufferUsages::STORAGE, s.split);
    let mut ops = vec![gather(
        gpu,
        m,
        s.split,
        &table,
        a.input(),
        axis,
        "gather train",
    )?];
    ops.extend(forward_products(gpu, m, w, &a, axis, last)?);
    let head = NllHead {
        at: layers[last],
        bp: a.bp,
        params: w.params,
        h: &a.h_t[last],
        labels: &s.split.labels,
        order: &s.split.order,
        steps: &s.split.steps,
        grad: &a.dz[last],
        losses: s.losses,
        steps_per_epoch: s.steps_per_epoch,
        axis,
    };
    ops.push(head.dispatch(gpu, m, &format!("forward {last} + nll loss + grad"))?);
    for (l, &at) in layers.iter().enumerate().rev() {
        // The input needs no gradient; every other layer's input gradient shares the dispatch.
        let input = (l > 0).then(|| InputGrad {
            dx: &a.dz[l - 1],
            mask: &a.h_t[l],
        });
        let label = match l {
            0 => "backward weight 0".to_string(),
            _ => format!("backward {l} (input + weight)"),
        };
        let b = Backward {
            at,
            bp: a.bp,
            params: w.params,
            dz: &a.dz[l],
            h_rows: &a.h_rows[l],
            grads: &grads,
            input,
            models: axis,
        };
        ops.push(b.dispatch(gpu, m, &label)?);
    }
    ops.push(optimizer(gpu, m, w, s, &grads)?);
    let bytes = vec![
        ("activations + gradients".to_string(), a.bytes()),
        ("grads".to_string(), grads.size()),
    ];
    Ok(Built {
        dispatches: ops,
        bytes,
        grads: Some(grads),
    })
}

/// One evaluation batch of `split.batch` samples: gather, every layer's forward product (the
/// logits without ReLU), then each sample's prediction and log-probabilities.
pub fn evaluation(
    gpu: &Gpu,
    m: &Modules,
    w: &Weights<'_>,
    split: &Split,
    v: &Verdicts<'_>,
) -> Result<Built> {
    let layers = w.layout.layers.len();
    // Every model reads the one identity order of the test split.
    let axis = ModelAxis {
        models: w.models,
        params: w.layout.len,
        order: 0,
    };
    let a = Activations::new(gpu, &w.layout.sizes(), pad4(split.batch), false, w.models);
    let table = normalisation_table(gpu, wgpu::BufferUsages::STORAGE, split);
    let mut ops = vec![gather(
        gpu,
        m,
        split,
        &table,
        a.input(),
        axis,
        "gather test",
    )?];
    ops.extend(forward_products(gpu, m, w, &a, axis, layers)?);
    ops.push(evaluate(gpu, m, w, (split, v), (&a.h_t[layers], a.bp))?);
    Ok(Built {
        dispatches: ops,
        bytes: vec![("activations".to_string(), a.bytes())],
        grads: None,
    })
}

/// Samples per evaluation step when `batch` are asked for on a split of `n`: whole vec4 of
/// columns, at most the split.
pub fn evaluation_batch(_gpu: &Gpu, _w: &Weights<'_>, batch: usize, n: usize) -> usize {
    let n = n.max(1);
    pad4(batch.clamp(1, n)).min(n)
}

/// While training, evaluation asks for the training's batch: its forward pipelines are then
/// the training's (the same module and constants, built once), which a software adapter
/// compiles at several MB each. Results do not depend on the batch: every sample's column is
/// computed alone, in the same order.
pub fn evaluation_batch_in_training(training_batch: usize) -> usize {
    training_batch
}

/// The forward products of layers `0 .. count` on `a`: bias and ReLU fused, the logits layer
/// without ReLU.
fn forward_products(
    gpu: &Gpu,
    m: &Modules,
    w: &Weights<'_>,
    a: &Activations,
    axis: ModelAxis,
    count: usize,
) -> Result<Vec<Dispatch>> {
    let last = w.layout.layers.len() - 1;
    let dispatch = |(l, &at): (usize, &crate::gpu::layout::LayerAt)| {
        let f = Forward {
            at,
            bp: a.bp,
            relu: l < last,
            params: w.params,
            h: &a.h_t[l],
            z: &a.h_t[l + 1],
            z_rows: &a.h_rows[l + 1],
            models: axis,
        };
        f.dispatch(gpu, m, &format!("forward {l}"))
    };
    w.layout.layers[..count]
        .iter()
        .enumerate()
        .map(dispatch)
        .collect()
}

/// The gather of a step into the input's feature-major and batch-major copies (`x_t`, `x_rows`
/// for batches of `bp` columns); `gpu::net` uses it too.
pub(crate) fn gather(
    gpu: &Gpu,
    m: &Modules,
    split: &Split,
    table: &wgpu::Buffer,
    (x_t, x_rows, bp): (&wgpu::Buffer, &wgpu::Buffer, usize),
    axis: ModelAxis,
    label: &str,
) -> Result<Dispatch> {
    let g = Gather {
        pixels: split.pixels,
        bp,
        images: &split.images,
        order: &split.order,
        table,
        steps: &split.steps,
        x_t,
        x_rows,
        axis,
    };
    g.dispatch(gpu, m, label)
}

/// The optimizer's step over every model's whole device layout, from `grads`; `gpu::net` uses
/// it too.
pub(crate) fn optimizer(
    gpu: &Gpu,
    m: &Modules,
    w: &Weights<'_>,
    s: &StepInputs<'_>,
    grads: &wgpu::Buffer,
) -> Result<Dispatch> {
    let step = OptimizerStep {
        axis: ModelAxis {
            models: w.models,
            params: w.layout.len,
            order: 0,
        },
        hyper: s.hyper,
        params: w.params,
        grads,
        state: s.state,
        steps: &s.split.steps,
    };
    step.dispatch(gpu, m, "optimizer")
}

/// Each sample's prediction and log-probabilities from `logits` (Z^T [classes, bp] per
/// model); `gpu::net` uses it too.
pub(crate) fn evaluate(
    gpu: &Gpu,
    m: &Modules,
    w: &Weights<'_>,
    (split, v): (&Split, &Verdicts<'_>),
    (logits, bp): (&wgpu::Buffer, usize),
) -> Result<Dispatch> {
    let e = Evaluate {
        classes: v.classes,
        bp,
        len: split.len,
        logits,
        labels: &split.labels,
        order: &split.order,
        steps: &split.steps,
        correct: v.correct,
        log_probs: v.log_probs,
        models: w.models,
    };
    e.dispatch(gpu, m, "evaluate")
}
