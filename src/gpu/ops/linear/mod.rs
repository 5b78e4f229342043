//! Linear layers: the forward product (bias and ReLU fused) and the backward products (input
//! gradient with the ReLU mask, weight and bias gradients), in shaders/linear_forward.wgsl and
//! shaders/linear_backward.wgsl with an inner loop from tile_plain.wgsl or tile_subgroup.wgsl.
//! CPU twins: `cpu::linear_forward`, `cpu::linear_backward`, `cpu::relu_backward`.
//!
//! Activations are feature-major, `H^T: [features, bp]` with `bp` a multiple of 4, so a batch
//! runs along the columns each invocation holds as vec4; parameters are in the device layout
//! (`gpu::layout`).

pub mod fused;
mod sets;

use anyhow::{Result, ensure};

use crate::cpu;
use crate::gpu::check::{BATCHES, Check, INNER, OTHER, Tally, buffer, random, read, run_dispatch};
use crate::gpu::check::{Pending, together};
use crate::gpu::check::{sum_tolerance, transpose, unpad, wide, wide_abs};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, ModelAxis, need_batch, need_vec4};
use crate::gpu::layout::{DeviceLayout, LayerAt, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::wgsl::LANES;
use crate::model::Arch;
use crate::rng::Rng;

/// Rows of a tile (`ROWS` of tile_common.wgsl); a workgroup's columns are `wgsl::LANES`.
pub const ROWS: u32 = 4;

fn tile_constants(m: &Modules, c: &mut Vec<(&str, f64)>) {
    if !m.kernels.subgroups() {
        c.push(("LANES", LANES as f64));
        c.push(("ROW_GROUPS", m.kernels.row_groups() as f64));
    }
}

/// Rows one workgroup covers.
fn rows_per_group(m: &Modules) -> u32 {
    ROWS * m.kernels.row_groups()
}

fn div(a: usize, b: u32) -> u32 {
    (a as u32).div_ceil(b)
}

/// Z^T = W * H^T + bias (ReLU when `relu`), also stored batch-major.
pub struct Forward<'a> {
    pub at: LayerAt,
    pub bp: usize,
    pub relu: bool,
    /// params: the flat parameters, device layout
    pub params: &'a wgpu::Buffer,
    /// h: H^T [in, bp]
    pub h: &'a wgpu::Buffer,
    /// z: Z^T [out, bp]
    pub z: &'a wgpu::Buffer,
    /// z_rows: Z [bp, pad4(out)]
    pub z_rows: &'a wgpu::Buffer,
    /// A set: each model's parameters `models.params` floats apart, its H^T, Z^T and Z whole.
    pub models: ModelAxis,
}

impl Forward<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        let (a, bp, x) = (self.at, self.bp, self.models);
        need_batch(label, bp)?;
        x.need_params(label, "params", self.params, a.b_off + pad4(a.out))?;
        x.need_acts(label, "H^T", self.h, a.inp * bp)?;
        x.need_acts(label, "Z^T", self.z, a.out * bp)?;
        x.need_acts(label, "Z", self.z_rows, bp * pad4(a.out))?;
        let mut constants = vec![
            ("IN", a.inp as f64),
            ("OUT", a.out as f64),
            ("BP", bp as f64),
            ("W_OFF", a.w_off as f64),
            ("B_OFF", a.b_off as f64),
            ("LDW", a.ldw as f64),
            ("LDZ", pad4(a.out) as f64),
            ("RELU", self.relu as u8 as f64),
            x.p_stride(),
        ];
        tile_constants(m, &mut constants);
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.forward,
                entry: "forward",
                constants: &constants,
                bindings: &[
                    (0, Bind::Read(self.params)),
                    (1, Bind::Read(self.h)),
                    (2, Bind::ReadWrite(self.z)),
                    (3, Bind::ReadWrite(self.z_rows)),
                ],
                groups: [
                    div(bp / 4, LANES),
                    div(a.out, rows_per_group(m)),
                    x.models as u32,
                ],
            },
        )
    }
}

/// The input gradient's buffers: dX^T [in, bp] and the mask source H^T [in, bp].
pub struct InputGrad<'a> {
    pub dx: &'a wgpu::Buffer,
    pub mask: &'a wgpu::Buffer,
}

/// dW = dZ^T * H and db into `grads`, and with `input` also dX^T = W^T * dZ^T masked by
/// H^T > 0, in one dispatch.
pub struct Backward<'a> {
    pub at: LayerAt,
    pub bp: usize,
    /// params: the flat parameters, device layout
    pub params: &'a wgpu::Buffer,
    /// dz: dZ^T [out, bp]
    pub dz: &'a wgpu::Buffer,
    /// h_rows: H [bp, ldw], zero past `in`
    pub h_rows: &'a wgpu::Buffer,
    /// grads: the flat gradients, device layout
    pub grads: &'a wgpu::Buffer,
    pub input: Option<InputGrad<'a>>,
    /// A set: each model's parameters and gradients `models.params` floats apart, its dZ^T,
    /// H, dX^T and mask whole.
    pub models: ModelAxis,
}

