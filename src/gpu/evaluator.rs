//! Evaluation of a model on the test split, on the device: its own batch size, activations and
//! dispatches, reading the parameters it is given.

use anyhow::Result;

use crate::data::Dataset;
use crate::gpu::context::Gpu;
use crate::gpu::fused::{FusedActs, FusedSample, SampleOutputs, normalisation_uniform};
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::program::{Op, Schedule, read_back, staging, step_stride, submit};
use crate::gpu::step::{evaluation_batch, forward_products};
use crate::gpu::tensors::{Activations, Split, normalisation_table, zeros};
use crate::model::Arch;
use crate::train::Eval;

/// Where an evaluation's activations come from.
pub enum Batching<'a> {
    /// Its own, for batches of this many images.
    Own(usize),
    /// Those of training and its forward products (no second set of pipelines, which a
    /// software adapter compiles at several MB each). Results do not depend on the batch:
    /// every sample's column is computed alone, in the same order.
    Shared {
        acts: &'a Activations,
        forward: &'a [Op],
    },
}

pub struct Evaluator {
    split: Split,
    /// Its own activations' bytes (0 when it shares training's).
    own_bytes: u64,
    /// correct: [test len] u32, is_correct | predicted << 8; log_probs: [test len, classes]
    correct: wgpu::Buffer,
    log_probs: wgpu::Buffer,
    staging: wgpu::Buffer,
    ops: Vec<Op>,
    labels: Vec<u8>,
    classes: usize,
    batch: usize,
}

impl Evaluator {
    /// Evaluates `test` with the parameters in `params` (device layout).
    pub fn new(
        gpu: &Gpu,
        m: &Modules,
        (arch, layout, params): (&Arch, &DeviceLayout, &wgpu::Buffer),
        test: &Dataset,
        batching: Batching<'_>,
    ) -> Result<Evaluator> {
        let classes = arch.output();
        if gpu.schedule == Schedule::Fused {
            let Batching::Own(batch) = batching else {
                anyhow::bail!("the fused schedule's evaluation has activations of its own");
            };
            return Evaluator::fused(gpu, m, (arch, layout, params), test, batch);
        }
        let (acts, forward, shared) = match batching {
            Batching::Own(batch) => {
                let acts =
                    Activations::new(gpu, arch, pad4(batch.clamp(1, test.len().max(1))), false);
                let forward = forward_products(gpu, m, (layout, params), &acts)?;
                (Some(acts), forward, None)
            }
            Batching::Shared { acts, forward } => (None, forward.to_vec(), Some(acts)),
        };
        let a = acts.as_ref().or(shared).expect("activations");
        // bp columns per step, of which the last step may use fewer
        let batch = a.bp.min(test.len().max(1));
        let split = Split::new(gpu, "test", test, batch);
        let table = normalisation_table(gpu);
        let correct = zeros(gpu, "eval correct", test.len());
        let log_probs = zeros(gpu, "eval log-probs", test.len() * classes);
        let ops = evaluation_batch(
            gpu,
            m,
            (&split, &table, a),
            &forward,
            (classes, &correct, &log_probs),
        )?;
        Ok(Evaluator {
            staging: staging(gpu, "eval read-back", test.len() * classes * 4),
            split,
            own_bytes: acts.as_ref().map_or(0, |a| a.bytes()),
            correct,
            log_probs,
            ops,
            labels: test.labels.clone(),
            classes,
            batch,
        })
    }

    /// The fused schedule's evaluation: one dispatch per batch of `batch` (gather, forward and
    /// verdicts per sample).
    fn fused(
        gpu: &Gpu,
        m: &Modules,
        (arch, layout, params): (&Arch, &DeviceLayout, &wgpu::Buffer),
        test: &Dataset,
        batch: usize,
    ) -> Result<Evaluator> {
        let classes = arch.output();
        let batch = batch.clamp(1, test.len().max(1));
        let acts = FusedActs::new(gpu, layout, pad4(batch), false)?;
        let split = Split::new(gpu, "test", test, batch);
        let norm = normalisation_uniform(gpu);
        let correct = zeros(gpu, "eval correct", test.len());
        let log_probs = zeros(gpu, "eval log-probs", test.len() * classes);
        let op = FusedSample {
            params,
            acts: &acts,
            split: &split,
            norm: &norm,
            outputs: SampleOutputs::Eval {
                correct: &correct,
                log_probs: &log_probs,
            },
        }
        .op(gpu, m, "evaluate (per sample)")?;
        Ok(Evaluator {
            staging: staging(gpu, "eval read-back", test.len() * classes * 4),
            split,
            own_bytes: acts.bytes(),
            correct,
            log_probs,
            ops: vec![op],
            labels: test.labels.clone(),
            classes,
            batch,
        })
    }

    /// Accuracy, loss, confusion matrix and every sample's log-probabilities.
    pub async fn run(&self, gpu: &Gpu) -> Result<Eval> {
        let n = self.split.len;
        let steps = n.div_ceil(self.batch);
        let mut s = 0;
        while s < steps {
            let e = (s + 500).min(steps);
            submit(gpu, "evaluate", &self.ops, s..e, step_stride(gpu))?;
            s = e;
        }
        let correct: Vec<u32> = read_back(gpu, &self.correct, 0, n, &self.staging).await?;
        let log_probs: Vec<f32> =
            read_back(gpu, &self.log_probs, 0, n * self.classes, &self.staging).await?;
        let mut ev = Eval::new(self.classes);
        for (i, (&c, logp)) in correct
            .iter()
            .zip(log_probs.chunks(self.classes))
            .enumerate()
        {
            let label = self.labels[i] as usize;
            ev.add((c >> 8) as usize, label, -logp[label] as f64);
        }
        ev.log_probs = log_probs;
        Ok(ev)
    }

    /// Its dispatches (for the tests).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The buffers it holds, for the memory listing.
    pub fn bytes(&self) -> u64 {
        self.split.bytes()
            + self.own_bytes
            + self.correct.size()
            + self.log_probs.size()
            + self.staging.size()
    }
}
