//! The optimizer's step over the flat parameter, gradient and state buffers
//! (shaders/optimizer.wgsl, its rule in optimizer_rule.wgsl, which the fused update calls too).
//! CPU twin: `optim::step`.

use anyhow::{Result, ensure};

use crate::gpu::buffers::{OptimizerState, hyper_buffer};
use crate::gpu::check::{
    Check, Pending, Tally, buffer, random, read, run_dispatch, steps_buffer, together,
};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, ModelAxis, need};
use crate::gpu::layout::pad4;
use crate::gpu::ops::Modules;
use crate::optim::{self, Hyper, Optimizer};
use crate::rng::Rng;

const OPTIMIZER_WG: u32 = 256;

pub struct OptimizerStep<'a> {
    /// the set: `axis.params` floats of each model in each buffer (the device layout's length,
    /// a multiple of 4, for one model too), models one after another
    pub axis: ModelAxis,
    /// hyper: [models] (lr, momentum, weight decay, 0) f32, `buffers::hyper_buffer`
    pub hyper: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    /// the optimizer's state tensors, device layout like params
    pub state: &'a OptimizerState,
    /// steps: the split's step uniforms (Adam's bias corrections)
    pub steps: &'a wgpu::Buffer,
}

impl OptimizerStep<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        let x = self.axis;
        ensure!(
            x.params.is_multiple_of(4) && x.params > 0,
            "{label}: {} floats a model, not whole vec4",
            x.params
        );
        let floats = x.models * x.params;
        x.need_params(label, "params", self.params, x.params)?;
        x.need_params(label, "grads", self.grads, x.params)?;
        let opt = self.state.optimizer;
        for (name, b) in opt.state_names().iter().zip(self.state.tensors()) {
            x.need_params(label, name, b, x.params)?;
        }
        need(label, "hyper-parameters", self.hyper, x.models * 16)?;
        let count4 = floats / 4;
        let groups = (count4 as u32).div_ceil(OPTIMIZER_WG);
        let row = groups.clamp(1, gpu.limits.max_compute_workgroups_per_dimension);
        let mut constants = vec![
            ("COUNT4", count4 as f64),
            x.p_stride(),
            ("WG", OPTIMIZER_WG as f64),
            ("ROW_GROUPS", row as f64),
        ];
        constants.extend(opt.constants());
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.optimizer,
                entry: "optimizer_step_all",
                constants: &constants,
                bindings: &[
                    (0, Bind::ReadWrite(self.params)),
                    (1, Bind::Read(self.grads)),
                    (2, Bind::ReadWrite(&self.state.a)),
                    (3, Bind::ReadWrite(&self.state.b)),
                    (4, Bind::Read(self.hyper)),
                    (5, Bind::Step(self.steps)),
                ],
                groups: [row, groups.div_ceil(row).max(1), 1],
            },
        )
    }
}

/// Every optimizer on sizes that are no multiple of the workgroup and on the tutorial's 130,058
/// parameters; then three models of 257 side by side, each with its own hyper-parameters, and
/// two of 255 with weight decay; Adam at its first step and at step 1000 (the bias
/// corrections). The zero padding past each model's last parameter stays zero.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut all: Pending<'_> = Vec::new();
    for name in optim::NAMES {
        let opt = Optimizer::named(name, 0.9).expect("a known optimizer");
        let cases = [
            (1, 2, 0.0, 1),
            (255, 2, 0.01, 3),
            (257, 3, 0.0, 1000),
            (130_058, 2, 0.0, 2),
        ];
        for (count, models, weight_decay, t) in cases {
            // A generator per case: the cases run together.
            let mut rng = Rng::new(14 + opt.code() as u64, (count * models) as u64);
            all.push(Box::pin(async move {
                let case = Case {
                    opt,
                    count,
                    models,
                    weight_decay,
                    t,
                };
                vec![
                    check_one(gpu, m, &mut rng, &case)
                        .await
                        .unwrap_or_else(|e| Tally::broken(case.kernel(), case.shape(), e)),
                ]
            }));
        }
    }
    together(all).await
}

struct Case {
    opt: Optimizer,
    count: usize,
    models: usize,
    weight_decay: f64,
    /// The step of the run (from 1), for Adam's bias corrections.
    t: u64,
}

impl Case {
    fn kernel(&self) -> String {
        format!("optimizer {}", self.opt.name())
    }

    fn shape(&self) -> String {
        let wd = match self.weight_decay {
            0.0 => String::new(),
            w => format!(", weight decay {w}"),
        };
        format!(
            "{} parameters x {} models, step {}{wd}",
            self.count, self.models, self.t
        )
    }

