//! `mnist-wgpu train`: the run from flags or from a checkpoint (`--resume`), progress on a
//! terminal, one line per epoch with the test figures, a checkpoint after every epoch, Ctrl-C
//! that checkpoints and exits 130, and the model file at the end.

pub mod args;
mod note;
mod set;
mod spec;
mod ui;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use mnist_wgpu::backends;
use mnist_wgpu::checkpoint;
use mnist_wgpu::data::{self, Dataset, Normalize};
use mnist_wgpu::fetch::Need;
use mnist_wgpu::gpu::backend::{STEPS_PER_SUBMIT, check_limits};
use mnist_wgpu::gpu::device::Gpu;
use mnist_wgpu::gpu::plan::Request;
use mnist_wgpu::limits;
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile;
use mnist_wgpu::recipe::{Preset, recipe_words};
use mnist_wgpu::recorder::Recorder;
use mnist_wgpu::train::{Backend, Diverged, LoopOptions, Outcome, Position};

use super::args::{
    DeviceChoice, Interrupted, RunArgs, UsageError, arch_string, data_dir, open_device_for, usage,
};
use args::TrainArgs;
use note::{announce, software_probe};
use spec::Start;
use ui::{Ui, install_interrupt_handler};

/// Where runs go unless `--run-dir` says otherwise: `runs/run-001`, `runs/run-002`, ...
const RUNS: &str = "runs";

pub fn run(args: TrainArgs) -> Result<()> {
    let t_start = Instant::now();
    // MNIST's 28x28 inputs and 10 classes are the contract; a model file must fit them.
    let (input, classes) = (28 * 28, data::CLASSES);
    let mut start = spec::start(&args, (input, classes))?;
    let mut run_args = args.run.clone();
    if start.resumed.is_some() {
        run_args.dataset = start.spec.dataset;
        run_args.data_dir = start.spec.data_dir.clone();
    }
    let gpu = open_checked_device(&run_args, &start)?;
    start.initialise();
    let Start { spec, arch, .. } = &start;
    let (train, test) = load_data(&run_args, arch, spec.normalize)?;
    let n_train = train.len();
    let auto = run_args.device == DeviceChoice::Auto && !args.quiet;
    let probe = gpu.as_ref().filter(|_| auto);
    let note = software_probe(probe, arch, spec, &start.params[0], &train);
    let recipes = spec.recipes();
    let mut backend = pollster::block_on(backends::for_set(
        gpu,
        arch,
        &recipes,
        start.params.clone(),
        train,
        test,
    ))
    .map_err(usage)?;
    announce(note, backend.about(), args.quiet);
    let (position, metrics) = match &start.resumed {
        Some(c) => {
            backend.load_state(&c.params, &c.state)?;
            (c.position.clone(), c.metrics.clone())
        }
        None => (Position::default(), Vec::new()),
    };
    let run_dir = make_run_dir(start.run_dir.clone())?;
    let header = Header {
        args: &args,
        start: &start,
        run_dir: &run_dir,
        position: &position,
        t_start,
    };
    let mut ui = header.ui(backend.as_ref(), run_args.dataset.name(), metrics);
    ui.recorder.steps_per_epoch = start.spec.recipe.steps_per_epoch(n_train);
    let profiling = args.profile && start_profile(backend.as_mut());
    install_interrupt_handler();
    let options = LoopOptions {
        interval: STEPS_PER_SUBMIT,
        evaluate: true,
    };
    let outcome = pollster::block_on(mnist_wgpu::train::run(
        backend.as_mut(),
        &recipes,
        n_train,
        position.clone(),
        options,
        &mut ui,
    ));
    if let Some(bar) = ui.bar.take() {
        bar.finish_and_clear();
    }
    finish(outcome, &mut ui, backend.as_mut(), &header, n_train)?;
    conclude(
        &header,
        &mut ui,
        backend.as_mut(),
        profiling,
        run_args.dataset.name(),
    )
}

