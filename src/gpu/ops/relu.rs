//! ReLU as a layer of its own (after a Conv2d or a MaxPool2d), forward and backward
//! (shaders/relu.wgsl). CPU twins: the Relu arms of `cpu::layers::forward` and `backward`.

use anyhow::Result;
use futures_util::FutureExt;

use crate::cpu::layers;
use crate::gpu::check::{Check, Tally, buffer, random, read, run_dispatch};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, flat_grid, need};
use crate::gpu::ops::kind::{Cx, Grads, Kind, Node, Tensors};
use crate::gpu::ops::{Modules, WG};
use crate::model::Layer;
use crate::rng::Rng;

/// `n` floats of every model, one tensor after another.
#[derive(Clone, Copy, Debug)]
pub struct Relu {
    pub n: usize,
}

impl Relu {
    fn dispatch(
        &self,
        gpu: &Gpu,
        m: &Modules,
        label: &str,
        entry: &str,
        bindings: &[(u32, Bind<'_>)],
    ) -> Result<Dispatch> {
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: m.layer(KIND.module),
                entry,
                constants: &[("N", self.n as f64), ("WG", WG as f64)],
                bindings,
                groups: flat_grid(self.n, WG, 1),
            },
        )
    }

    /// y = max(x, 0).
    pub fn forward(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (x, y): (&wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        need(label, "x", x, 4 * self.n)?;
        need(label, "y", y, 4 * self.n)?;
        self.dispatch(
            gpu,
            m,
            label,
            "relu_forward",
            &[(0, Bind::Read(x)), (1, Bind::ReadWrite(y))],
        )
    }

    /// dx = dy where the forward's output `out` is positive, else 0.
    pub fn backward(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (out, dy, dx): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        for (name, b) in [("out", out), ("dy", dy), ("dx", dx)] {
            need(label, name, b, 4 * self.n)?;
        }
        self.dispatch(
            gpu,
            m,
            label,
            "relu_backward",
            &[
                (2, Bind::Read(out)),
                (3, Bind::Read(dy)),
                (4, Bind::ReadWrite(dx)),
            ],
        )
    }
}

/// ReLU in the walk (one after a conv or a pool; a Linear takes the one after it into its own
/// kernels): forward, and backward masked by its output.
pub const KIND: Kind = Kind {
    module: "relu.wgsl",
    node: |at| {
        let features = at.x_shape.iter().product();
        matches!(at.layer, Layer::Relu).then(|| Box::new(ReluNode { features }) as _)
    },
    checks: |gpu, m| checks(gpu, m).boxed_local(),
};

#[derive(Debug)]
struct ReluNode {
    features: usize,
}

impl Node for ReluNode {
    fn forward(&self, cx: &Cx<'_>, t: &Tensors<'_>) -> Result<Vec<Dispatch>> {
        let r = Relu {
            n: cx.axis.models * self.features * cx.bp,
        };
        Ok(vec![r.forward(cx.gpu, cx.m, (t.x, t.y), t.label)?])
    }

    fn backward(&self, cx: &Cx<'_>, t: &Tensors<'_>, g: &Grads<'_>) -> Result<Vec<Dispatch>> {
        let Some(dx) = g.dx else {
            return Ok(Vec::new());
        };
        let r = Relu {
            n: cx.axis.models * self.features * cx.bp,
        };
        Ok(vec![r.backward(cx.gpu, cx.m, (t.y, g.dy, dx), t.label)?])
    }

    fn relu_out(&self, _: bool) -> bool {
        true
    }
}

/// Both directions against the twin, exactly, on 1001 floats with zeros planted.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let shape = "1001 floats";
    vec![
        check(gpu, m)
            .await
            .unwrap_or_else(|e| Tally::broken("relu", shape, e)),
    ]
}

async fn check(gpu: &Gpu, m: &Modules) -> Result<Check> {
    let n = 1001;
    let mut rng = Rng::new(61, 0);
    let mut x = random(&mut rng, n, -1.0, 1.0);
    for v in x.iter_mut().step_by(17) {
        *v = 0.0;
    }
    let dy = random(&mut rng, n, -1.0, 1.0);
    let (xb, dyb) = (buffer(gpu, "x", &x), buffer(gpu, "dy", &dy));
    let (yb, dxb) = (
        buffer(gpu, "y", &vec![f32::NAN; n]),
        buffer(gpu, "dx", &vec![f32::NAN; n]),
    );
    let r = Relu { n };
    run_dispatch(gpu, &r.forward(gpu, m, (&xb, &yb), "relu forward")?, 0)?;
    run_dispatch(
        gpu,
        &r.backward(gpu, m, (&yb, &dyb, &dxb), "relu backward")?,
        0,
    )?;
    let y: Vec<f32> = read(gpu, &yb, n).await?;
    let dx: Vec<f32> = read(gpu, &dxb, n).await?;
    let pass = crate::cpu::Pass::PLAIN;
    let (want_y, _) = layers::forward(&Layer::Relu, &[], &x, (1, [n, 1, 1]), pass);
    let want_dx = layers::backward(
        &Layer::Relu,
        (&[], &mut []),
        (&x, &want_y, &[]),
        dy.clone(),
        (1, [n, 1, 1]),
        pass,
        true,
    );
    let mut t = Tally::new("relu forward+backward", "1001 floats");
    for i in 0..n {
        t.close(|| format!("y[{i}]"), y[i] as f64, want_y[i] as f64, 0.0);
        t.close(|| format!("dx[{i}]"), dx[i] as f64, want_dx[i] as f64, 0.0);
    }
    Ok(t.done())
}
