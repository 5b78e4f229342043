//! Dropout and Dropout2d while training, forward and backward, their masks drawn from
//! Philox in the kernel (shaders/dropout.wgsl, shaders/philox.wgsl). CPU twin:
//! `cpu::conv::dropout_factors` (`philox::Mask`).

use anyhow::Result;
use futures_util::FutureExt;

use crate::cpu::conv::dropout_factors;
use crate::gpu::check::{Check, Tally, buffer, random, read, run_dispatch, steps_buffer};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, flat_grid, need, no_corrections};
use crate::gpu::ops::kind::{Cx, Grads, Kind, Node, Tensors};
use crate::gpu::ops::{Modules, WG};
use crate::model::Layer;
use crate::philox::Mask;
use crate::rng::Rng;

/// One dropout layer of a model on the device.
#[derive(Clone, Copy, Debug)]
pub struct Dropout<'a> {
    /// Features of a sample, and the elements one draw covers (1, or Dropout2d's plane).
    pub features: usize,
    pub plane: usize,
    pub p: f32,
    /// The layer's index in the model, which keys its masks.
    pub layer: usize,
    pub bp: usize,
    pub models: usize,
    /// keys: [models] (u32, u32), each model's seed, low word first
    pub keys: &'a wgpu::Buffer,
    /// steps: the split's step uniforms (`run` keys the masks)
    pub steps: &'a wgpu::Buffer,
}

impl Dropout<'_> {
    /// y = x * the factors, forward; or dx = dy * the same factors, backward.
    pub fn dispatch(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (x, y): (&wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        let n = self.features * self.bp;
        anyhow::ensure!(
            self.plane > 0 && self.features.is_multiple_of(self.plane),
            "{label}: {} features are no whole number of planes of {}",
            self.features,
            self.plane
        );
        need(label, "keys", self.keys, 8 * self.models)?;
        need(label, "x", x, 4 * self.models * n)?;
        need(label, "y", y, 4 * self.models * n)?;
        let scale = 1.0 / (1.0 - self.p);
        let constants = [
            ("F", self.features as f64),
            ("PLANE", self.plane as f64),
            ("BP", self.bp as f64),
            ("P", self.p as f64),
            ("SCALE", scale as f64),
            ("LAYER", self.layer as f64),
            ("WG", WG as f64),
        ];
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: m.layer(KIND.module),
                entry: "dropout",
                constants: &constants,
                bindings: &[
                    (0, Bind::Read(self.keys)),
                    (1, Bind::Step(self.steps)),
                    (2, Bind::Read(x)),
                    (3, Bind::ReadWrite(y)),
                ],
                groups: flat_grid(n, WG, self.models),
            },
        )
    }
}

/// Dropout and Dropout2d in the walk: the same factors forward and backward; nothing when
/// evaluating.
pub const KIND: Kind = Kind {
    module: "dropout.wgsl",
    node: |at| {
        let [c, h, w] = at.x_shape;
        let (p, plane) = match at.layer {
            Layer::Dropout(p) => (p, 1),
            Layer::Dropout2d(p) => (p, h * w),
            _ => return None,
        };
        Some(Box::new(DropNode {
            features: c * h * w,
            plane,
            p: p.get(),
            layer: at.index,
        }))
    },
    checks: |gpu, m| checks(gpu, m).boxed_local(),
};

#[derive(Debug)]
struct DropNode {
    features: usize,
    plane: usize,
    p: f32,
    layer: usize,
}

impl DropNode {
    fn on<'a>(&self, cx: &Cx<'a>) -> Dropout<'a> {
        Dropout {
            features: self.features,
            plane: self.plane,
            p: self.p,
            layer: self.layer,
            bp: cx.bp,
            models: cx.axis.models,
            keys: cx.keys.expect("training has the models' keys"),
            steps: cx.steps,
        }
    }
}

impl Node for DropNode {
    fn forward(&self, cx: &Cx<'_>, t: &Tensors<'_>) -> Result<Vec<Dispatch>> {
        Ok(vec![self.on(cx).dispatch(
            cx.gpu,
            cx.m,
            (t.x, t.y),
            t.label,
        )?])
    }