    /// Model k's hyper-parameters: each model of a set its own.
    fn hyper(&self, k: usize) -> Hyper {
        Hyper {
            lr: [0.003, 0.01, 0.1][k % 3] * self.opt.default_lr() / 0.003,
            momentum: [0.9, 0.5, 0.0][k % 3] * self.opt.momentum() / 0.9,
            weight_decay: self.weight_decay,
        }
    }
}

/// The case's parameters, gradients and two state tensors, each model's `count` random values
/// then zero padding to whole vec4.
fn starting_values(rng: &mut Rng, case: &Case) -> [Vec<f32>; 4] {
    let (count, models, opt) = (case.count, case.models, case.opt);
    let len = pad4(count);
    // Each model's count values from `lo` to `hi`, then zero padding to len.
    let mut padded = |lo: f32, hi: f32| -> Vec<f32> {
        (0..models)
            .flat_map(|_| {
                let mut v = random(rng, count, lo, hi);
                v.resize(len, 0.0);
                v
            })
            .collect()
    };
    // The running averages of squares (Adam's second, both of Adadelta's) are never negative.
    let (a_lo, b_lo) = match opt {
        Optimizer::Sgd { .. } => (-1.0, -1.0),
        Optimizer::Adam { .. } => (-1.0, 0.0),
        Optimizer::Adadelta { .. } => (0.0, 0.0),
    };
    let (p, g) = (padded(-1.0, 1.0), padded(-1.0, 1.0));
    let (a, b) = (padded(a_lo, 1.0), padded(b_lo, 1.0));
    [p, g, a, b]
}

async fn check_one(gpu: &Gpu, m: &Modules, rng: &mut Rng, case: &Case) -> Result<Check> {
    let (count, models, opt) = (case.count, case.models, case.opt);
    let len = pad4(count);
    let [p, g, a, b] = starting_values(rng, case);
    let state = OptimizerState::new(gpu, opt, models * len);
    let (pb, gb) = (buffer(gpu, "p", &p), buffer(gpu, "g", &g));
    gpu.queue
        .write_buffer(&state.a, 0, bytemuck::cast_slice(&a));
    if opt.state_names().len() > 1 {
        gpu.queue
            .write_buffer(&state.b, 0, bytemuck::cast_slice(&b));
    }
    let hypers: Vec<Hyper> = (0..models).map(|k| case.hyper(k)).collect();
    let corrections = opt.corrections(case.t);
    let steps = steps_buffer(gpu, 1, 1, |_| corrections);
    let step = OptimizerStep {
        axis: ModelAxis {
            models,
            params: len,
            order: 0,
        },
        hyper: &hyper_buffer(gpu, &hypers),
        params: &pb,
        grads: &gb,
        state: &state,
        steps: &steps,
    };
    run_dispatch(gpu, &step.dispatch(gpu, m, "optimizer")?, 0)?;
    let got = [
        read(gpu, &pb, models * len).await?,
        read(gpu, &state.a, models * len).await?,
        match opt.state_names().len() {
            1 => b.clone(),
            _ => read(gpu, &state.b, models * len).await?,
        },
    ];
    let mut t = Tally::new(case.kernel(), case.shape());
    for (k, h) in hypers.iter().enumerate() {
        let at = k * len..(k + 1) * len;
        let wide = |v: &[f32]| -> Vec<f64> { v[at.clone()].iter().map(|&x| x as f64).collect() };
        let old = [wide(&p), wide(&a), wide(&b)];
        let mut want = old.clone();
        let [wp, wa, wb] = &mut want;
        optim::step(&opt, h, corrections, wp, wa, wb, &wide(&g));
        for (j, name) in ["p", "state_a", "state_b"].iter().enumerate() {
            let (got, want, old) = (&got[j][at.clone()], &want[j], &old[j]);
            if got[count..].iter().any(|&x| x != 0.0) {
                t.fail(format!(
                    "model {k}: {name}'s padding past the last parameter is no longer zero"
                ));
            }
            for i in 0..count {
                // f32 arithmetic against f64: a few ulps of the old value, the new one and so
                // of the update between them.
                let tol = 16.0 * f32::EPSILON as f64 * (want[i].abs() + old[i].abs() + 1.0);
                t.close(
                    || format!("model {k} {name}[{i}]"),
                    got[i] as f64,
                    want[i],
                    tol,
                );
            }
        }
    }
    Ok(t.done())
}
