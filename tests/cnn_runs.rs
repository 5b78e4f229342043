//! The CNN recipes on the command line, as a user runs them, on the CPU backend and a part of
//! MNIST (CI trains no whole CNN run): the header names the recipe, a set of two models stops
//! on Ctrl-C mid-epoch and resumes bit-identical (dropout's masks are keyed by the step over
//! the run), the saved file loads back and evaluates to what training printed; on the GPU a
//! set's models are each bit-identical to its own run, and the fused schedule refuses a CNN in
//! one line.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{bin, run_in, scratch};
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile;

/// The first `train` training and `test` test images of MNIST as the four IDX files in `dir`.
fn part_of_mnist(dir: &Path, train: usize, test: usize) {
    let m = mnist_wgpu::data::load_mnist(&mnist_wgpu::data::default_data_dir()).unwrap();
    for (split, n, prefix) in [(&m.train, train, "train"), (&m.test, test, "t10k")] {
        let mut images = Vec::new();
        for v in [2051u32, n as u32, 28, 28] {
            images.extend(v.to_be_bytes());
        }
        images.extend(&split.images[..n * 784]);
        let mut labels = Vec::new();
        for v in [2049u32, n as u32] {
            labels.extend(v.to_be_bytes());
        }
        labels.extend(&split.labels[..n]);
        let file = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        file(&format!("{prefix}-images-idx3-ubyte"))
            .write_all(&images)
            .unwrap();
        file(&format!("{prefix}-labels-idx1-ubyte"))
            .write_all(&labels)
            .unwrap();
    }
}

/// Two cnn-small models (seeds 1 and 2) for `epochs` epochs on the part in `data`.
fn set(epochs: &'static str) -> Vec<&'static str> {
    let mut v = vec![
        "--recipe",
        "cnn-small",
        "--device",
        "cpu",
        "--epochs",
        epochs,
    ];
    v.extend(["--seeds", "1-2", "--dataset", "idx", "--data-dir", "data"]);
    v
}

fn weights(dir: &Path, name: &str) -> Vec<Vec<f32>> {
    (1..=2)
        .map(|s| {
            let path = dir.join(format!("{name}-seed{s}.safetensors"));
            let m = modelfile::load(&path, 784, 10).unwrap();
            assert_eq!(m.arch, Arch::cnn_small());
            m.params
        })
        .collect()
}

#[test]
fn a_cnn_set_stops_on_ctrl_c_and_resumes_bit_identical() {
    let dir = scratch("cnn-resume");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    part_of_mnist(&dir.join("data"), 3000, 500);
    let args = [
        &["train", "--save", "a.safetensors", "--run-dir", "straight"][..],
        &set("4"),
    ];
    let (code, out, err) = run_in(&dir, &args.concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("model: cnn-small, pytorch/examples mnist/main.py as of 2018 | 21840 parameters | batch 64"),
        "{out}"
    );
    let straight = weights(&dir, "a");

    let mut child = bin()
        .current_dir(&dir)
        .args(["train", "--save", "b.safetensors", "--run-dir", "run"])
        .args(set("4"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = lines
        .by_ref()
        .map(Result::unwrap)
        .any(|l| l.starts_with("Epoch 0 -"));
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(seen && out.status.code() == Some(130), "{err}");
    let (code, out, err) = run_in(&dir, &["train", "--resume", "run", "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumed at epoch"), "{out}");
    assert!(
        straight == weights(&dir, "b"),
        "a model differs after resuming"
    );

    // The file evaluates to what training printed for it.
    let recorded = modelfile::load(&dir.join("a-seed1.safetensors"), 784, 10).unwrap();
    let acc: f64 = recorded.metadata["accuracy"].parse().unwrap();
    let file = dir.join("a-seed1.safetensors");
    let eval = [
        "eval",
        "--model",
        file.to_str().unwrap(),
        "--dataset",
        "idx",
        "--data-dir",
        "data",
    ];
    let (code, out, err) = run_in(&dir, &eval);
    assert_eq!(code, 0, "{err}");
    let want = format!("Model Accuracy {:.2} %", acc * 100.0);
    assert!(out.contains(&want), "{want} in {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The fused schedule refuses a CNN in one line, naming the one that runs it; so are a set too
/// large for the adapter and `--hidden`.
#[test]
fn the_fused_schedule_refuses_a_cnn_in_one_line() {
    let dir = scratch("cnn-fused");
    let (code, _, err) = run_in(&dir, &["train", "--recipe", "cnn", "--schedule", "fused"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("use --schedule layered"), "{err}");
    // A set whose activations pass the adapter's binding limit, before anything is built.
    let args = [
        "train", "--recipe", "cnn", "--device", "gpu", "--seeds", "1-40",
    ];
    let (code, _, err) = run_in(&dir, &args);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(err.contains("models fit at --batch-size 64"), "{err}");
    let (code, _, err) = run_in(&dir, &["train", "--recipe", "cnn", "--hidden", "8"]);
    assert_eq!(
        (code, err.trim()),
        (
            2,
            "error: --hidden 8: --recipe cnn has no hidden sizes to set"
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On the GPU (the layered schedule), two cnn-small models trained side by side, dropout on,
/// are each bit-identical to its own run, and the file evaluates to what training printed.
#[test]
fn a_cnn_set_on_the_gpu_is_each_models_own_run() {
    let dir = scratch("cnn-gpu-set");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    part_of_mnist(&dir.join("data"), 1000, 300);
    let gpu_run = |seeds: &str, save: &str| {
        let mut args = vec!["train", "--recipe", "cnn-small", "--device", "gpu"];
        args.extend(["--schedule", "layered", "--epochs", "1", "--seeds", seeds]);
        args.extend(["--dataset", "idx", "--data-dir", "data", "--save", save]);
        let (code, out, err) = run_in(&dir, &args);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("schedule: layered"), "{out}");
        out
    };
    gpu_run("1-2", "set.safetensors");
    gpu_run("1", "one.safetensors");
    gpu_run("2", "two.safetensors");
    let load = |name: &str| modelfile::load(&dir.join(name), 784, 10).unwrap();
    assert!(load("set-seed1.safetensors").params == load("one.safetensors").params);
    assert!(load("set-seed2.safetensors").params == load("two.safetensors").params);
    assert!(load("one.safetensors").params != load("two.safetensors").params);
    let file = dir.join("one.safetensors");
    let acc: f64 = load("one.safetensors").metadata["accuracy"]
        .parse()
        .unwrap();
    let eval = ["eval", "--model", file.to_str().unwrap(), "--device", "gpu"];
    let (code, out, err) = run_in(
        &dir,
        &[&eval[..], &["--dataset", "idx", "--data-dir", "data"]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    let want = format!("Model Accuracy {:.2} %", acc * 100.0);
    assert!(out.contains(&want), "{want} in {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
