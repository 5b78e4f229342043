//! `train` with a set of models (`--seeds`, or lists of `--lr` or `--momentum`): what differs
//! from a single run is the header's model line, the closing table with one row per model and
//! the mean ± standard deviation, and one model file per model.

use std::path::Path;

use anyhow::Result;

use mnist_wgpu::data::Normalize;
use mnist_wgpu::modelfile;
use mnist_wgpu::recipe::Recipe;
use mnist_wgpu::recipe::recipe_extras;
use mnist_wgpu::recorder::Recorder;
use mnist_wgpu::sweep::{Sweep, floats_string, seeds_string};
use mnist_wgpu::train::{Backend, EpochReport, Eval, Spread, TestFigures};

/// The header's model line's hyper-parameters: `lr 0.003 | momentum 0.9 | seeds 1-10` (SGD),
/// `adam | lr 0.001,0.003 | seeds 1-10`, then what the set's recipe `r` changes besides.
pub fn hyper_words(sweep: &Sweep, r: &Recipe, normalize: Normalize) -> String {
    let lrs = floats_string(&sweep.lrs);
    let seeds = seeds_string(&sweep.seeds);
    let rest = recipe_extras(r, normalize);
    match r.optimizer.name() {
        "sgd" => format!(
            "lr {lrs} | momentum {} | seeds {seeds}{rest}",
            floats_string(&sweep.momenta)
        ),
        name => format!("{name} | lr {lrs} | seeds {seeds}{rest}"),
    }
}

/// Each model's final training loss and test figures.
pub type Finals = Vec<(f64, TestFigures)>;

/// Each model's last figures, from the last epoch this invocation trained.
pub fn finals(last: &EpochReport) -> Finals {
    last.models
        .iter()
        .map(|m| {
            (
                m.loss,
                m.test.expect("a set is evaluated after every epoch"),
            )
        })
        .collect()
}

/// The figures of a set resumed after its last epoch: each model's last training loss from
/// its metrics, its test figures evaluated now.
pub fn finals_resumed(recorder: &Recorder, evals: &[Eval]) -> Finals {
    let metrics = recorder.per_model();
    let loss = |k: usize| {
        metrics
            .get(k)
            .and_then(|m| m.last())
            .map_or(f64::NAN, |r| r.train_loss)
    };
    evals
        .iter()
        .enumerate()
        .map(|(k, ev)| (loss(k), TestFigures::of(ev)))
        .collect()
}

/// The closing table: one row per model (seed, lr, momentum, final training loss, test loss
/// and accuracy), then the mean ± sample standard deviation and the range.
pub fn table(recipes: &[Recipe], rows: &Finals) -> String {
    let mut out = format!(
        "{:>5}  {:>6}  {:>8}  {:>8}  {:>10}  {:>9}  {:>13}\n",
        "model", "seed", "lr", "momentum", "train loss", "test loss", "test accuracy"
    );
    for (k, (r, (loss, t))) in recipes.iter().zip(rows).enumerate() {
        let figures = match loss.is_finite() {
            true => format!(
                "{loss:>10.4}  {:>9.4}  {:>11.2} %",
                t.loss,
                100.0 * t.accuracy
            ),
            false => format!("{:>10}  {:>9}  {:>13}", "diverged", "-", "-"),
        };
        out += &format!(
            "{:>5}  {:>6}  {:>8}  {:>8}  {figures}\n",
            k + 1,
            r.seed,
            r.lr,
            // Only SGD has a momentum.
            match r.optimizer.name() {
                "sgd" => r.momentum().to_string(),
                _ => "-".to_string(),
            },
        );
    }
    // A diverged model's figures count in no mean.
    let alive: Vec<&(f64, TestFigures)> = rows.iter().filter(|r| r.0.is_finite()).collect();
    let gone = match rows.len() - alive.len() {
        0 => String::new(),
        n => format!(" ({n} diverged, left out)"),
    };
    let loss = Spread::of(alive.iter().map(|r| r.0));
    let test_loss = Spread::of(alive.iter().map(|r| r.1.loss));
    let acc = Spread::of(alive.iter().map(|r| 100.0 * r.1.accuracy));
    out += &format!(
        "mean ± std of {} models{gone}: training loss {:.4} ± {:.4} | test loss {:.4} ± {:.4} | \
         test accuracy {:.2} ± {:.2} % ({:.2} .. {:.2})",
        alive.len(),
        loss.mean,
        loss.std,
        test_loss.mean,
        test_loss.std,
        acc.mean,
        acc.std,
        acc.min,
        acc.max
    );
    out
}

/// What saving a set needs of the run.
pub struct SaveSet<'a> {
    pub sweep: &'a Sweep,
    pub recipes: &'a [Recipe],
    pub arch: &'a mnist_wgpu::model::Arch,
    /// The data set and its normalisation.
    pub dataset: (&'a str, mnist_wgpu::data::Normalize),
    pub init: String,
    pub quiet: bool,
}

/// Writes one model file per model, `--save`'s name with the values that vary before the
/// extension (`mnist_mlp-seed3-lr0.01.safetensors`), each with its own recipe and test figures.
pub fn save(s: &SaveSet<'_>, save: &Path, backend: &mut dyn Backend, rows: &Finals) -> Result<()> {
    let program = format!("mnist-wgpu {}", env!("CARGO_PKG_VERSION"));
    let adapter = backend.about().device.clone();
    // The one read-back of the weights in a run: every model's, model after model.
    let params = pollster::block_on(backend.params())?;
    let n = s.arch.param_count();
    let mut saved = Vec::new();
    for (k, r) in s.recipes.iter().enumerate() {
        if !rows[k].0.is_finite() {
            // Weights that are NaN are no model: say so rather than write them.
            eprintln!("not saved: {} diverged", s.sweep.tag(r));
            continue;
        }
        saved.push(k);
        let test = Some((rows[k].1.loss, rows[k].1.accuracy));
        let mut metadata =
            modelfile::training_metadata(&program, s.dataset, s.arch, r, &adapter, test);
        metadata.insert("init".into(), s.init.clone());
        metadata.insert("set".into(), s.sweep.describe().unwrap_or_default());
        let path = s.sweep.file_for(save, r);
        modelfile::save(&path, s.arch, &params[k * n..(k + 1) * n], &metadata)?;
    }
    if let (false, Some(&a), Some(&b)) = (s.quiet, saved.first(), saved.last()) {
        println!(
            "saved {} model files ({} .. {})",
            saved.len(),
            s.sweep.file_for(save, &s.recipes[a]).display(),
            s.sweep.file_for(save, &s.recipes[b]).display()
        );
    }
    Ok(())
}
