//! MaxPool2d 2x2, stride 2, on feature-major activations: the forward keeps each window's
//! winner, the backward gathers through it (shaders/maxpool.wgsl). CPU twin:
//! `cpu::conv::maxpool2`, `cpu::conv::maxpool2_backward`.

use anyhow::Result;
use futures_util::FutureExt;

use crate::cpu::conv::{maxpool2, maxpool2_backward};
use crate::gpu::check::{Check, Tally, buffer, random, read, run_dispatch, transpose};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, flat_grid, need};
use crate::gpu::ops::kind::{Cx, Grads, Kind, Node, Tensors};
use crate::gpu::ops::{Modules, WG};
use crate::model::{Layer, Shape};
use crate::rng::Rng;

/// One MaxPool2d of a model on the device, for `models` models side by side.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    /// The input sample's shape `[c, h, w]`.
    pub x_shape: Shape,
    pub bp: usize,
    pub models: usize,
}

impl Pool {
    fn lens(&self) -> (usize, usize) {
        let [c, h, w] = self.x_shape;
        (c * h * w * self.bp, c * (h / 2) * (w / 2) * self.bp)
    }

    fn dispatch(
        &self,
        gpu: &Gpu,
        m: &Modules,
        label: &str,
        entry: &str,
        bindings: &[(u32, Bind<'_>)],
        invocations: usize,
    ) -> Result<Dispatch> {
        let [c, h, w] = self.x_shape;
        let constants = [
            ("C", c),
            ("H", h),
            ("W", w),
            ("HO", h / 2),
            ("WO", w / 2),
            ("BP", self.bp),
            ("WG", WG as usize),
        ]
        .map(|(k, v)| (k, v as f64));
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: m.layer(KIND.module),
                entry,
                constants: &constants,
                bindings,
                groups: flat_grid(invocations, WG, self.models),
            },
        )
    }

    /// y = each window's largest value of x, and `kept` the input feature it came from.
    pub fn forward(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (x, y, kept): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        let (inp, out) = self.lens();
        need(label, "x", x, 4 * self.models * inp)?;
        need(label, "y", y, 4 * self.models * out)?;
        need(label, "kept", kept, 4 * self.models * out)?;
        let b = [
            (0, Bind::Read(x)),
            (1, Bind::ReadWrite(y)),
            (2, Bind::ReadWrite(kept)),
        ];
        self.dispatch(gpu, m, label, "pool_forward", &b, out)
    }

    /// dx = dy at each window's winner, zero elsewhere.
    pub fn backward(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (kept, dy, dx): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        let (inp, out) = self.lens();
        need(label, "kept", kept, 4 * self.models * out)?;
        need(label, "dy", dy, 4 * self.models * out)?;
        need(label, "dx", dx, 4 * self.models * inp)?;
        let b = [
            (3, Bind::Read(kept)),
            (4, Bind::Read(dy)),
            (5, Bind::ReadWrite(dx)),
        ];
        self.dispatch(gpu, m, label, "pool_backward", &b, inp)
    }
}

/// MaxPool2d in the walk: forward keeps each window's winner, backward gathers by it.
pub const KIND: Kind = Kind {
    module: "maxpool.wgsl",
    node: |at| {
        let x_shape = at.x_shape;
        matches!(at.layer, Layer::MaxPool2d).then(|| Box::new(PoolNode { x_shape }) as _)
    },
    checks: |gpu, m| checks(gpu, m).boxed_local(),
};

#[derive(Debug)]
struct PoolNode {
    x_shape: Shape,
}

impl PoolNode {
    fn on(&self, cx: &Cx<'_>) -> Pool {
        Pool {
            x_shape: self.x_shape,
            bp: cx.bp,
            models: cx.axis.models,
        }
    }
}

impl Node for PoolNode {
    fn forward(&self, cx: &Cx<'_>, t: &Tensors<'_>) -> Result<Vec<Dispatch>> {
        let kept = t.kept.expect("a pool keeps its winners");
        let d = self
            .on(cx)
            .forward(cx.gpu, cx.m, (t.x, t.y, kept), t.label)?;
        Ok(vec![d])
    }

