//! The command line: `mnist-wgpu train` and friends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{default_data_dir, load_mnist};
use mnist_wgpu::gpu::{AdapterQuery, Api, Gpu, GpuBackend, GpuError, trainer::check_limits};
use mnist_wgpu::model::Arch;
use mnist_wgpu::train::{Backend, Recipe, train};

#[derive(Parser)]
#[command(
    version,
    about = "Train the PyTorch MNIST tutorial's MLP with hand-written WGSL kernels through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the model on MNIST and report the test accuracy.
    Train(TrainArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeviceChoice {
    /// The best adapter wgpu finds (discrete, integrated, other, CPU-type); the CPU backend if
    /// there is none.
    Auto,
    /// A wgpu adapter, or fail.
    Gpu,
    /// The plain-Rust CPU backend.
    Cpu,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Passes over the training set.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    epochs: usize,
    /// Images per step; the last batch of an epoch may be smaller.
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 0.003, value_parser = positive_finite, allow_negative_numbers = true)]
    lr: f64,
    /// SGD momentum (PyTorch's rule, no dampening).
    #[arg(long, default_value_t = 0.9, value_parser = momentum, allow_negative_numbers = true)]
    momentum: f64,
    /// Hidden layer sizes, comma-separated; one or more.
    #[arg(long, default_value = "128,128,64,64", value_parser = hidden)]
    hidden: Hidden,
    /// Seed of the initial weights and of every epoch's shuffle.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory with the four MNIST IDX files, plain or .gz [default: the repository's assets/mnist]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Graphics API to look for adapters on [default: WGPU_BACKEND, else all native, then GL]
    #[arg(long, value_enum)]
    backend: Option<Api>,
    /// Use the adapter whose name contains this (case-insensitive) [default: WGPU_ADAPTER_NAME]
    #[arg(long)]
    adapter: Option<String>,
}

#[derive(Clone, Debug)]
struct Hidden(Vec<usize>);

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(_) => Err("expected a whole number of at least 1".into()),
    }
}

fn positive_finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("expected a finite number greater than 0".into()),
    }
}

fn momentum(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err("expected a number in [0, 1)".into()),
    }
}

fn hidden(s: &str) -> Result<Hidden, String> {
    let sizes: Result<Vec<usize>, _> = s.split(',').map(|p| at_least_one(p.trim())).collect();
    match sizes {
        Ok(v) if !v.is_empty() && v.iter().all(|&x| x <= 65536) => Ok(Hidden(v)),
        _ => Err("expected comma-separated layer sizes from 1 to 65536, e.g. 128,128,64,64".into()),
    }
}

/// A bad flag value found after parsing (it needs the adapter): exit code 2 like clap's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    // Mesa's device-select layer connects to Wayland and X11 to sort devices, which prints
    // "XDG_RUNTIME_DIR is invalid or not set" on a headless machine. We pick the adapter
    // ourselves, so switch the layer off (its documented switch) unless the user set it.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match cli.command {
        Command::Train(args) => run_train(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_train(args: TrainArgs) -> Result<()> {
    let t_start = Instant::now();
    let recipe = Recipe {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        seed: args.seed,
    };
    let query = AdapterQuery {
        api: args.backend,
        name: args.adapter.clone(),
    };
    // The device first: a batch too large for it is a usage error, before any data is read.
    let gpu = match args.device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Gpu => Some(Gpu::new(&query)?),
        DeviceChoice::Auto => match Gpu::new(&query) {
            Ok(gpu) => Some(gpu),
            Err(e @ GpuError::NoAdapter { .. }) => {
                eprintln!("warning: {e}; training on the CPU backend instead");
                None
            }
            Err(e) => return Err(e.into()),
        },
    };
    // MNIST's 28x28 inputs and 60,000 training images are the contract: check the adapter's
    // limits with them before reading any data.
    let arch = Arch::new(28 * 28, &args.hidden.0, mnist_wgpu::data::CLASSES);
    if let Some(gpu) = &gpu {
        check_limits(gpu, &arch, recipe.batch_size, 60_000).map_err(UsageError)?;
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let mnist = load_mnist(&data_dir)
        .with_context(|| format!("loading MNIST from {}", data_dir.display()))?;
    if mnist.train.pixels() != arch.input() {
        anyhow::bail!(
            "{}: images are {}x{}, the model takes 28x28",
            data_dir.display(),
            mnist.train.rows,
            mnist.train.cols
        );
    }
    let params = arch.init(recipe.seed);
    let n_train = mnist.train.len();

    let mut backend: Box<dyn Backend> = match gpu {
        Some(gpu) => {
            check_limits(&gpu, &arch, recipe.batch_size, n_train).map_err(UsageError)?;
            Box::new(GpuBackend::new(
                gpu,
                &arch,
                recipe.clone(),
                &params,
                &mnist.train,
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
    println!("adapter: {}", backend.describe());
    println!(
        "model: {} | {} parameters | batch {} | lr {} | momentum {} | seed {} | start-up {:.2} s",
        arch.sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        arch.param_count(),
        recipe.batch_size,
        recipe.lr,
        recipe.momentum,
        recipe.seed,
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
    Ok(())
}
