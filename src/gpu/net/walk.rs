//! A list's training step and evaluation as dispatches: the nodes' forwards in order, the loss
//! head, their backwards in reverse, the optimizer.

use anyhow::Result;

use super::{Net, Node, Op};
use crate::gpu::buffers::{
    Built, Split, StepInputs, Verdicts, Weights, normalisation_table, zeros,
};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Dispatch, ModelAxis};
use crate::gpu::layered;
use crate::gpu::layout::pad4;
use crate::gpu::ops::Modules;
use crate::gpu::ops::conv::Conv;
use crate::gpu::ops::dropout::Dropout;
use crate::gpu::ops::linear::{Backward, Forward, InputGrad};
use crate::gpu::ops::nll_head::NllHead;
use crate::gpu::ops::pool::Pool;
use crate::gpu::ops::relu::Relu;
use crate::gpu::ops::rows::Rows;

/// The buffers between the nodes, per value: for each model, one tensor after another.
struct Values {
    bp: usize,
    /// acts[v]: [features, bp], feature-major; None where the value is another's (dropout
    /// when evaluating)
    acts: Vec<Option<wgpu::Buffer>>,
    /// rows[v]: [bp, pad4(features)], batch-major, for the values a Linear reads or writes
    rows: Vec<Option<wgpu::Buffer>>,
    /// grad[v]: the gradient of value v (training, v > 0)
    grad: Vec<Option<wgpu::Buffer>>,
    /// kept[v]: the winners of the max-pooling that wrote value v
    kept: Vec<Option<wgpu::Buffer>>,
    /// alias[v]: the value whose buffers v uses (itself, or a dropout's input when evaluating)
    alias: Vec<usize>,
}

impl Values {
    fn new(gpu: &Gpu, net: &Net, bp: usize, models: usize, training: bool) -> Values {
        let mut alias: Vec<usize> = (0..net.features.len()).collect();
        for n in &net.nodes {
            if !training && matches!(n.op, Op::Drop { .. }) {
                alias[n.output] = alias[n.input];
            }
        }
        let linear_io: Vec<usize> = (net.nodes.iter())
            .filter(|n| matches!(n.op, Op::Linear { .. }))
            .flat_map(|n| [n.input, n.output])
            .chain([0])
            .map(|v| alias[v])
            .collect();
        let per = |v: usize| models * net.features[v] * bp;
        let own = |v: usize| alias[v] == v;
        let feature_major = |name: &str, v: usize| zeros(gpu, &format!("{name}{v}^T"), per(v));
        Values {
            bp,
            acts: (0..alias.len())
                .map(|v| own(v).then(|| feature_major("H", v)))
                .collect(),
            rows: (0..alias.len())
                .map(|v| {
                    let n = models * bp * pad4(net.features[v]);
                    (own(v) && linear_io.contains(&v)).then(|| zeros(gpu, &format!("H{v}"), n))
                })
                .collect(),
            grad: (0..alias.len())
                .map(|v| (training && v > 0).then(|| feature_major("dH", v)))
                .collect(),
            kept: (0..alias.len())
                .map(|v| {
                    let pooled = net
                        .nodes
                        .iter()
                        .any(|n| n.output == v && matches!(n.op, Op::Pool { .. }));
                    pooled.then(|| zeros(gpu, &format!("kept {v}"), per(v)))
                })
                .collect(),
            alias,
        }
    }

    fn act(&self, v: usize) -> &wgpu::Buffer {
        self.acts[self.alias[v]]
            .as_ref()
            .expect("every value has its buffer")
    }

    fn rows(&self, v: usize) -> &wgpu::Buffer {
        self.rows[self.alias[v]]
            .as_ref()
            .expect("a Linear's input and output have rows")
    }

    fn grad(&self, v: usize) -> &wgpu::Buffer {
        self.grad[v]
            .as_ref()
            .expect("training keeps every value's gradient")
    }

    fn bytes(&self) -> u64 {
        let all = self
            .acts
            .iter()
            .chain(&self.rows)
            .chain(&self.grad)
            .chain(&self.kept);
        all.flatten().map(|b| b.size()).sum()
    }
}

/// What every node's dispatches share.
struct Walk<'a> {
    gpu: &'a Gpu,
    m: &'a Modules,
    w: &'a Weights<'a>,
    net: &'a Net,
    v: &'a Values,
    axis: ModelAxis,
    steps: &'a wgpu::Buffer,
    keys: Option<&'a wgpu::Buffer>,
}

