//! Conv2d's three entry points against the CPU twin in f64 (`cpu::conv`), on two models.

use anyhow::Result;

use super::Conv;
use crate::cpu::conv::{conv2d_backward, conv2d_forward};
use crate::gpu::check::{Check, Pending, Tally, buffer, random, read, run_dispatch};
use crate::gpu::check::{sum_tolerance, together, transpose, wide, wide_abs};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::ModelAxis;
use crate::gpu::layout::pad4;
use crate::gpu::ops::Modules;
use crate::model::{Conv2d, Layer, Shape};
use crate::rng::Rng;

/// Every entry point against the CPU twin in f64, two models with their own data and tensors
/// at an offset, on shapes no tile divides: 1 -> 3 channels 5x5 on 9x8, 2 -> 5 3x3 on 7x6,
/// 3 -> 2 1x1 on 4x5 (the recipes' stride 1, no padding), 2 -> 3 3x3 stride 2 padding 1 on
/// 7x6, 1 -> 2 4x4 stride 3 padding 2 on 9x7 (windows that overlap the padding and skip input
/// rows), and 5 -> 9 3x3 on 6x7 (channels past one tile of CO_TILE, the last tile holding one);
/// batches of 4, 8 and 12 columns (whole vec4).
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let strided = |cin, cout, k, stride, pad| Conv2d {
        cin,
        cout,
        k,
        stride,
        pad,
    };
    let mut all: Pending<'_> = Vec::new();
    for (i, (x_shape, layer, bp)) in [
        ([1, 9, 8], Conv2d::new(1, 3, 5), 4),
        ([2, 7, 6], Conv2d::new(2, 5, 3), 8),
        ([3, 4, 5], Conv2d::new(3, 2, 1), 12),
        ([2, 7, 6], strided(2, 3, 3, 2, 1), 8),
        ([1, 9, 7], strided(1, 2, 4, 3, 2), 4),
        ([5, 6, 7], Conv2d::new(5, 9, 3), 4),
    ]
    .into_iter()
    .enumerate()
    {
        all.push(Box::pin(async move {
            let c = Case::new((x_shape, layer, bp), i as u64);
            check_one(gpu, m, &c)
                .await
                .unwrap_or_else(|e| vec![Tally::broken("conv2d", c.shape(), e)])
        }));
    }
    together(all).await
}

/// One model's tensors, batch-major as the CPU twin takes them, in f64.
struct Twin {
    w: Vec<f64>,
    b: Vec<f64>,
    x: Vec<f64>,
    dy: Vec<f64>,
}

/// One check's data: two models' tensors, each model's block `stride` floats, its weight and
/// bias 4 floats in so that offsets are exercised, and random X^T and dY^T.
struct Case {
    x_shape: Shape,
    layer: Conv2d,
    bp: usize,
    models: usize,
    w_off: usize,
    b_off: usize,
    stride: usize,
    params: Vec<f32>,
    x: Vec<f32>,
    dy: Vec<f32>,
}

impl Case {
    fn new((x_shape, layer, bp): (Shape, Conv2d, usize), seed: u64) -> Case {
        let mut rng = Rng::new(31 + seed, 0);
        let [cin, h, w] = x_shape;
        let (wlen, cout) = (layer.weight_len(), layer.cout);
        let (w_off, b_off) = (4, 4 + pad4(wlen));
        let (stride, models) = (b_off + pad4(cout) + 4, 2);
        let (ho, wo) = layer.out_hw(h, w).expect("a check's shapes fit");
        let mut params = vec![0f32; models * stride];
        let x = random(&mut rng, models * cin * h * w * bp, -1.0, 1.0);
        let dy = random(&mut rng, models * cout * ho * wo * bp, -1.0, 1.0);
        for p in params.chunks_mut(stride) {
            p[w_off..w_off + wlen].copy_from_slice(&random(&mut rng, wlen, -0.5, 0.5));
            p[b_off..b_off + cout].copy_from_slice(&random(&mut rng, cout, -0.5, 0.5));
        }
        Case {
            x_shape,
            layer,
            bp,
            models,
            w_off,
            b_off,
            stride,
            params,
            x,
            dy,
        }
    }

    /// Floats of (the weight, an input sample, an output sample).
    fn lens(&self) -> (usize, usize, usize) {
        let [cin, h, w] = self.x_shape;
        let (ho, wo) = self.layer.out_hw(h, w).expect("a check's shapes fit");
        (
            self.layer.weight_len(),
            cin * h * w,
            self.layer.cout * ho * wo,
        )
    }

    fn shape(&self) -> String {
        let [cin, h, w] = self.x_shape;
        format!(
            "{cin}x{h}x{w} {}, batch {}, 2 models",
            Layer::Conv2d(self.layer),
            self.bp
        )
    }

