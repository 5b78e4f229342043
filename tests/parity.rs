//! Parity with PyTorch: the fixtures under tests/parity/ were written by
//! tests/parity/make_fixtures.py (PyTorch CPU): the tutorial's model from a fixed torch seed,
//! 50 SGD steps of batch 32 on fixed batches of the real training set, each step's loss, the
//! weights and momentum buffers after them, and the log-probabilities of the first 64 test
//! images. Both backends run the same 50 steps from the same weights and must agree.
//!
//! Where the tolerances come from. PyTorch and our kernels add the same f32 products in
//! different orders, and each order is within γ_K = K·2⁻²⁴ (relative to Σ|terms|) of the exact
//! sum: for the largest product here (K = 784) that is 4.7e-5 in the worst case, and about
//! √K·2⁻²⁴ ≈ 1.7e-6 for the random-walk rounding real sums show. Fifty steps of SGD with
//! momentum carry these differences forward but, at lr 0.003, do not amplify them much. So:
//! - each step's loss: 1e-5 relative (the ceiling is 1e-4), a mean of 32 log-softmax
//!   values each a few ulp from PyTorch's;
//! - weights: what matters is what training changed, so the difference from PyTorch is
//!   measured against each tensor's largest change over the 50 steps: at most 1e-4 of it. A
//!   gradient element may be γ_784 = 4.7e-5 off in the worst case at each step, and momentum
//!   sums about ten steps' gradients, so a correct implementation stays below 1e-4 in practice
//!   (lavapipe and the CPU backend measure about 7e-6); a wrong rule or a missed step does not;
//! - momentum buffers: 1e-4 of each tensor's largest momentum value, for the same reason;
//! - log-probabilities: 1e-5 absolute plus 1e-5 relative, a forward pass of four products and a
//!   log-softmax from weights that already agree.

mod common;

use common::{f32s, table};

use pollster::block_on;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{default_data_dir, load_mnist};
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile::{self, ModelFile};
use mnist_wgpu::optim::Optimizer;
use mnist_wgpu::recipe::Recipe;
use mnist_wgpu::train::{Backend, Evaluate};
use safetensors::{Dtype, SafeTensors};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

/// What PyTorch computed: 50 steps of one optimizer from the same weights on the same batches.
struct Fixture {
    /// The optimizer's name (`optim::NAMES`) and the recipe PyTorch ran.
    name: &'static str,
    recipe: Recipe,
    init: ModelFile,
    /// after: [param_count], the weights after the 50 steps
    after: Vec<f32>,
    /// batches: [50, 32] indices into the training set
    batches: Vec<u32>,
    /// losses: [50]
    losses: Vec<f32>,
    /// The optimizer's state tensors after the 50 steps (`Optimizer::state_names`), each
    /// [param_count], the flat table.
    state: Vec<Vec<f32>>,
    /// log_probs: [64, 10], the after-50 model on the first 64 test images (SGD's fixture)
    log_probs: Option<Vec<f32>>,
    torch: String,
}

/// The recipe of a fixture: the tutorial's batch of 32, `lr`, and PyTorch's defaults.
fn recipe_of(name: &str, lr: f64, weight_decay: f64) -> Recipe {
    Recipe {
        epochs: 1,
        lr,
        optimizer: Optimizer::named(name, 0.9).unwrap(),
        weight_decay,
        ..Recipe::tutorial(lr, 0.9, 0)
    }
}

/// SGD's fixture (init, after50 and steps.safetensors).
fn fixture() -> Fixture {
    let init = modelfile::load(&dir().join("init.safetensors"), 784, 10).expect("init fixture");
    let after =
        modelfile::load(&dir().join("after50.safetensors"), 784, 10).expect("after50 fixture");
    let bytes = std::fs::read(dir().join("steps.safetensors")).expect("steps fixture");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let torch = header.metadata().as_ref().unwrap()["torch"].clone();
    let tensors: HashMap<String, _> = st.tensors().into_iter().collect();
    let b = &tensors["batches"];
    assert_eq!((b.dtype(), b.shape()), (Dtype::I32, &[50usize, 32][..]));
    let batches = b
        .data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
        .collect();
    Fixture {
        name: "sgd",
        recipe: recipe_of("sgd", 0.003, 0.0),
        batches,
        losses: f32s(&tensors["losses"]),
        state: vec![table(&init.arch, &tensors, "momentum.")],
        log_probs: Some(f32s(&tensors["test_log_probs"])),
        torch,
        after: after.params,
        init,
    }
}

