//! The fused schedule's kernels against their CPU twins, one check per operation: a step of
//! each dispatch on random weights, momentum and images, then every tensor it wrote compared
//! with the operation's twin in `cpu` (in f64) computed from the tensors the dispatch read, so
//! that a fault is named by the operation that made it and errors do not compound. Shapes
//! include widths that are no multiple of 4 or 8, a last partial batch, a batch past a
//! workgroup's samples, a batch of one, and the tutorial's model.

use anyhow::Result;

use crate::cpu;
use crate::data::Dataset;
use futures_util::future::try_join3;

use crate::gpu::check::{Check, Tally, buffer, read, run_op, sum_tolerance, unpad, wide, wide_abs};
use crate::gpu::check::{Pending, together};
use crate::gpu::context::Gpu;
use crate::gpu::fused::{
    FusedActs, FusedSample, FusedUpdate, LayerRow, SampleOutputs, layer_rows, normalisation_uniform,
};
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::tensors::{Split, zeros};
use crate::model::Arch;
use crate::rng::Rng;

const LR: f64 = 0.003;
const MU: f64 = 0.9;

/// One step of one model on random data.
struct Case {
    arch: Arch,
    layout: DeviceLayout,
    data: Dataset,
    order: Vec<u32>,
    batch: usize,
    step: usize,
    /// params, momentum: PyTorch's flat order
    params: Vec<f32>,
    momentum: Vec<f32>,
}

impl Case {
    fn new(seed: u64, (rows, cols): (usize, usize), hidden: &[usize], classes: usize) -> Case {
        let mut rng = Rng::new(seed, 7);
        let arch = Arch::new(rows * cols, hidden, classes);
        let n = 40;
        let data = Dataset {
            images: (0..n * rows * cols).map(|_| rng.below(256) as u8).collect(),
            labels: (0..n).map(|_| rng.below(classes as u64) as u8).collect(),
            rows,
            cols,
        };
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        let momentum = (0..arch.param_count())
            .map(|_| rng.uniform(-0.1, 0.1))
            .collect();
        Case {
            layout: DeviceLayout::new(&arch),
            params: arch.init(seed),
            arch,
            data,
            order,
            batch: 0,
            step: 0,
            momentum,
        }
    }

    fn valid(&self) -> usize {
        self.batch.min(self.data.len() - self.step * self.batch)
    }

    fn shape(&self) -> String {
        let sizes: Vec<String> = self.arch.sizes.iter().map(|s| s.to_string()).collect();
        format!(
            "{} batch {} (valid {})",
            sizes.join("-"),
            self.batch,
            self.valid()
        )
    }
}

/// What the two dispatches wrote, read back.
struct Outputs {
    rows: Vec<LayerRow>,
    bp: usize,
    /// acts, dz: every layer's rows; sample_loss: [bp]
    acts: Vec<f32>,
    dz: Vec<f32>,
    sample_loss: Vec<f32>,
    /// params, momentum: device layout after the update; loss: the step's mean loss
    params: Vec<f32>,
    momentum: Vec<f32>,
    loss: f32,
}

/// A case: seed, image rows and columns, hidden sizes, classes, batch, the step to run.
type CaseShape = (u64, (usize, usize), &'static [usize], usize, usize, usize);

/// Every shape; each case's checks in dispatch order.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let cases: [CaseShape; 4] = [
        // widths no multiple of 4, a last partial batch of 3 in 40 columns
        (1, (7, 13), &[13, 6], 5, 37, 1),
        // 36 columns: a workgroup holds 4 of its 8 samples
        (2, (7, 13), &[9], 10, 33, 0),
        (3, (5, 3), &[5, 3], 3, 1, 2),
        (4, (28, 28), &[128, 128, 64, 64], 10, 32, 0),
    ];
    let mut all: Pending<'_> = Vec::new();
    for (seed, image, hidden, classes, batch, step) in cases {
        all.push(Box::pin(async move {
            let mut case = Case::new(seed, image, hidden, classes);
            case.batch = batch;
            case.step = step;
            let mut out = match run(gpu, m, &case).await {
                Ok(o) => compare(&case, &o),
                Err(e) => vec![Tally::broken("fused step", case.shape(), e)],
            };
            out.push(
                check_eval(gpu, m, &case)
                    .await
                    .unwrap_or_else(|e| Tally::broken("fused evaluate", case.shape(), e)),
            );
            out
        }));
    }
    let mut out = together(all).await;
    // Which flavour ran, as the layered checks name their family.
    for c in &mut out {
        c.kernel = format!("{} ({})", c.kernel, m.kernels.fused().name());
    }
    out
}

