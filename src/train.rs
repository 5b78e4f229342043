//! The recipe and the epoch loop, shared by the GPU and CPU backends.

use std::ops::Range;
use std::time::Instant;

use anyhow::Result;

use crate::rng::epoch_order;

/// The tutorial's hyper-parameters.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub seed: u64,
}

impl Recipe {
    /// Batches per epoch; the last one may be partial.
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.batch_size)
    }
}

/// Test-set results: accuracy, mean NLL loss, the confusion matrix (`[label][predicted]`) and
/// every sample's log-probabilities.
#[derive(Clone, Debug, Default)]
pub struct Eval {
    pub correct: usize,
    pub total: usize,
    pub loss_sum: f64,
    pub confusion: Vec<Vec<u32>>,
    /// log_probs: [total, classes], in the order of the test set.
    pub log_probs: Vec<f32>,
}

impl Eval {
    pub fn new(classes: usize) -> Eval {
        Eval {
            confusion: vec![vec![0; classes]; classes],
            ..Default::default()
        }
    }
    pub fn add(&mut self, predicted: usize, label: usize, loss: f64) {
        self.total += 1;
        self.correct += (predicted == label) as usize;
        self.loss_sum += loss;
        if let Some(row) = self.confusion.get_mut(label)
            && let Some(c) = row.get_mut(predicted)
        {
            *c += 1;
        }
    }
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.total.max(1) as f64
    }
    /// (correct, total) of the samples whose label is `class`.
    pub fn class_counts(&self, class: usize) -> (u32, u32) {
        let row = &self.confusion[class];
        (row[class], row.iter().sum())
    }
}

/// What both backends do; steps index the batches of the current epoch's order.
pub trait Backend {
    /// One line naming the device.
    fn describe(&self) -> String;
    /// Hands over the epoch's shuffled order of the training set.
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()>;
    /// Trains on the batches `steps` of the epoch; their losses stay with the backend.
    fn run_steps(&mut self, steps: Range<usize>) -> Result<()>;
    /// The mean loss of each of the batches `steps` (a read-back on the GPU).
    fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>>;
    /// Accuracy and loss over the whole test set.
    fn evaluate(&mut self) -> Result<Eval>;
    fn params(&mut self) -> Result<Vec<f32>>;
    fn momentum(&mut self) -> Result<Vec<f32>>;
}

#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    /// Mean of the epoch's per-batch losses, summed in f64 as the tutorial's `running_loss`.
    pub loss: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Every batch's loss, in order.
    pub step_losses: Vec<f32>,
}

impl EpochReport {
    /// The tutorial's words, then time and throughput: one fixed-width line per epoch.
    pub fn line(&self) -> String {
        format!(
            "Epoch {} - Training loss: {:.4}   ({:5.1} s, {:5.1}k img/s)",
            self.epoch,
            self.loss,
            self.seconds,
            self.images_per_s / 1000.0
        )
    }
}

/// Runs `recipe.epochs` epochs over `n_train` images, calling `on_epoch` after each.
pub fn train(
    backend: &mut dyn Backend,
    recipe: &Recipe,
    n_train: usize,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Vec<EpochReport>> {
    let steps = recipe.steps_per_epoch(n_train);
    let mut reports = Vec::new();
    for epoch in 0..recipe.epochs {
        let t0 = Instant::now();
        backend.begin_epoch(&epoch_order(recipe.seed, epoch, n_train))?;
        backend.run_steps(0..steps)?;
        let step_losses = backend.losses(0..steps)?;
        let seconds = t0.elapsed().as_secs_f64();
        let loss = step_losses.iter().map(|&l| l as f64).sum::<f64>() / steps as f64;
        let report = EpochReport {
            epoch,
            loss,
            seconds,
            images_per_s: n_train as f64 / seconds,
            step_losses,
        };
        on_epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}
