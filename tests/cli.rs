//! The binary as a user runs it: bad flags get one line and exit code 2 before any work; bad
//! data gets a message naming the file and exit code 1.

mod common;

use std::path::Path;

fn mnist_wgpu(args: &[&str]) -> (i32, String, String) {
    mnist_wgpu_in(&std::env::temp_dir(), args)
}

/// Runs the binary with `dir` as the working directory (where `train` saves its model).
fn mnist_wgpu_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    common::run_in(dir, args)
}

/// `train --device cpu --offline --data-dir DIR`: exit code and stderr.
fn train_on_cpu_from(dir: &std::path::Path) -> (i32, String) {
    let (code, _, stderr) = mnist_wgpu(&[
        "train",
        "--device",
        "cpu",
        "--offline",
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
        (&["train", "--optimizer", "rmsprop"], "--optimizer"),
        (
            &["train", "--optimizer", "adam", "--momentum", "0.5"],
            "--momentum 0.5: --optimizer adam has no momentum",
        ),
        (&["train", "--weight-decay", "-1"], "--weight-decay"),
        (&["train", "--gamma", "0"], "--gamma"),
        (&["train", "--gamma", "1.5"], "--gamma"),
        (&["train", "--normalize", "0.5"], "--normalize"),
        (&["train", "--normalize", "0.5,0"], "--normalize"),
        (&["train", "--device", "tpu"], "--device"),
        (&["train", "--backend", "glide"], "--backend"),
        (&["train", "--dataset", "cifar"], "--dataset"),
        (
            &["train", "--dataset", "idx", "--device", "cpu"],
            "--dataset idx",
        ),
        (&["train", "--read-timeout", "0"], "--read-timeout"),
        (
            &["eval", "--model", "x", "--connect-timeout", "-1"],
            "--connect-timeout",
        ),
        (&["serve", "--dir", "no/such/page"], "web/build.sh"),
        (&["serve", "--port", "70000"], "--port"),
        (&["train", "--per-sample", "2x30"], "--per-sample"),
        (&["train", "--per-sample", "0x32"], "--per-sample"),
        (
            &["train", "--schedule", "layered", "--per-sample", "2x32"],
            "--per-sample 2x32: the layered schedule",
        ),
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
        stderr.contains("mnist-wgpu-no-such-dir")
            && stderr.contains("train-images-idx3-ubyte")
            && stderr.contains("--offline"),
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
        "--optimizer",
        "--weight-decay",
        "--gamma",
        "--normalize",
        "--hidden",
        "--seed",
        "--data-dir",
        "--device",
        "--backend",
        "--adapter",
        "--save",
        "--dataset",
        "--connect-timeout",
        "--read-timeout",
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

/// The files in `dir`, sorted, without the run directories under `runs/`.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "runs")
        .collect();
    v.sort();
    v
}

fn accuracy(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Model Accuracy "))
        .unwrap_or_else(|| panic!("no accuracy line in {stdout}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn cpu_training_runs_end_to_end_and_saves_a_model() {
    let dir = common::scratch("train-save");
    let (code, stdout, stderr) = mnist_wgpu_in(
        &dir,
        &[
            "train", "--device", "cpu", "--epochs", "1", "--hidden", "32",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("adapter: CPU"), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Epoch 0 - Training loss: ")),
        "{stdout}"
    );
    let pct = accuracy(&stdout);
    assert!(pct > 85.0, "one epoch of a 784-32-10 net: {pct}");
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("saved mnist_mlp.safetensors"),
        "{stdout}"
    );

    // The default file, with PyTorch's keys and the run in its metadata.
    let m = mnist_wgpu::modelfile::load(&dir.join("mnist_mlp.safetensors"), 784, 10).unwrap();
    assert_eq!(m.arch.mlp_sizes(), Some(vec![784, 32, 10]));
    assert_eq!(m.metadata["hidden"], "32");
    assert_eq!(m.metadata["epochs"], "1");
    assert_eq!(m.metadata["seed"], "1");
    assert!(m.metadata["adapter"].starts_with("CPU"));
    let saved: f64 = m.metadata["accuracy"].parse().unwrap();
    assert!((100.0 * saved - pct).abs() < 0.005, "{saved} vs {pct}");
    let names = files(&dir);
    assert_eq!(
        names,
        ["mnist_mlp.safetensors"],
        "temporary files left behind"
    );

    // eval on the same file prints the same accuracy, per-class lines and the matrix.
    let (code, stdout, stderr) = mnist_wgpu_in(
        &dir,
        &[
            "eval",
            "--device",
            "cpu",
            "--model",
            "mnist_mlp.safetensors",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(accuracy(&stdout), pct);
    assert!(
        stdout.contains("class  correct  total  accuracy"),
        "{stdout}"
    );
    assert!(stdout.contains("confusion matrix"), "{stdout}");
    let matrix: Vec<&str> = stdout.lines().rev().take(10).collect();
    assert!(
        matrix.iter().all(|l| l.split_whitespace().count() == 11),
        "{stdout}"
    );

    // --init continues from it; --no-save writes nothing new; --hidden must agree.
    let (code, stdout, stderr) = mnist_wgpu_in(
        &dir,
        &[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--init",
            "mnist_mlp.safetensors",
            "--no-save",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("init mnist_mlp.safetensors"), "{stdout}");
    assert!(
        accuracy(&stdout) > pct,
        "a second epoch from the saved weights: {stdout}"
    );
    assert_eq!(files(&dir), ["mnist_mlp.safetensors"]);
    let (code, _, stderr) = mnist_wgpu_in(
        &dir,
        &["train", "--init", "mnist_mlp.safetensors", "--hidden", "64"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--hidden 64") && stderr.contains("32"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unusable_save_paths_exit_2_before_training() {
    let dir = common::scratch("save-path");
    for (path, expect) in [
        (".", "is a directory"),
        ("nowhere/m.safetensors", "does not exist"),
    ] {
        let (code, stdout, stderr) =
            mnist_wgpu_in(&dir, &["train", "--device", "cpu", "--save", path]);
        let lines = errors(&stderr);
        assert_eq!(code, 2, "{path}: {stderr}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(expect), "{}", lines[0]);
        assert!(stdout.is_empty(), "trained anyway: {stdout}");
    }
    let (code, _, stderr) = mnist_wgpu(&["train", "--save", "a", "--no-save"]);
    assert_eq!(code, 2, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_model_files_get_one_line_naming_the_file() {
    let dir = common::scratch("bad-models");
    let good =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/init.safetensors"))
            .unwrap();
    // A header that declares an F16 tensor: not f32.
    let f16 = {
        let header = br#"{"0.weight":{"dtype":"F16","shape":[10,784],"data_offsets":[0,15680]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend(std::iter::repeat_n(0u8, 15680));
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.safetensors", vec![], "empty"),
        (
            "text.safetensors",
            b"not a model at all, just some text".to_vec(),
            "not a safetensors file",
        ),
        (
            "truncated.safetensors",
            good[..good.len() / 2].to_vec(),
            "not a safetensors file",
        ),
        ("f16.safetensors", f16, "expected F32"),
    ];
    for (name, bytes, expect) in &cases {
        std::fs::write(dir.join(name), bytes).unwrap();
        for sub in ["eval --model", "train --epochs 1 --device cpu --init"] {
            let mut args: Vec<&str> = sub.split(' ').collect();
            args.push(name);
            let (code, stdout, stderr) = mnist_wgpu_in(&dir, &args);
            let lines = errors(&stderr);
            assert_eq!(code, 1, "{sub} {name}: {stderr}");
            assert_eq!(lines.len(), 1, "{sub} {name}: {lines:?}");
            assert!(
                lines[0].contains(name) && lines[0].contains(expect),
                "{}",
                lines[0]
            );
            assert!(!stdout.contains("Epoch"), "{sub} {name}: trained anyway");
        }
    }
    let (code, _, stderr) = mnist_wgpu_in(&dir, &["eval", "--model", "absent.safetensors"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("absent.safetensors: cannot read"),
        "{stderr}"
    );
    // The OS's reason once, not once from the message and again from its source.
    let (code, _, stderr) = mnist_wgpu_in(&dir, &["eval", "--model", "."]);
    assert_eq!(code, 1);
    assert_eq!(stderr.matches("Is a directory").count(), 1, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn selftest_prints_a_passing_table() {
    let (code, stdout, stderr) = mnist_wgpu(&["selftest"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("adapter: "), "{stdout}");
    assert!(
        lines[1].starts_with("kernel") && lines[1].ends_with("ok"),
        "{stdout}"
    );
    let rows = &lines[2..lines.len() - 1];
    assert!(rows.len() > 60, "{stdout}");
    for kernel in [
        "forward+relu",
        "backward input",
        "backward weight+bias",
        "backward weight only",
        "gather",
        "nll",
        "evaluate",
        "optimizer sgd",
        "optimizer adam",
        "optimizer adadelta",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(kernel)),
            "no {kernel} row"
        );
    }
    assert!(rows.iter().all(|r| r.ends_with(" ok")), "{stdout}");
    assert!(lines.last().unwrap().contains(" 0 failed"), "{stdout}");
}

#[test]
fn adapters_lists_them_and_marks_the_pick() {
    let (code, stdout, stderr) = mnist_wgpu(&["adapters"]);
    assert_eq!(code, 0, "{stderr}");
    let heads: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("* ") || l.starts_with("  ") && !l.starts_with("    "))
        .collect();
    assert!(!heads.is_empty(), "{stdout}");
    assert_eq!(
        heads.iter().filter(|l| l.starts_with("* ")).count(),
        1,
        "exactly one adapter marked: {stdout}"
    );
    assert!(
        stdout.contains("storage binding") && stdout.contains("subgroups"),
        "{stdout}"
    );
    // The marked one is the adapter train would use.
    let picked = heads.iter().find(|l| l.starts_with("* ")).unwrap();
    let (_, eval_out, _) = mnist_wgpu(&[
        "eval",
        "--model",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/parity/init.safetensors")
            .to_str()
            .unwrap(),
    ]);
    // Name, API and type; the kernels and schedule follow (eval's are measured).
    let adapter_line = eval_out.lines().next().unwrap();
    let head = |l: &str| l.split(" | ").take(3).collect::<Vec<_>>().join(" | ");
    assert_eq!(
        head(&picked[2..]),
        head(adapter_line.trim_start_matches("adapter: ")),
        "{stdout}"
    );
}

#[test]
fn bench_prints_figures_and_json() {
    let (code, stdout, stderr) = mnist_wgpu(&[
        "bench",
        "--seconds",
        "0.3",
        "--warmup",
        "5",
        "--profile",
        "--hidden",
        "32",
        "--schedule",
        "layered",
    ]);
    assert_eq!(code, 0, "{stderr}");
    for key in [
        "training ",
        "ms/step",
        "GFLOP/s",
        "dispatches",
        "evaluation",
        "peak memory",
    ] {
        assert!(stdout.contains(key), "no {key:?} in {stdout}");
    }
    // lavapipe has timestamp queries: one row per kernel of the step, and the total.
    assert!(
        stdout.contains("backward weight 0") && stdout.contains("one step"),
        "{stdout}"
    );
    let (code, stdout, stderr) = mnist_wgpu(&[
        "bench",
        "--json",
        "--seconds",
        "0.2",
        "--warmup",
        "5",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout.trim();
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    for key in [
        "\"images_per_s\": ",
        "\"ms_per_step\": ",
        "\"gflops\": ",
        "\"peak_rss_mb\": ",
    ] {
        assert!(line.contains(key), "no {key} in {line}");
    }
    // --seconds bounds the timed steps of a slow step too: a set of 8 on the GPU for 0.3 s
    // times its 20 steps and what the rest of the time allows, not a whole interval of 250.
    let (code, stdout, stderr) = mnist_wgpu(&[
        "bench",
        "--json",
        "--seconds",
        "0.3",
        "--warmup",
        "2",
        "--seeds",
        "1-8",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let steps: usize = stdout
        .split("\"steps\": ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no steps in {stdout}"));
    assert!((20..250).contains(&steps), "{steps} steps in {stdout}");
}

#[test]
fn train_profile_prints_the_kernel_table() {
    let dir = common::scratch("profile");
    let (code, stdout, stderr) = mnist_wgpu_in(
        &dir,
        &[
            "train",
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--no-save",
            "--profile",
            "--schedule",
            "layered",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("per-kernel GPU time over the 1875 training steps"),
        "{stdout}"
    );
    for kernel in [
        "gather train",
        "forward 0",
        "nll loss + grad",
        "backward weight 0",
        "optimizer",
        "one step",
    ] {
        assert!(stdout.contains(kernel), "no {kernel} row in {stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--device auto` on a software adapter says, in one line, what it costs against the CPU
/// backend, both measured on this machine; on a hardware adapter, and with `--device gpu`, it
/// says nothing.
#[test]
fn a_software_adapter_is_named_as_such() {
    let dir = common::scratch("software-note");
    let flags = [
        "train",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--no-save",
        "--run-dir",
    ];
    let (code, stdout, stderr) = mnist_wgpu_in(&dir, &[&flags[..], &["auto"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let adapter = stdout.lines().next().unwrap();
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("is a software adapter"))
        .collect();
    match adapter.contains("| Cpu |") {
        true => assert!(
            notes.len() == 1 && notes[0].contains("ms of --device cpu measured now"),
            "{stderr}"
        ),
        false => assert!(notes.is_empty(), "{stderr}"),
    }
    let (code, _, stderr) =
        mnist_wgpu_in(&dir, &[&flags[..], &["gpu", "--device", "gpu"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("software adapter"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--kernels` forces a family of matmul kernels; the header line names the one in use, and
/// asking for the subgroup kernels where there are no subgroups is one line, not a panic.
#[test]
fn kernels_can_be_forced_and_are_named() {
    let dir = common::scratch("kernels-flag");
    let args = [
        "train",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--no-save",
        "--run-dir",
        "r",
        "--kernels",
        "plain",
        "--schedule",
        "layered",
    ];
    let (code, stdout, stderr) = mnist_wgpu_in(&dir, &args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("| kernels: plain | schedule: layered"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        mnist_wgpu(&["selftest", "--backend", "gl", "--kernels", "subgroup"]);
    assert_ne!(code, 0, "{stdout}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains("--kernels subgroup") && line.contains("no subgroups"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--schedule auto` (the default) measures every schedule and kernel family on the first run of
/// an adapter and shape, says what it chose in one line, caches it (a second run reads it
/// back, `--retune` measures again, `adapters` lists it); a fixed `--schedule` measures
/// nothing and is named in the header; `bench --json` names the schedule and its dispatches.
#[test]
fn schedule_auto_measures_once_and_caches_the_choice() {
    let dir = common::scratch("schedule-auto");
    let cache = dir.join("cache");
    let run = |args: &[&str]| {
        common::outcome(
            common::bin()
                .env("MNIST_WGPU_CACHE_DIR", &cache)
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap(),
        )
    };
    let train = ["train", "--epochs", "1", "--hidden", "8", "--no-save"];
    let chose = |stderr: &str, how: &str| -> String {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("schedule: auto chose "))
            .unwrap_or_else(|| panic!("no choice line in {stderr}"));
        assert!(line.contains(how), "{line}");
        assert!(
            line.contains("fused/") && line.contains("layered/"),
            "{line}"
        );
        line["schedule: auto chose ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let (code, stdout, stderr) = run(&train);
    assert_eq!(code, 0, "{stderr}");
    let first = chose(&stderr, "measured now, cached in");
    let header = stdout.lines().next().unwrap();
    let schedule = first.split('/').next().unwrap();
    assert!(
        header.contains(&format!("schedule: {schedule}")),
        "{header} vs {first}"
    );
    assert!(cache.join("schedules.tsv").is_file());
    let (code, _, stderr) = run(&train);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(chose(&stderr, "measured earlier, cached in"), first);
    let (code, _, stderr) = run(&[&train[..], &["--retune"]].concat());
    assert_eq!(code, 0, "{stderr}");
    chose(&stderr, "measured now");
    let (code, stdout, _) = run(&["adapters"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("--schedule auto, train 784-8-10 batch 32"),
        "{stdout}"
    );
    let (code, stdout, stderr) = run(&[&train[..], &["--schedule", "fused"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("schedule: auto"), "{stderr}");
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("| schedule: fused"),
        "{stdout}"
    );
    // Per-sample workgroups other than the default are named, and auto is not asked.
    let small = [&train[..], &["--schedule", "fused", "--per-sample", "2x32"]].concat();
    let (code, stdout, stderr) = run(&small);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("| schedule: fused 2x32 (samples x invocations per workgroup)"),
        "{stdout}"
    );
    for (schedule, dispatches) in [("fused", "2"), ("layered", "6")] {
        let bench = [
            "bench",
            "--json",
            "--seconds",
            "0.2",
            "--warmup",
            "5",
            "--hidden",
            "8",
        ];
        let (code, stdout, stderr) = run(&[&bench[..], &["--schedule", schedule]].concat());
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains(&format!("\"schedule\": \"{schedule}\"")),
            "{stdout}"
        );
        let want = format!("\"dispatches_per_step\": {dispatches},");
        assert!(stdout.contains(&want), "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
