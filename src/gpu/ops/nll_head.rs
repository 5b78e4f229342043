//! The logits layer fused with LogSoftmax, NLLLoss and the logits' gradient (shaders/
//! nll_head.wgsl): training needs the logits only here, so the last forward product rides in
//! the loss kernel. CPU twins: `cpu::linear_forward`, `cpu::log_softmax`, `cpu::nll_loss_grad`.

use anyhow::{Result, ensure};

use crate::cpu;
use crate::gpu::check::together;
use crate::gpu::check::{Check, Pending, Tally, buffer, random, read, run_dispatch, steps_buffer};
use crate::gpu::check::{FusedCase, FusedOutputs, block, padding_is_zero};
use crate::gpu::check::{sum_tolerance, transpose, wide, wide_abs};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{
    Bind, Dispatch, DispatchDesc, ModelAxis, need, need_batch, no_corrections,
};
use crate::gpu::layout::{DeviceLayout, LayerAt, pad4};
use crate::gpu::ops::{Modules, WG};
use crate::model::Arch;
use crate::rng::Rng;

/// The most classes one invocation keeps logits for (`MAX_CLASSES` of nll_head.wgsl).
pub const MAX_CLASSES: usize = 16;

pub struct NllHead<'a> {
    /// The logits layer: `in` -> classes.
    pub at: LayerAt,
    pub bp: usize,
    /// params: the flat parameters, device layout
    pub params: &'a wgpu::Buffer,
    /// h: H^T [in, bp], the last hidden layer's output
    pub h: &'a wgpu::Buffer,
    /// labels, order: [split size] u32; steps: the split's step uniforms
    pub labels: &'a wgpu::Buffer,
    pub order: &'a wgpu::Buffer,
    pub steps: &'a wgpu::Buffer,
    /// grad: dZ^T [classes, bp]
    pub grad: &'a wgpu::Buffer,
    /// losses: [steps per epoch, models]
    pub losses: &'a wgpu::Buffer,
    pub steps_per_epoch: usize,
    /// A set: one workgroup, H^T, dZ^T and order per model.
    pub axis: ModelAxis,
}

impl NllHead<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        let (a, bp) = (self.at, self.bp);
        ensure!(
            (1..=MAX_CLASSES).contains(&a.out),
            "{label}: {} classes; the loss head keeps at most {MAX_CLASSES}",
            a.out
        );
        need_batch(label, bp)?;
        let x = self.axis;
        x.need_params(label, "params", self.params, a.b_off + pad4(a.out))?;
        x.need_acts(label, "H^T", self.h, a.inp * bp)?;
        x.need_acts(label, "dZ^T", self.grad, a.out * bp)?;
        need(
            label,
            "losses",
            self.losses,
            x.models * self.steps_per_epoch * 4,
        )?;
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.nll_head,
                entry: "nll_head",
                constants: &[
                    ("CLASSES", a.out as f64),
                    ("IN", a.inp as f64),
                    ("BP", bp as f64),
                    ("W_OFF", a.w_off as f64),
                    ("B_OFF", a.b_off as f64),
                    ("LDW", a.ldw as f64),
                    ("WG", WG as f64),
                    x.p_stride(),
                    x.o_stride(),
                    ("MODELS", x.models as f64),
                ],
                bindings: &[
                    (0, Bind::Read(self.params)),
                    (1, Bind::Read(self.h)),
                    (2, Bind::Read(self.labels)),
                    (3, Bind::Read(self.order)),
                    (4, Bind::Step(self.steps)),
                    (5, Bind::ReadWrite(self.grad)),
                    (6, Bind::ReadWrite(self.losses)),
                ],
                groups: [1, 1, x.models as u32],
            },
        )
    }
}

/// The third step of an epoch (so offsets into order and losses are exercised) on sizes that
/// are not multiples of 4 or of the workgroup, then a set of two models ([`check_set`]).
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut all: Pending<'_> = Vec::new();
    for (case, (batch, classes, inp)) in [
        (1, 10, 13),
        (7, 10, 64),
        (32, 10, 64),
        (33, 3, 5),
        (200, 10, 7),
    ]
    .into_iter()
    .enumerate()
    {
        // A generator per case: the cases run together.
        let mut rng = Rng::new(12, case as u64);
        all.push(Box::pin(async move {
            let shape = format!("{classes} classes, in {inp}, batch {batch}");
            match check_one(gpu, m, &mut rng, batch, classes, inp).await {
                Ok(c) => c.to_vec(),
                Err(e) => vec![Tally::broken("nll head", shape, e)],
            }
        }));
    }
    all.push(Box::pin(async move {
        let set = check_set(gpu, m).await;
        vec![set.unwrap_or_else(|e| Tally::broken("nll head set", "2 models", e))]
    }));
    together(all).await
}