/// Starts `--profile`'s timestamps, or says in one line why there are none.
fn start_profile(backend: &mut dyn Backend) -> bool {
    let started = backend.start_profile();
    if !started {
        let adapter = &backend.about().device;
        eprintln!(
            "note: --profile: {adapter} has no timestamp queries inside compute passes; no kernel times"
        );
    }
    started
}

/// After the last epoch: the summary, the kernel profile and the model file.
fn conclude(
    header: &Header<'_>,
    ui: &mut Ui,
    backend: &mut dyn Backend,
    profiling: bool,
    dataset: &str,
) -> Result<()> {
    let spec = &header.start.spec;
    if spec.sweep.len() > 1 {
        return conclude_set(header, ui, backend, dataset);
    }
    let (loss, accuracy) = summary(ui, backend, header)?;
    if profiling && let Some(p) = backend.profile() {
        println!(
            "\nper-kernel GPU time over the {} training steps (timestamp queries):",
            p.steps
        );
        print!("{}", p.table());
    }
    if let Some(save) = &header.start.spec.save {
        save_model(save, backend, header, (loss, accuracy), dataset)?;
    }
    Ok(())
}

/// The model as the header names it: an MLP by its sizes (`784-128-128-64-64-10`), another
/// recipe's by its name and source.
fn model_words(preset: Preset, arch: &Arch) -> String {
    match preset {
        Preset::Mlp => arch_string(arch),
        other => format!("{}, {}", other.name(), other.source()),
    }
}

/// The device first: a batch or a set too large for it, or for the host's memory, is a usage
/// error, before any data is read or any weight initialised.
fn open_checked_device(run_args: &RunArgs, start: &Start) -> Result<Option<(Gpu, Request)>> {
    let (arch, batch) = (&start.arch, start.spec.recipe.batch_size);
    let models = start.spec.sweep.len();
    let gpu = open_device_for(run_args.device, &run_args.adapter, arch)?;
    if let Some((gpu, _)) = &gpu {
        check_limits(gpu, arch, batch, None, models).map_err(UsageError)?;
    }
    if let Some(bytes) = limits::host_available() {
        let budget = limits::Budget {
            bytes,
            what: "the host's available memory".into(),
        };
        limits::fit(arch, models, host_bytes, &budget).map_err(UsageError)?;
    }
    Ok(gpu)
}

/// What one model keeps in host memory at most, about: its initial weights and the backend's
/// copies, momentum and gradients on the CPU, and a checkpoint's read-backs and file (six
/// copies of its parameters).
fn host_bytes(arch: &Arch) -> u64 {
    arch.param_count() as u64 * 4 * 6
}

/// The training and test splits of `--dataset`, normalised as the run's recipe says.
fn load_data(run_args: &RunArgs, arch: &Arch, n: Normalize) -> Result<(Dataset, Dataset)> {
    let kind = run_args.dataset;
    let dir = data_dir(run_args, Need::All)?;
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
    Ok((mnist.train.normalized(n), mnist.test.normalized(n)))
}

fn make_run_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("{}: cannot create the run directory", d.display()))?;
            Ok(d)
        }
        None => checkpoint::new_run_dir(Path::new(RUNS))
            .with_context(|| format!("{RUNS}: cannot create a run directory")),
    }
}

/// What the run prints before its first step, and what later output refers back to.
struct Header<'a> {
    args: &'a TrainArgs,
    start: &'a Start,
    run_dir: &'a Path,
    position: &'a Position,
    t_start: Instant,
}

