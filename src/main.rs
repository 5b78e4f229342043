//! The command line: `mnist-wgpu train` and friends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{self as data, Dataset, Kind, default_data_dir, has_all_files};
use mnist_wgpu::fetch::{self, FetchConfig, Need};
use mnist_wgpu::gpu::context::pick_adapter;
use mnist_wgpu::gpu::kernels::Kernels;
use mnist_wgpu::gpu::{
    AdapterQuery, Api, Gpu, GpuBackend, GpuError, selftest, trainer::check_limits,
};
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile::{self, DEFAULT_MODEL_FILE};
use mnist_wgpu::train::{Backend, Eval, Recipe, train};

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
    /// Train the model on MNIST, report the test accuracy and save the weights.
    Train(TrainArgs),
    /// Evaluate a model file (ours or PyTorch's) on the MNIST test set.
    Eval(EvalArgs),
    /// Check every kernel against the CPU reference on this machine's adapter.
    Selftest(SelftestArgs),
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

/// Which adapter to use.
#[derive(Args, Debug)]
struct AdapterArgs {
    /// Graphics API to look for adapters on [default: WGPU_BACKEND, else all native, then GL]
    #[arg(long, value_enum)]
    backend: Option<Api>,
    /// Use the adapter whose name contains this (case-insensitive) [default: WGPU_ADAPTER_NAME]
    #[arg(long)]
    adapter: Option<String>,
}

impl AdapterArgs {
    fn query(&self) -> AdapterQuery {
        AdapterQuery {
            api: self.backend,
            name: self.adapter.clone(),
        }
    }
}

/// Where to run and on what data.
#[derive(Args, Debug)]
struct RunArgs {
    /// The data set.
    #[arg(long, value_enum, default_value_t = Kind::Mnist)]
    dataset: Kind,
    /// Directory of the four IDX files (plain or .gz); missing ones are downloaded into it
    /// [default: the repository's assets/mnist for MNIST, else the user cache directory, e.g.
    /// ~/.cache/mnist-wgpu/<dataset>]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A mirror to try before the built-in ones; it serves <URL>/<file>.gz.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Never download; a missing file is an error.
    #[arg(long)]
    offline: bool,
    /// Seconds to wait for a mirror to accept the connection.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_finite, allow_negative_numbers = true)]
    connect_timeout: f64,
    /// Seconds to wait for any read of a download before giving up on that mirror.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_finite, allow_negative_numbers = true)]
    read_timeout: f64,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    #[command(flatten)]
    adapter: AdapterArgs,
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
    /// Hidden layer sizes, comma-separated; one or more [default: 128,128,64,64, or those of --init]
    #[arg(long, value_parser = hidden)]
    hidden: Option<Hidden>,
    /// Seed of the initial weights and of every epoch's shuffle.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start from the weights in this model file (safetensors) instead of a random initialisation.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Where to save the trained model (safetensors, PyTorch's state_dict keys).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODEL_FILE)]
    save: PathBuf,
    /// Do not save the trained model.
    #[arg(long, conflicts_with = "save")]
    no_save: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// The model file: written by `mnist-wgpu train`, or by PyTorch with
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    #[arg(long, value_name = "PATH")]
    model: PathBuf,
    /// Test images per evaluation step.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    batch_size: usize,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct SelftestArgs {
    #[command(flatten)]
    adapter: AdapterArgs,
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
    // Output piped into `head` and closed early ends the program quietly, as for any Unix
    // tool, instead of a panic in println!.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
        Command::Eval(args) => run_eval(args),
        Command::Selftest(args) => run_selftest(args),
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

/// Opens the adapter `run` asks for; None means the CPU backend.
fn open_device(run: &RunArgs) -> Result<Option<Gpu>> {
    let query = run.adapter.query();
    Ok(match run.device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Gpu => Some(Gpu::new(&query)?),
        DeviceChoice::Auto => match Gpu::new(&query) {
            Ok(gpu) => Some(gpu),
            Err(e @ GpuError::NoAdapter { .. }) => {
                eprintln!("warning: {e}; running on the CPU backend instead");
                None
            }
            Err(e) => return Err(e.into()),
        },
    })
}

/// The directory that holds the data set, with the files `need` names downloaded into it
/// when they are missing.
fn data_dir(run: &RunArgs, need: Need) -> Result<PathBuf> {
    let kind = run.dataset;
    let dir = match (&run.data_dir, kind) {
        (Some(d), _) => d.clone(),
        (None, Kind::Idx) => {
            return Err(UsageError(
                "--dataset idx: needs --data-dir DIR holding the four IDX files".into(),
            )
            .into());
        }
        (None, Kind::Mnist) if has_all_files(&default_data_dir(), kind) => default_data_dir(),
        (None, _) => fetch::cache_dir(kind)?,
    };
    let mut config = FetchConfig::new(kind, run.mirror.as_deref());
    config.connect_timeout = std::time::Duration::from_secs_f64(run.connect_timeout);
    config.read_timeout = std::time::Duration::from_secs_f64(run.read_timeout);
    fetch::ensure(&dir, kind, need, &config, run.offline, &mut |w| {
        eprintln!("{w}")
    })?;
    Ok(dir)
}

