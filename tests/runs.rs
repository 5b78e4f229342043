//! Runs that stop and go on: a run interrupted (after an epoch, or in the middle of one) and
//! resumed from its checkpoint ends bit-identical to the uninterrupted run; a diverging run
//! leaves the last good checkpoint as it was; and the command line's Ctrl-C, kill -9,
//! divergence, metrics and plot.

mod common;

use pollster::block_on;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use mnist_wgpu::checkpoint::{self, METRICS_HEADER};
use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{Mnist, default_data_dir, load_mnist};
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile;
use mnist_wgpu::recipe::Recipe;
use mnist_wgpu::recorder::Recorder;
use mnist_wgpu::train::{
    self, About, Backend, Diverged, EpochReport, Eval, Evaluate, LoopOptions, Observer, Outcome,
    Position,
};

fn recipe(epochs: usize) -> Recipe {
    Recipe {
        epochs,
        batch_size: 32,
        lr: 0.003,
        optimizer: mnist_wgpu::optim::Optimizer::Sgd { momentum: 0.9 },
        weight_decay: 0.0,
        gamma: 1.0,
        shuffle: true,
        seed: 7,
    }
}

/// Records like `train` does, and stops when `stop(epoch, step)` says so.
struct Stopper<F: Fn(&Position) -> bool> {
    recorder: Recorder,
    stop: F,
    at: Position,
}

#[async_trait::async_trait(?Send)]
impl<F: Fn(&Position) -> bool> Observer for Stopper<F> {
    async fn progress(&mut self, p: &train::Progress<'_>) {
        self.at = Position {
            epoch: p.epoch,
            step: p.step,
            ..Default::default()
        };
    }
    async fn epoch_done(&mut self, b: &mut dyn Backend, r: &EpochReport) -> anyhow::Result<()> {
        self.at = Position {
            epoch: r.epoch + 1,
            ..Default::default()
        };
        self.recorder.epoch_done(b, r).await
    }
    fn interrupted(&self) -> bool {
        (self.stop)(&self.at)
    }
}

fn recorder(dir: &Path, arch: &Arch) -> Recorder {
    recorder_of(dir, arch, &recipe(1), 0)
}

/// A recorder of a run of `r` with `steps` steps an epoch, whose checkpoint names its optimizer.
fn recorder_of(dir: &Path, arch: &Arch, r: &Recipe, steps: usize) -> Recorder {
    let optimizer = ("optimizer".to_string(), r.optimizer.name().to_string());
    Recorder {
        run_dir: dir.to_path_buf(),
        arch: arch.clone(),
        settings: BTreeMap::from([optimizer]),
        steps_per_epoch: steps,
        metrics: Vec::new(),
        metrics_copy: None,
        plot: None,
        set: Vec::new(),
        set_rows: Vec::new(),
    }
}

const OPTIONS: LoopOptions = LoopOptions {
    interval: 250,
    evaluate: true,
};

/// The final (params, optimizer state) of a run.
type WeightsAndMomentum = (Vec<f32>, Vec<Vec<f32>>);