impl Walk<'_> {
    fn label(&self, what: &str, n: &Node) -> String {
        format!(
            "{what} {} {}",
            n.layer,
            self.w.layout.arch.layers()[n.layer]
        )
    }

    fn conv(&self, op: Op) -> Conv<'_> {
        let Op::Conv {
            x_shape,
            layer,
            w_off,
            b_off,
        } = op
        else {
            unreachable!("a conv node")
        };
        let (bp, params, axis) = (self.v.bp, self.w.params, self.axis);
        Conv {
            x_shape,
            layer,
            w_off,
            b_off,
            bp,
            params,
            axis,
        }
    }

    fn dropout(&self, n: &Node) -> Dropout<'_> {
        let Op::Drop { layer, p, plane } = n.op else {
            unreachable!("a dropout node")
        };
        let keys = self.keys.expect("training has the models' keys");
        let (bp, models) = (self.v.bp, self.axis.models);
        Dropout {
            features: self.net.features[n.input],
            plane,
            p,
            layer,
            bp,
            models,
            keys,
            steps: self.steps,
        }
    }

    /// Node `n`'s forward, but for the last Linear when training (the loss head's); with the
    /// batch-major copy a Linear will read when `n` is no Linear.
    fn forward(&self, n: &Node, training: bool) -> Result<Vec<Dispatch>> {
        let (gpu, m, v, bp) = (self.gpu, self.m, self.v, self.v.bp);
        let (x, y) = (v.act(n.input), v.act(n.output));
        let label = self.label("forward", n);
        let mut ops = vec![match n.op {
            Op::Linear { at, relu, .. } => {
                let (params, models) = (self.w.params, self.axis);
                let z_rows = v.rows(n.output);
                let f = Forward {
                    at,
                    bp,
                    relu,
                    params,
                    h: x,
                    z: y,
                    z_rows,
                    models,
                };
                f.dispatch(gpu, m, &label)?
            }
            Op::Conv { .. } => self.conv(n.op).forward(gpu, m, (x, y), &label)?,
            Op::Relu => {
                let r = Relu {
                    n: self.axis.models * self.net.features[n.input] * bp,
                };
                r.forward(gpu, m, (x, y), &label)?
            }
            Op::Pool { x_shape } => {
                let kept = self.v.kept[n.output].as_ref().expect("a pool keeps");
                let p = Pool {
                    x_shape,
                    bp,
                    models: self.axis.models,
                };
                p.forward(gpu, m, (x, y, kept), &label)?
            }
            Op::Drop { .. } if !training => return Ok(Vec::new()),
            Op::Drop { .. } => self.dropout(n).dispatch(gpu, m, (x, y), &label)?,
        }];
        let feeds_linear = self.net.linear_inputs().contains(&n.output);
        if feeds_linear && !matches!(n.op, Op::Linear { .. }) {
            let r = Rows {
                features: self.net.features[n.output],
                bp,
                models: self.axis.models,
            };
            ops.push(r.dispatch(gpu, m, (y, v.rows(n.output)), &self.label("rows of", n))?);
        }
        Ok(ops)
    }

    /// Node `n`'s backward: its tensors' gradients into `grads`, and its input's gradient
    /// unless its input is the batch's.
    fn backward(&self, n: &Node, grads: &wgpu::Buffer) -> Result<Vec<Dispatch>> {
        let (gpu, m, v, bp) = (self.gpu, self.m, self.v, self.v.bp);
        let input = n.input > 0;
        let (dy, label) = (v.grad(n.output), self.label("backward", n));
        let d = match n.op {
            Op::Linear { at, .. } => {
                let b = Backward {
                    at,
                    bp,
                    params: self.w.params,
                    dz: dy,
                    h_rows: v.rows(n.input),
                    grads,
                    input: input.then(|| InputGrad {
                        dx: v.grad(n.input),
                        mask: v.act(n.input),
                    }),
                    models: self.axis,
                };
                return Ok(vec![b.dispatch(gpu, m, &label)?]);
            }
            Op::Conv { .. } => {
                let c = self.conv(n.op);
                let mut ops = vec![c.weight_grad(
                    gpu,
                    m,
                    (v.act(n.input), dy, grads),
                    &format!("{label} (weight)"),
                )?];
                if input {
                    ops.push(c.input_grad(
                        gpu,
                        m,
                        (dy, v.grad(n.input)),
                        &format!("{label} (input)"),
                    )?);
                }
                return Ok(ops);
            }
            _ if !input => return Ok(Vec::new()),
            Op::Relu => {
                let r = Relu {
                    n: self.axis.models * self.net.features[n.input] * bp,
                };
                r.backward(gpu, m, (v.act(n.output), dy, v.grad(n.input)), &label)?
            }
            Op::Pool { x_shape } => {
                let kept = self.v.kept[n.output].as_ref().expect("a pool keeps");
                let p = Pool {
                    x_shape,
                    bp,
                    models: self.axis.models,
                };
                p.backward(gpu, m, (kept, dy, v.grad(n.input)), &label)?
            }
            Op::Drop { .. } => self
                .dropout(n)
                .dispatch(gpu, m, (dy, v.grad(n.input)), &label)?,
        };
        Ok(vec![d])
    }

    fn gather(&self, split: &Split, table: &wgpu::Buffer, label: &str) -> Result<Dispatch> {
        let input = (self.v.act(0), self.v.rows(0), self.v.bp);
        layered::gather(self.gpu, self.m, split, table, input, self.axis, label)
    }
}