/// Both dispatches of step `case.step`, with NaN in every row buffer beforehand (so that an
/// element left unwritten fails).
async fn run(gpu: &Gpu, m: &Modules, case: &Case) -> Result<Outputs> {
    let (layout, bp) = (&case.layout, pad4(case.batch));
    let params = buffer(gpu, "params", &layout.to_device(&case.params));
    let momentum = buffer(gpu, "momentum", &layout.to_device(&case.momentum));
    let split = Split::new(gpu, "fused check", &case.data, case.batch);
    gpu.queue
        .write_buffer(&split.order, 0, bytemuck::cast_slice(&case.order));
    let acts = FusedActs::new(gpu, layout, bp, true)?;
    for b in [&acts.acts, &acts.dz, &acts.sample_loss] {
        let nan = vec![f32::NAN; b.size() as usize / 4];
        gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(&nan));
    }
    let norm = normalisation_uniform(gpu);
    let steps = case.data.len().div_ceil(case.batch);
    let losses = zeros(gpu, "losses", steps);
    let sample = FusedSample {
        params: &params,
        acts: &acts,
        split: &split,
        norm: &norm,
        outputs: SampleOutputs::Train,
    };
    run_op(gpu, &sample.op(gpu, m, "fused per-sample")?, case.step)?;
    let (rows, _) = layer_rows(layout, bp);
    let floats = |b: &wgpu::Buffer| b.size() as usize / 4;
    let (acts_v, dz, sample_loss) = try_join3(
        read(gpu, &acts.acts, floats(&acts.acts)),
        read(gpu, &acts.dz, floats(&acts.dz)),
        read(gpu, &acts.sample_loss, bp),
    )
    .await?;
    let update = FusedUpdate {
        acts: &acts,
        params: &params,
        momentum: &momentum,
        steps: &split.steps,
        losses: &losses,
        steps_per_epoch: steps,
        lr: LR,
        mu: MU,
    };
    run_op(gpu, &update.op(gpu, m, "fused update")?, case.step)?;
    let (losses, params, momentum): (Vec<f32>, _, _) = try_join3(
        read(gpu, &losses, steps),
        read(gpu, &params, layout.len),
        read(gpu, &momentum, layout.len),
    )
    .await?;
    Ok(Outputs {
        rows,
        bp,
        acts: acts_v,
        dz,
        sample_loss,
        params,
        momentum,
        loss: losses[case.step],
    })
}

/// `rows` rows of `cols` (stride `ld`) at `off` of `v`, in f64.
fn block(v: &[f32], off: usize, (rows, ld, cols): (usize, usize, usize)) -> Vec<f64> {
    wide(&unpad(&v[off..], rows, ld, cols))
}

/// The padding columns of `rows` rows at `off` are zero.
fn padding_is_zero(v: &[f32], off: usize, (rows, ld, cols): (usize, usize, usize)) -> bool {
    (0..rows).all(|r| {
        v[off + r * ld + cols..off + (r + 1) * ld]
            .iter()
            .all(|&x| x == 0.0)
    })
}

fn compare(case: &Case, o: &Outputs) -> Vec<Check> {
    let mut out = vec![check_gather(case, o)];
    for l in 0..case.arch.layers() {
        out.push(check_forward(case, o, l));
    }
    out.push(check_nll(case, o));
    for l in (1..case.arch.layers()).rev() {
        out.push(check_input_grad(case, o, l));
    }
    for l in 0..case.arch.layers() {
        out.push(check_update(case, o, l));
    }
    out
}

/// gather_samples against cpu::gather: exact, zero past `valid` and in the padding.
fn check_gather(case: &Case, o: &Outputs) -> Check {
    let mut t = Tally::new("fused gather+normalise", case.shape());
    let (start, valid) = (case.step * case.batch, case.valid());
    let want = cpu::gather(&case.data, &case.order[start..start + valid]);
    let r0 = o.rows[0];
    let (p, ld) = (case.data.pixels(), r0.ldw as usize);
    let got = block(&o.acts, r0.x_off as usize, (o.bp, ld, p));
    for c in 0..o.bp {
        for i in 0..p {
            let w = if c < valid {
                want[c * p + i] as f64
            } else {
                0.0
            };
            t.close(|| format!("X[{c},{i}]"), got[c * p + i], w, 0.0);
        }
    }
    if !padding_is_zero(&o.acts, r0.x_off as usize, (o.bp, ld, p)) {
        t.fail("X's padding pixels are not zero".into());
    }
    t.done()
}

/// The weight [out, in] and bias of layer `l` of PyTorch-order `params`, in f64 and |f64|.
fn weights(case: &Case, params: &[f32], l: usize) -> [Vec<f64>; 4] {
    let (i, out) = case.arch.dims(l);
    let (wo, bo) = case.arch.offsets(l);
    let (w, b) = (&params[wo..wo + out * i], &params[bo..bo + out]);
    [wide(w), wide(b), wide_abs(w), wide_abs(b)]
}

