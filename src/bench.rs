//! The benchmark behind `mnist-wgpu bench`: warm-up steps, then training steps timed the way
//! `train` runs them (submissions of 250 steps, a loss read-back after each), then timed
//! evaluations. Figures only; nothing here asserts a speed.

use std::ops::Range;

use anyhow::Result;
use web_time::Instant;

use crate::gpu::backend::STEPS_PER_SUBMIT;
use crate::model::Arch;
use crate::recipe::Recipe;
use crate::train::{Backend, epoch_orders};

/// Floating-point operations of one training step per image: the forward products, the
/// input-gradient products of every layer but the first, and the weight-gradient products,
/// two operations per multiply-add. (Bias, ReLU, softmax and SGD are a rounding error.)
pub fn flops_per_image(arch: &Arch) -> f64 {
    let all = arch.macs_per_image() as f64;
    let first = arch.layers()[0].macs(arch.input_shape()) as f64;
    2.0 * (all + (all - first) + all)
}

#[derive(Clone, Debug)]
pub struct Timing {
    pub steps: usize,
    pub seconds: f64,
    pub batch_size: usize,
    pub flops_per_image: f64,
    /// Models trained side by side in each step.
    pub models: usize,
}

impl Timing {
    /// Training images per second over all models.
    pub fn images_per_s(&self) -> f64 {
        (self.steps * self.batch_size * self.models) as f64 / self.seconds
    }
    pub fn ms_per_step(&self) -> f64 {
        1e3 * self.seconds / self.steps as f64
    }
    pub fn gflops(&self) -> f64 {
        self.images_per_s() * self.flops_per_image / 1e9
    }
}

/// Where a benchmark stands in the epochs it crosses.
struct Cursor<'a> {
    recipes: &'a [Recipe],
    n_train: usize,
    epoch: usize,
    /// The next step to submit in this epoch.
    step: usize,
    /// An interval submitted and not yet read back.
    queued: Option<Range<usize>>,
}

impl Cursor<'_> {
    /// Submits up to [`STEPS_PER_SUBMIT`] (and `limit`) steps, starting the next epoch first
    /// where this one is done.
    async fn submit(&mut self, backend: &mut dyn Backend, limit: usize) -> Result<Range<usize>> {
        let per_epoch = self.recipes[0].steps_per_epoch(self.n_train);
        if self.step == per_epoch {
            self.epoch += 1;
            self.step = 0;
            let order = epoch_orders(self.recipes, self.epoch, self.n_train);
            backend.begin_epoch(self.epoch, &order)?;
        }
        let steps = self.step..(self.step + STEPS_PER_SUBMIT.min(limit)).min(per_epoch);
        backend.run_steps(steps.clone()).await?;
        self.step = steps.end;
        Ok(steps)
    }

    /// Reads back the interval queued (or submits one of up to `limit` steps and reads it),
    /// having queued the next one (of up to `limit` steps) first when `more`, the backend
    /// queues work and the epoch has steps left, as `train` does; the number of steps read
    /// back.
    async fn interval(
        &mut self,
        backend: &mut dyn Backend,
        limit: usize,
        more: bool,
    ) -> Result<usize> {
        let now = match self.queued.take() {
            Some(r) => r,
            None => self.submit(backend, limit).await?,
        };
        let per_epoch = self.recipes[0].steps_per_epoch(self.n_train);
        if more && backend.about().queues_work && self.step < per_epoch {
            self.queued = Some(self.submit(backend, limit).await?);
        }
        let losses = backend.losses(now.clone()).await?;
        anyhow::ensure!(
            losses.iter().all(|l| l.is_finite()),
            "the loss became non-finite while benchmarking"
        );
        Ok(now.len())
    }
}

/// Trains `warmup` steps, then at least `min_steps` and about `seconds` of steps, in intervals
/// read back one behind as `train` runs them, crossing epochs as needed; `recipes` are the
/// backend's models, trained side by side. The first timed interval is `min_steps` long; each
/// later one is what the time left allows at the pace so far (at most [`STEPS_PER_SUBMIT`]),
/// so that a slow step (a large set on a software adapter) does not run 250 steps past
/// `seconds`. Returns the timing of the part after the warm-up.
pub async fn time_training(
    backend: &mut dyn Backend,
    arch: &Arch,
    recipes: &[Recipe],
    n_train: usize,
    warmup: usize,
    min_steps: usize,
    seconds: f64,
) -> Result<Timing> {
    backend.begin_epoch(0, &epoch_orders(recipes, 0, n_train))?;
    let mut at = Cursor {
        recipes,
        n_train,
        epoch: 0,
        step: 0,
        queued: None,
    };
    let mut warmed = 0;
    while warmed < warmup {
        warmed += at.interval(backend, warmup - warmed, false).await?;
    }
    let t0 = Instant::now();
    let mut steps = 0;
    let wanted = |steps: usize| steps < min_steps || t0.elapsed().as_secs_f64() < seconds;
    while at.queued.is_some() || wanted(steps) {
        let more = wanted(steps);
        let limit = match steps {
            0 => min_steps.max(1),
            _ => {
                let elapsed = t0.elapsed().as_secs_f64();
                let left = (seconds - elapsed).max(0.0);
                let fit = (left * steps as f64 / elapsed.max(1e-9)).ceil() as usize;
                fit.clamp(1, STEPS_PER_SUBMIT)
            }
        };
        steps += at.interval(backend, limit, more).await?;
    }
    Ok(Timing {
        steps,
        seconds: t0.elapsed().as_secs_f64(),
        batch_size: recipes[0].batch_size,
        flops_per_image: flops_per_image(arch),
        models: recipes.len(),
    })
}

/// The fastest of up to `repeats` evaluations of the test set, in seconds, and how many ran:
/// at least one, and no more once `seconds` have passed.
pub async fn time_evaluation(
    backend: &mut dyn Backend,
    repeats: usize,
    seconds: f64,
) -> Result<(f64, usize)> {
    let (mut best, mut runs, t0) = (f64::INFINITY, 0, Instant::now());
    while runs < repeats.max(1) && (runs == 0 || t0.elapsed().as_secs_f64() < seconds) {
        let t = Instant::now();
        backend.evaluate_all().await?;
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    Ok((best, runs))
}

/// Submissions of one training epoch as `train` runs it: the steps, in submissions of
/// [`STEPS_PER_SUBMIT`], and one loss read-back after each.
pub fn submissions_per_epoch(steps_per_epoch: usize) -> usize {
    2 * steps_per_epoch.div_ceil(STEPS_PER_SUBMIT)
}

/// Peak resident memory of this process so far, in bytes, where the OS says.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } == 0 {
            // kilobytes on Linux, bytes on macOS
            let scale = if cfg!(target_os = "macos") { 1 } else { 1024 };
            return Some(u.ru_maxrss as u64 * scale);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_the_tutorial_model() {
        let a = Arch::mlp(784, &[128, 128, 64, 64], 10);
        // forward 129,664 MACs, input gradients 129,664 - 100,352, weight gradients 129,664
        assert_eq!(
            flops_per_image(&a),
            2.0 * (129_664.0 + 29_312.0 + 129_664.0)
        );
        assert_eq!(submissions_per_epoch(1875), 16);
    }
}
