//! The recipe and the epoch loop, shared by the GPU and CPU backends.

use std::ops::Range;

use anyhow::Result;
use web_time::Instant;

use crate::recipe::Recipe;
pub use crate::report::{EpochReport, Eval, ModelEpoch, Spread, TestFigures, accuracy_line};
use crate::rng::epoch_order;

/// What a backend or an evaluator runs on, for the header, `bench` and the page: a plain value,
/// fixed when it is built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct About {
    /// One line naming the device and, on a GPU, the plan: `NAME | Vulkan | Cpu | kernels:
    /// subgroup | schedule: fused`.
    pub device: String,
    /// `layered` or `fused`, or `cpu` for the CPU backend.
    pub schedule: &'static str,
    /// The kernel family (`cpu` for the CPU backend).
    pub kernels: &'static str,
    /// The fused schedule's per-sample workgroups, `2x32`, where they are not the default
    /// (`gpu::plan::PerSample`); None otherwise.
    pub per_sample: Option<String>,
    /// What `--schedule auto` chose and from what, one line (None where nothing was measured).
    pub tuned: Option<String>,
    /// The milliseconds auto measured for what it chose, now or when it cached it (per
    /// training step; per evaluation for an evaluator).
    pub step_ms: Option<f64>,
    /// Dispatches one training step (or evaluation step) takes; 0 for the CPU.
    pub dispatches_per_step: usize,
    /// The device buffers and their sizes in bytes (none for the CPU).
    pub buffers: Vec<(String, u64)>,
    /// Whether `run_steps` only queues the work (a GPU), so that the loop can queue the next
    /// interval before it awaits this one's losses; the CPU computes in `run_steps` and gains
    /// nothing from it.
    pub queues_work: bool,
}

/// Evaluation of a set of models (one, or several trained side by side) on one test set, on
/// either backend. The methods that wait for the device are async: awaited in the browser,
/// blocked on natively (`pollster::block_on`).
#[async_trait::async_trait(?Send)]
pub trait Evaluate {
    fn about(&self) -> &About;
    /// How many models it holds; every per-model value below comes model by model, in this
    /// order.
    fn models(&self) -> usize {
        1
    }
    /// Accuracy and loss of every model over the whole test set.
    async fn evaluate_all(&mut self) -> Result<Vec<Eval>>;
    /// The same for a backend that holds one model.
    async fn evaluate(&mut self) -> Result<Eval> {
        let mut all = self.evaluate_all().await?;
        anyhow::ensure!(all.len() == 1, "evaluate: {} models, not one", all.len());
        Ok(all.remove(0))
    }
}

/// What the epoch loop drives; steps index the batches of the current epoch's orders. Each
/// backend evaluates its current weights too ([`Evaluate`]). Per-model values are flat and
/// model-major, as the device buffers hold them: model k's at `k * len .. (k + 1) * len`.
#[async_trait::async_trait(?Send)]
pub trait Backend: Evaluate {
    /// Hands over epoch `epoch`'s orders of the training set, one per model: [models, n]; the
    /// epoch also sets each model's learning rate (StepLR) and the optimizer's step count.
    fn begin_epoch(&mut self, epoch: usize, orders: &[u32]) -> Result<()>;
    /// Trains on the batches `steps` of the epoch; their losses stay with the backend.
    async fn run_steps(&mut self, steps: Range<usize>) -> Result<()>;
    /// The mean loss of each of the batches `steps` of each model: [models, steps.len()] (a
    /// read-back on the GPU).
    async fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>>;
    /// The weights, PyTorch's flat order, model after model: [models, param_count]
    /// (checkpoints).
    async fn params(&mut self) -> Result<Vec<f32>>;
    /// The optimizer's state tensors (`Optimizer::state_names`, in order), each as `params`.
    async fn state(&mut self) -> Result<Vec<Vec<f32>>>;
    /// Replaces the weights and the optimizer's state of every model (resuming a run).
    fn load_state(&mut self, params: &[f32], state: &[Vec<f32>]) -> Result<()>;
    /// Times every kernel of the training steps from now on, where the device can; false
    /// where it cannot (no timestamp queries, or no GPU).
    fn start_profile(&mut self) -> bool {
        false
    }
    /// The per-kernel times gathered since `start_profile`.
    fn profile(&self) -> Option<crate::profile::Profile> {
        None
    }
}

/// Where a run stands: the next step of `epoch`, with each model's losses of the steps before
/// it in that epoch and the training seconds. A checkpoint stores this.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Position {
    pub epoch: usize,
    pub step: usize,
    /// losses: [models][steps so far]; empty at the start of an epoch
    pub losses: Vec<Vec<f32>>,
    pub seconds: f64,
}

/// What an observer sees after every interval of steps.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub epoch: usize,
    pub epochs: usize,
    /// Steps done in this epoch, of `steps`.
    pub step: usize,
    pub steps: usize,
    /// Each model's losses of this epoch's steps so far.
    pub losses: &'a [Vec<f32>],
    /// Training seconds of this epoch so far.
    pub seconds: f64,
    pub batch_size: usize,
}