impl Header<'_> {
    /// `--init` as the user wrote it; a resumed run shows the absolute path it stored.
    fn init_shown(&self) -> String {
        let init = self.args.init.as_ref().or(self.start.spec.init.as_ref());
        init.map_or("random".to_string(), |p| p.display().to_string())
    }

    /// Prints the header lines and returns the observer of the run.
    fn ui(&self, backend: &dyn Backend, dataset: &str, metrics: Vec<checkpoint::MetricsRow>) -> Ui {
        let (arch, r, dir) = (
            &self.start.arch,
            &self.start.spec.recipe,
            self.run_dir.display(),
        );
        let adapter = &backend.about().device;
        if !self.args.quiet {
            println!("adapter: {adapter}");
            let sweep = &self.start.spec.sweep;
            let hyper = match sweep.len() {
                1 => format!(
                    "{} | seed {}",
                    recipe_words(r, self.start.spec.normalize),
                    r.seed
                ),
                _ => set::hyper_words(sweep, r, self.start.spec.normalize),
            };
            println!(
                "model: {} | {} parameters | batch {} | {hyper} | init {} | start-up {:.2} s",
                model_words(self.start.spec.preset, arch),
                arch.param_count(),
                r.batch_size,
                self.init_shown(),
                self.t_start.elapsed().as_secs_f64()
            );
            if let Some(set) = sweep.describe() {
                println!("set: {set}, side by side | metrics per model");
            }
            match &self.start.resumed {
                Some(_) => println!(
                    "run: {dir} | resumed at epoch {}, step {}",
                    self.position.epoch, self.position.step
                ),
                None => println!(
                    "run: {dir} | checkpoint after every epoch; continue with --resume {dir}"
                ),
            }
        }
        let spec = &self.start.spec;
        let hyper = match spec.sweep.len() {
            1 => recipe_words(r, spec.normalize),
            _ => spec.sweep.describe().unwrap_or_default(),
        };
        let title = format!(
            "{} on {dataset} | batch {} | {hyper} | {adapter}",
            arch_string(arch),
            r.batch_size,
        );
        let recorder = Recorder {
            run_dir: self.run_dir.to_path_buf(),
            arch: arch.clone(),
            settings: spec.settings(arch),
            metrics,
            metrics_copy: spec.metrics.clone(),
            plot: spec.plot.clone().map(|p| (p, title)),
            set: match spec.sweep.len() {
                1 => Vec::new(),
                _ => spec.recipes().iter().map(|r| spec.sweep.tag(r)).collect(),
            },
            set_rows: self
                .start
                .resumed
                .as_ref()
                .map_or(Vec::new(), |c| c.set_metrics.clone()),
            steps_per_epoch: 0,
        };
        Ui {
            quiet: self.args.quiet,
            bar: None,
            recorder,
            last: None,
        }
    }
}

/// A set's closing lines: the per-model table, the training time, and its model files.
fn conclude_set(
    h: &Header<'_>,
    ui: &mut Ui,
    backend: &mut dyn Backend,
    dataset: &str,
) -> Result<()> {
    let spec = &h.start.spec;
    let recipes = spec.recipes();
    let finals = match &ui.last {
        Some(last) => set::finals(last),
        None => {
            // Resumed after its last epoch: evaluate what it holds, as a single run does.
            ui.recorder.write_metrics()?;
            let evals = pollster::block_on(backend.evaluate_all())?;
            set::finals_resumed(&ui.recorder, &evals)
        }
    };
    let train_s: f64 = ui.recorder.metrics.iter().map(|m| m.seconds).sum();
    if !h.args.quiet {
        let total_s = h.t_start.elapsed().as_secs_f64();
        println!(
            "Training time {train_s:.1} s for {} models | total {total_s:.1} s",
            recipes.len()
        );
    }
    println!("{}", set::table(&recipes, &finals));
    if let Some(save) = &spec.save {
        let s = set::SaveSet {
            sweep: &spec.sweep,
            recipes: &recipes,
            arch: &h.start.arch,
            dataset: (dataset, spec.normalize),
            init: h.init_shown(),
            quiet: h.args.quiet,
        };
        set::save(&s, save, backend, &finals)?;
    }
    Ok(())
}

