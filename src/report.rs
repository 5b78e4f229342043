//! What a run reports: a model's test-set results, each epoch's figures per model, and their
//! spread across a set of models.

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

/// The tutorial's closing line, as `train`, `eval` and the page print it.
pub fn accuracy_line(correct: usize, total: usize) -> String {
    let percent = 100.0 * correct as f64 / total.max(1) as f64;
    format!("Model Accuracy {percent:.2} %   ({correct}/{total})")
}

/// Test-set figures of one epoch.
#[derive(Clone, Copy, Debug)]
pub struct TestFigures {
    pub loss: f64,
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
}

impl TestFigures {
    pub fn of(ev: &Eval) -> TestFigures {
        TestFigures {
            loss: ev.mean_loss(),
            accuracy: ev.accuracy(),
            correct: ev.correct,
            total: ev.total,
        }
    }
}

/// One model's figures of one epoch.
#[derive(Clone, Debug)]
pub struct ModelEpoch {
    /// Mean of the epoch's per-batch losses, summed in f64 as the tutorial's `running_loss`.
    pub loss: f64,
    /// Every batch's loss, in order.
    pub step_losses: Vec<f32>,
    /// The test set after the epoch, when evaluated.
    pub test: Option<TestFigures>,
}

impl ModelEpoch {
    /// A model of a set whose training loss became NaN or infinite: it trains on (its own
    /// buffers), but no figure of it counts.
    pub fn diverged(&self) -> bool {
        !self.loss.is_finite()
    }

    /// Its test figures, unless it diverged.
    pub fn fair_test(&self) -> Option<TestFigures> {
        self.test.filter(|_| !self.diverged())
    }
}

#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    /// Seconds of training (not evaluation) in this epoch, all models together.
    pub seconds: f64,
    /// Training images per second over all models.
    pub images_per_s: f64,
    /// Each model's figures, in the set's order (one for a single run).
    pub models: Vec<ModelEpoch>,
}

impl EpochReport {
    /// The first (for a single run, the only) model's figures.
    pub fn first(&self) -> &ModelEpoch {
        &self.models[0]
    }

    /// The tutorial's words first, then the test figures, time and throughput: one
    /// fixed-width line per epoch. For a set, the mean and the spread across models, and the
    /// range of the test accuracy.
    pub fn line(&self) -> String {
        let time = format!(
            "   ({:5.1} s, {:5.1}k img/s)",
            self.seconds,
            self.images_per_s / 1000.0
        );
        if let [m] = &self.models[..] {
            let test = match m.test {
                Some(t) => format!(
                    " | test loss {:.4} | test accuracy {:6.2} %",
                    t.loss,
                    100.0 * t.accuracy
                ),
                None => String::new(),
            };
            return format!(
                "Epoch {} - Training loss: {:.4}{test}{time}",
                self.epoch, m.loss
            );
        }
        let alive: Vec<&ModelEpoch> = self.models.iter().filter(|m| !m.diverged()).collect();
        let loss = Spread::of(alive.iter().map(|m| m.loss));
        let tests: Option<Vec<TestFigures>> = alive.iter().map(|m| m.test).collect();
        let gone = match self.models.len() - alive.len() {
            0 => String::new(),
            n => format!(" | {n} of {} diverged", self.models.len()),
        };
        let test = match tests {
            Some(t) if !t.is_empty() => {
                let acc = Spread::of(t.iter().map(|t| 100.0 * t.accuracy));
                format!(
                    " | test accuracy {:.2} ± {:.2} % ({:.2} .. {:.2})",
                    acc.mean, acc.std, acc.min, acc.max
                )
            }
            _ => String::new(),
        };
        format!(
            "Epoch {} - Training loss: {:.4} ± {:.4}{test}{gone}{time}",
            self.epoch, loss.mean, loss.std
        )
    }
}

/// The mean, the sample standard deviation (0 for one value) and the range of a set of
/// models' figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl Iterator<Item = f64>) -> Spread {
        let v: Vec<f64> = values.collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = match v.len() {
            0 | 1 => 0.0,
            k => v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1) as f64,
        };
        Spread {
            mean,
            std: var.sqrt(),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}