impl Progress<'_> {
    /// The mean over the models of each one's running loss of this epoch so far.
    pub fn running_loss(&self) -> f64 {
        let models = self.losses.len().max(1) as f64;
        let sum: f64 = self.losses.iter().flatten().map(|&l| l as f64).sum();
        sum / (self.losses.iter().map(Vec::len).max().unwrap_or(0).max(1) as f64 * models)
    }

    /// Training images per second of this epoch so far, over all models.
    pub fn images_per_s(&self) -> f64 {
        let models = self.losses.len().max(1);
        (self.step * self.batch_size * models) as f64 / self.seconds.max(1e-9)
    }
}

/// A non-finite loss: the run stops, its last checkpoint stays as it was.
#[derive(Debug, thiserror::Error)]
#[error(
    "the training loss{model} became {value} at step {at} of epoch {epoch} (steps {first} to \
     {last} were read back together): the run diverged; try a smaller --lr (this run used {lr})"
)]
pub struct Diverged {
    pub epoch: usize,
    /// The interval read back, and the first step in it with a non-finite loss.
    pub first: usize,
    pub last: usize,
    pub at: usize,
    pub value: f32,
    pub lr: f64,
    /// ` of model 3 (seed 4, lr 0.01, momentum 0.9)` in a set; empty for a single run.
    pub model: String,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    Finished,
    /// Stopped on request after an interval; the run continues from here.
    Interrupted(Position),
}

/// Hooks into the epoch loop: progress display, per-epoch output and checkpoints, and
/// interruption.
#[async_trait::async_trait(?Send)]
pub trait Observer {
    /// After every interval; a page yields to its event loop here, so that it stays
    /// responsive and a Stop is seen.
    async fn progress(&mut self, _p: &Progress<'_>) {}
    /// After each epoch (and its evaluation), with the backend, so that a checkpoint can be
    /// written before the next epoch starts.
    async fn epoch_done(
        &mut self,
        _backend: &mut dyn Backend,
        _report: &EpochReport,
    ) -> Result<()> {
        Ok(())
    }
    /// Asked after every interval; true stops the run there.
    fn interrupted(&self) -> bool {
        false
    }
}

/// How the loop runs.
#[derive(Clone, Copy, Debug)]
pub struct LoopOptions {
    /// Steps between loss read-backs (progress, divergence and interruption checks).
    pub interval: usize,
    /// Evaluate the test set after every epoch.
    pub evaluate: bool,
}

/// The recipes of a set of models trained side by side: one or more, the same epochs, batch
/// size and optimizer, each its own seed, learning rate and momentum.
pub fn check_set(recipes: &[Recipe]) -> Result<()> {
    let Some(r0) = recipes.first() else {
        anyhow::bail!("a set of models needs at least one recipe");
    };
    let same = recipes.iter().all(|r| {
        r.epochs == r0.epochs
            && r.batch_size == r0.batch_size
            && r.optimizer.name() == r0.optimizer.name()
    });
    anyhow::ensure!(
        same,
        "the models of a set share their epochs, batch size and optimizer"
    );
    Ok(())
}

/// Every model's order of epoch `epoch`, model-major: [models, n]; file order for a recipe
/// that does not shuffle.
pub fn epoch_orders(recipes: &[Recipe], epoch: usize, n: usize) -> Vec<u32> {
    recipes
        .iter()
        .flat_map(|r| match r.shuffle {
            true => epoch_order(r.seed, epoch, n),
            false => (0..n as u32).collect(),
        })
        .collect()
}

/// Runs the recipes (one per model of the backend, side by side) from `start` to the end of
/// their epochs, or until the observer asks to stop. The order of epoch `e` depends only on
/// (seed, e), so a run resumed from a position repeats exactly what the uninterrupted run would
/// have done.
pub async fn run(
    backend: &mut dyn Backend,
    recipes: &[Recipe],
    n_train: usize,
    start: Position,
    options: LoopOptions,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    check_set(recipes)?;
    anyhow::ensure!(
        backend.models() == recipes.len(),
        "{} recipes for a backend of {} models",
        recipes.len(),
        backend.models()
    );
    let recipe = &recipes[0];
    let steps = recipe.steps_per_epoch(n_train);
    let mut pos = start;
    pos.losses.resize(recipes.len(), Vec::new());
    while pos.epoch < recipe.epochs {
        backend.begin_epoch(pos.epoch, &epoch_orders(recipes, pos.epoch, n_train))?;
        let epoch = Epoch {
            recipes,
            steps,
            interval: options.interval.max(1),
        };
        if epoch.run(backend, &mut pos, observer).await? {
            return Ok(Outcome::Interrupted(pos));
        }
        let tests = match options.evaluate {
            true => Some(backend.evaluate_all().await?),
            false => None,
        };
        let models = std::mem::take(&mut pos.losses)
            .into_iter()
            .enumerate()
            .map(|(k, step_losses)| ModelEpoch {
                loss: step_losses.iter().map(|&l| l as f64).sum::<f64>() / steps as f64,
                step_losses,
                test: tests.as_ref().map(|t| TestFigures::of(&t[k])),
            })
            .collect();
        let report = EpochReport {
            epoch: pos.epoch,
            seconds: pos.seconds,
            images_per_s: (n_train * recipes.len()) as f64 / pos.seconds,
            models,
        };
        pos = Position {
            epoch: pos.epoch + 1,
            losses: vec![Vec::new(); recipes.len()],
            ..Default::default()
        };
        observer.epoch_done(backend, &report).await?;
        if pos.epoch < recipe.epochs && observer.interrupted() {
            return Ok(Outcome::Interrupted(pos));
        }
    }
    Ok(Outcome::Finished)
}

/// How a set names one of its models: ` of model 3 (seed 4, lr 0.01, momentum 0.9)`; empty for
/// a single run.
pub fn model_words(recipes: &[Recipe], k: usize) -> String {
    match recipes.len() {
        1 => String::new(),
        _ => {
            let r = &recipes[k];
            format!(
                " of model {} (seed {}, lr {}, momentum {})",
                k + 1,
                r.seed,
                r.lr,
                r.momentum()
            )
        }
    }
}

/// The steps of one epoch, in intervals.
struct Epoch<'a> {
    recipes: &'a [Recipe],
    steps: usize,
    interval: usize,
}

