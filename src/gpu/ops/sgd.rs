//! One SGD step with PyTorch's momentum rule over the flat parameter, gradient and momentum
//! buffers (shaders/sgd.wgsl): v = mu * v + g; p = p - lr * v. CPU twin: `cpu::sgd`.

use anyhow::{Result, ensure};

use crate::cpu;
use crate::gpu::buffers::Hyper;
use crate::gpu::check::{Check, Pending, Tally, buffer, random, read, run_dispatch, together};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, need, need_vec4};
use crate::gpu::layout::pad4;
use crate::gpu::ops::Modules;
use crate::rng::Rng;

const SGD_WG: u32 = 256;

pub struct Sgd<'a> {
    /// floats of one model in each buffer; the device layout's length, a multiple of 4
    pub len: usize,
    /// models in the buffers, one after another
    pub models: usize,
    /// hyper: [models] (lr, momentum) f32, `buffers::Hyper::buffer`
    pub hyper: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    /// momentum_buffer: PyTorch's `momentum_buffer`, device layout
    pub momentum_buffer: &'a wgpu::Buffer,
}

impl Sgd<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        ensure!(
            self.len.is_multiple_of(4) && self.len > 0,
            "{label}: {} floats a model, not whole vec4",
            self.len
        );
        let floats = self.models * self.len;
        need_vec4(label, "params", self.params, floats)?;
        need_vec4(label, "grads", self.grads, floats)?;
        need_vec4(label, "momentum buffer", self.momentum_buffer, floats)?;
        need(
            label,
            "learning rates and momenta",
            self.hyper,
            self.models * 8,
        )?;
        let count4 = floats / 4;
        let groups = (count4 as u32).div_ceil(SGD_WG);
        let row = groups.clamp(1, gpu.limits.max_compute_workgroups_per_dimension);
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.sgd,
                entry: "sgd_momentum",
                constants: &[
                    ("COUNT4", count4 as f64),
                    ("P_STRIDE4", (self.len / 4) as f64),
                    ("WG", SGD_WG as f64),
                    ("ROW_GROUPS", row as f64),
                ],
                bindings: &[
                    (0, Bind::ReadWrite(self.params)),
                    (1, Bind::Read(self.grads)),
                    (2, Bind::ReadWrite(self.momentum_buffer)),
                    (3, Bind::Read(self.hyper)),
                ],
                groups: [row, groups.div_ceil(row).max(1), 1],
            },
        )
    }
}

/// Sizes that are no multiple of the workgroup, and the tutorial's 130,058 parameters, one
/// model each; then three models of 257 side by side, each with its own learning rate and
/// momentum. The zero padding past each model's last parameter stays zero.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut all: Pending<'_> = Vec::new();
    for (count, models) in [(1usize, 1usize), (255, 1), (257, 1), (130_058, 1), (257, 3)] {
        // A generator per case: the cases run together.
        let mut rng = Rng::new(14, (count * models) as u64);
        all.push(Box::pin(async move {
            let shape = format!("{count} parameters x {models} models");
            vec![
                check_one(gpu, m, &mut rng, count, models)
                    .await
                    .unwrap_or_else(|e| Tally::broken("sgd momentum", shape, e)),
            ]
        }));
    }
    together(all).await
}

/// (lr, momentum) of model k in a check.
fn hyper_of(k: usize) -> Hyper {
    Hyper {
        lr: [0.003, 0.01, 0.1][k % 3],
        momentum: [0.9, 0.5, 0.0][k % 3],
    }
}

async fn check_one(
    gpu: &Gpu,
    m: &Modules,
    rng: &mut Rng,
    count: usize,
    models: usize,
) -> Result<Check> {
    let len = pad4(count);
    // Each model's count values, then zero padding to len.
    let mut padded = || -> Vec<f32> {
        (0..models)
            .flat_map(|_| {
                let mut v = random(rng, count, -1.0, 1.0);
                v.resize(len, 0.0);
                v
            })
            .collect()
    };
    let (p, v, g) = (padded(), padded(), padded());
    let (pb, vb, gb) = (
        buffer(gpu, "p", &p),
        buffer(gpu, "v", &v),
        buffer(gpu, "g", &g),
    );
    let hypers: Vec<Hyper> = (0..models).map(hyper_of).collect();
    let hyper = Hyper::buffer(gpu, &hypers);
    let sgd = Sgd {
        len,
        models,
        hyper: &hyper,
        params: &pb,
        grads: &gb,
        momentum_buffer: &vb,
    };
    run_dispatch(gpu, &sgd.dispatch(gpu, m, "sgd")?, 0)?;
    let gp: Vec<f32> = read(gpu, &pb, models * len).await?;
    let gv: Vec<f32> = read(gpu, &vb, models * len).await?;
    let mut t = Tally::new(
        "sgd momentum",
        format!("{count} parameters x {models} models"),
    );
    for (k, h) in hypers.iter().enumerate() {
        let at = k * len..(k + 1) * len;
        let (mut rp, mut rv) = (p[at.clone()].to_vec(), v[at.clone()].to_vec());
        let (lr, mu) = (h.lr as f32, h.momentum as f32);
        cpu::sgd(&mut rp, &mut rv, &g[at.clone()], lr, mu);
        let (gp, gv) = (&gp[at.clone()], &gv[at.clone()]);
        if gp[count..].iter().chain(&gv[count..]).any(|&x| x != 0.0) {
            t.fail(format!(
                "model {k}: the padding past the last parameter is no longer zero"
            ));
        }
        let (p, v, g) = (&p[at.clone()], &v[at.clone()], &g[at]);
        for i in 0..count {
            // The device may fuse a multiply-add (one rounding less): one ulp of the terms.
            let tv = 2.0 * f32::EPSILON * (mu * v[i].abs() + g[i].abs());
            t.close(
                || format!("model {k} v[{i}]"),
                gv[i] as f64,
                rv[i] as f64,
                tv as f64,
            );
            let tp = 2.0 * f32::EPSILON * (p[i].abs() + lr * rv[i].abs()) + lr * tv;
            t.close(
                || format!("model {k} p[{i}]"),
                gp[i] as f64,
                rp[i] as f64,
                tp as f64,
            );
        }
    }
    Ok(t.done())
}
