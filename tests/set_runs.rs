//! A set of models on the command line, as a user runs it (CPU backend, so on any machine):
//! one checkpoint covers the whole set, Ctrl-C writes it, `--resume` ends every model
//! bit-identical to the uninterrupted set; `--plot` draws the set; `eval --model A B` prints
//! the set's table.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{bin, run_in, scratch};
use mnist_wgpu::checkpoint;
use mnist_wgpu::modelfile;

/// Four models (seeds 1, 2 x lr 0.003, 0.01), quick epochs on the CPU backend, with SGD.
fn set(epochs: &'static str) -> Vec<&'static str> {
    set_with(epochs, &["--momentum", "0.9"])
}

/// The same four models with the recipe flags `recipe`.
fn set_with(epochs: &'static str, recipe: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["--device", "cpu", "--epochs", epochs, "--hidden", "64"];
    v.extend(["--seeds", "1-2", "--lr", "0.003,0.01"]);
    v.extend(recipe);
    v
}

/// Adam with StepLR, weight decay, pytorch/examples' normalisation and file order.
const ADAM: [&str; 9] = [
    "--optimizer",
    "adam",
    "--gamma",
    "0.7",
    "--weight-decay",
    "0.0001",
    "--normalize",
    "0.1307,0.3081",
    "--no-shuffle",
];

/// The model files of the set saved as `name`, in the set's order.
const TAGS: [&str; 4] = [
    "seed1-lr0.003",
    "seed1-lr0.01",
    "seed2-lr0.003",
    "seed2-lr0.01",
];

fn weights(dir: &Path, name: &str) -> Vec<Vec<f32>> {
    TAGS.iter()
        .map(|t| {
            let path = dir.join(format!("{name}-{t}.safetensors"));
            modelfile::load(&path, 784, 10).unwrap().params
        })
        .collect()
}

/// Starts the set, waits for the line starting `line_start`, then sends Ctrl-C; returns the
/// exit code and stderr.
fn interrupt_after(dir: &Path, line_start: &str, recipe: &[&'static str]) -> (i32, String) {
    let mut child = bin()
        .current_dir(dir)
        .args(["train", "--save", "b.safetensors", "--run-dir", "run"])
        .args(set_with("6", recipe))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen: Vec<String> = lines
        .by_ref()
        .map(Result::unwrap)
        .take_while(|l| !l.starts_with(line_start))
        .collect();
    // Keep reading, so that the run is not stopped by a closed pipe instead of the signal.
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(Duration::from_millis(150));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!seen.is_empty(), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_set_checkpoints_on_ctrl_c_and_resumes_every_model_bit_identical() {
    let dir = scratch("set-resume");
    let (code, out, err) = run_in(
        &dir,
        &[
            &["train", "--save", "a.safetensors", "--run-dir", "straight"][..],
            &set("6"),
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("checkpoint after every epoch"), "{out}");
    assert!(out.contains("mean ± std of 4 models"), "{out}");
    let straight = weights(&dir, "a");

    let (code, err) = interrupt_after(&dir, "Epoch 1 -", &["--momentum", "0.9"]);
    assert_eq!(code, 130, "{err}");
    // The command it prints resumes on the same device, so that it ends bit-identical.
    assert!(
        err.contains("resume with: mnist-wgpu train --resume run --device cpu"),
        "{err}"
    );
    let c = checkpoint::load(&dir.join("run"), 784, 10).unwrap();
    assert_eq!(c.models(), 4);
    assert!(
        c.position.epoch >= 2 && c.position.epoch < 6,
        "{:?}",
        c.position
    );
    assert_eq!(c.set_metrics.len(), 4 * c.metrics.len());

    let (code, out, err) = run_in(&dir, &["train", "--resume", "run", "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumed at epoch"), "{out}");
    assert!(out.contains("mean ± std of 4 models"), "{out}");
    let resumed = weights(&dir, "b");
    for (k, (a, b)) in straight.iter().zip(&resumed).enumerate() {
        assert!(
            a == b,
            "model {} ({}) differs after resuming",
            k + 1,
            TAGS[k]
        );
    }
    // The metrics list every model's every epoch once, as the straight run's do.
    let csv = |d: &str| std::fs::read_to_string(dir.join(d).join("metrics.csv")).unwrap();
    let rows = |t: String| {
        t.lines()
            .skip(1)
            .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(csv("straight")), rows(csv("run")));
    assert_eq!(rows(csv("run")).len(), 4 * 6);

    // Resumed once more after its last epoch: the same table from what the checkpoint holds.
    let (code, again, err) = run_in(
        &dir,
        &["train", "--resume", "run", "--no-save", "--device", "cpu"],
    );
    assert_eq!(code, 0, "{err}");
    let table = |t: &str| {
        t.lines()
            .skip_while(|l| !l.contains("train loss"))
            .skip(1)
            .take(4)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&again), table(&out), "{again}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_set_plots_and_eval_prints_the_table_of_its_files() {
    let dir = scratch("set-plot-eval");
    let mut args = vec!["train", "--save", "m.safetensors", "--plot", "set.png"];
    args.extend(set("2"));
    let (code, out, err) = run_in(&dir, &args);
    assert_eq!(code, 0, "{err}");
    let png = image::open(dir.join("set.png")).unwrap();
    assert!(png.width() > 0, "{out}");

    let files: Vec<String> = TAGS.iter().map(|t| format!("m-{t}.safetensors")).collect();
    let mut eval = vec!["eval", "--device", "cpu", "--model"];
    eval.extend(files.iter().map(String::as_str));
    let (code, shown, err) = run_in(&dir, &eval);
    assert_eq!(code, 0, "{err}");
    // One row per file with its seed and lr from the file's metadata, then the spread.
    for (t, f) in TAGS.iter().zip(&files) {
        let row = shown.lines().find(|l| l.contains(f.as_str()));
        let row = row.unwrap_or_else(|| panic!("no row for {f}: {shown}"));
        let (seed, lr) = t.split_once('-').unwrap();
        assert!(row.contains(&seed[4..]) && row.contains(&lr[2..]), "{row}");
    }
    assert!(shown.contains("mean ± std of 4 models"), "{shown}");
    // The accuracies the files recorded are what eval finds now.
    for f in &files {
        let row = shown.lines().find(|l| l.contains(f.as_str())).unwrap();
        let m = modelfile::load(&dir.join(f), 784, 10).unwrap();
        let recorded: f64 = m.metadata["accuracy"].parse().unwrap();
        assert!(row.contains(&format!("{:.2} %", 100.0 * recorded)), "{row}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Models too large for the adapter's binding or the host's memory are refused before anything
/// is allocated, naming the flag and the largest value that fits (this run once grew to 24 GB
/// of host memory and was killed).
#[test]
fn models_too_large_are_refused_with_what_fits() {
    let dir = scratch("limits");
    for (device, limit) in [
        ("gpu", "storage binding limit"),
        ("cpu", "host's available memory"),
    ] {
        let args = ["train", "--hidden", "65536,65536", "--device", device];
        let t = std::time::Instant::now();
        let (code, _, err) = run_in(&dir, &args);
        assert_eq!(code, 2, "{err}");
        assert!(err.starts_with("error: --hidden 65536,65536: "), "{err}");
        assert!(
            err.contains(limit) && err.contains("widest that fits is --hidden "),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
    // A set whose models fit one by one but not together is told how many do.
    let args = [
        "train", "--hidden", "20000", "--seeds", "1-4000", "--device", "cpu",
    ];
    let (code, _, err) = run_in(&dir, &args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("4000 models") && err.contains("models of this size fit"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A learning rate too large ends a single run; in a set only that model stops counting: the
/// others train on, its row says so, its NaN weights are not saved, and the mean leaves it out.
/// Only when every model has diverged does the set end with the single run's error.
#[test]
fn a_diverged_model_leaves_the_rest_of_its_set_training() {
    let dir = scratch("set-diverged");
    // The tutorial's shape: lr 10 overflows it within the first epoch.
    let args = ["train", "--device", "cpu", "--epochs", "1"];
    let mut mixed = args.to_vec();
    mixed.extend(["--lr", "0.003,10", "--save", "d.safetensors"]);
    let (code, out, err) = run_in(&dir, &mixed);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("  10  "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("diverged"), "{row}");
    assert!(
        out.contains("mean ± std of 1 models (1 diverged, left out)"),
        "{out}"
    );
    assert!(out.contains("| 1 of 2 diverged"), "{out}");
    assert!(err.contains("not saved: lr10 diverged"), "{err}");
    assert!(dir.join("d-lr0.003.safetensors").exists());
    assert!(!dir.join("d-lr10.safetensors").exists());
    // The model that trained is its own single run's.
    let (code, single, err) = run_in(&dir, &[&args[..], &["--save", "one.safetensors"]].concat());
    assert_eq!(code, 0, "{err}");
    let last = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Model Accuracy"))
            .map(str::to_string)
    };
    let a = modelfile::load(&dir.join("d-lr0.003.safetensors"), 784, 10).unwrap();
    let b = modelfile::load(&dir.join("one.safetensors"), 784, 10).unwrap();
    assert!(a.params == b.params, "{:?}", last(&single));

    let mut all = args.to_vec();
    all.extend(["--lr", "10,20", "--no-save"]);
    let (code, _, err) = run_in(&dir, &all);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the run diverged") && err.contains("of model 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The same with Adam, StepLR, weight decay, pytorch/examples' normalisation and file order:
/// every model ends bit-identical to the uninterrupted set (so both of Adam's state tensors,
/// its step count and the epoch's learning rate came back), the files name the recipe, and a
/// resume under another optimizer is refused in one line.
#[test]
fn an_adam_set_with_steplr_resumes_every_model_bit_identical() {
    let dir = scratch("set-resume-adam");
    let straight_args = ["train", "--save", "a.safetensors", "--run-dir", "straight"];
    let (code, out, err) = run_in(&dir, &[&straight_args[..], &set_with("6", &ADAM)].concat());
    assert_eq!(code, 0, "{err}");
    let header = "adam | lr 0.003,0.01 | seeds 1-2 | weight decay 0.0001 | StepLR gamma 0.7 | \
                  normalize 0.1307,0.3081 | file order";
    assert!(out.contains(header), "{out}");
    let straight = weights(&dir, "a");

    let (code, err) = interrupt_after(&dir, "Epoch 1 -", &ADAM);
    assert_eq!(code, 130, "{err}");
    let (code, _, err) = run_in(
        &dir,
        &[
            "train",
            "--resume",
            "run",
            "--optimizer",
            "sgd",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.trim().lines().count() == 1 && err.contains("trains with adam"),
        "{err}"
    );
    let (code, out, err) = run_in(&dir, &["train", "--resume", "run", "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumed at epoch"), "{out}");
    for (k, (a, b)) in straight.iter().zip(&weights(&dir, "b")).enumerate() {
        assert!(
            a == b,
            "model {} ({}) differs after resuming",
            k + 1,
            TAGS[k]
        );
    }
    let path = dir.join(format!("b-{}.safetensors", TAGS[0]));
    let meta = modelfile::load(&path, 784, 10).unwrap().metadata;
    for (k, v) in [
        ("optimizer", "adam"),
        ("gamma", "0.7"),
        ("weight_decay", "0.0001"),
        ("normalize", "0.1307,0.3081"),
        ("shuffle", "false"),
    ] {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "{k} in {meta:?}");
    }
    // eval normalises as the file says, so it finds the accuracy training recorded.
    let (code, out, err) = run_in(
        &dir,
        &["eval", "--device", "cpu", "--model", path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let recorded = format!("{:.2} %", 100.0 * meta["accuracy"].parse::<f64>().unwrap());
    assert!(out.contains(&format!("Model Accuracy {recorded}")), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
