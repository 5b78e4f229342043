//! The batch-major copy of a feature-major tensor, for a Linear whose input a layer other than
//! a Linear wrote (shaders/rows.wgsl). CPU twin: `gpu::check::transpose`, the layout change
//! itself.

use anyhow::Result;

use crate::gpu::check::{Check, Tally, buffer, random, read, run_dispatch, transpose};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, flat_grid, need};
use crate::gpu::layout::pad4;
use crate::gpu::ops::{Modules, WG};
use crate::rng::Rng;

/// X [bp, pad4(features)] of X^T [features, bp], for each of `models` models.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub features: usize,
    pub bp: usize,
    pub models: usize,
}

impl Rows {
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (xt, xb): (&wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        let (f, ld, bp) = (self.features, pad4(self.features), self.bp);
        need(label, "X^T", xt, 4 * self.models * f * bp)?;
        need(label, "X", xb, 4 * self.models * ld * bp)?;
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.rows,
                entry: "rows",
                constants: &[
                    ("F", f as f64),
                    ("LDX", ld as f64),
                    ("BP", bp as f64),
                    ("WG", WG as f64),
                ],
                bindings: &[(0, Bind::Read(xt)), (1, Bind::ReadWrite(xb))],
                groups: flat_grid(ld * bp, WG, self.models),
            },
        )
    }
}

/// 13 features of a batch of 8, two models: exact, the padding zero.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    vec![
        check(gpu, m)
            .await
            .unwrap_or_else(|e| Tally::broken("rows", "13 x 8, 2 models", e)),
    ]
}

async fn check(gpu: &Gpu, m: &Modules) -> Result<Check> {
    let r = Rows {
        features: 13,
        bp: 8,
        models: 2,
    };
    let (f, ld, bp) = (r.features, pad4(r.features), r.bp);
    let x = random(&mut Rng::new(71, 0), 2 * f * bp, -1.0, 1.0);
    let (xt, xb) = (
        buffer(gpu, "X^T", &x),
        buffer(gpu, "X", &vec![f32::NAN; 2 * ld * bp]),
    );
    run_dispatch(gpu, &r.dispatch(gpu, m, (&xt, &xb), "rows")?, 0)?;
    let got: Vec<f32> = read(gpu, &xb, 2 * ld * bp).await?;
    let mut t = Tally::new("rows (batch-major copy)", "13 x 8, 2 models");
    for model in 0..2 {
        let want = transpose(&x[model * f * bp..][..f * bp], f, bp, bp);
        for col in 0..bp {
            for i in 0..ld {
                let w = if i < f { want[col * f + i] as f64 } else { 0.0 };
                t.close(
                    || format!("model {model} X[{col},{i}]"),
                    got[model * ld * bp + col * ld + i] as f64,
                    w,
                    0.0,
                );
            }
        }
    }
    Ok(t.done())
}
