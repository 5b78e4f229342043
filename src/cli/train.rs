//! `mnist-wgpu train`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data;
use mnist_wgpu::fetch::Need;
use mnist_wgpu::gpu::{GpuBackend, trainer::check_limits};
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile::{self, DEFAULT_MODEL_FILE};
use mnist_wgpu::train::{Backend, Recipe, train};

use super::args::{
    Hidden, RunArgs, UsageError, arch_string, at_least_one, data_dir, hidden, momentum,
    open_device, positive_finite,
};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Passes over the training set.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub epochs: usize,
    /// Images per step; the last batch of an epoch may be smaller.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 0.003, value_parser = positive_finite, allow_negative_numbers = true)]
    pub lr: f64,
    /// SGD momentum (PyTorch's rule, no dampening).
    #[arg(long, default_value_t = 0.9, value_parser = momentum, allow_negative_numbers = true)]
    pub momentum: f64,
    /// Hidden layer sizes, comma-separated; one or more [default: 128,128,64,64, or those of --init]
    #[arg(long, value_parser = hidden)]
    pub hidden: Option<Hidden>,
    /// Seed of the initial weights and of every epoch's shuffle.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Start from the weights in this model file (safetensors) instead of a random initialisation.
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// Where to save the trained model (safetensors, PyTorch's state_dict keys).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODEL_FILE)]
    pub save: PathBuf,
    /// Do not save the trained model.
    #[arg(long, conflicts_with = "save")]
    pub no_save: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// A save path that cannot work is found before training, not after.
fn check_save_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(UsageError(format!(
            "--save {}: is a directory; give a file name such as {}",
            path.display(),
            path.join(DEFAULT_MODEL_FILE).display()
        ))
        .into());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(UsageError(format!(
            "--save {}: the directory {} does not exist",
            path.display(),
            parent.display()
        ))
        .into());
    }
    Ok(())
}

pub fn run(args: TrainArgs) -> Result<()> {
    let t_start = Instant::now();
    let recipe = Recipe {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        seed: args.seed,
    };
    if !args.no_save {
        check_save_path(&args.save)?;
    }
    // MNIST's 28x28 inputs and 10 classes are the contract; a model file must fit them.
    let (input, classes) = (28 * 28, mnist_wgpu::data::CLASSES);
    let init = match &args.init {
        Some(path) => Some(modelfile::load(path, input, classes)?),
        None => None,
    };
    let arch = match (&init, &args.hidden) {
        (Some(m), Some(h)) if m.arch.sizes[1..m.arch.sizes.len() - 1] != h.0[..] => {
            return Err(UsageError(format!(
                "--hidden {}: the model in --init {} has hidden sizes {}",
                h.0.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                args.init.as_ref().unwrap().display(),
                m.arch.sizes[1..m.arch.sizes.len() - 1]
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .into());
        }
        (Some(m), _) => m.arch.clone(),
        (None, h) => Arch::new(
            input,
            h.as_ref().map_or(&[128, 128, 64, 64][..], |h| &h.0),
            classes,
        ),
    };
    // The device first: a batch too large for it is a usage error, before any data is read.
    let gpu = open_device(&args.run)?;
    if let Some(gpu) = &gpu {
        check_limits(gpu, &arch, recipe.batch_size, 60_000).map_err(UsageError)?;
    }
    let kind = args.run.dataset;
    let dir = data_dir(&args.run, Need::All)?;
    let mnist = data::load(&dir, kind)
        .with_context(|| format!("loading {} from {}", kind.name(), dir.display()))?;
    if mnist.train.pixels() != arch.input() {
        anyhow::bail!(
            "{}: images are {}x{}, the model takes 28x28",
            dir.display(),
            mnist.train.rows,
            mnist.train.cols
        );
    }
    let params = match init {
        Some(m) => m.params,
        None => arch.init(recipe.seed),
    };
    let n_train = mnist.train.len();

    let mut backend: Box<dyn Backend> = match gpu {
        Some(gpu) => {
            check_limits(&gpu, &arch, recipe.batch_size, n_train).map_err(UsageError)?;
            Box::new(GpuBackend::new(
                gpu,
                &arch,
                recipe.clone(),
                &params,
                Some(&mnist.train),
                &mnist.test,
            )?)
        }
        None => Box::new(CpuBackend::new(
            arch.clone(),
            recipe.clone(),
            params,
            mnist.train,
            mnist.test,
        )),
    };
    let adapter = backend.describe();
    println!("adapter: {adapter}");
    println!(
        "model: {} | {} parameters | batch {} | lr {} | momentum {} | seed {} | init {} | start-up {:.2} s",
        arch_string(&arch),
        arch.param_count(),
        recipe.batch_size,
        recipe.lr,
        recipe.momentum,
        recipe.seed,
        args.init
            .as_ref()
            .map_or("random".to_string(), |p| p.display().to_string()),
        t_start.elapsed().as_secs_f64()
    );
    let t_train = Instant::now();
    train(backend.as_mut(), &recipe, n_train, |r| {
        println!("{}", r.line())
    })?;
    let train_s = t_train.elapsed().as_secs_f64();
    let t_eval = Instant::now();
    let ev = backend.evaluate()?;
    println!(
        "Training time {:.1} s | test loss {:.4} | evaluation {:.2} s",
        train_s,
        ev.mean_loss(),
        t_eval.elapsed().as_secs_f64()
    );
    println!(
        "Model Accuracy {:.2} %   ({}/{})",
        100.0 * ev.accuracy(),
        ev.correct,
        ev.total
    );
    if !args.no_save {
        let hidden = &arch.sizes[1..arch.sizes.len() - 1];
        let metadata: BTreeMap<String, String> = [
            (
                "program",
                format!("mnist-wgpu {}", env!("CARGO_PKG_VERSION")),
            ),
            ("dataset", kind.name().to_string()),
            ("sizes", arch_string(&arch)),
            (
                "hidden",
                hidden
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("epochs", recipe.epochs.to_string()),
            ("batch_size", recipe.batch_size.to_string()),
            ("lr", recipe.lr.to_string()),
            ("momentum", recipe.momentum.to_string()),
            ("seed", recipe.seed.to_string()),
            (
                "init",
                args.init
                    .as_ref()
                    .map_or("random".to_string(), |p| p.display().to_string()),
            ),
            ("accuracy", format!("{:.4}", ev.accuracy())),
            ("test_loss", format!("{:.6}", ev.mean_loss())),
            ("adapter", adapter),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // The one read-back of the weights in a run.
        let params = backend.params()?;
        modelfile::save(&args.save, &arch, &params, &metadata)?;
        println!(
            "saved {} ({} tensors, {:.0} KB)",
            args.save.display(),
            2 * arch.layers(),
            std::fs::metadata(&args.save).map_or(0, |m| m.len()) as f64 / 1024.0
        );
    }
    Ok(())
}