    fn backward(&self, cx: &Cx<'_>, t: &Tensors<'_>, g: &Grads<'_>) -> Result<Vec<Dispatch>> {
        let Some(dx) = g.dx else {
            return Ok(Vec::new());
        };
        let kept = t.kept.expect("a pool keeps its winners");
        let d = self
            .on(cx)
            .backward(cx.gpu, cx.m, (kept, g.dy, dx), t.label)?;
        Ok(vec![d])
    }

    fn keeps(&self) -> bool {
        true
    }
}

/// Forward and backward against the twin, exactly, two models: 3 channels of 7x9 (an odd last
/// row and column dropped) with ties and NaNs planted, batch 5; 2 channels of 4x4, batch 4.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut out = Vec::new();
    for (seed, (x_shape, bp)) in [([3, 7, 9], 5), ([2, 4, 4], 4)].into_iter().enumerate() {
        let shape = format!(
            "{}x{}x{}, batch {bp}, 2 models",
            x_shape[0], x_shape[1], x_shape[2]
        );
        out.push(
            check_one(gpu, m, x_shape, bp, seed as u64)
                .await
                .unwrap_or_else(|e| Tally::broken("maxpool2d", shape, e)),
        );
    }
    out
}

async fn check_one(gpu: &Gpu, m: &Modules, x_shape: Shape, bp: usize, seed: u64) -> Result<Check> {
    let mut rng = Rng::new(41 + seed, 0);
    let models = 2;
    let p = Pool {
        x_shape,
        bp,
        models,
    };
    let (inp, out) = p.lens();
    // Values from a few levels, so that windows tie, and a NaN now and then.
    let mut x: Vec<f32> = random(&mut rng, models * inp, 0.0, 4.0)
        .iter()
        .map(|v| v.floor())
        .collect();
    for v in x.iter_mut().step_by(23) {
        *v = f32::NAN;
    }
    let dy = random(&mut rng, models * out, -1.0, 1.0);
    let (xb, dyb) = (buffer(gpu, "X^T", &x), buffer(gpu, "dY^T", &dy));
    let (yb, kb, dxb) = (
        buffer(gpu, "Y^T", &vec![0f32; models * out]),
        buffer(gpu, "kept", &vec![0u32; models * out]),
        buffer(gpu, "dX^T", &vec![f32::NAN; models * inp]),
    );
    run_dispatch(
        gpu,
        &p.forward(gpu, m, (&xb, &yb, &kb), "maxpool forward")?,
        0,
    )?;
    run_dispatch(
        gpu,
        &p.backward(gpu, m, (&kb, &dyb, &dxb), "maxpool backward")?,
        0,
    )?;
    let y: Vec<f32> = read(gpu, &yb, models * out).await?;
    let dx: Vec<f32> = read(gpu, &dxb, models * inp).await?;
    let [c, h, w] = x_shape;
    let mut t = Tally::new(
        "maxpool2d forward+backward",
        format!("{c}x{h}x{w}, batch {bp}, 2 models"),
    );
    let (fi, fo) = (inp / bp, out / bp);
    for model in 0..models {
        let xm = transpose(&x[model * inp..][..inp], fi, bp, bp);
        let (want_y, at) = maxpool2(&xm, bp, (x_shape, 1));
        let dym = transpose(&dy[model * out..][..out], fo, bp, bp);
        let want_dx = maxpool2_backward(&at, &dym, bp, (x_shape, 1));
        for (o, &want) in want_y.iter().enumerate() {
            let (col, f) = (o / fo, o % fo);
            let got = y[model * out + f * bp + col];
            if got.to_bits() != want.to_bits() && !(got.is_nan() && want.is_nan()) {
                t.fail(format!(
                    "model {model} y[{f}] column {col}: got {got}, expected {want}"
                ));
            }
        }
        for (i, &wv) in want_dx.iter().enumerate() {
            let (col, f) = (i / fi, i % fi);
            t.close(
                || format!("model {model} dx[{f}] column {col}"),
                dx[model * inp + f * bp + col] as f64,
                wv as f64,
                0.0,
            );
        }
    }
    Ok(t.done())
}