impl Backward<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        let (a, bp) = (self.at, self.bp);
        need_batch(label, bp)?;
        ensure!(
            a.w_off.is_multiple_of(4) && a.b_off.is_multiple_of(4) && a.ldw.is_multiple_of(4),
            "{label}: {a:?} is not vec4-aligned"
        );
        let x = self.models;
        let k = x.models;
        x.need_params(label, "params", self.params, a.b_off + pad4(a.out))?;
        x.need_params(label, "grads", self.grads, a.b_off + pad4(a.out))?;
        need_vec4(label, "dZ^T", self.dz, k * a.out * bp)?;
        need_vec4(label, "H", self.h_rows, k * bp * a.ldw)?;
        let (x_gx, w_gx) = (div(bp / 4, LANES), div(a.ldw / 4, LANES));
        let x_groups = if self.input.is_some() {
            x_gx * div(a.inp, rows_per_group(m))
        } else {
            0
        };
        let mut constants = vec![
            ("IN", a.inp as f64),
            ("OUT", a.out as f64),
            ("BP", bp as f64),
            ("W_OFF", a.w_off as f64),
            ("B_OFF", a.b_off as f64),
            ("LDW", a.ldw as f64),
            ("X_GX", x_gx as f64),
            ("X_GROUPS", x_groups as f64),
            ("W_GX", w_gx as f64),
            x.p_stride(),
        ];
        tile_constants(m, &mut constants);
        let mut bindings = vec![
            (0, Bind::Read(self.params)),
            (1, Bind::Read(self.dz)),
            (4, Bind::Read(self.h_rows)),
            (5, Bind::ReadWrite(self.grads)),
        ];
        if let Some(x) = &self.input {
            need_vec4(label, "dX^T", x.dx, k * a.inp * bp)?;
            need_vec4(label, "H^T", x.mask, k * a.inp * bp)?;
            bindings.push((2, Bind::ReadWrite(x.dx)));
            bindings.push((3, Bind::Read(x.mask)));
        }
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.backward,
                entry: if self.input.is_some() {
                    "backward"
                } else {
                    "backward_weight"
                },
                constants: &constants,
                bindings: &bindings,
                groups: [x_groups + w_gx * div(a.out, rows_per_group(m)), 1, k as u32],
            },
        )
    }
}

// ---- checks against cpu::linear_forward / cpu::linear_backward ----

/// A layer `inp -> out` that is the second of a model, so its offsets are not zero, and
/// parameters in the device layout with NaN in the padding (which no product may read).
fn test_layer(rng: &mut Rng, inp: usize, out: usize) -> (LayerAt, Vec<f32>) {
    let layout = DeviceLayout::new(&Arch::mlp(3, &[inp], out));
    let at = layout.layers[1];
    let mut params = vec![f32::NAN; layout.len];
    for r in 0..out {
        let row = at.w_off + r * at.ldw;
        params[row..row + inp].copy_from_slice(&random(rng, inp, -1.0, 1.0));
    }
    params[at.b_off..at.b_off + out].copy_from_slice(&random(rng, out, -1.0, 1.0));
    (at, params)
}

/// The weight [out, in] and bias of `at` from device-layout parameters, PyTorch's layout.
fn weight_and_bias(at: LayerAt, params: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let w = unpad(&params[at.w_off..], at.out, at.ldw, at.inp);
    (w, params[at.b_off..at.b_off + at.out].to_vec())
}

fn shape(at: LayerAt, bp: usize) -> String {
    format!("[{},{}]x[{},{bp}]", at.out, at.inp, at.inp)
}