/// The fixture of `name` in optimizers.safetensors (same weights and batches as SGD's).
fn fixture_of(name: &'static str) -> Fixture {
    let sgd = fixture();
    let bytes = std::fs::read(dir().join("optimizers.safetensors")).expect("optimizers fixture");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    let tensors: HashMap<String, _> = st.tensors().into_iter().collect();
    let arch = &sgd.init.arch;
    assert_eq!(
        table(arch, &tensors, "init."),
        sgd.init.params,
        "the same initial weights"
    );
    let recipe = match name {
        "adam" => recipe_of(name, 0.001, 0.0),
        _ => recipe_of(name, 1.0, 0.001),
    };
    let names = recipe.optimizer.state_names();
    Fixture {
        name,
        after: table(arch, &tensors, &format!("{name}.param.")),
        losses: f32s(&tensors[&format!("{name}.losses")]),
        state: names
            .iter()
            .map(|s| table(arch, &tensors, &format!("{name}.{s}.")))
            .collect(),
        log_probs: None,
        torch: meta["torch"].clone(),
        recipe,
        ..sgd
    }
}

/// Every optimizer's fixture.
fn fixtures() -> Vec<Fixture> {
    vec![fixture(), fixture_of("adam"), fixture_of("adadelta")]
}

struct Outcome {
    losses: Vec<f32>,
    params: Vec<f32>,
    state: Vec<Vec<f32>>,
    log_probs: Vec<f32>,
}

/// Runs the fixture's 50 batches: they are the first 1600 entries of the epoch's order.
fn run(backend: &mut dyn Backend, f: &Fixture, n_train: usize) -> Outcome {
    let mut order = f.batches.clone();
    order.extend((0..(n_train - order.len()) as u32).map(|i| i % n_train as u32));
    backend.begin_epoch(0, &order).unwrap();
    block_on(backend.run_steps(0..50)).unwrap();
    let losses = block_on(backend.losses(0..50)).unwrap();
    let params = block_on(backend.params()).unwrap();
    let state = block_on(backend.state()).unwrap();
    let ev = block_on(backend.evaluate()).unwrap();
    Outcome {
        losses,
        params,
        state,
        log_probs: ev.log_probs[..64 * 10].to_vec(),
    }
}

/// Checks an outcome against PyTorch and returns the largest differences, for the log.
fn check(what: &str, f: &Fixture, got: &Outcome) -> String {
    let arch: &Arch = &f.init.arch;
    let what = format!("{what}, {}", f.name);
    let mut worst_loss: f64 = 0.0;
    for (s, (&g, &t)) in got.losses.iter().zip(&f.losses).enumerate() {
        let rel = ((g - t) / t).abs() as f64;
        worst_loss = worst_loss.max(rel);
        assert!(
            rel <= 1e-5,
            "{what}: step {s}: loss {g} vs PyTorch's {t} (rel {rel:e})"
        );
    }
    let (mut worst_w, mut worst_s): (f64, f64) = (0.0, 0.0);
    let names = f.recipe.optimizer.state_names();
    for e in arch.table() {
        let r = e.range();
        let largest = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        let change: Vec<f32> = r.clone().map(|i| f.after[i] - f.init.params[i]).collect();
        // Each tensor against PyTorch's, as a fraction of `scale`: at most 1e-4.
        let within = |what_of: &str, have: &[f32], want: &[f32], scale: f64, worst: &mut f64| {
            for i in r.clone() {
                let d = (have[i] - want[i]).abs() as f64 / scale;
                *worst = worst.max(d);
                assert!(
                    d <= 1e-4,
                    "{what}: {what_of}{}[{}] = {} vs PyTorch's {} ({d:e} of {scale:e})",
                    e.name,
                    i - e.offset,
                    have[i],
                    want[i]
                );
            }
        };
        // Weights: what matters is what training changed.
        within("", &got.params, &f.after, largest(&change), &mut worst_w);
        for (j, name) in names.iter().enumerate() {
            let max = largest(&f.state[j][r.clone()]);
            within(
                &format!("{name} of "),
                &got.state[j],
                &f.state[j],
                max,
                &mut worst_s,
            );
        }
    }
    let mut worst_lp: f64 = 0.0;
    for (i, (&g, &t)) in got
        .log_probs
        .iter()
        .zip(f.log_probs.iter().flatten())
        .enumerate()
    {
        let d = (g - t).abs() as f64;
        worst_lp = worst_lp.max(d);
        assert!(
            d <= 1e-5 + 1e-5 * t.abs() as f64,
            "{what}: log-prob of test image {} class {}: {g} vs PyTorch's {t}",
            i / 10,
            i % 10
        );
    }
    format!(
        "{what} vs PyTorch {}: loss rel {worst_loss:.2e}, weights {worst_w:.2e} of change, \
         state {worst_s:.2e} of max, log-probs abs {worst_lp:.2e}",
        f.torch
    )
}

#[test]
fn fixtures_are_pytorchs_and_self_consistent() {
    let f = fixture();
    assert_eq!(f.init.arch, Arch::mlp(784, &[128, 128, 64, 64], 10));
    assert!(
        f.init.metadata.contains_key("torch"),
        "torch version recorded"
    );
    assert!(f.batches.iter().all(|&i| i < 60_000));
    assert!(f.losses.iter().all(|l| l.is_finite() && *l > 0.0));
}

