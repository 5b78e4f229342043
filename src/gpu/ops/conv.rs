//! Conv2d (square kernel, any stride and zero padding) on feature-major activations: forward,
//! the input's gradient and the weight and bias gradients (shaders/conv.wgsl). CPU twins:
//! `cpu::conv::conv2d_forward`, `cpu::conv::conv2d_backward`.

use anyhow::Result;
use futures_util::FutureExt;

use crate::cpu::conv::{conv2d_backward, conv2d_forward};
use crate::gpu::check::{Check, Pending, Tally, buffer, random, read, run_dispatch};
use crate::gpu::check::{sum_tolerance, together, transpose, wide, wide_abs};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::need_batch;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, ModelAxis, flat_grid};
use crate::gpu::layout::pad4;
use crate::gpu::ops::kind::{Cx, Grads, Kind, Node, Tensors};
use crate::gpu::ops::{Modules, WG};
use crate::model::{Conv2d, Layer, Shape};
use crate::rng::Rng;

/// Output channels per invocation of the forward and per workgroup of the weight gradient,
/// input channels per invocation of the input gradient (conv.wgsl's `CO_TILE`).
pub const CO_TILE: usize = 4;

/// One Conv2d of a model on the device.
#[derive(Clone, Copy, Debug)]
pub struct Conv<'a> {
    /// The input sample's shape `[cin, h, w]`, and the layer.
    pub x_shape: Shape,
    pub layer: Conv2d,
    /// weight [cout, cin, k, k] at `w_off`, bias [cout] at `b_off`, in floats
    pub w_off: usize,
    pub b_off: usize,
    pub bp: usize,
    /// params: [models, axis.params], the device layout
    pub params: &'a wgpu::Buffer,
    pub axis: ModelAxis,
}

impl<'a> Conv<'a> {
    fn out_hw(&self) -> (usize, usize) {
        let [_, h, w] = self.x_shape;
        self.layer
            .out_hw(h, w)
            .expect("a Conv2d's input was checked against it")
    }

    fn out_len(&self) -> usize {
        let (ho, wo) = self.out_hw();
        self.layer.cout * ho * wo
    }

    fn constants(&self) -> Vec<(&'static str, f64)> {
        let [cin, h, w] = self.x_shape;
        let (ho, wo) = self.out_hw();
        let l = self.layer;
        [
            ("CIN", cin),
            ("COUT", l.cout),
            ("K", l.k),
            ("STRIDE", l.stride),
            ("PAD", l.pad),
            ("H", h),
            ("W", w),
            ("HO", ho),
            ("WO", wo),
            ("BP", self.bp),
            ("W_OFF", self.w_off),
            ("B_OFF", self.b_off),
            ("WG", WG as usize),
        ]
        .map(|(k, v)| (k, v as f64))
        .into_iter()
        .chain([self.axis.p_stride()])
        .collect()
    }

    /// The sizes every entry point relies on: the tensors of every model.
    fn check_sizes(
        &self,
        label: &str,
        x: (&str, &wgpu::Buffer),
        y: (&str, &wgpu::Buffer),
    ) -> Result<()> {
        let a = self.axis;
        let [cin, h, w] = self.x_shape;
        a.need_params(
            label,
            "params",
            self.params,
            self.b_off + pad4(self.layer.cout),
        )?;
        need_batch(label, self.bp)?;
        a.need_acts(label, x.0, x.1, cin * h * w * self.bp)?;
        a.need_acts(label, y.0, y.1, self.out_len() * self.bp)
    }

    fn dispatch(
        &self,
        gpu: &Gpu,
        m: &Modules,
        label: &str,
        entry: &str,
        bindings: &[(u32, Bind<'_>)],
        groups: [u32; 3],
    ) -> Result<Dispatch> {
        let constants = self.constants();
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: m.layer(KIND.module),
                entry,
                constants: &constants,
                bindings,
                groups,
            },
        )
    }

