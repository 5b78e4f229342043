//! Where a plan becomes a schedule: the one place that matches on [`Schedule`] to build one.
//! Both schedule modules (`gpu::layered`, `gpu::fused`) offer the same four functions; the
//! backend and the evaluator call them through here. (`gpu::tune` picks the fused plans to
//! try smaller per-sample workgroups on, and `gpu::selftest` the schedules' checks to run, by
//! comparing with a `Schedule`; neither builds one.)

use anyhow::{Result, ensure};

use crate::gpu::buffers::{Built, Split, StepInputs, Verdicts, Weights};
use crate::gpu::device::Gpu;
use crate::gpu::ops::Modules;
use crate::gpu::plan::{Cut, Plan, Schedule};
use crate::gpu::{fused, layered, net};

/// Whether `w` is a model of the tutorial's kind, which `gpu::layered` runs; any other list is
/// `gpu::net`'s. The fused schedule runs only the tutorial's kind: both its kernels walk a
/// table of Linear layers (layer_table.wgsl), so a convolution there would be a second
/// convolution kernel inside the per-sample dispatch and a second weight-gradient tile in the
/// update, where the layered schedule runs every layer kind from its one WGSL home.
fn mlp(w: &Weights<'_>, plan: Plan) -> Result<bool> {
    let mlp = w.layout.arch.mlp_sizes().is_some();
    ensure!(
        mlp || plan.cut == Cut::Layered,
        "--schedule fused runs Linear layers with ReLU between them, not {}; use --schedule \
         layered (or auto)",
        crate::flags::arch_string(&w.layout.arch)
    );
    Ok(mlp)
}

/// A schedule's side of a run: its training step, its evaluation, and its evaluation's batch.
pub struct Schedules {
    pub plan: Plan,
}

impl Schedules {
    pub fn of(plan: Plan) -> Schedules {
        Schedules { plan }
    }

    /// The dispatches of one training step, and the buffers only they use.
    pub fn training(
        &self,
        gpu: &Gpu,
        m: &Modules,
        w: &Weights<'_>,
        s: &StepInputs<'_>,
    ) -> Result<Built> {
        match (self.plan.cut, mlp(w, self.plan)?) {
            (Cut::Layered, true) => layered::training(gpu, m, w, s),
            (Cut::Layered, false) => net::walk::training(gpu, m, w, s),
            (Cut::Fused(shape), _) => fused::training(gpu, m, shape, w, s),
        }
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
        match (self.plan.cut, mlp(w, self.plan)?) {
            (Cut::Layered, true) => layered::evaluation(gpu, m, w, split, v),
            (Cut::Layered, false) => net::walk::evaluation(gpu, m, w, split, v),
            (Cut::Fused(shape), _) => fused::evaluation(gpu, m, shape, w, split, v),
        }
    }

    /// Samples per evaluation step of the models of `w` when `batch` are asked for on a split
    /// of `n` (fewer where the batch's buffers would pass the adapter's binding limit).
    pub fn evaluation_batch(&self, gpu: &Gpu, w: &Weights<'_>, batch: usize, n: usize) -> usize {
        match self.plan.schedule() {
            Schedule::Layered => layered::evaluation_batch(gpu, w, batch, n),
            Schedule::Fused => fused::evaluation_batch(gpu, w, batch, n),
        }
    }

    /// The batch evaluation asks for while a run trains in batches of `training_batch`.
    pub fn evaluation_batch_in_training(&self, training_batch: usize) -> usize {
        match self.plan.schedule() {
            Schedule::Layered => layered::evaluation_batch_in_training(training_batch),
            Schedule::Fused => fused::evaluation_batch_in_training(training_batch),
        }
    }
}
