//! Conv2d (square kernel, any stride and zero padding) on feature-major activations: forward,
//! the input's gradient and the weight and bias gradients (shaders/conv.wgsl). CPU twins:
//! `cpu::conv::conv2d_forward`, `cpu::conv::conv2d_backward`; their check in `check.rs`.

mod check;

use anyhow::Result;
use futures_util::FutureExt;

use crate::gpu::device::Gpu;
use crate::gpu::dispatch::need_batch;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, ModelAxis, flat_grid};
use crate::gpu::layout::pad4;
use crate::gpu::ops::kind::{Cx, Grads, Kind, Node, Tensors};
use crate::gpu::ops::{Modules, WG};
use crate::model::{Conv2d, Layer, Shape};

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
    checks: |gpu, m| check::checks(gpu, m).boxed_local(),
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