/// Z^T [out, bp] and its batch-major copy against cpu::linear_forward in f64.
pub async fn check_forward(
    gpu: &Gpu,
    m: &Modules,
    batch: usize,
    inp: usize,
    out: usize,
    relu: bool,
) -> Check {
    let name = format!(
        "forward{} ({})",
        if relu { "+relu" } else { "" },
        m.kernels.name()
    );
    let bp = pad4(batch);
    let mut rng = Rng::new(batch as u64 * 1000 + inp as u64, out as u64);
    let (at, params) = test_layer(&mut rng, inp, out);
    let ht = random(&mut rng, inp * bp, -1.0, 1.0);
    let run = async || -> Result<(Vec<f32>, Vec<f32>)> {
        let (pb, hb) = (buffer(gpu, "params", &params), buffer(gpu, "H^T", &ht));
        let zb = buffer(gpu, "Z^T", &vec![f32::NAN; out * bp]);
        let zr = buffer(gpu, "Z", &vec![f32::NAN; bp * pad4(out)]);
        let f = Forward {
            at,
            bp,
            relu,
            params: &pb,
            h: &hb,
            z: &zb,
            z_rows: &zr,
            models: ModelAxis::ONE,
        };
        run_dispatch(gpu, &f.dispatch(gpu, m, "forward")?, 0)?;
        let z = read(gpu, &zb, out * bp).await?;
        Ok((z, read(gpu, &zr, bp * pad4(out)).await?))
    };
    let (z, z_rows) = match run().await {
        Ok(r) => r,
        Err(e) => return Tally::broken(name, shape(at, bp), e),
    };
    let (w, b) = weight_and_bias(at, &params);
    let x = transpose(&ht, inp, bp, bp);
    let mut want = vec![0f64; bp * out];
    cpu::linear_forward(
        &wide(&x),
        &wide(&w),
        &wide(&b),
        &mut want,
        bp,
        (inp, out),
        relu,
    );
    let mut scale = vec![0f64; bp * out];
    cpu::linear_forward(
        &wide_abs(&x),
        &wide_abs(&w),
        &wide_abs(&b),
        &mut scale,
        bp,
        (inp, out),
        false,
    );
    let mut t = Tally::new(name, shape(at, bp));
    for r in 0..out {
        for n in 0..bp {
            let got = z[r * bp + n];
            let tol = sum_tolerance(inp, scale[n * out + r]);
            t.close(|| format!("Z[{r},{n}]"), got as f64, want[n * out + r], tol);
            if z_rows[n * pad4(out) + r].to_bits() != got.to_bits() {
                t.fail(format!(
                    "the batch-major copy differs from Z^T at [{r},{n}]"
                ));
            }
        }
    }
    if (0..bp).any(|n| (out..pad4(out)).any(|r| z_rows[n * pad4(out) + r] != 0.0)) {
        t.fail("the batch-major copy's padding is not zero".into());
    }
    t.done()
}

/// Random inputs of the backward products of one layer.
struct BackwardCase {
    at: LayerAt,
    bp: usize,
    params: Vec<f32>,
    /// dz: dZ^T [out, bp]; mask: H^T [in, bp]; h_rows: H [bp, ldw], zero past `in`
    dz: Vec<f32>,
    mask: Vec<f32>,
    h_rows: Vec<f32>,
}

/// f64 references of the backward products: (dW [out, in], db [out], dX [bp, in]).
type Gradients = (Vec<f64>, Vec<f64>, Vec<f64>);

impl BackwardCase {
    fn new(rng: &mut Rng, batch: usize, inp: usize, out: usize) -> BackwardCase {
        let bp = pad4(batch);
        let (at, params) = test_layer(rng, inp, out);
        let dz = random(rng, out * bp, -1.0, 1.0);
        let mask = random(rng, inp * bp, -1.0, 1.0);
        let mut h_rows = random(rng, bp * at.ldw, -1.0, 1.0);
        for (i, v) in h_rows.iter_mut().enumerate() {
            if i % at.ldw >= inp {
                *v = 0.0;
            }
        }
        BackwardCase {
            at,
            bp,
            params,
            dz,
            mask,
            h_rows,
        }
    }

    /// The flat gradients and dX^T after the dispatch (dX^T untouched without `input`).
    async fn run(&self, gpu: &Gpu, m: &Modules, input: bool) -> Result<(Vec<f32>, Vec<f32>)> {
        let (at, bp) = (self.at, self.bp);
        let (pb, dzb) = (
            buffer(gpu, "params", &self.params),
            buffer(gpu, "dZ^T", &self.dz),
        );
        let (mb, hb) = (
            buffer(gpu, "H^T", &self.mask),
            buffer(gpu, "H", &self.h_rows),
        );
        let gb = buffer(gpu, "grads", &vec![f32::NAN; self.params.len()]);
        let dxb = buffer(gpu, "dX^T", &vec![f32::NAN; at.inp * bp]);
        let input = input.then_some(InputGrad {
            dx: &dxb,
            mask: &mb,
        });
        let b = Backward {
            at,
            bp,
            params: &pb,
            dz: &dzb,
            h_rows: &hb,
            grads: &gb,
            input,
            models: ModelAxis::ONE,
        };
        run_dispatch(gpu, &b.dispatch(gpu, m, "backward")?, 0)?;
        let grads = read(gpu, &gb, self.params.len()).await?;
        Ok((grads, read(gpu, &dxb, at.inp * bp).await?))
    }

