//! `mnist-wgpu train`: the run from flags or from a checkpoint (`--resume`), progress on a
//! terminal, one line per epoch with the test figures, a checkpoint after every epoch, Ctrl-C
//! that checkpoints and exits 130, and the model file at the end.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use mnist_wgpu::checkpoint::{self, Recorder};
use mnist_wgpu::data::{self, Kind};
use mnist_wgpu::fetch::Need;
use mnist_wgpu::gpu::trainer::{STEPS_PER_SUBMIT, check_limits};
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile::{self, DEFAULT_MODEL_FILE};
use mnist_wgpu::train::{
    Backend, Diverged, EpochReport, LoopOptions, Observer, Outcome, Position, Progress, Recipe,
};

use super::args::{
    Hidden, Interrupted, RunArgs, UsageError, arch_string, at_least_one, data_dir, hidden,
    hidden_string, make_backend, momentum, open_device, positive_finite,
};

/// Where runs go unless `--run-dir` says otherwise: `runs/run-001`, `runs/run-002`, ...
const RUNS: &str = "runs";

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
    /// Directory for this run's checkpoint (after every epoch) and metrics [default: a new
    /// runs/run-NNN]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in DIR from its checkpoint, with the flags it was started with.
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "epochs", "batch_size", "lr", "momentum", "hidden", "seed", "init", "save", "no_save",
        "run_dir", "metrics", "plot", "dataset", "data_dir",
    ])]
    pub resume: Option<PathBuf>,
    /// Also write the per-epoch metrics as CSV here (the run directory always gets metrics.csv).
    #[arg(long, value_name = "PATH")]
    pub metrics: Option<PathBuf>,
    /// Draw the training and test loss and the test accuracy per epoch into this PNG.
    #[arg(long, value_name = "PATH.png")]
    pub plot: Option<PathBuf>,
    /// Print only the final accuracy.
    #[arg(long)]
    pub quiet: bool,
    /// Time every kernel with GPU timestamp queries and print a table at the end (where the
    /// adapter has them; the timestamps themselves add a little to every dispatch).
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Everything that defines a run; a checkpoint stores it so `--resume` needs no flags.
#[derive(Clone, Debug)]
struct Plan {
    recipe: Recipe,
    hidden: Option<Vec<usize>>,
    dataset: Kind,
    data_dir: Option<PathBuf>,
    init: Option<PathBuf>,
    save: Option<PathBuf>,
    metrics: Option<PathBuf>,
    plot: Option<PathBuf>,
}

/// Paths are stored absolute, so a run resumes from any working directory.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Plan {
    fn from_args(a: &TrainArgs) -> Plan {
        Plan {
            recipe: Recipe {
                epochs: a.epochs,
                batch_size: a.batch_size,
                lr: a.lr,
                momentum: a.momentum,
                seed: a.seed,
            },
            hidden: a.hidden.as_ref().map(|h| h.0.clone()),
            dataset: a.run.dataset,
            data_dir: a.run.data_dir.as_deref().map(absolute),
            init: a.init.as_deref().map(absolute),
            save: (!a.no_save).then(|| absolute(&a.save)),
            metrics: a.metrics.as_deref().map(absolute),
            plot: a.plot.as_deref().map(absolute),
        }
    }

    fn settings(&self, arch: &Arch) -> BTreeMap<String, String> {
        let r = &self.recipe;
        let mut m: BTreeMap<String, String> = [
            ("epochs", r.epochs.to_string()),
            ("batch_size", r.batch_size.to_string()),
            ("lr", r.lr.to_string()),
            ("momentum", r.momentum.to_string()),
            ("seed", r.seed.to_string()),
            ("hidden", hidden_string(arch)),
            ("dataset", self.dataset.name().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, p) in [
            ("data_dir", &self.data_dir),
            ("init", &self.init),
            ("save", &self.save),
            ("metrics", &self.metrics),
            ("plot", &self.plot),
        ] {
            if let Some(p) = p {
                m.insert(k.to_string(), p.display().to_string());
            }
        }
        m
    }

    fn from_settings(m: &BTreeMap<String, String>) -> Result<Plan, String> {
        let get = |k: &str| m.get(k).ok_or_else(|| format!("no setting `{k}`"));
        let num = |k: &str| -> Result<f64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("setting `{k}` is not a number"))
        };
        let path = |k: &str| m.get(k).map(PathBuf::from);
        let dataset = match get("dataset")?.as_str() {
            "mnist" => Kind::Mnist,
            "fashion-mnist" => Kind::FashionMnist,
            "idx" => Kind::Idx,
            other => return Err(format!("unknown dataset `{other}`")),
        };
        Ok(Plan {
            recipe: Recipe {
                epochs: num("epochs")? as usize,
                batch_size: num("batch_size")? as usize,
                lr: num("lr")?,
                momentum: num("momentum")?,
                seed: get("seed")?
                    .parse()
                    .map_err(|_| "setting `seed`".to_string())?,
            },
            hidden: Some(hidden(get("hidden")?)?.0),
            dataset,
            data_dir: path("data_dir"),
            init: path("init"),
            save: path("save"),
            metrics: path("metrics"),
            plot: path("plot"),
        })
    }
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