/// The loss and logits' gradient [batch, classes] of the first `labels.len()` columns of
/// H^T [in, bp] in f64 (cpu::linear_forward, log_softmax, nll_loss_grad), and how far the
/// device's f32 logits may be from the exact ones (the summation bound), which widens the
/// tolerances.
fn reference(
    at: LayerAt,
    params: &[f32],
    (h, bp): (&[f32], usize),
    labels: &[u8],
) -> (f64, Vec<f64>, f64) {
    let (batch, classes, inp) = (labels.len(), at.out, at.inp);
    let w: Vec<f32> = (0..classes)
        .flat_map(|c| params[at.w_off + c * at.ldw..][..inp].to_vec())
        .collect();
    let bias = params[at.b_off..at.b_off + classes].to_vec();
    let x = transpose(h, inp, bp, bp)[..batch * inp].to_vec();
    let logits = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut z = vec![0f64; batch * classes];
        cpu::linear_forward(x, w, b, &mut z, batch, (inp, classes), false);
        z
    };
    let z = logits(&wide(&x), &wide(&w), &wide(&bias));
    let scale = logits(&wide_abs(&x), &wide_abs(&w), &wide_abs(&bias));
    let extra = 2.0 * sum_tolerance(inp, scale.iter().cloned().fold(0.0, f64::max));
    let (loss, dz) = cpu::nll_loss_grad(&cpu::log_softmax(&z, classes), labels, classes);
    (loss, dz, extra)
}

async fn check_one(
    gpu: &Gpu,
    m: &Modules,
    rng: &mut Rng,
    batch: usize,
    classes: usize,
    inp: usize,
) -> Result<[Check; 2]> {
    let bp = pad4(batch);
    let n = 3 * batch;
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut order);
    let layout = DeviceLayout::new(&Arch::mlp(3, &[inp], classes));
    let at = layout.layers[1];
    let params = random(rng, layout.len, -1.0, 1.0);
    let h = random(rng, inp * bp, -1.0, 1.0);
    let (pb, hb) = (buffer(gpu, "params", &params), buffer(gpu, "H^T", &h));
    let (lb, ob) = (buffer(gpu, "labels", &labels), buffer(gpu, "order", &order));
    let steps = steps_buffer(gpu, n, batch, no_corrections);
    let grad = buffer(gpu, "grad", &vec![f32::NAN; classes * bp]);
    let losses = buffer(gpu, "losses", &[f32::NAN; 3]);
    let head = NllHead {
        at,
        bp,
        params: &pb,
        h: &hb,
        labels: &lb,
        order: &ob,
        steps: &steps,
        grad: &grad,
        losses: &losses,
        steps_per_epoch: 3,
        axis: ModelAxis::ONE,
    };
    run_dispatch(gpu, &head.dispatch(gpu, m, "nll head")?, 2)?;
    let got_loss: Vec<f32> = read(gpu, &losses, 3).await?;
    let got: Vec<f32> = read(gpu, &grad, classes * bp).await?;

    let lab: Vec<u8> = (0..batch)
        .map(|b| labels[order[2 * batch + b] as usize] as u8)
        .collect();
    let (loss, dz, extra) = reference(at, &params, (&h, bp), &lab);

    let shape = format!("{classes} classes, in {inp}, batch {batch}");
    let mut tl = Tally::new("nll head loss", shape.clone());
    // exp and log are accurate to a few ulp; the batch mean adds `batch` roundings.
    tl.close(
        || "the step's loss".into(),
        got_loss[2] as f64,
        loss,
        1e-5 * loss + extra,
    );
    if !(got_loss[0].is_nan() && got_loss[1].is_nan()) {
        tl.fail("wrote another step's loss".into());
    }
    let mut tg = Tally::new("nll head gradient", shape);
    for b in 0..bp {
        for c in 0..classes {
            let want = if b < batch { dz[b * classes + c] } else { 0.0 };
            // a difference of values up to 1/batch, each within a few ulp
            let tol = (1e-6 + extra) / batch as f64;
            tg.close(|| format!("dz[{b},{c}]"), got[c * bp + b] as f64, want, tol);
        }
    }
    Ok([tl.done(), tg.done()])
}

