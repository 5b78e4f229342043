//! The training step and the evaluation batch as lists of dispatches, built once before step
//! 0 and recorded 250 steps at a time into one compute pass (`GpuBackend`, `bench`, the
//! profiler and the tests all run these lists).

use anyhow::Result;

use crate::gpu::context::Gpu;
use crate::gpu::fused::{FusedActs, FusedSample, FusedUpdate, SampleOutputs};
use crate::gpu::layout::DeviceLayout;
use crate::gpu::ops::Modules;
use crate::gpu::ops::evaluate::Evaluate;
use crate::gpu::ops::gather::Gather;
use crate::gpu::ops::linear::{Backward, Forward, InputGrad};
use crate::gpu::ops::nll_head::NllHead;
use crate::gpu::ops::sgd::Sgd;
use crate::gpu::program::Op;
use crate::gpu::tensors::{Activations, Split};

/// The model's state on the device, all in the device layout (`gpu::layout`).
pub struct Weights<'a> {
    pub layout: &'a DeviceLayout,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub momentum: &'a wgpu::Buffer,
}

/// What a training step reads and writes besides the weights.
pub struct StepInputs<'a> {
    pub split: &'a Split,
    /// table: [256] f32, the normalisation of a pixel value
    pub table: &'a wgpu::Buffer,
    /// losses: [steps per epoch], each step's mean loss
    pub losses: &'a wgpu::Buffer,
    pub steps_per_epoch: usize,
    pub lr: f64,
    pub momentum: f64,
}

/// One training step, in the order of the tutorial's loop (L layers, here L = 5):
///
/// ```text
/// images, labels = batch            gather                          X^T, X
/// output = model(images)            forward 0 .. L-2                H^T_l, H_l (ReLU fused)
/// loss = criterion(output, labels)  forward L-1 + nll loss + grad   dZ^T_{L-1}, losses[step]
/// loss.backward()                   backward L-1 .. 1               dX (masked), dW, db
///                                   backward 0 (weight)             dW, db
/// optimizer.step()                  sgd                             params, momentum
/// ```
///
/// `forward` holds the forward products of `a` ([`forward_products`]); the step runs all
/// but the last, whose product the loss kernel computes itself.
pub fn training_step(
    gpu: &Gpu,
    m: &Modules,
    w: &Weights<'_>,
    s: &StepInputs<'_>,
    (a, forward): (&Activations, &[Op]),
) -> Result<Vec<Op>> {
    let (bp, layers) = (a.bp, &w.layout.layers);
    let last = layers.len() - 1;
    let mut ops = vec![gather(gpu, m, s.split, s.table, a, "gather train")?];
    ops.extend_from_slice(&forward[..last]);
    let head = NllHead {
        at: layers[last],
        bp,
        params: w.params,
        h: &a.h_t[last],
        labels: &s.split.labels,
        order: &s.split.order,
        steps: &s.split.steps,
        grad: &a.dz[last],
        losses: s.losses,
        steps_per_epoch: s.steps_per_epoch,
    };
    ops.push(head.op(gpu, m, &format!("forward {last} + nll loss + grad"))?);
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
            bp,
            params: w.params,
            dz: &a.dz[l],
            h_rows: &a.h_rows[l],
            grads: w.grads,
            input,
        };
        ops.push(b.op(gpu, m, &label)?);
    }
    let sgd = Sgd {
        len: w.layout.len,
        lr: s.lr,
        momentum: s.momentum,
        params: w.params,
        grads: w.grads,
        velocity: w.momentum,
    };
    ops.push(sgd.op(gpu, m, "sgd")?);
    Ok(ops)
}

/// One training step of the fused schedule: two dispatches, the first per sample, the second
/// per parameter (`gpu::fused`):
///
/// ```text
/// images, labels = batch            \
/// output = model(images)             | train_sample: per sample, SAMPLES per       X, Y_l,
/// loss = criterion(output, labels)   | workgroup (gather, forward, loss, backward  losses_s,
/// loss.backward() (activations)     /  through the activations)                    dZ_l
/// loss.backward() (weights)         \  update: per tile of weights, dW summed      params,
/// optimizer.step()                  /  over the batch, then SGD; the mean loss     momentum
/// ```
pub fn fused_training_step(
    gpu: &Gpu,
    m: &Modules,
    w: &Weights<'_>,
    s: &StepInputs<'_>,
    (acts, norm): (&FusedActs, &wgpu::Buffer),
) -> Result<Vec<Op>> {
    let sample = FusedSample {
        params: w.params,
        acts,
        split: s.split,
        norm,
        outputs: SampleOutputs::Train,
    };
    let update = FusedUpdate {
        acts,
        params: w.params,
        momentum: w.momentum,
        steps: &s.split.steps,
        losses: s.losses,
        steps_per_epoch: s.steps_per_epoch,
        lr: s.lr,
        mu: s.momentum,
    };
    Ok(vec![
        sample.op(gpu, m, "forward + loss + backward (per sample)")?,
        update.op(gpu, m, "weight gradients + sgd (per parameter)")?,
    ])
}

/// The forward product of every layer on the activations `a`: bias and ReLU fused, the
/// logits layer without ReLU.
pub fn forward_products(
    gpu: &Gpu,
    m: &Modules,
    (layout, params): (&DeviceLayout, &wgpu::Buffer),
    a: &Activations,
) -> Result<Vec<Op>> {
    let last = layout.layers.len() - 1;
    let op = |(l, &at): (usize, &crate::gpu::layout::LayerAt)| {
        let f = Forward {
            at,
            bp: a.bp,
            relu: l < last,
            params,
            h: &a.h_t[l],
            z: &a.h_t[l + 1],
            z_rows: &a.h_rows[l + 1],
        };
        f.op(gpu, m, &format!("forward {l}"))
    };
    layout.layers.iter().enumerate().map(op).collect()
}

/// One evaluation batch: gather, the forward products of `forward` (on the activations `a`),
/// then each sample's prediction and log-probabilities into `correct` and `log_probs`.
pub fn evaluation_batch(
    gpu: &Gpu,
    m: &Modules,
    (split, table, a): (&Split, &wgpu::Buffer, &Activations),
    forward: &[Op],
    (classes, correct, log_probs): (usize, &wgpu::Buffer, &wgpu::Buffer),
) -> Result<Vec<Op>> {
    let mut ops = vec![gather(gpu, m, split, table, a, "gather test")?];
    ops.extend_from_slice(forward);
    let e = Evaluate {
        classes,
        bp: a.bp,
        len: split.len,
        logits: &a.h_t[forward.len()],
        labels: &split.labels,
        order: &split.order,
        steps: &split.steps,
        correct,
        log_probs,
    };
    ops.push(e.op(gpu, m, "evaluate")?);
    Ok(ops)
}

fn gather(
    gpu: &Gpu,
    m: &Modules,
    split: &Split,
    table: &wgpu::Buffer,
    a: &Activations,
    label: &str,
) -> Result<Op> {
    let g = Gather {
        pixels: split.pixels,
        bp: a.bp,
        images: &split.images,
        order: &split.order,
        table,
        steps: &split.steps,
        x_t: &a.h_t[0],
        x_rows: &a.h_rows[0],
    };
    g.op(gpu, m, label)
}