/// Runs `epochs` from scratch without stopping, then again stopping where `stop` says,
/// resuming from the checkpoint on a fresh backend; returns both final (params, momentum).
fn interrupted_vs_straight(
    make: &dyn Fn(&[f32]) -> Box<dyn Backend>,
    arch: &Arch,
    r: &Recipe,
    n: usize,
    stop: impl Fn(&Position) -> bool,
    name: &str,
) -> (WeightsAndMomentum, WeightsAndMomentum, Position) {
    let init = arch.init(r.seed);
    let dir_a = common::scratch(&format!("{name}-a"));
    let mut a = make(&init);
    let mut obs = Stopper {
        recorder: recorder_of(&dir_a, arch, r, r.steps_per_epoch(n)),
        stop: |_: &Position| false,
        at: Position::default(),
    };
    let out = block_on(train::run(
        a.as_mut(),
        std::slice::from_ref(r),
        n,
        Position::default(),
        OPTIONS,
        &mut obs,
    ))
    .unwrap();
    assert!(matches!(out, Outcome::Finished));
    let straight = (block_on(a.params()).unwrap(), block_on(a.state()).unwrap());

    let dir_b = common::scratch(&format!("{name}-b"));
    let mut b = make(&init);
    let mut obs = Stopper {
        recorder: recorder_of(&dir_b, arch, r, r.steps_per_epoch(n)),
        stop,
        at: Position::default(),
    };
    let out = block_on(train::run(
        b.as_mut(),
        std::slice::from_ref(r),
        n,
        Position::default(),
        OPTIONS,
        &mut obs,
    ))
    .unwrap();
    let Outcome::Interrupted(pos) = out else {
        panic!("the run was not interrupted")
    };
    block_on(obs.recorder.save(b.as_mut(), pos.clone())).unwrap();
    drop(b);
    let c = checkpoint::load(&dir_b, 784, 10).unwrap();
    assert_eq!(c.position, pos);
    let mut b = make(&c.params);
    b.load_state(&c.params, &c.state).unwrap();
    let mut obs = Stopper {
        recorder: Recorder {
            metrics: c.metrics.clone(),
            ..recorder_of(&dir_b, arch, r, r.steps_per_epoch(n))
        },
        stop: |_: &Position| false,
        at: Position::default(),
    };
    let out = block_on(train::run(
        b.as_mut(),
        std::slice::from_ref(r),
        n,
        c.position,
        OPTIONS,
        &mut obs,
    ))
    .unwrap();
    assert!(matches!(out, Outcome::Finished));
    let resumed = (block_on(b.params()).unwrap(), block_on(b.state()).unwrap());
    // The metrics of both runs cover every epoch once, with the same losses.
    let ma = checkpoint::load(&dir_a, 784, 10).unwrap().metrics;
    let mb = checkpoint::load(&dir_b, 784, 10).unwrap().metrics;
    assert_eq!(ma.len(), r.epochs);
    assert_eq!(
        ma.iter()
            .map(|m| (m.epoch, m.train_loss.to_bits(), m.test_accuracy.to_bits()))
            .collect::<Vec<_>>(),
        mb.iter()
            .map(|m| (m.epoch, m.train_loss.to_bits(), m.test_accuracy.to_bits()))
            .collect::<Vec<_>>()
    );
    for d in [dir_a, dir_b] {
        std::fs::remove_dir_all(d).unwrap();
    }
    (straight, resumed, pos)
}

fn mnist() -> Mnist {
    load_mnist(&default_data_dir()).expect("the committed MNIST files")
}

/// The case: stopped after epoch 2 (epochs 0 and 1 done), resumed, on the GPU; on a
/// tenth of MNIST, which exercises the same code in a tenth of the time.
#[test]
fn gpu_run_interrupted_after_epoch_2_resumes_bit_identical() {
    let m = mnist();
    let (train, test) = (m.train.head(6000), m.test.head(1000));
    let arch = Arch::mlp(784, &[32], 10);
    let r = recipe(3);
    let make = |p: &[f32]| -> Box<dyn Backend> {
        Box::new(common::backend(common::layered(), &arch, &r, p, &train, &test).unwrap())
    };
    let (straight, resumed, pos) =
        interrupted_vs_straight(&make, &arch, &r, train.len(), |p| p.epoch == 2, "gpu");
    assert_eq!((pos.epoch, pos.step), (2, 0));
    assert!(straight.0 == resumed.0, "weights differ after resuming");
    assert!(straight.1 == resumed.1, "momentum differs after resuming");
}

/// The same with the fused schedule.
#[test]
fn fused_run_interrupted_after_epoch_2_resumes_bit_identical() {
    let m = mnist();
    let (train, test) = (m.train.head(6000), m.test.head(1000));
    let arch = Arch::mlp(784, &[32], 10);
    let r = recipe(3);
    let make = |p: &[f32]| -> Box<dyn Backend> {
        Box::new(common::backend(common::fused(), &arch, &r, p, &train, &test).unwrap())
    };
    let (straight, resumed, pos) =
        interrupted_vs_straight(&make, &arch, &r, train.len(), |p| p.epoch == 2, "fused");
    assert_eq!((pos.epoch, pos.step), (2, 0));
    assert!(straight.0 == resumed.0, "weights differ after resuming");
    assert!(straight.1 == resumed.1, "momentum differs after resuming");
}