    /// cpu::linear_backward then cpu::relu_backward in f64, and the same on |values| (the
    /// scales of the rounding errors).
    fn reference(&self) -> (Gradients, Gradients) {
        let (at, bp) = (self.at, self.bp);
        let (w, _) = weight_and_bias(at, &self.params);
        let dy = transpose(&self.dz, at.out, bp, bp);
        let x = unpad(&self.h_rows, bp, at.ldw, at.inp);
        let grads = |dy: &[f64], x: &[f64], w: &[f64]| {
            let mut g = (
                vec![0f64; at.out * at.inp],
                vec![0f64; at.out],
                vec![0f64; bp * at.inp],
            );
            cpu::linear_backward(
                dy,
                x,
                w,
                &mut g.0,
                &mut g.1,
                Some(&mut g.2),
                bp,
                (at.inp, at.out),
            );
            g
        };
        let mut want = grads(&wide(&dy), &wide(&x), &wide(&w));
        cpu::relu_backward(&mut want.2, &wide(&transpose(&self.mask, at.inp, bp, bp)));
        (want, grads(&wide_abs(&dy), &wide_abs(&x), &wide_abs(&w)))
    }
}

/// The backward products (with the input gradient when `input`) against cpu::linear_backward
/// and cpu::relu_backward in f64; dW's padding must come out zero and the gradients of every
/// other tensor must stay untouched.
pub async fn check_backward(
    gpu: &Gpu,
    m: &Modules,
    batch: usize,
    inp: usize,
    out: usize,
    input: bool,
) -> Vec<Check> {
    let name = |part: &str| match input {
        true => format!("backward {part} ({})", m.kernels.name()),
        false => format!("backward weight only: {part} ({})", m.kernels.name()),
    };
    let seed = (
        batch as u64 * 31 + inp as u64,
        200 + out as u64 + input as u64,
    );
    let case = BackwardCase::new(&mut Rng::new(seed.0, seed.1), batch, inp, out);
    let (at, bp) = (case.at, case.bp);
    let (grads, dx) = match case.run(gpu, m, input).await {
        Ok(r) => r,
        Err(e) => return vec![Tally::broken(name("all"), shape(at, bp), e)],
    };
    let ((dw, db, want_dx), (sw, sb, sx)) = case.reference();
    let mut tw = Tally::new(name("weight+bias"), shape(at, bp));
    for r in 0..out {
        for c in 0..at.ldw {
            let got = grads[at.w_off + r * at.ldw + c] as f64;
            let (want, tol) = match c < inp {
                true => (dw[r * inp + c], sum_tolerance(bp, sw[r * inp + c])),
                false => (0.0, 0.0),
            };
            tw.close(|| format!("dW[{r},{c}]"), got, want, tol);
        }
    }
    for r in 0..pad4(out) {
        let (want, tol) = match r < out {
            true => (db[r], sum_tolerance(bp, sb[r])),
            false => (0.0, 0.0),
        };
        tw.close(|| format!("db[{r}]"), grads[at.b_off + r] as f64, want, tol);
    }
    let written = at.w_off..at.b_off + pad4(out);
    if grads
        .iter()
        .enumerate()
        .any(|(i, v)| !written.contains(&i) && !v.is_nan())
    {
        tw.fail("wrote outside the layer's dW and db".into());
    }
    let mut checks = vec![tw.done()];
    if input {
        let mut tx = Tally::new(name("input"), shape(at, bp));
        for r in 0..inp {
            for n in 0..bp {
                let tol = sum_tolerance(out, sx[n * inp + r]);
                let (got, want) = (dx[r * bp + n] as f64, want_dx[n * inp + r]);
                tx.close(|| format!("dX[{r},{n}]"), got, want, tol);
            }
        }
        checks.push(tx.done());
    }
    checks
}

/// Every product on the batch and inner sizes of `check`, then the tutorial's own shapes, then
/// a set of two models against their own runs (`sets`).
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut all: Pending<'_> = Vec::new();
    let mut forward = |b, i, o, relu| {
        let check = check_forward(gpu, m, b, i, o, relu);
        all.push(Box::pin(async move { vec![check.await] }));
    };
    for &b in &BATCHES {
        for &i in &INNER {
            forward(b, i, OTHER, true);
        }
    }
    forward(32, 784, 128, true);
    forward(32, 64, 10, false);
    for &b in &BATCHES {
        for &i in &INNER {
            all.push(Box::pin(check_backward(gpu, m, b, i, OTHER, true)));
            all.push(Box::pin(check_backward(gpu, m, b, i, OTHER, false)));
        }
    }
    all.push(Box::pin(check_backward(gpu, m, 32, 128, 128, true)));
    all.push(Box::pin(check_backward(gpu, m, 32, 784, 128, false)));
    all.push(Box::pin(check_backward(gpu, m, 33, 64, 10, true)));
    all.push(Box::pin(sets::checks(gpu, m)));
    together(all).await
}
