//! Where a plan becomes a schedule: the one place that matches on [`Schedule`]. Both schedule
//! modules (`gpu::layered`, `gpu::fused`) offer the same four functions; the backend and the
//! evaluator call them through here.

use anyhow::Result;

use crate::gpu::buffers::{Built, Split, StepInputs, Verdicts, Weights};
use crate::gpu::device::Gpu;
use crate::gpu::ops::Modules;
use crate::gpu::plan::{Plan, Schedule};
use crate::gpu::{fused, layered};

/// A schedule's side of a run: its training step, its evaluation, and its evaluation's batch.
pub struct Schedules {
    pub plan: Plan,
    training: fn(&Gpu, &Modules, &Weights<'_>, &StepInputs<'_>) -> Result<Built>,
    evaluation: fn(&Gpu, &Modules, &Weights<'_>, &Split, &Verdicts<'_>) -> Result<Built>,
    evaluation_batch: fn(&Gpu, &Weights<'_>, usize, usize) -> usize,
    evaluation_batch_in_training: fn(usize) -> usize,
}

impl Schedules {
    pub fn of(plan: Plan) -> Schedules {
        match plan.schedule {
            Schedule::Layered => Schedules {
                plan,
                training: layered::training,
                evaluation: layered::evaluation,
                evaluation_batch: layered::evaluation_batch,
                evaluation_batch_in_training: layered::evaluation_batch_in_training,
            },
            Schedule::Fused => Schedules {
                plan,
                training: fused::training,
                evaluation: fused::evaluation,
                evaluation_batch: fused::evaluation_batch,
                evaluation_batch_in_training: fused::evaluation_batch_in_training,
            },
        }
    }

    /// The dispatches of one training step, and the buffers only they use.
    pub fn training(
        &self,
        gpu: &Gpu,
        m: &Modules,
        w: &Weights<'_>,
        s: &StepInputs<'_>,
    ) -> Result<Built> {
        (self.training)(gpu, m, w, s)
    }

    /// The dispatches of one evaluation step over `split` (of `split.batch` samples).
    pub fn evaluation(
        &self,
        gpu: &Gpu,
        m: &Modules,
        w: &Weights<'_>,
        split: &Split,
        v: &Verdicts<'_>,
    ) -> Result<Built> {
        (self.evaluation)(gpu, m, w, split, v)
    }

    /// Samples per evaluation step of the models of `w` when `batch` are asked for on a split
    /// of `n` (fewer where the batch's buffers would pass the adapter's binding limit).
    pub fn evaluation_batch(&self, gpu: &Gpu, w: &Weights<'_>, batch: usize, n: usize) -> usize {
        (self.evaluation_batch)(gpu, w, batch, n)
    }

    /// The batch evaluation asks for while a run trains in batches of `training_batch`.
    pub fn evaluation_batch_in_training(&self, training_batch: usize) -> usize {
        (self.evaluation_batch_in_training)(training_batch)
    }
}
