//! The binary as a user runs it: bad flags get one line and exit code 2 before any work; bad
//! data gets a message naming the file and exit code 1.

use std::process::Command;

fn mnist_wgpu(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-wgpu"))
        .args(args)
        .output()
        .expect("running mnist-wgpu");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `train --device cpu --data-dir DIR`: exit code and stderr.
fn train_on_cpu_from(dir: &std::path::Path) -> (i32, String) {
    let (code, _, stderr) = mnist_wgpu(&[
        "train",
        "--device",
        "cpu",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    (code, stderr)
}

/// stderr without Mesa's own start-up noise.
fn errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect()
}

#[test]
fn nonsensical_flags_exit_2_with_one_line() {
    for (args, expect) in [
        (&["train", "--batch-size", "0"][..], "--batch-size"),
        (&["train", "--lr", "-1"], "--lr"),
        (&["train", "--lr", "nan"], "--lr"),
        (&["train", "--lr", "inf"], "--lr"),
        (&["train", "--epochs", "0"], "--epochs"),
        (&["train", "--hidden", "12,,x"], "--hidden"),
        (&["train", "--hidden", ""], "--hidden"),
        (&["train", "--momentum", "1.5"], "--momentum"),
        (&["train", "--device", "tpu"], "--device"),
        (&["train", "--backend", "glide"], "--backend"),
    ] {
        let (code, stdout, stderr) = mnist_wgpu(args);
        let lines = errors(&stderr);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {lines:?}");
        assert!(lines[0].contains(expect), "{args:?}: {}", lines[0]);
        assert!(stdout.is_empty(), "{args:?}: printed {stdout}");
    }
}

#[test]
fn batch_beyond_the_adapter_limits_exits_2() {
    let (code, _, stderr) = mnist_wgpu(&["train", "--device", "gpu", "--batch-size", "100000000"]);
    let lines = errors(&stderr);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("--batch-size 100000000"), "{}", lines[0]);
}

#[test]
fn missing_data_names_the_directory() {
    let dir = std::env::temp_dir().join("mnist-wgpu-no-such-dir");
    let (code, stderr) = train_on_cpu_from(&dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("mnist-wgpu-no-such-dir") && stderr.contains("train-images-idx3-ubyte"),
        "{stderr}"
    );
}

#[test]
fn corrupt_data_is_rejected_by_checksum() {
    let dir = std::env::temp_dir().join(format!("mnist-wgpu-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist");
    for f in std::fs::read_dir(&assets).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    // A plain file is preferred over the .gz: give a wrong one.
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 1, 3],
    )
    .unwrap();
    let (code, stderr) = train_on_cpu_from(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("t10k-labels-idx1-ubyte") && stderr.contains("SHA-256"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let (code, stdout, _) = mnist_wgpu(&["train", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--epochs",
        "--batch-size",
        "--lr",
        "--momentum",
        "--hidden",
        "--seed",
        "--data-dir",
        "--device",
        "--backend",
        "--adapter",
    ] {
        // The flag's block of the long help: from its line to the next flag's.
        let start = stdout
            .find(&format!("      {flag} "))
            .unwrap_or_else(|| panic!("{flag} missing"));
        let rest = &stdout[start + 1..];
        let block = &rest[..rest.find("\n  -").unwrap_or(rest.len())];
        assert!(
            block.contains("[default: "),
            "{flag} has no default in --help: {block}"
        );
    }
}

#[test]
fn cpu_training_runs_end_to_end() {
    let (code, stdout, stderr) = mnist_wgpu(&[
        "train", "--device", "cpu", "--epochs", "1", "--hidden", "32",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("adapter: CPU"), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Epoch 0 - Training loss: ")),
        "{stdout}"
    );
    let acc = lines.last().unwrap();
    assert!(acc.starts_with("Model Accuracy "), "{stdout}");
    let pct: f64 = acc.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(pct > 85.0, "one epoch of a 784-32-10 net: {acc}");
}
