//! One SGD step with PyTorch's momentum rule over the flat parameter, gradient and momentum
//! buffers (shaders/sgd.wgsl): v = mu * v + g; p = p - lr * v. CPU twin: `cpu::sgd`.

use anyhow::Result;

use crate::cpu;
use crate::gpu::check::{Check, Pending, Tally, buffer, random, read, run_dispatch, together};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, need_vec4};
use crate::gpu::layout::pad4;
use crate::gpu::ops::Modules;
use crate::rng::Rng;

const SGD_WG: u32 = 256;

pub struct Sgd<'a> {
    /// floats in each buffer; the device layout's length, a multiple of 4
    pub len: usize,
    pub lr: f64,
    /// SGD's momentum coefficient.
    pub momentum: f64,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    /// momentum_buffer: PyTorch's `momentum_buffer`, device layout
    pub momentum_buffer: &'a wgpu::Buffer,
}

impl Sgd<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        need_vec4(label, "params", self.params, self.len)?;
        need_vec4(label, "grads", self.grads, self.len)?;
        need_vec4(label, "momentum buffer", self.momentum_buffer, self.len)?;
        let count4 = self.len.div_ceil(4);
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
                    ("LR", self.lr),
                    ("MU", self.momentum),
                    ("WG", SGD_WG as f64),
                    ("ROW_GROUPS", row as f64),
                ],
                bindings: &[
                    (0, Bind::ReadWrite(self.params)),
                    (1, Bind::Read(self.grads)),
                    (2, Bind::ReadWrite(self.momentum_buffer)),
                ],
                groups: [row, groups.div_ceil(row).max(1), 1],
            },
        )
    }
}

/// Sizes that are no multiple of the workgroup, and the tutorial's 130,058 parameters; the
/// zero padding past the last parameter stays zero.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut all: Pending<'_> = Vec::new();
    for count in [1usize, 255, 257, 130_058] {
        // A generator per case: the cases run together.
        let mut rng = Rng::new(14, count as u64);
        all.push(Box::pin(async move {
            let shape = format!("{count} parameters");
            vec![
                check_one(gpu, m, &mut rng, count)
                    .await
                    .unwrap_or_else(|e| Tally::broken("sgd momentum", shape, e)),
            ]
        }));
    }
    together(all).await
}

async fn check_one(gpu: &Gpu, m: &Modules, rng: &mut Rng, count: usize) -> Result<Check> {
    let p = random(rng, count, -1.0, 1.0);
    let v = random(rng, count, -1.0, 1.0);
    let g = random(rng, count, -1.0, 1.0);
    let len = pad4(count);
    let (pb, vb, gb) = (
        buffer(gpu, "p", &p),
        buffer(gpu, "v", &v),
        buffer(gpu, "g", &g),
    );
    let sgd = Sgd {
        len,
        lr: 0.003,
        momentum: 0.9,
        params: &pb,
        grads: &gb,
        momentum_buffer: &vb,
    };
    run_dispatch(gpu, &sgd.dispatch(gpu, m, "sgd")?, 0)?;
    let (mut rp, mut rv) = (p.clone(), v.clone());
    cpu::sgd(&mut rp, &mut rv, &g, 0.003f32, 0.9f32);
    let gp: Vec<f32> = read(gpu, &pb, len).await?;
    let gv: Vec<f32> = read(gpu, &vb, len).await?;
    let mut t = Tally::new("sgd momentum", format!("{count} parameters"));
    if gp[count..].iter().chain(&gv[count..]).any(|&x| x != 0.0) {
        t.fail("the padding past the last parameter is no longer zero".into());
    }
    for i in 0..count {
        // The device may fuse a multiply-add (one rounding less): one ulp of the terms.
        let tv = 2.0 * f32::EPSILON * (0.9 * v[i].abs() + g[i].abs());
        t.close(|| format!("v[{i}]"), gv[i] as f64, rv[i] as f64, tv as f64);
        let tp = 2.0 * f32::EPSILON * (p[i].abs() + 0.003 * rv[i].abs()) + 0.003 * tv;
        t.close(|| format!("p[{i}]"), gp[i] as f64, rp[i] as f64, tp as f64);
    }
    Ok(t.done())
}