    /// Model `model`'s tensors for the twin, batch-major, in f64, exactly or as magnitudes.
    fn twin(&self, model: usize, abs: bool) -> Twin {
        let (wlen, inputs, out) = self.lens();
        let p = &self.params[model * self.stride..][..self.stride];
        let bp = self.bp;
        let at = |v: &[f32], n: usize| transpose(&v[model * n * bp..][..n * bp], n, bp, bp);
        let f = |v: &[f32]| if abs { wide_abs(v) } else { wide(v) };
        Twin {
            w: f(&p[self.w_off..self.w_off + wlen]),
            b: f(&p[self.b_off..self.b_off + self.layer.cout]),
            x: f(&at(&self.x, inputs)),
            dy: f(&at(&self.dy, out)),
        }
    }

    /// (y, dw, db, dx) of the CPU twin for model `model`'s tensors.
    fn expect(&self, model: usize, abs: bool) -> [Vec<f64>; 4] {
        let t = self.twin(model, abs);
        let (_, inputs, out) = self.lens();
        let bp = self.bp;
        let mut y = vec![0.0; bp * out];
        conv2d_forward(&t.x, (&t.w, &t.b), &mut y, (self.x_shape, 1), self.layer);
        let (mut dw, mut db) = (vec![0.0; t.w.len()], vec![0.0; self.layer.cout]);
        let mut dx = vec![0.0; bp * inputs];
        let grads = (&mut dw[..], &mut db[..]);
        let shape = (self.x_shape, 1);
        conv2d_backward(
            &t.dy,
            &t.x,
            &t.w,
            grads,
            Some(&mut dx),
            bp,
            shape,
            self.layer,
        );
        [y, dw, db, dx]
    }
}

/// Runs the three entry points on the case: (Y^T, dX^T, grads).
async fn run(gpu: &Gpu, m: &Modules, c: &Case) -> Result<[Vec<f32>; 3]> {
    let (_, inputs, out) = c.lens();
    let (models, bp) = (c.models, c.bp);
    let nan = |n: usize| vec![f32::NAN; n];
    let (pb, xb, dyb) = (
        buffer(gpu, "params", &c.params),
        buffer(gpu, "X^T", &c.x),
        buffer(gpu, "dY^T", &c.dy),
    );
    let yb = buffer(gpu, "Y^T", &nan(models * out * bp));
    let dxb = buffer(gpu, "dX^T", &nan(models * inputs * bp));
    let gb = buffer(gpu, "grads", &nan(models * c.stride));
    let axis = ModelAxis {
        models,
        params: c.stride,
        order: 0,
    };
    let (x_shape, layer, w_off, b_off) = (c.x_shape, c.layer, c.w_off, c.b_off);
    let conv = Conv {
        x_shape,
        layer,
        w_off,
        b_off,
        bp,
        params: &pb,
        axis,
    };
    run_dispatch(gpu, &conv.forward(gpu, m, (&xb, &yb), "conv forward")?, 0)?;
    run_dispatch(
        gpu,
        &conv.input_grad(gpu, m, (&dyb, &dxb), "conv input grad")?,
        0,
    )?;
    run_dispatch(
        gpu,
        &conv.weight_grad(gpu, m, (&xb, &dyb, &gb), "conv weight grad")?,
        0,
    )?;
    Ok([
        read(gpu, &yb, models * out * bp).await?,
        read(gpu, &dxb, models * inputs * bp).await?,
        read(gpu, &gb, models * c.stride).await?,
    ])
}

async fn check_one(gpu: &Gpu, m: &Modules, c: &Case) -> Result<Vec<Check>> {
    let [y, dx, g] = run(gpu, m, c).await?;
    let (_, inputs, out) = c.lens();
    let [cin, ..] = c.x_shape;
    let (bp, k, cout) = (c.bp, c.layer.k, c.layer.cout);
    let mut t = ["conv2d forward", "conv2d input grad"].map(|name| Tally::new(name, c.shape()));
    let mut tw = Tally::new("conv2d weight+bias grad", c.shape());
    for model in 0..c.models {
        let (want, scale) = (c.expect(model, false), c.expect(model, true));
        // Forward and input gradient: the kernel's feature-major [n, bp], the twin's [bp, n].
        for (which, (got, n, terms, idx)) in [
            (&y, out, cin * k * k + 1, 0),
            (&dx, inputs, cout * k * k, 3),
        ]
        .into_iter()
        .enumerate()
        {
            for f in 0..n {
                for col in 0..bp {
                    let got = got[model * n * bp + f * bp + col] as f64;
                    let (wv, sv) = (want[idx][col * n + f], scale[idx][col * n + f]);
                    t[which].close(
                        || format!("model {model} feature {f} column {col}"),
                        got,
                        wv,
                        sum_tolerance(terms, sv),
                    );
                }
            }
        }
        let terms = bp * out / cout;
        let g = &g[model * c.stride..];
        for (name, off, i_want) in [("dw", c.w_off, 1), ("db", c.b_off, 2)] {
            for (i, (wv, sv)) in want[i_want].iter().zip(&scale[i_want]).enumerate() {
                tw.close(
                    || format!("model {model} {name}[{i}]"),
                    g[off + i] as f64,
                    *wv,
                    sum_tolerance(terms, *sv),
                );
            }
        }
    }
    let [a, b] = t;
    Ok(vec![a.done(), b.done(), tw.done()])
}