    fn backward(&self, cx: &Cx<'_>, t: &Tensors<'_>, g: &Grads<'_>) -> Result<Vec<Dispatch>> {
        let Some(dx) = g.dx else {
            return Ok(Vec::new());
        };
        Ok(vec![self.on(cx).dispatch(
            cx.gpu,
            cx.m,
            (g.dy, dx),
            t.label,
        )?])
    }

    fn only_training(&self) -> bool {
        true
    }
}

/// Each model's seed as the kernels' Philox key.
pub fn keys(seeds: &[u64]) -> Vec<[u32; 2]> {
    seeds
        .iter()
        .map(|&s| [s as u32, (s >> 32) as u32])
        .collect()
}

/// keys: [models] the Philox key of each model of a set, from its recipe's seed.
pub fn keys_buffer(gpu: &Gpu, recipes: &[crate::recipe::Recipe]) -> wgpu::Buffer {
    let seeds: Vec<u64> = recipes.iter().map(|r| r.seed).collect();
    let usage = wgpu::BufferUsages::STORAGE;
    crate::gpu::buffers::init(
        gpu,
        "dropout keys",
        bytemuck::cast_slice(&keys(&seeds)),
        usage,
    )
}

/// The kernel's factors against the twin's, exactly, for two models of different seeds (one
/// past 2^32) at step 1 of a table whose run starts at 0: Dropout(0.5) of 13 features and
/// Dropout2d(0.25) of 3 channels of 5, batch 6.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut out = Vec::new();
    for (features, plane, p, layer) in [(13, 1, 0.5f32, 4), (15, 5, 0.25, 2)] {
        let shape = format!("{features} features, plane {plane}, p {p}, batch 6, 2 models");
        let kernel = if plane == 1 { "dropout" } else { "dropout2d" };
        out.push(
            check_one(gpu, m, (features, plane, p, layer))
                .await
                .unwrap_or_else(|e| Tally::broken(kernel, shape, e)),
        );
    }
    out
}

async fn check_one(
    gpu: &Gpu,
    m: &Modules,
    (features, plane, p, layer): (usize, usize, f32, usize),
) -> Result<Check> {
    let (bp, models, step) = (6, 2, 1);
    let seeds = [7u64, (5u64 << 32) | 3];
    let mut rng = Rng::new(51, 0);
    let n = features * bp;
    let x = random(&mut rng, models * n, -1.0, 1.0);
    let keys = buffer(gpu, "keys", &keys(&seeds));
    let steps = steps_buffer(gpu, 2 * bp, bp, no_corrections);
    let (xb, yb) = (
        buffer(gpu, "X^T", &x),
        buffer(gpu, "Y^T", &vec![f32::NAN; models * n]),
    );
    let d = Dropout {
        features,
        plane,
        p,
        layer,
        bp,
        models,
        keys: &keys,
        steps: &steps,
    };
    run_dispatch(gpu, &d.dispatch(gpu, m, (&xb, &yb), "dropout")?, step)?;
    let y: Vec<f32> = read(gpu, &yb, models * n).await?;
    let kernel = if plane == 1 { "dropout" } else { "dropout2d" };
    let mut t = Tally::new(
        kernel,
        format!("{features} features, plane {plane}, p {p}, batch {bp}, 2 models"),
    );
    for (model, &seed) in seeds.iter().enumerate() {
        let mask = Mask {
            seed,
            step: step as u64,
            layer: layer as u32,
        };
        // The twin's factors are batch-major, [bp, features].
        let f: Vec<f32> = dropout_factors(mask, p, bp * features, plane);
        for col in 0..bp {
            for i in 0..features {
                let at = model * n + i * bp + col;
                t.close(
                    || format!("model {model} feature {i} column {col}"),
                    y[at] as f64,
                    (x[at] * f[col * features + i]) as f64,
                    0.0,
                );
            }
        }
    }
    Ok(t.done())
}