/// Stopped in the middle of an epoch on the GPU, where the loop reads each interval back while
/// the next runs: the stop comes after step 250 of epoch 1 with steps 250..500 already queued,
/// so the run ends after step 500 with those steps' losses, and resumes bit-identical.
#[test]
fn gpu_run_interrupted_mid_epoch_resumes_bit_identical() {
    let m = mnist();
    let (train, test) = (m.train.head(30_000), m.test.head(1000));
    let arch = Arch::mlp(784, &[32], 10);
    let r = recipe(2);
    let make = |p: &[f32]| -> Box<dyn Backend> {
        Box::new(common::backend(common::layered(), &arch, &r, p, &train, &test).unwrap())
    };
    let stop = |p: &Position| p.epoch == 1 && p.step >= 250;
    let (straight, resumed, pos) =
        interrupted_vs_straight(&make, &arch, &r, train.len(), stop, "gpu-mid");
    assert_eq!((pos.epoch, pos.step, pos.losses[0].len()), (1, 500, 500));
    assert!(straight.0 == resumed.0, "weights differ after resuming");
    assert!(straight.1 == resumed.1, "momentum differs after resuming");
}

/// A checkpoint holds the weights and momentum in PyTorch's layout, whatever the schedule:
/// the state of 100 steps under one schedule loads into the other and reads back bit for bit,
/// and the next 80 steps there track the first schedule's own (the first within 1e-5, the
/// mean within 0.5 %: two summation orders, not two recipes).
#[test]
fn a_checkpoint_resumes_under_the_other_schedule() {
    let m = mnist();
    let (train, test) = (m.train.head(6000), m.test.head(1000));
    let arch = Arch::mlp(784, &[64, 32], 10);
    let r = recipe(1);
    let order = mnist_wgpu::rng::epoch_order(r.seed, 0, train.len());
    let init = arch.init(r.seed);
    let pairs = [
        (common::layered(), common::fused()),
        (common::fused(), common::layered()),
    ];
    for (first, second) in pairs {
        let names = format!("{} -> {}", first.1, second.1);
        let mut a = common::backend(first, &arch, &r, &init, &train, &test).unwrap();
        a.begin_epoch(0, &order).unwrap();
        block_on(a.run_steps(0..100)).unwrap();
        let (p, v) = (block_on(a.params()).unwrap(), block_on(a.state()).unwrap());
        let mut b = common::backend(second, &arch, &r, &p, &train, &test).unwrap();
        b.load_state(&p, &v).unwrap();
        assert!(block_on(b.params()).unwrap() == p, "{names}: params");
        assert!(block_on(b.state()).unwrap() == v, "{names}: momentum");
        b.begin_epoch(0, &order).unwrap();
        let mut losses = Vec::new();
        for x in [&mut a, &mut b] {
            block_on(x.run_steps(100..180)).unwrap();
            losses.push(block_on(x.losses(100..180)).unwrap());
        }
        let (la, lb) = (&losses[0], &losses[1]);
        assert!(
            (la[0] - lb[0]).abs() <= 1e-5 * la[0],
            "{names}: {} vs {}",
            la[0],
            lb[0]
        );
        let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
        let (ma, mb) = (mean(la), mean(lb));
        assert!(
            (ma - mb).abs() <= 5e-3 * ma,
            "{names}: mean loss {ma} vs {mb}"
        );
    }
}

/// Stopped in the middle of an epoch (after 750 of its 1875 steps), on the CPU backend.
#[test]
fn cpu_run_interrupted_mid_epoch_resumes_bit_identical() {
    let m = mnist();
    let arch = Arch::mlp(784, &[64, 32], 10);
    let r = recipe(2);
    let make = |p: &[f32]| -> Box<dyn Backend> {
        Box::new(CpuBackend::new(
            arch.clone(),
            r.clone(),
            p.to_vec(),
            m.train.clone(),
            m.test.clone(),
        ))
    };
    let (straight, resumed, pos) = interrupted_vs_straight(
        &make,
        &arch,
        &r,
        m.train.len(),
        |p| p.epoch == 1 && p.step >= 750,
        "cpu",
    );
    assert_eq!((pos.epoch, pos.step, pos.losses[0].len()), (1, 750, 750));
    assert!(straight.0 == resumed.0, "weights differ after resuming");
    assert!(straight.1 == resumed.1, "momentum differs after resuming");
}