/// Set by Ctrl-C; the loop checks it after every interval.
static STOP: AtomicBool = AtomicBool::new(false);

fn install_interrupt_handler() {
    // A second Ctrl-C quits at once; the checkpoint of the last finished epoch stays valid.
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing the current submission, then writing a checkpoint \
             (Ctrl-C again to quit at once)"
        );
    });
}

/// What the run prints while it trains; the recorder writes the checkpoint and the files.
struct Ui {
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    recorder: Recorder,
    last: Option<EpochReport>,
}

impl Ui {
    fn bar_for(&mut self, p: &Progress<'_>) -> &indicatif::ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(p.steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "Epoch {prefix} [{bar:32}] {pos:>5}/{len} steps | {msg} | eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(p.epoch.to_string());
            bar
        })
    }
}

impl Observer for Ui {
    fn progress(&mut self, p: &Progress<'_>) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let running = p.losses.iter().map(|&l| l as f64).sum::<f64>() / p.losses.len() as f64;
        let rate = (p.step * p.batch_size) as f64 / p.seconds.max(1e-9);
        let bar = self.bar_for(p);
        bar.set_position(p.step as u64);
        bar.set_message(format!("loss {running:.4} | {:5.1}k img/s", rate / 1000.0));
    }

    fn epoch_done(&mut self, backend: &mut dyn Backend, r: &EpochReport) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            println!("{}", r.line());
        }
        self.recorder.epoch_done(backend, r)?;
        self.last = Some(r.clone());
        Ok(())
    }

    fn interrupted(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let t_start = Instant::now();
    // MNIST's 28x28 inputs and 10 classes are the contract; a model file must fit them.
    let (input, classes) = (28 * 28, data::CLASSES);
    let resumed = match &args.resume {
        Some(dir) => Some(checkpoint::load(dir, input, classes)?),
        None => None,
    };
    let (plan, arch, init_params, run_dir) = match &resumed {
        Some(c) => {
            let plan = Plan::from_settings(&c.settings).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}",
                    args.resume
                        .as_ref()
                        .unwrap()
                        .join(checkpoint::CHECKPOINT_FILE)
                        .display()
                )
            })?;
            (plan, c.arch.clone(), c.params.clone(), args.resume.clone())
        }
        None => {
            let plan = Plan::from_args(&args);
            if let Some(save) = &plan.save {
                check_save_path(save)?;
            }
            if let Some(dir) = &args.run_dir
                && dir.join(checkpoint::CHECKPOINT_FILE).exists()
            {
                return Err(UsageError(format!(
                    "--run-dir {}: holds a run already; continue it with --resume {0}, or pick \
                     another directory",
                    dir.display()
                ))
                .into());
            }
            let init = match &plan.init {
                Some(path) => Some(modelfile::load(path, input, classes)?),
                None => None,
            };
            let arch = match (&init, &plan.hidden) {
                (Some(m), Some(h)) if m.arch.sizes[1..m.arch.sizes.len() - 1] != h[..] => {
                    return Err(UsageError(format!(
                        "--hidden {}: the model in --init {} has hidden sizes {}",
                        h.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        args.init.as_ref().unwrap().display(),
                        hidden_string(&m.arch)
                    ))
                    .into());
                }
                (Some(m), _) => m.arch.clone(),
                (None, h) => Arch::new(input, h.as_deref().unwrap_or(&[128, 128, 64, 64]), classes),
            };
            let params = match init {
                Some(m) => m.params,
                None => arch.init(plan.recipe.seed),
            };
            (plan, arch, params, args.run_dir.clone())
        }
    };
    let recipe = plan.recipe.clone();
    let mut run_args = args.run.clone();
    if resumed.is_some() {
        run_args.dataset = plan.dataset;
        run_args.data_dir = plan.data_dir.clone();
    }

    // The device first: a batch too large for it is a usage error, before any data is read.
    let gpu = open_device(run_args.device, &run_args.adapter)?;
    if let Some(gpu) = &gpu {
        check_limits(gpu, &arch, recipe.batch_size, 60_000).map_err(UsageError)?;
    }
    let kind = run_args.dataset;
    let dir = data_dir(&run_args, Need::All)?;
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
    let n_train = mnist.train.len();

    let mut backend = make_backend(
        gpu,
        &arch,
        &recipe,
        init_params,
        Some(mnist.train),
        mnist.test,
    )?;
    let (start, metrics) = match &resumed {
        Some(c) => {
            backend.load_state(&c.params, &c.momentum)?;
            (c.position.clone(), c.metrics.clone())
        }
        None => (Position::default(), Vec::new()),
    };
    let run_dir = match run_dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("{}: cannot create the run directory", d.display()))?;
            d
        }
        None => checkpoint::new_run_dir(Path::new(RUNS))
            .with_context(|| format!("{RUNS}: cannot create a run directory"))?,
    };
    let adapter = backend.describe();
    // As the user wrote it; a resumed run shows the absolute path it stored.
    let init_shown = args
        .init
        .as_ref()
        .or(plan.init.as_ref())
        .map_or("random".to_string(), |p| p.display().to_string());
    if !args.quiet {
        println!("adapter: {adapter}");
        println!(
            "model: {} | {} parameters | batch {} | lr {} | momentum {} | seed {} | init {} | start-up {:.2} s",
            arch_string(&arch),
            arch.param_count(),
            recipe.batch_size,
            recipe.lr,
            recipe.momentum,
            recipe.seed,
            init_shown.clone(),
            t_start.elapsed().as_secs_f64()
        );
        match &resumed {
            Some(_) => println!(
                "run: {} | resumed at epoch {}, step {}",
                run_dir.display(),
                start.epoch,
                start.step
            ),
            None => println!(
                "run: {} | checkpoint after every epoch; continue with --resume {0}",
                run_dir.display()
            ),
        }
    }

    let profiling = args.profile && backend.start_profile();
    if args.profile && !profiling {
        eprintln!(
            "note: --profile: {adapter} has no timestamp queries inside compute passes; no kernel times"
        );
    }
    install_interrupt_handler();
    let title = format!(
        "{} on {} | batch {} | lr {} | momentum {} | {}",
        arch_string(&arch),
        kind.name(),
        recipe.batch_size,
        recipe.lr,
        recipe.momentum,
        adapter
    );
    let mut ui = Ui {
        quiet: args.quiet,
        bar: None,
        recorder: Recorder {
            run_dir: run_dir.clone(),
            arch: arch.clone(),
            settings: plan.settings(&arch),
            metrics,
            metrics_copy: plan.metrics.clone(),
            plot: plan.plot.clone().map(|p| (p, title)),
        },
        last: None,
    };
    let options = LoopOptions {
        interval: STEPS_PER_SUBMIT,
        evaluate: true,
    };
    let outcome =
        mnist_wgpu::train::run(backend.as_mut(), &recipe, n_train, start, options, &mut ui);
    if let Some(bar) = ui.bar.take() {
        bar.finish_and_clear();
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if let Some(d) = e.downcast_ref::<Diverged>() {
                let kept = match ui.recorder.metrics.last() {
                    Some(m) => format!(
                        "the checkpoint of epoch {} in {} is unchanged",
                        m.epoch,
                        run_dir.display()
                    ),
                    None => "no checkpoint was written".to_string(),
                };
                anyhow::bail!("{d}; {kept}");
            }
            return Err(e);
        }
    };
    if let Outcome::Interrupted(pos) = outcome {
        ui.recorder.save(backend.as_mut(), pos.clone())?;
        return Err(Interrupted(format!(
            "interrupted in epoch {} after step {} of {}; checkpoint written to {}\n\
             resume with: mnist-wgpu train --resume {}",
            pos.epoch,
            pos.step,
            recipe.steps_per_epoch(n_train),
            run_dir.join(checkpoint::CHECKPOINT_FILE).display(),
            run_dir.display()
        ))
        .into());
    }

    let train_s: f64 = ui.recorder.metrics.iter().map(|m| m.seconds).sum();
    let (loss, accuracy, correct, total) = match &ui.last {
        Some(EpochReport { test: Some(t), .. }) => (t.loss, t.accuracy, t.correct, t.total),
        _ => {
            // A resumed run that had already finished: evaluate what it holds.
            let ev = backend.evaluate()?;
            (ev.mean_loss(), ev.accuracy(), ev.correct, ev.total)
        }
    };
    if !args.quiet {
        println!(
            "Training time {:.1} s | test loss {:.4} | total {:.1} s",
            train_s,
            loss,
            t_start.elapsed().as_secs_f64()
        );
    }
    println!(
        "Model Accuracy {:.2} %   ({correct}/{total})",
        100.0 * accuracy
    );
    if profiling && let Some(p) = backend.profile() {
        println!(
            "\nper-kernel GPU time over the {} training steps (timestamp queries):",
            p.steps
        );
        print!("{}", p.table());
    }
    if let Some(save) = &plan.save {
        let metadata: BTreeMap<String, String> = [
            (
                "program",
                format!("mnist-wgpu {}", env!("CARGO_PKG_VERSION")),
            ),
            ("dataset", kind.name().to_string()),
            ("sizes", arch_string(&arch)),
            ("hidden", hidden_string(&arch)),
            ("epochs", recipe.epochs.to_string()),
            ("batch_size", recipe.batch_size.to_string()),
            ("lr", recipe.lr.to_string()),
            ("momentum", recipe.momentum.to_string()),
            ("seed", recipe.seed.to_string()),
            ("init", init_shown.clone()),
            ("accuracy", format!("{accuracy:.4}")),
            ("test_loss", format!("{loss:.6}")),
            ("adapter", adapter),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // The one read-back of the weights in a run (besides the checkpoints).
        let params = backend.params()?;
        modelfile::save(save, &arch, &params, &metadata)?;
        if !args.quiet {
            let shown = if resumed.is_some() { save } else { &args.save };
            println!(
                "saved {} ({} tensors, {:.0} KB)",
                shown.display(),
                2 * arch.layers(),
                std::fs::metadata(save).map_or(0, |m| m.len()) as f64 / 1024.0
            );
        }
    }
    Ok(())
}