/// forward_layer l against cpu::linear_forward on the layer's input as the GPU wrote it.
fn check_forward(case: &Case, o: &Outputs, l: usize) -> Check {
    let mut t = Tally::new(format!("fused forward {l}"), case.shape());
    let (r, bp) = (o.rows[l], o.bp);
    let (i, out) = case.arch.dims(l);
    let x = &o.acts[r.x_off as usize..];
    let (xs, xa) = (
        block(x, 0, (bp, r.ldw as usize, i)),
        wide_abs(&unpad(x, bp, r.ldw as usize, i)),
    );
    let [w, b, wa, ba] = weights(case, &case.params, l);
    let relu = l + 1 < case.arch.layers();
    let (mut want, mut scale) = (vec![0f64; bp * out], vec![0f64; bp * out]);
    cpu::linear_forward(&xs, &w, &b, &mut want, bp, (i, out), relu);
    cpu::linear_forward(&xa, &wa, &ba, &mut scale, bp, (i, out), false);
    let ld = pad4(out);
    let got = block(&o.acts, r.y_off as usize, (bp, ld, out));
    for k in 0..bp * out {
        let tol = sum_tolerance(i, scale[k]);
        t.close(
            || format!("Y[{},{}]", k / out, k % out),
            got[k],
            want[k],
            tol,
        );
    }
    if !padding_is_zero(&o.acts, r.y_off as usize, (bp, ld, out)) {
        t.fail("Y's padding features are not zero".into());
    }
    t.done()
}

