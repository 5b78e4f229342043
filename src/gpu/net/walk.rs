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
use crate::gpu::ops::kind::{Cx, Grads, Tensors};
use crate::gpu::ops::linear::{Backward, Forward, InputGrad};
use crate::gpu::ops::nll_head::NllHead;
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
            if !training && matches!(&n.op, Op::Layer(l) if l.only_training()) {
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
                        .any(|n| n.output == v && matches!(&n.op, Op::Layer(l) if l.keeps()));
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
    cx: Cx<'a>,
    w: &'a Weights<'a>,
    net: &'a Net,
    v: &'a Values,
}

impl Walk<'_> {
    fn label(&self, what: &str, n: &Node) -> String {
        format!(
            "{what} {} {}",
            n.layer,
            self.w.layout.arch.layers()[n.layer]
        )
    }

    fn tensors<'b>(&'b self, n: &Node, label: &'b str) -> Tensors<'b> {
        let v = self.v;
        Tensors {
            x: v.act(n.input),
            y: v.act(n.output),
            kept: v.kept[n.output].as_ref(),
            label,
        }
    }

    /// Node `n`'s forward, but for the last Linear when training (the loss head's); with the
    /// batch-major copy a Linear will read when `n` is no Linear.
    fn forward(&self, n: &Node, training: bool) -> Result<Vec<Dispatch>> {
        let (gpu, m, v, bp) = (self.cx.gpu, self.cx.m, self.v, self.v.bp);
        let label = self.label("forward", n);
        let mut ops = match &n.op {
            Op::Linear { at, relu, .. } => {
                let f = Forward {
                    at: *at,
                    bp,
                    relu: *relu,
                    params: self.cx.params,
                    h: v.act(n.input),
                    z: v.act(n.output),
                    z_rows: v.rows(n.output),
                    models: self.cx.axis,
                };
                return Ok(vec![f.dispatch(gpu, m, &label)?]);
            }
            Op::Layer(l) if !training && l.only_training() => return Ok(Vec::new()),
            Op::Layer(l) => l.forward(&self.cx, &self.tensors(n, &label))?,
        };
        if self.net.linear_inputs().contains(&n.output) {
            let r = Rows {
                features: self.net.features[n.output],
                bp,
                models: self.cx.axis.models,
            };
            let io = (v.act(n.output), v.rows(n.output));
            ops.push(r.dispatch(gpu, m, io, &self.label("rows of", n))?);
        }
        Ok(ops)
    }

    /// Node `n`'s backward: its tensors' gradients into `grads`, and its input's gradient
    /// unless its input is the batch's.
    fn backward(&self, n: &Node, grads: &wgpu::Buffer) -> Result<Vec<Dispatch>> {
        let (gpu, m, v, bp) = (self.cx.gpu, self.cx.m, self.v, self.v.bp);
        let input = n.input > 0;
        let (dy, label) = (v.grad(n.output), self.label("backward", n));
        match &n.op {
            Op::Linear { at, .. } => {
                let b = Backward {
                    at: *at,
                    bp,
                    params: self.cx.params,
                    dz: dy,
                    h_rows: v.rows(n.input),
                    grads,
                    input: input.then(|| InputGrad {
                        dx: v.grad(n.input),
                        mask: v.act(n.input),
                    }),
                    models: self.cx.axis,
                };
                Ok(vec![b.dispatch(gpu, m, &label)?])
            }
            Op::Layer(l) => {
                let g = Grads {
                    dy,
                    dx: input.then(|| v.grad(n.input)),
                    grads,
                };
                l.backward(&self.cx, &self.tensors(n, &label), &g)
            }
        }
    }

    fn gather(&self, split: &Split, table: &wgpu::Buffer, label: &str) -> Result<Dispatch> {
        let input = (self.v.act(0), self.v.rows(0), self.v.bp);
        layered::gather(
            self.cx.gpu,
            self.cx.m,
            split,
            table,
            input,
            self.cx.axis,
            label,
        )
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
    let cx = Cx {
        gpu,
        m,
        bp: v.bp,
        axis,
        params: w.params,
        steps: &s.split.steps,
        keys: Some(s.keys),
    };
    let walk = Walk {
        cx,
        w,
        net: &net,
        v: &v,
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
    let cx = Cx {
        gpu,
        m,
        bp: v.bp,
        axis,
        params: w.params,
        steps: &split.steps,
        keys: None,
    };
    let walk = Walk {
        cx,
        w,
        net: &net,
        v: &v,
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