impl Epoch<'_> {
    fn next(&self, from: usize) -> Range<usize> {
        from..(from + self.interval).min(self.steps)
    }

    /// The losses of `now` (model-major, as read back) added to each model's. A non-finite
    /// loss ends a single run; in a set it marks that model diverged (its epoch loss is then
    /// not finite, and the reports leave it out), and the run ends only when every model has.
    fn take_losses(&self, pos: &mut Position, now: &Range<usize>, losses: &[f32]) -> Result<()> {
        let len = now.len();
        let (mut first, mut all) = (None, true);
        for (k, chunk) in losses
            .chunks(len.max(1))
            .enumerate()
            .take(self.recipes.len())
        {
            match chunk.iter().position(|l| !l.is_finite()) {
                Some(i) => {
                    first.get_or_insert(Diverged {
                        epoch: pos.epoch,
                        first: now.start,
                        last: now.end - 1,
                        at: now.start + i,
                        value: chunk[i],
                        lr: self.recipes[k].lr,
                        model: model_words(self.recipes, k),
                    });
                }
                None => all = false,
            }
            pos.losses[k].extend_from_slice(chunk);
        }
        match first {
            Some(d) if all => Err(d.into()),
            _ => Ok(()),
        }
    }

    /// Runs the epoch's steps from `pos.step` on, interval by interval; true when the observer
    /// stopped it before its end. On a GPU one interval is read back while the next runs: it
    /// is queued before the losses before it are awaited, unless a stop was asked for (a stop
    /// then takes effect after the interval already queued).
    async fn run(
        &self,
        backend: &mut dyn Backend,
        pos: &mut Position,
        observer: &mut dyn Observer,
    ) -> Result<bool> {
        let (recipe, steps) = (&self.recipes[0], self.steps);
        let mut clock = Instant::now();
        let mut queued = None;
        while pos.step < steps {
            let now = match queued.take() {
                Some(r) => r,
                None => {
                    let r = self.next(pos.step);
                    backend.run_steps(r.clone()).await?;
                    r
                }
            };
            if backend.about().queues_work && now.end < steps && !observer.interrupted() {
                let r = self.next(now.end);
                backend.run_steps(r.clone()).await?;
                queued = Some(r);
            }
            let losses = backend.losses(now.clone()).await?;
            // Wall-clock time: what the observer does in between overlaps the device's work.
            pos.seconds += clock.elapsed().as_secs_f64();
            clock = Instant::now();
            self.take_losses(pos, &now, &losses)?;
            pos.step = now.end;
            let progress = Progress {
                epoch: pos.epoch,
                epochs: recipe.epochs,
                step: pos.step,
                steps,
                losses: &pos.losses,
                seconds: pos.seconds,
                batch_size: recipe.batch_size,
            };
            observer.progress(&progress).await;
            if pos.step < steps && queued.is_none() && observer.interrupted() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Runs every epoch of `recipes` (one per model) from the start, calling `on_epoch` after each;
/// no evaluation between epochs. Returns every epoch's report.
pub async fn train(
    backend: &mut dyn Backend,
    recipes: &[Recipe],
    n_train: usize,
    on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>> {
    struct Collect<F> {
        on_epoch: F,
        reports: Vec<EpochReport>,
    }
    #[async_trait::async_trait(?Send)]
    impl<F: FnMut(&EpochReport)> Observer for Collect<F> {
        async fn epoch_done(&mut self, _: &mut dyn Backend, r: &EpochReport) -> Result<()> {
            (self.on_epoch)(r);
            self.reports.push(r.clone());
            Ok(())
        }
    }
    let mut c = Collect {
        on_epoch,
        reports: Vec::new(),
    };
    let options = LoopOptions {
        interval: usize::MAX,
        evaluate: false,
    };
    run(
        backend,
        recipes,
        n_train,
        Position::default(),
        options,
        &mut c,
    )
    .await?;
    Ok(c.reports)
}