/// nll_samples against cpu::log_softmax and cpu::nll_loss_grad on the GPU's logits.
fn check_nll(case: &Case, o: &Outputs) -> Check {
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

/// input_grad_layer l against cpu::linear_backward and cpu::relu_backward on the GPU's dZ_l
/// and X_l.
fn check_input_grad(case: &Case, o: &Outputs, l: usize) -> Check {
    let mut t = Tally::new(format!("fused input grad {l}"), case.shape());
    let (r, below, bp) = (o.rows[l], o.rows[l - 1], o.bp);
    let (i, out) = case.arch.dims(l);
    let (ld_o, ld_i) = (pad4(out), r.ldw as usize);
    let dy = &o.dz[r.dz_off as usize..];
    let (dys, dya) = (
        block(dy, 0, (bp, ld_o, out)),
        wide_abs(&unpad(dy, bp, ld_o, out)),
    );
    let [w, _, wa, _] = weights(case, &case.params, l);
    let x = block(&o.acts, r.x_off as usize, (bp, ld_i, i));
    let grads = |dy: &[f64], w: &[f64]| {
        let (mut dw, mut db, mut dx) = (vec![0f64; out * i], vec![0f64; out], vec![0f64; bp * i]);
        cpu::linear_backward(dy, &x, w, &mut dw, &mut db, Some(&mut dx), bp, (i, out));
        dx
    };
    let (mut want, scale) = (grads(&dys, &w), grads(&dya, &wa));
    cpu::relu_backward(&mut want, &x);
    let got = block(&o.dz, below.dz_off as usize, (bp, ld_i, i));
    for k in 0..bp * i {
        let tol = sum_tolerance(out, scale[k]);
        t.close(|| format!("dX[{},{}]", k / i, k % i), got[k], want[k], tol);
    }
    if !padding_is_zero(&o.dz, below.dz_off as usize, (bp, ld_i, i)) {
        t.fail("dX's padding features are not zero".into());
    }
    t.done()
}

/// update_tile over layer l against cpu::linear_backward (dW, db over the valid samples) and
/// cpu::sgd; W's and b's padding stays zero.
fn check_update(case: &Case, o: &Outputs, l: usize) -> Check {
    let mut t = Tally::new(format!("fused weight grad+sgd {l}"), case.shape());
    let (r, valid) = (o.rows[l], case.valid());
    let (i, out) = case.arch.dims(l);
    let dy = &o.dz[r.dz_off as usize..];
    let x = &o.acts[r.x_off as usize..];
    let (ld_o, ld_i) = (pad4(out), r.ldw as usize);
    let (dys, xs) = (
        block(dy, 0, (valid, ld_o, out)),
        block(x, 0, (valid, ld_i, i)),
    );
    let (dya, xa) = (
        wide_abs(&unpad(dy, valid, ld_o, out)),
        wide_abs(&unpad(x, valid, ld_i, i)),
    );
    let grads = |dy: &[f64], x: &[f64]| {
        let (mut dw, mut db) = (vec![0f64; out * i], vec![0f64; out]);
        cpu::linear_backward(dy, x, &[], &mut dw, &mut db, None, valid, (i, out));
        [dw, db].concat()
    };
    let (g, gs) = (grads(&dys, &xs), grads(&dya, &xa));
    let (wo, _) = case.arch.offsets(l);
    let range = wo..wo + out * (i + 1);
    let (p0, v0) = (
        wide(&case.params[range.clone()]),
        wide(&case.momentum[range]),
    );
    let (mut p, mut v) = (p0.clone(), v0.clone());
    cpu::sgd(&mut p, &mut v, &g, LR, MU);
    let got_p = case.layout.from_device(&o.params)[wo..wo + out * (i + 1)].to_vec();
    let got_v = case.layout.from_device(&o.momentum)[wo..wo + out * (i + 1)].to_vec();
    let eps = f32::EPSILON as f64;
    for k in 0..g.len() {
        let tg = sum_tolerance(valid, gs[k]);
        let tv = tg + 2.0 * eps * (MU * v0[k].abs() + g[k].abs());
        let tp = 2.0 * eps * (p0[k].abs() + LR * v[k].abs()) + LR * tv;
        t.close(|| format!("v[{k}]"), got_v[k] as f64, v[k], tv);
        t.close(|| format!("p[{k}]"), got_p[k] as f64, p[k], tp);
    }
    let lay = case.layout.layers[l];
    let padding = (0..out)
        .flat_map(|o| lay.w_off + o * lay.ldw + i..lay.w_off + (o + 1) * lay.ldw)
        .chain(lay.b_off + out..lay.b_off + pad4(out));
    if padding
        .into_iter()
        .any(|k| o.params[k] != 0.0 || o.momentum[k] != 0.0)
    {
        t.fail("the padding of W or b is no longer zero".into());
    }
    if l == 0 {
        // The step's mean loss, from the per-sample losses in order.
        let s: Vec<f64> = wide(&o.sample_loss[..valid]);
        let want = s.iter().sum::<f64>() / valid as f64;
        let tol = sum_tolerance(valid, s.iter().map(|x| x.abs()).sum::<f64>() / valid as f64);
        t.close(|| "mean loss".into(), o.loss as f64, want, tol);
    }
    t.done()
}

/// eval_sample against cpu::argmax and cpu::log_softmax on the GPU's logits.
async fn check_eval(gpu: &Gpu, m: &Modules, case: &Case) -> Result<Check> {
    let (layout, bp, n) = (&case.layout, pad4(case.batch), case.data.len());
    let classes = case.arch.output();
    let params = buffer(gpu, "params", &layout.to_device(&case.params));
    let split = Split::new(gpu, "fused eval check", &case.data, case.batch);
    gpu.queue
        .write_buffer(&split.order, 0, bytemuck::cast_slice(&case.order));
    let acts = FusedActs::new(gpu, layout, bp, false)?;
    let norm = normalisation_uniform(gpu);
    let correct = buffer(gpu, "correct", &vec![u32::MAX; n]);
    let log_probs = buffer(gpu, "log-probs", &vec![f32::NAN; n * classes]);
    let op = FusedSample {
        params: &params,
        acts: &acts,
        split: &split,
        norm: &norm,
        outputs: SampleOutputs::Eval {
            correct: &correct,
            log_probs: &log_probs,
        },
    }
    .op(gpu, m, "fused evaluate")?;
    run_op(gpu, &op, case.step)?;
    let (got_c, got_lp, a): (Vec<u32>, Vec<f32>, Vec<f32>) = try_join3(
        read(gpu, &correct, n),
        read(gpu, &log_probs, n * classes),
        read(gpu, &acts.acts, acts.acts.size() as usize / 4),
    )
    .await?;
    let last = *layer_rows(layout, bp).0.last().unwrap();
    let (start, valid) = (case.step * case.batch, case.valid());
    let z = block(&a, last.y_off as usize, (valid, pad4(classes), classes));
    let logp = cpu::log_softmax(&z, classes);
    let zmax = z.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut t = Tally::new("fused evaluate", case.shape());
    for (b, &s) in case.order[start..start + valid].iter().enumerate() {
        let s = s as usize;
        let best = cpu::argmax(&z[b * classes..(b + 1) * classes]);
        let want = (best == case.data.labels[s] as usize) as u32 | (best as u32) << 8;
        t.close(
            || format!("correct[{s}]"),
            got_c[s] as f64,
            want as f64,
            0.0,
        );
        for k in 0..classes {
            let (got, w) = (got_lp[s * classes + k] as f64, logp[b * classes + k]);
            t.close(
                || format!("logp[{s},{k}]"),
                got,
                w,
                64.0 * 1.2e-7 * (1.0 + zmax),
            );
        }
    }
    let others = (0..n).filter(|&s| !case.order[start..start + valid].contains(&(s as u32)));
    if others.into_iter().any(|s| got_c[s] != u32::MAX) {
        t.fail("wrote the verdict of a sample outside the step".into());
    }
    Ok(t.done())
}