    /// y = conv(x) + bias: x X^T [cin * h * w, bp], y Y^T [cout * ho * wo, bp], per model.
    pub fn forward(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (x, y): (&wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        self.check_sizes(label, ("x", x), ("y", y))?;
        // An invocation per output position, vec4 of samples and CO_TILE output channels.
        let (ho, wo) = self.out_hw();
        let tiles = self.layer.cout.div_ceil(CO_TILE) * ho * wo * self.bp / 4;
        let grid = flat_grid(tiles, WG, self.axis.models);
        let b = [
            (0, Bind::Read(self.params)),
            (1, Bind::Read(x)),
            (2, Bind::ReadWrite(y)),
        ];
        self.dispatch(gpu, m, label, "conv_forward", &b, grid)
    }

    /// dx = the input's gradient from dy, the output's.
    pub fn input_grad(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (dy, dx): (&wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        self.check_sizes(label, ("dx", dx), ("dy", dy))?;
        // An invocation per input position, vec4 of samples and CO_TILE input channels.
        let [cin, h, w] = self.x_shape;
        let tiles = cin.div_ceil(CO_TILE) * h * w * self.bp / 4;
        let grid = flat_grid(tiles, WG, self.axis.models);
        let b = [
            (0, Bind::Read(self.params)),
            (3, Bind::Read(dy)),
            (4, Bind::ReadWrite(dx)),
        ];
        self.dispatch(gpu, m, label, "conv_input_grad", &b, grid)
    }

    /// The weight and bias gradients from the input x and the output's gradient dy, written
    /// into `grads` where `params` holds the tensors.
    pub fn weight_grad(
        &self,
        gpu: &Gpu,
        m: &Modules,
        (x, dy, grads): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        label: &str,
    ) -> Result<Dispatch> {
        self.check_sizes(label, ("x", x), ("dy", dy))?;
        let end = self.b_off + pad4(self.layer.cout);
        self.axis.need_params(label, "grads", grads, end)?;
        // A workgroup per CO_TILE output channels' weights of one tap, then one per bias.
        let l = self.layer;
        let groups = l.cout.div_ceil(CO_TILE) * l.cin * l.k * l.k + l.cout;
        let grid = flat_grid(groups, 1, self.axis.models);
        let b = [
            (1, Bind::Read(x)),
            (3, Bind::Read(dy)),
            (5, Bind::ReadWrite(grads)),
        ];
        self.dispatch(gpu, m, label, "conv_weight_grad", &b, grid)
    }
}

/// Conv2d in the walk: forward; backward, the weight and bias gradients and the input's.
pub const KIND: Kind = Kind {
    module: "conv.wgsl",
    node: |at| {
        let Layer::Conv2d(layer) = at.layer else {
            return None;
        };
        let [w_off, b_off] = at.tensors[..] else {
            unreachable!("a Conv2d has a weight and a bias")
        };
        Some(Box::new(ConvNode {
            x_shape: at.x_shape,
            layer,
            w_off,
            b_off,
        }))
    },
    checks: |gpu, m| checks(gpu, m).boxed_local(),
};

#[derive(Debug)]
struct ConvNode {
    x_shape: Shape,
    layer: Conv2d,
    w_off: usize,
    b_off: usize,
}

impl ConvNode {
    fn on<'a>(&self, cx: &Cx<'a>) -> Conv<'a> {
        Conv {
            x_shape: self.x_shape,
            layer: self.layer,
            w_off: self.w_off,
            b_off: self.b_off,
            bp: cx.bp,
            params: cx.params,
            axis: cx.axis,
        }
    }
}

impl Node for ConvNode {
    fn forward(&self, cx: &Cx<'_>, t: &Tensors<'_>) -> Result<Vec<Dispatch>> {
        Ok(vec![self.on(cx).forward(
            cx.gpu,
            cx.m,
            (t.x, t.y),
            t.label,
        )?])
    }

    fn backward(&self, cx: &Cx<'_>, t: &Tensors<'_>, g: &Grads<'_>) -> Result<Vec<Dispatch>> {
        let (c, label) = (self.on(cx), t.label);
        let weight = (t.x, g.dy, g.grads);
        let mut ops = vec![c.weight_grad(cx.gpu, cx.m, weight, &format!("{label} (weight)"))?];
        if let Some(dx) = g.dx {
            ops.push(c.input_grad(cx.gpu, cx.m, (g.dy, dx), &format!("{label} (input)"))?);
        }
        Ok(ops)
    }
}

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