/// A backend whose losses turn NaN from (epoch, step) `from` on: a diverging run.
struct Poisoned {
    inner: CpuBackend,
    /// Epochs begun so far.
    begun: usize,
    from: (usize, usize),
}

#[async_trait::async_trait(?Send)]
impl Evaluate for Poisoned {
    fn about(&self) -> &About {
        self.inner.about()
    }
    async fn evaluate_all(&mut self) -> anyhow::Result<Vec<Eval>> {
        self.inner.evaluate_all().await
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for Poisoned {
    fn begin_epoch(&mut self, epoch: usize, order: &[u32]) -> anyhow::Result<()> {
        self.begun += 1;
        self.inner.begin_epoch(epoch, order)
    }
    async fn run_steps(&mut self, steps: Range<usize>) -> anyhow::Result<()> {
        self.inner.run_steps(steps).await
    }
    async fn losses(&mut self, steps: Range<usize>) -> anyhow::Result<Vec<f32>> {
        let mut l = self.inner.losses(steps.clone()).await?;
        for (i, s) in steps.enumerate() {
            if (self.begun - 1, s) >= self.from {
                l[i] = f32::NAN;
            }
        }
        Ok(l)
    }
    async fn params(&mut self) -> anyhow::Result<Vec<f32>> {
        self.inner.params().await
    }
    async fn state(&mut self) -> anyhow::Result<Vec<Vec<f32>>> {
        self.inner.state().await
    }
    fn load_state(&mut self, p: &[f32], m: &[Vec<f32>]) -> anyhow::Result<()> {
        self.inner.load_state(p, m)
    }
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_checkpoint() {
    let m = mnist();
    let arch = Arch::mlp(784, &[16], 10);
    let r = recipe(3);
    let mut b = Poisoned {
        inner: CpuBackend::new(arch.clone(), r.clone(), arch.init(1), m.train, m.test),
        begun: 0,
        from: (1, 1000),
    };
    let dir = common::scratch("diverge");
    let mut obs = Stopper {
        recorder: recorder(&dir, &arch),
        stop: |_: &Position| false,
        at: Position::default(),
    };
    let err = block_on(train::run(
        &mut b,
        std::slice::from_ref(&r),
        60_000,
        Position::default(),
        OPTIONS,
        &mut obs,
    ))
    .unwrap_err();
    let d = err.downcast_ref::<Diverged>().expect("a Diverged error");
    assert_eq!((d.epoch, d.at, d.first, d.last), (1, 1000, 1000, 1249));
    assert!(d.to_string().contains("try a smaller --lr"), "{d}");
    // The checkpoint is the one written after epoch 0, complete and loadable: the weights of
    // one clean epoch.
    let c = checkpoint::load(&dir, 784, 10).unwrap();
    assert_eq!((c.position.epoch, c.position.step), (1, 0));
    assert_eq!(c.metrics.len(), 1);
    let m = mnist();
    let mut one = CpuBackend::new(arch.clone(), recipe(1), arch.init(1), m.train, m.test);
    block_on(train::train(&mut one, &[recipe(1)], 60_000, |_| {})).unwrap();
    assert!(
        c.params == block_on(one.params()).unwrap(),
        "the checkpoint is not epoch 0's"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- the command line ----

use common::bin;

/// The training flags of the command-line runs below: CPU backend, eight quick epochs (about
/// 0.2 s each here), so that a signal sent in the first second lands inside the run.
const FLAGS: [&str; 6] = ["--device", "cpu", "--epochs", "8", "--hidden", "64"];

/// An uninterrupted run's final weights.
fn reference_weights(dir: &Path) -> Vec<f32> {
    let out = bin()
        .current_dir(dir)
        .args(["train", "--save", "ref.safetensors", "--run-dir", "ref-run"])
        .args(FLAGS)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    modelfile::load(&dir.join("ref.safetensors"), 784, 10)
        .unwrap()
        .params
}

/// Starts a run in `dir`, waits until stdout shows `line_start`, then sends `signal`
/// after `delay`; returns the exit code and stderr.
fn start_and_signal(dir: &Path, line_start: &str, delay: Duration, signal: i32) -> (i32, String) {
    let mut child = bin()
        .current_dir(dir)
        .args(["train", "--save", "out.safetensors", "--run-dir", "run"])
        .args(FLAGS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let hit = line.starts_with(line_start);
        seen.push(line);
        if hit {
            break;
        }
    }
    assert!(seen.last().unwrap().starts_with(line_start), "{seen:?}");
    // Keep reading, so that the run is not stopped by a closed pipe instead of the signal.
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(delay);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&out.status).unwrap()
    });
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn resume(dir: &Path) -> Vec<f32> {
    let out = bin()
        .current_dir(dir)
        .args(["train", "--resume", "run", "--device", "cpu"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resumed at epoch"), "{stdout}");
    assert!(stdout.contains("Model Accuracy"), "{stdout}");
    modelfile::load(&dir.join("out.safetensors"), 784, 10)
        .unwrap()
        .params
}

#[test]
fn ctrl_c_checkpoints_exits_130_and_resumes_bit_identical() {
    let dir = common::scratch("sigint");
    let reference = reference_weights(&dir);
    let (code, stderr) =
        start_and_signal(&dir, "Epoch 1 -", Duration::from_millis(100), libc::SIGINT);
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("resume with: mnist-wgpu train --resume run"),
        "{stderr}"
    );
    let c = checkpoint::load(&dir.join("run"), 784, 10).unwrap();
    assert!(c.position.epoch >= 2, "{:?}", c.position);
    assert!(
        !dir.join("out.safetensors").exists(),
        "saved a model of an unfinished run"
    );
    assert!(
        resume(&dir) == reference,
        "resumed weights differ from the uninterrupted run"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kill_9_at_a_random_moment_loses_at_most_an_epoch() {
    let dir = common::scratch("sigkill");
    let reference = reference_weights(&dir);
    // A moment somewhere in epochs 1 to 3 or so, different on every run of the test.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let delay = Duration::from_millis(nanos % 500);
    let (code, _) = start_and_signal(&dir, "Epoch 0 -", delay, libc::SIGKILL);
    assert_eq!(code, 128 + libc::SIGKILL, "the run ended before the signal");
    let c = checkpoint::load(&dir.join("run"), 784, 10).expect("the last checkpoint is valid");
    assert!(
        c.position.epoch >= 1 && c.position.step == 0,
        "{:?}",
        c.position
    );
    assert_eq!(c.metrics.len(), c.position.epoch);
    assert!(
        resume(&dir) == reference,
        "resumed weights differ (killed after {delay:?})"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lr_10_diverges_with_a_message_and_exit_1() {
    let dir = common::scratch("lr10");
    let out = bin()
        .current_dir(&dir)
        .args(["train", "--device", "cpu", "--lr", "10", "--run-dir", "run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("of epoch 0")
            && lines[0].contains("try a smaller --lr (this run used 10)"),
        "{}",
        lines[0]
    );
    assert!(!dir.join("mnist_mlp.safetensors").exists());
    assert!(!dir.join("run").join("checkpoint.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metrics_and_plot_hold_a_row_per_epoch_and_quiet_prints_one_line() {
    let dir = common::scratch("metrics");
    let out = bin()
        .current_dir(&dir)
        .args([
            "train", "--device", "cpu", "--epochs", "3", "--hidden", "32", "--quiet",
        ])
        .args(["--metrics", "m.csv", "--plot", "p.png", "--no-save"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--quiet: {lines:?}");
    assert!(lines[0].starts_with("Model Accuracy "));
    let csv = std::fs::read_to_string(dir.join("m.csv")).unwrap();
    let rows = checkpoint::parse_metrics_csv(&csv).unwrap();
    assert_eq!(csv.lines().next(), Some(METRICS_HEADER));
    assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(
        rows.iter()
            .all(|r| r.test_accuracy > 0.8 && r.train_loss > 0.0)
    );
    // The default run directory got the same metrics and a checkpoint.
    let run = dir.join("runs/run-001");
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.csv")).unwrap(),
        csv
    );
    assert!(run.join("checkpoint.safetensors").exists());
    let img = image::open(dir.join("p.png")).unwrap();
    assert!(img.width() >= 800 && img.height() >= 400);
    // A second run does not overwrite the first.
    let out = bin()
        .current_dir(&dir)
        .args([
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--no-save",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("run: runs/run-002"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Outputs are not part of a run's recipe: a resumed run takes a new --save, --metrics,
/// --plot and --quiet (here on a run that had finished, which is evaluated and saved again).
#[test]
fn resume_takes_new_outputs() {
    let dir = common::scratch("resume-outputs");
    let flags = ["--device", "cpu", "--epochs", "1", "--hidden", "16"];
    let mut first = vec!["train", "--no-save", "--run-dir", "run"];
    first.extend(flags);
    let (code, stdout, stderr) = common::run_in(&dir, &first);
    assert_eq!(code, 0, "{stderr}");
    let accuracy = stdout
        .lines()
        .find(|l| l.starts_with("Model Accuracy"))
        .unwrap()
        .to_string();
    assert!(!dir.join("mnist_mlp.safetensors").exists());
    let again = [
        "train",
        "--resume",
        "run",
        "--device",
        "cpu",
        "--save",
        "later.safetensors",
        "--metrics",
        "m.csv",
        "--plot",
        "p.png",
        "--quiet",
    ];
    let (code, stdout, stderr) = common::run_in(&dir, &again);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        accuracy,
        "--quiet prints only the accuracy, the same as before"
    );
    let model = modelfile::load(&dir.join("later.safetensors"), 784, 10).unwrap();
    assert_eq!(model.arch, Arch::mlp(784, &[16], 10));
    let csv = std::fs::read_to_string(dir.join("m.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(dir.join("p.png").exists());
    // --save into a directory that does not exist is still refused before any work.
    let bad = [
        "train",
        "--resume",
        "run",
        "--device",
        "cpu",
        "--save",
        "nowhere/x.safetensors",
    ];
    let (code, _, stderr) = common::run_in(&dir, &bad);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--save nowhere/x.safetensors"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Adam and Adadelta, with weight decay and StepLR's gamma, stopped in the middle of epoch 1
/// and resumed on a fresh backend, end bit-identical to the run that did not stop, on both
/// schedules: the optimizer's state comes back from the checkpoint, Adam's step count and the
/// epoch's learning rate from its position.
#[test]
fn every_optimizer_resumes_mid_epoch_bit_identical() {
    let m = mnist();
    let (train, test) = (m.train.head(30_000), m.test.head(1000));
    let arch = Arch::mlp(784, &[32], 10);
    for (name, plan) in [("adam", common::layered()), ("adadelta", common::fused())] {
        let optimizer = mnist_wgpu::optim::Optimizer::named(name, 0.0).unwrap();
        let r = Recipe {
            lr: optimizer.default_lr(),
            optimizer,
            weight_decay: 0.001,
            gamma: 0.7,
            ..recipe(2)
        };
        let make = |p: &[f32]| -> Box<dyn Backend> {
            Box::new(common::backend(plan.clone(), &arch, &r, p, &train, &test).unwrap())
        };
        let stop = |p: &Position| p.epoch == 1 && p.step >= 250;
        let (straight, resumed, pos) =
            interrupted_vs_straight(&make, &arch, &r, train.len(), stop, name);
        assert_eq!((pos.epoch, pos.step), (1, 500), "{name}");
        assert_eq!(straight.1.len(), 2, "{name}: two state tensors");
        assert!(
            straight.0 == resumed.0,
            "{name}: weights differ after resuming"
        );
        assert!(
            straight.1 == resumed.1,
            "{name}: state differs after resuming"
        );
    }
}