/// nll_samples against cpu::log_softmax and cpu::nll_loss_grad on the GPU's logits.
pub fn check_fused(case: &FusedCase, o: &FusedOutputs) -> Check {
    let mut t = Tally::new("fused log-softmax+nll loss+grad", case.shape());
    let last = *o.rows.last().unwrap();
    let (c, ld, valid) = (last.out as usize, pad4(last.out as usize), case.valid());
    let z = block(&o.acts, last.y_off as usize, (valid, ld, c));
    let start = case.step * case.batch;
    let labels: Vec<u8> = case.order[start..start + valid]
        .iter()
        .map(|&s| case.data.labels[s as usize])
        .collect();
    let logp = cpu::log_softmax(&z, c);
    let (_, want) = cpu::nll_loss_grad(&logp, &labels, c);
    let zmax = z.iter().fold(0f64, |m, v| m.max(v.abs()));
    let g = 1.0 / valid as f64;
    // log-softmax in f32 is good to a few ulp of the largest logit; the gradient carries it
    // scaled by g.
    let tol = 64.0 * f32::EPSILON as f64 * (1.0 + zmax);
    let dz = block(&o.dz, last.dz_off as usize, (o.bp, ld, c));
    for b in 0..o.bp {
        for k in 0..c {
            let w = if b < valid { want[b * c + k] } else { 0.0 };
            t.close(|| format!("dZ[{b},{k}]"), dz[b * c + k], w, tol * g);
        }
        let w = match b < valid {
            true => -logp[b * c + labels[b] as usize],
            false => 0.0,
        };
        t.close(|| format!("loss[{b}]"), o.sample_loss[b] as f64, w, tol);
    }
    if !padding_is_zero(&o.dz, last.dz_off as usize, (o.bp, ld, c)) {
        t.fail("dZ's padding classes are not zero".into());
    }
    t.done()
}

/// One model of [`check_set`]: its parameters (device layout), H^T [in, bp] and order.
struct SetModel {
    params: Vec<f32>,
    h: Vec<f32>,
    order: Vec<u32>,
}

/// Two models side by side at the third step of an epoch, each with its own parameters, H^T
/// and order (`O_STRIDE` apart), losses interleaved `[steps, models]`: each model's gradient
/// and loss bit for bit what the kernel computes for it alone (which `check_one` holds to
/// the CPU twin).
async fn check_set(gpu: &Gpu, m: &Modules) -> Result<Check> {
    let (batch, classes, inp) = (7, 10, 13);
    let (bp, n) = (pad4(batch), 3 * batch);
    let mut rng = Rng::new(13, 2);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    let layout = DeviceLayout::new(&Arch::mlp(3, &[inp], classes));
    let models: Vec<SetModel> = (0..2)
        .map(|_| {
            let mut order: Vec<u32> = (0..n as u32).collect();
            rng.shuffle(&mut order);
            SetModel {
                params: random(&mut rng, layout.len, -1.0, 1.0),
                h: random(&mut rng, inp * bp, -1.0, 1.0),
                order,
            }
        })
        .collect();
    let run = async |set: &[SetModel]| -> Result<(Vec<f32>, Vec<f32>)> {
        let k = set.len();
        let cat =
            |f: fn(&SetModel) -> &Vec<f32>| set.iter().flat_map(f).copied().collect::<Vec<_>>();
        let order: Vec<u32> = set.iter().flat_map(|s| s.order.clone()).collect();
        let (pb, hb) = (
            buffer(gpu, "params", &cat(|s| &s.params)),
            buffer(gpu, "H^T", &cat(|s| &s.h)),
        );
        let (lb, ob) = (buffer(gpu, "labels", &labels), buffer(gpu, "order", &order));
        let steps = steps_buffer(gpu, n, batch, no_corrections);
        let grad = buffer(gpu, "grad", &vec![f32::NAN; k * classes * bp]);
        let losses = buffer(gpu, "losses", &vec![f32::NAN; 3 * k]);
        let head = NllHead {
            at: layout.layers[1],
            bp,
            params: &pb,
            h: &hb,
            labels: &lb,
            order: &ob,
            steps: &steps,
            grad: &grad,
            losses: &losses,
            steps_per_epoch: 3,
            axis: ModelAxis {
                models: k,
                params: layout.len,
                order: if k > 1 { n } else { 0 },
            },
        };
        run_dispatch(gpu, &head.dispatch(gpu, m, "nll head set")?, 2)?;
        let got = read(gpu, &grad, k * classes * bp).await?;
        Ok((got, read(gpu, &losses, 3 * k).await?))
    };
    let (grads, losses) = run(&models).await?;
    let mut t = Tally::new(
        "nll head set",
        format!("{classes} classes, in {inp}, batch {batch}, 2 models"),
    );
    for (k, model) in models.iter().enumerate() {
        let (grad, loss) = run(std::slice::from_ref(model)).await?;
        let g = grads[k * grad.len()..(k + 1) * grad.len()].iter();
        if !g.zip(&grad).all(|(a, b)| a.to_bits() == b.to_bits()) {
            t.fail(format!("model {k}: the gradient differs from its own run"));
        }
        if losses[2 * models.len() + k].to_bits() != loss[2].to_bits() {
            t.fail(format!("model {k}: the loss differs from its own run"));
        }
    }
    Ok(t.done())
}