/// A diverged run names the checkpoint it kept; an interrupted one writes its checkpoint and
/// says how to resume.
fn finish(
    outcome: Result<Outcome>,
    ui: &mut Ui,
    backend: &mut dyn Backend,
    h: &Header,
    n_train: usize,
) -> Result<()> {
    let dir = h.run_dir.display();
    match outcome {
        Ok(Outcome::Finished) => Ok(()),
        Ok(Outcome::Interrupted(pos)) => {
            pollster::block_on(ui.recorder.save(backend, pos.clone()))?;
            Err(Interrupted(format!(
                "interrupted in epoch {} after step {} of {}; checkpoint written to {}\n\
                 resume with: mnist-wgpu train --resume {dir}{}",
                pos.epoch,
                pos.step,
                h.start.spec.recipe.steps_per_epoch(n_train),
                h.run_dir.join(checkpoint::CHECKPOINT_FILE).display(),
                spec::same_device(&h.args.run, backend.about()),
            ))
            .into())
        }
        Err(e) => match e.downcast_ref::<Diverged>() {
            Some(d) => {
                let kept = match ui.recorder.metrics.last() {
                    Some(m) => format!("the checkpoint of epoch {} in {dir} is unchanged", m.epoch),
                    None => "no checkpoint was written".to_string(),
                };
                anyhow::bail!("{d}; {kept}")
            }
            None => Err(e),
        },
    }
}

/// Prints the closing lines in the tutorial's words; (test loss, accuracy).
fn summary(ui: &Ui, backend: &mut dyn Backend, h: &Header) -> Result<(f64, f64)> {
    let train_s: f64 = ui.recorder.metrics.iter().map(|m| m.seconds).sum();
    let (loss, accuracy, correct, total) = match &ui.last {
        Some(r) if let Some(t) = r.first().test => (t.loss, t.accuracy, t.correct, t.total),
        _ => {
            // A resumed run that had already finished: evaluate what it holds, and write the
            // metrics where this invocation asks for them.
            ui.recorder.write_metrics()?;
            let ev = pollster::block_on(backend.evaluate())?;
            (ev.mean_loss(), ev.accuracy(), ev.correct, ev.total)
        }
    };
    if !h.args.quiet {
        let total_s = h.t_start.elapsed().as_secs_f64();
        println!("Training time {train_s:.1} s | test loss {loss:.4} | total {total_s:.1} s");
    }
    println!("{}", mnist_wgpu::train::accuracy_line(correct, total));
    Ok((loss, accuracy))
}

fn save_model(
    save: &Path,
    backend: &mut dyn Backend,
    h: &Header,
    (loss, accuracy): (f64, f64),
    dataset: &str,
) -> Result<()> {
    let (arch, r) = (&h.start.arch, &h.start.spec.recipe);
    let program = format!("mnist-wgpu {}", env!("CARGO_PKG_VERSION"));
    let adapter = &backend.about().device;
    let test = Some((loss, accuracy));
    let data = (dataset, h.start.spec.normalize);
    let mut metadata = modelfile::training_metadata(&program, data, arch, r, adapter, test);
    metadata.insert("init".into(), h.init_shown());
    // The one read-back of the weights in a run (besides the checkpoints).
    let params = pollster::block_on(backend.params())?;
    modelfile::save(save, arch, &params, &metadata)?;
    if !h.args.quiet {
        // As the user wrote it, where they did.
        let shown = match (&h.args.save, &h.start.resumed) {
            (Some(p), _) => p.as_path(),
            (None, Some(_)) => save,
            (None, None) => Path::new(h.start.spec.preset.model_file()),
        };
        let kb = std::fs::metadata(save).map_or(0, |m| m.len()) as f64 / 1024.0;
        println!(
            "saved {} ({} tensors, {kb:.0} KB)",
            shown.display(),
            arch.table().len()
        );
    }
    Ok(())
}
