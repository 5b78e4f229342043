//! Evaluation of one test batch: the first largest logit against the label, and every
//! sample's log-probabilities (shaders/evaluate.wgsl). CPU twins: `cpu::argmax`,
//! `cpu::log_softmax`.

use anyhow::{Result, ensure};

use crate::cpu;
use crate::gpu::check::{Check, FusedCase, FusedVerdicts, Tally, block};
use crate::gpu::check::{buffer, random, read, run_dispatch, steps_buffer, wide};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Bind, Dispatch, DispatchDesc, need, no_corrections};
use crate::gpu::layout::{layer_rows, pad4};
use crate::gpu::ops::{Modules, WG};
use crate::rng::Rng;

pub struct Evaluate<'a> {
    pub classes: usize,
    pub bp: usize,
    /// samples in the split
    pub len: usize,
    /// logits: Z^T [classes, bp]
    pub logits: &'a wgpu::Buffer,
    /// labels, order: [len] u32; steps: the split's step uniforms
    pub labels: &'a wgpu::Buffer,
    pub order: &'a wgpu::Buffer,
    pub steps: &'a wgpu::Buffer,
    /// correct: [len] u32, is_correct | predicted << 8
    pub correct: &'a wgpu::Buffer,
    /// log_probs: [len, classes]
    pub log_probs: &'a wgpu::Buffer,
    /// Models side by side: logits, correct and log_probs per model, one after another.
    pub models: usize,
}

impl Evaluate<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        ensure!(self.classes > 0 && self.bp > 0, "{label}: empty evaluation");
        let k = self.models;
        need(label, "logits", self.logits, k * self.classes * self.bp * 4)?;
        need(label, "labels", self.labels, self.len * 4)?;
        need(label, "order", self.order, self.len * 4)?;
        need(label, "correct", self.correct, k * self.len * 4)?;
        let floats = k * self.len * self.classes;
        need(label, "log-probs", self.log_probs, floats * 4)?;
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.evaluate,
                entry: "evaluate",
                constants: &[
                    ("CLASSES", self.classes as f64),
                    ("BP", self.bp as f64),
                    ("WG", WG as f64),
                    ("SPLIT", self.len as f64),
                ],
                bindings: &[
                    (0, Bind::Read(self.logits)),
                    (1, Bind::Read(self.labels)),
                    (2, Bind::Read(self.order)),
                    (3, Bind::Step(self.steps)),
                    (4, Bind::ReadWrite(self.correct)),
                    (5, Bind::ReadWrite(self.log_probs)),
                ],
                groups: [(self.bp as u32).div_ceil(WG), 1, k as u32],
            },
        )
    }
}

/// A first step of 33 samples out of 40 for two models side by side, each with its own
/// logits: the first largest logit wins a tie, as in the tutorial's `list.index(max(...))`,
/// each model's verdicts land in its own place, and nothing past the step is written.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let shape = "10 classes, batch 33, 2 models";
    match check_one(gpu, m).await {
        Ok(c) => c,
        Err(e) => vec![Tally::broken("evaluate", shape, e)],
    }
}

async fn check_one(gpu: &Gpu, m: &Modules) -> Result<Vec<Check>> {
    let mut rng = Rng::new(13, 0);
    let (batch, classes, n, models) = (33usize, 10usize, 40usize, 2usize);
    let bp = pad4(batch);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    let order: Vec<u32> = (0..n as u32).collect();
    let mut logits = random(&mut rng, models * classes * bp, -4.0, 4.0);
    for k in 0..models {
        logits[k * classes * bp + 3 * bp] = 9.0;
        logits[k * classes * bp + 5 * bp] = 9.0;
    }
    let (zb, lb, ob) = (
        buffer(gpu, "logits", &logits),
        buffer(gpu, "labels", &labels),
        buffer(gpu, "order", &order),
    );
    let steps = steps_buffer(gpu, n, batch, no_corrections);
    let correct = buffer(gpu, "correct", &vec![u32::MAX; models * n]);
    let logp_b = buffer(gpu, "log-probs", &vec![f32::NAN; models * n * classes]);
    let e = Evaluate {
        classes,
        bp,
        len: n,
        logits: &zb,
        labels: &lb,
        order: &ob,
        steps: &steps,
        correct: &correct,
        log_probs: &logp_b,
        models,
    };
    run_dispatch(gpu, &e.dispatch(gpu, m, "evaluate")?, 0)?;
    let got_c: Vec<u32> = read(gpu, &correct, models * n).await?;
    let got_l: Vec<f32> = read(gpu, &logp_b, models * n * classes).await?;
    let shape = format!("{classes} classes, batch {batch}, {models} models");
    let mut tp = Tally::new("evaluate argmax", shape.clone());
    let mut tl = Tally::new("evaluate log-softmax", shape);
    for k in 0..models {
        let z = &logits[k * classes * bp..][..classes * bp];
        let (c, l) = (
            &got_c[k * n..][..n],
            &got_l[k * n * classes..][..n * classes],
        );
        compare((&mut tp, &mut tl), k, (z, bp, batch), &labels, (c, l));
    }
    Ok(vec![tp.done(), tl.done()])
}

/// Model `k`'s verdicts `correct` [n] and log-probabilities [n, classes] against the twin on
/// its logits Z^T [classes, bp] and the labels, the first `batch` samples in the step.
fn compare(
    (tp, tl): (&mut Tally, &mut Tally),
    k: usize,
    (logits, bp, batch): (&[f32], usize, usize),
    labels: &[u32],
    (got_c, got_l): (&[u32], &[f32]),
) {
    let classes = logits.len() / bp;
    for b in 0..batch {
        let z = wide(&(0..classes).map(|c| logits[c * bp + b]).collect::<Vec<_>>());
        let pred = cpu::argmax(&z);
        let lp = cpu::log_softmax(&z, classes);
        let want = (pred == labels[b] as usize) as u32 | (pred as u32) << 8;
        if got_c[b] != want {
            tp.fail(format!(
                "model {k} sample {b}: got {:#x}, expected {want:#x}",
                got_c[b]
            ));
        }
        for c in 0..classes {
            let tol = 1e-5 * (1.0 + lp[c].abs());
            tl.close(
                || format!("model {k} logp[{b},{c}]"),
                got_l[b * classes + c] as f64,
                lp[c],
                tol,
            );
        }
    }
    if got_c[0] >> 8 != 3 {
        tp.fail(format!(
            "model {k}: a tie went to a later class, not the first"
        ));
    }
    if got_c[batch..].iter().any(|&c| c != u32::MAX)
        || got_l[batch * classes..].iter().any(|v| !v.is_nan())
    {
        tp.fail(format!("model {k}: wrote past the step"));
    }
}

/// eval_sample against cpu::argmax and cpu::log_softmax on the logits the GPU wrote.
pub fn check_fused(case: &FusedCase, v: &FusedVerdicts) -> Check {
    let (layout, bp, n) = (&case.layout, pad4(case.batch), case.data.len());
    let classes = case.arch.output();
    let (got_c, got_lp, a) = (&v.correct, &v.log_probs, &v.acts);
    let last = *layer_rows(layout, bp).0.last().unwrap();
    let (start, valid) = (case.step * case.batch, case.valid());
    let z = block(a, last.y_off as usize, (valid, pad4(classes), classes));
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
    t.done()
}