/// One training step of the list: gather; each node's forward, the last Linear's in the loss
/// head (NLLLoss and the logits' gradient); each node's backward in reverse; the optimizer.
pub fn training(gpu: &Gpu, m: &Modules, w: &Weights<'_>, s: &StepInputs<'_>) -> Result<Built> {
    let net = Net::of(w.layout).map_err(anyhow::Error::msg)?;
    let models = w.models;
    let axis = ModelAxis {
        models,
        params: w.layout.len,
        order: if models > 1 { s.split.len } else { 0 },
    };
    let v = Values::new(gpu, &net, pad4(s.split.batch), models, true);
    let grads = zeros(gpu, "grads", models * w.layout.len);
    let table = normalisation_table(gpu, wgpu::BufferUsages::STORAGE, s.split);
    let walk = Walk {
        gpu,
        m,
        w,
        net: &net,
        v: &v,
        axis,
        steps: &s.split.steps,
        keys: Some(s.keys),
    };
    let mut ops = vec![walk.gather(s.split, &table, "gather train")?];
    for n in &net.nodes {
        match n.op {
            Op::Linear { at, last: true, .. } => {
                let head = NllHead {
                    at,
                    bp: v.bp,
                    params: w.params,
                    h: v.act(n.input),
                    labels: &s.split.labels,
                    order: &s.split.order,
                    steps: &s.split.steps,
                    grad: v.grad(n.output),
                    losses: s.losses,
                    steps_per_epoch: s.steps_per_epoch,
                    axis,
                };
                ops.push(head.dispatch(gpu, m, &walk.label("forward + nll loss + grad", n))?);
            }
            _ => ops.extend(walk.forward(n, true)?),
        }
    }
    for n in net.nodes.iter().rev() {
        ops.extend(walk.backward(n, &grads)?);
    }
    ops.push(layered::optimizer(gpu, m, w, s, &grads)?);
    Ok(Built {
        dispatches: ops,
        bytes: vec![
            ("activations + gradients".to_string(), v.bytes()),
            ("grads".to_string(), grads.size()),
        ],
        grads: Some(grads),
    })
}

/// One evaluation batch of the list: gather, every node's forward (dropout passes its input
/// on), then each sample's prediction and log-probabilities.
pub fn evaluation(
    gpu: &Gpu,
    m: &Modules,
    w: &Weights<'_>,
    split: &Split,
    verdicts: &Verdicts<'_>,
) -> Result<Built> {
    let net = Net::of(w.layout).map_err(anyhow::Error::msg)?;
    let axis = ModelAxis {
        models: w.models,
        params: w.layout.len,
        order: 0,
    };
    let v = Values::new(gpu, &net, pad4(split.batch), w.models, false);
    let table = normalisation_table(gpu, wgpu::BufferUsages::STORAGE, split);
    let walk = Walk {
        gpu,
        m,
        w,
        net: &net,
        v: &v,
        axis,
        steps: &split.steps,
        keys: None,
    };
    let mut ops = vec![walk.gather(split, &table, "gather test")?];
    for n in &net.nodes {
        ops.extend(walk.forward(n, false)?);
    }
    let logits = (v.act(net.features.len() - 1), v.bp);
    ops.push(layered::evaluate(gpu, m, w, (split, verdicts), logits)?);
    Ok(Built {
        dispatches: ops,
        bytes: vec![("activations".to_string(), v.bytes())],
        grads: None,
    })
}