fn arch_string(arch: &Arch) -> String {
    let sizes: Vec<String> = arch.sizes.iter().map(|s| s.to_string()).collect();
    sizes.join("-")
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

fn run_train(args: TrainArgs) -> Result<()> {
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

fn run_eval(args: EvalArgs) -> Result<()> {
    let t_start = Instant::now();
    let (input, classes) = (28 * 28, mnist_wgpu::data::CLASSES);
    let model = modelfile::load(&args.model, input, classes)?;
    let arch = model.arch.clone();
    let gpu = open_device(&args.run)?;
    let kind = args.run.dataset;
    let dir = data_dir(&args.run, Need::TestOnly)?;
    let test = data::load_test(&dir, kind)
        .with_context(|| format!("loading {} from {}", kind.name(), dir.display()))?;
    if let Some(gpu) = &gpu {
        check_limits(gpu, &arch, args.batch_size, test.len()).map_err(UsageError)?;
    }
    let recipe = Recipe {
        epochs: 0,
        batch_size: args.batch_size,
        lr: 0.0,
        momentum: 0.0,
        seed: 0,
    };
    let mut backend: Box<dyn Backend> = match gpu {
        Some(gpu) => Box::new(GpuBackend::new(
            gpu,
            &arch,
            recipe,
            &model.params,
            None,
            &test,
        )?),
        None => Box::new(CpuBackend::new(
            arch.clone(),
            recipe,
            model.params.clone(),
            Dataset::empty(test.rows, test.cols),
            test,
        )),
    };
    println!("adapter: {}", backend.describe());
    let meta = &model.metadata;
    let writer = match (meta.get("program"), meta.get("torch")) {
        (Some(p), _) => format!(" | written by {p}"),
        (None, Some(t)) => format!(" | written by PyTorch {t}"),
        _ => String::new(),
    };
    let recorded = match meta.get("accuracy").and_then(|a| a.parse::<f64>().ok()) {
        Some(a) => format!(" | recorded accuracy {:.2} %", 100.0 * a),
        None => String::new(),
    };
    let origin = format!("{writer}{recorded}");
    println!(
        "model: {} | {} | {} parameters{origin}",
        args.model.display(),
        arch_string(&arch),
        arch.param_count()
    );
    let t_eval = Instant::now();
    let ev = backend.evaluate()?;
    let eval_s = t_eval.elapsed().as_secs_f64();
    println!(
        "Model Accuracy {:.2} %   ({}/{}) | test loss {:.4} | evaluation {:.2} s | total {:.2} s",
        100.0 * ev.accuracy(),
        ev.correct,
        ev.total,
        ev.mean_loss(),
        eval_s,
        t_start.elapsed().as_secs_f64()
    );
    print!("{}", report_tables(&ev));
    Ok(())
}

/// Per-class accuracy and the confusion matrix, fixed-width.
fn report_tables(ev: &Eval) -> String {
    let classes = ev.confusion.len();
    let mut out = String::from("\nclass  correct  total  accuracy\n");
    for c in 0..classes {
        let (ok, n) = ev.class_counts(c);
        out += &format!(
            "{c:>5}  {ok:>7}  {n:>5}  {:>6.2} %\n",
            100.0 * ok as f64 / n.max(1) as f64
        );
    }
    out += "\nconfusion matrix (rows: true class, columns: predicted class)\n      ";
    for c in 0..classes {
        out += &format!("{c:>6}");
    }
    out += "\n";
    for (c, row) in ev.confusion.iter().enumerate() {
        out += &format!("{c:>5} ");
        for v in row {
            out += &format!("{v:>6}");
        }
        out += "\n";
    }
    out
}

fn run_selftest(args: SelftestArgs) -> Result<()> {
    let t0 = Instant::now();
    let adapter = pick_adapter(&args.adapter.query())?;
    let first = Gpu::open(&adapter, true)?;
    println!("adapter: {first}");
    let mut checks = selftest::all_checks(&first);
    if first.subgroups {
        // The plain matmul is what an adapter without subgroups runs; check it here too.
        let plain = Gpu::open(&adapter, false)?;
        let k = Kernels::new(&plain);
        checks.extend(selftest::matmul_checks(&plain, &k));
    }
    println!(
        "{:<32} {:<22} {:>10} {:>10}  ok",
        "kernel", "shape", "max error", "tolerance"
    );
    for c in &checks {
        println!(
            "{:<32} {:<22} {:>10.2e} {:>10.2e}  {}",
            c.kernel,
            c.shape,
            c.max_err,
            c.tol,
            if c.ok() { "ok" } else { "FAIL" }
        );
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    for c in &failed {
        eprintln!(
            "FAIL {} {}: {}",
            c.kernel,
            c.shape,
            c.failure.as_deref().unwrap_or("")
        );
    }
    println!(
        "{} checks, {} failed, {:.1} s",
        checks.len(),
        failed.len(),
        t0.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} kernel checks failed on {}: do not trust training results on this adapter",
            failed.len(),
            checks.len(),
            first.info.name
        );
    }
    Ok(())
}