/// Every optimizer, with every family of matmul kernels the adapter can run, and the fused
/// schedule.
#[test]
fn gpu_matches_pytorch_over_50_steps() {
    let m = load_mnist(&default_data_dir()).unwrap();
    for f in fixtures() {
        for gpu in common::every_schedule() {
            let (arch, r, p) = (&f.init.arch, &f.recipe, &f.init.params);
            let mut b = common::backend(gpu, arch, r, p, &m.train, &m.test).unwrap();
            let got = run(&mut b, &f, m.train.len());
            let name = format!("GPU ({})", b.about().device);
            eprintln!("{}", check(&name, &f, &got));
        }
    }
}

#[test]
fn cpu_matches_pytorch_over_50_steps() {
    let m = load_mnist(&default_data_dir()).unwrap();
    for f in fixtures() {
        let n = m.train.len();
        let mut b = CpuBackend::new(
            f.init.arch.clone(),
            f.recipe.clone(),
            f.init.params.clone(),
            m.train.clone(),
            m.test.clone(),
        );
        let got = run(&mut b, &f, n);
        eprintln!("{}", check("CPU backend", &f, &got));
    }
}

/// Adam without its bias corrections (the update m / sqrt(v) of the raw averages, which at
/// step 1 is about 3.2 times too large) fails the check: the CPU twin's 50 steps by hand, with
/// the corrections fixed at 1.
#[test]
fn adam_without_bias_correction_fails_the_check() {
    let f = fixture_of("adam");
    let m = load_mnist(&default_data_dir()).unwrap();
    let (arch, r) = (&f.init.arch, &f.recipe);
    let mut p = f.init.params.clone();
    let (mut a, mut b) = (vec![0f32; p.len()], vec![0f32; p.len()]);
    let mut losses = Vec::new();
    for batch in f.batches.chunks(32) {
        let x = mnist_wgpu::cpu::gather(&m.train, batch);
        let labels: Vec<u8> = batch.iter().map(|&i| m.train.labels[i as usize]).collect();
        let (loss, g) =
            mnist_wgpu::cpu::loss_and_grad(arch, &p, &x, &labels, mnist_wgpu::cpu::Pass::PLAIN);
        losses.push(loss);
        mnist_wgpu::optim::step(
            &r.optimizer,
            &r.hyper(0),
            [1.0, 1.0],
            &mut p,
            &mut a,
            &mut b,
            &g,
        );
    }
    let got = Outcome {
        losses,
        params: p,
        state: vec![a, b],
        log_probs: Vec::new(),
    };
    let verdict = std::panic::catch_unwind(|| check("Adam without bias correction", &f, &got));
    assert!(
        verdict.is_err(),
        "Adam without bias correction passed as PyTorch's"
    );
}

/// The tolerances are tight enough to notice a recipe that is slightly off: 3 % more learning
/// rate over the same 50 steps fails the check.
#[test]
fn a_slightly_different_recipe_fails_the_check() {
    let f = fixture();
    let m = load_mnist(&default_data_dir()).unwrap();
    let n = m.train.len();
    let wrong = Recipe {
        lr: 0.003 * 1.03,
        ..f.recipe.clone()
    };
    let mut b = CpuBackend::new(
        f.init.arch.clone(),
        wrong,
        f.init.params.clone(),
        m.train,
        m.test,
    );
    let got = run(&mut b, &f, n);
    let verdict = std::panic::catch_unwind(|| check("lr x 1.03", &f, &got));
    assert!(
        verdict.is_err(),
        "a 3 % larger learning rate passed as PyTorch's"
    );
}

/// `eval` on a file PyTorch wrote (`safetensors.torch.save_file(model.state_dict(), ...)`)
/// prints the accuracy PyTorch computed for it, to the printed 0.01 %, and the same test loss
/// to the printed 4 digits. torch_tutorial.safetensors is the whole recipe trained by PyTorch.
#[test]
fn eval_of_pytorch_files_prints_pytorchs_accuracy() {
    for name in ["torch_tutorial.safetensors", "after50.safetensors"] {
        let path = dir().join(name);
        let meta = modelfile::load(&path, 784, 10).unwrap().metadata;
        let torch_acc = 100.0 * meta["accuracy"].parse::<f64>().unwrap();
        let torch_loss: f64 = meta["test_loss"].parse().unwrap();
        for device in ["gpu", "cpu"] {
            let out = common::bin()
                .args([
                    "eval",
                    "--device",
                    device,
                    "--model",
                    path.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = stdout
                .lines()
                .find(|l| l.starts_with("Model Accuracy "))
                .unwrap();
            assert!(
                line.starts_with(&format!(
                    "Model Accuracy {torch_acc:.2} %   ({}/10000)",
                    meta["correct"]
                )),
                "{device} {name}: {line} vs PyTorch's {torch_acc:.2} %"
            );
            assert!(
                line.contains(&format!("test loss {torch_loss:.4} ")),
                "{device} {name}: {line} vs PyTorch's loss {torch_loss:.4}"
            );
        }
    }
}
