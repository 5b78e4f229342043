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

use pollster::block_on;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{default_data_dir, load_mnist};
use mnist_wgpu::model::Arch;
use mnist_wgpu::modelfile::{self, ModelFile};
use mnist_wgpu::train::{Backend, Evaluate, Recipe};
use safetensors::{Dtype, SafeTensors};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity")
}

/// What PyTorch computed.
struct Fixture {
    init: ModelFile,
    after: ModelFile,
    /// batches: [50, 32] indices into the training set
    batches: Vec<u32>,
    /// losses: [50]
    losses: Vec<f32>,
    /// momentum: [param_count], the flat table
    momentum: Vec<f32>,
    /// log_probs: [64, 10], the after-50 model on the first 64 test images
    log_probs: Vec<f32>,
    torch: String,
}

fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    assert_eq!(view.dtype(), Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

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
    let arch = &init.arch;
    let mut momentum = vec![0f32; arch.param_count()];
    for e in arch.table() {
        momentum[e.range()].copy_from_slice(&f32s(&tensors[&format!("momentum.{}", e.name)]));
    }
    Fixture {
        batches,
        losses: f32s(&tensors["losses"]),
        momentum,
        log_probs: f32s(&tensors["test_log_probs"]),
        torch,
        init,
        after,
    }
}

struct Outcome {
    losses: Vec<f32>,
    params: Vec<f32>,
    momentum: Vec<f32>,
    log_probs: Vec<f32>,
}

fn recipe() -> Recipe {
    Recipe {
        epochs: 1,
        batch_size: 32,
        lr: 0.003,
        momentum: 0.9,
        seed: 0,
    }
}

/// Runs the fixture's 50 batches: they are the first 1600 entries of the epoch's order.
fn run(backend: &mut dyn Backend, f: &Fixture, n_train: usize) -> Outcome {
    let mut order = f.batches.clone();
    order.extend((0..(n_train - order.len()) as u32).map(|i| i % n_train as u32));
    backend.begin_epoch(&order).unwrap();
    block_on(backend.run_steps(0..50)).unwrap();
    let losses = block_on(backend.losses(0..50)).unwrap();
    let params = block_on(backend.params()).unwrap();
    let momentum = block_on(backend.momentum()).unwrap();
    let ev = block_on(backend.evaluate()).unwrap();
    Outcome {
        losses,
        params,
        momentum,
        log_probs: ev.log_probs[..64 * 10].to_vec(),
    }
}

/// Checks an outcome against PyTorch and returns the largest differences, for the log.
fn check(what: &str, f: &Fixture, got: &Outcome) -> String {
    let arch: &Arch = &f.init.arch;
    let mut worst_loss: f64 = 0.0;
    for (s, (&g, &t)) in got.losses.iter().zip(&f.losses).enumerate() {
        let rel = ((g - t) / t).abs() as f64;
        worst_loss = worst_loss.max(rel);
        assert!(
            rel <= 1e-5,
            "{what}: step {s}: loss {g} vs PyTorch's {t} (rel {rel:e})"
        );
    }
    let (mut worst_w, mut worst_v): (f64, f64) = (0.0, 0.0);
    for e in arch.table() {
        let r = e.range();
        let change = r
            .clone()
            .map(|i| (f.after.params[i] - f.init.params[i]).abs())
            .fold(0f32, f32::max) as f64;
        let vmax = f.momentum[r.clone()]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs())) as f64;
        for i in r {
            let dw = (got.params[i] - f.after.params[i]).abs() as f64 / change;
            let dv = (got.momentum[i] - f.momentum[i]).abs() as f64 / vmax;
            worst_w = worst_w.max(dw);
            worst_v = worst_v.max(dv);
            assert!(
                dw <= 1e-4,
                "{what}: {}[{}] = {} vs PyTorch's {} ({dw:e} of the tensor's largest change {change:e})",
                e.name,
                i - e.offset,
                got.params[i],
                f.after.params[i]
            );
            assert!(
                dv <= 1e-4,
                "{what}: momentum of {}[{}] = {} vs PyTorch's {} ({dv:e} of its largest {vmax:e})",
                e.name,
                i - e.offset,
                got.momentum[i],
                f.momentum[i]
            );
        }
    }
    let mut worst_lp: f64 = 0.0;
    for (i, (&g, &t)) in got.log_probs.iter().zip(&f.log_probs).enumerate() {
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
         momentum {worst_v:.2e} of max, log-probs abs {worst_lp:.2e}",
        f.torch
    )
}

#[test]
fn fixtures_are_pytorchs_and_self_consistent() {
    let f = fixture();
    assert_eq!(f.init.arch, Arch::new(784, &[128, 128, 64, 64], 10));
    assert!(
        f.init.metadata.contains_key("torch"),
        "torch version recorded"
    );
    assert!(f.batches.iter().all(|&i| i < 60_000));
    assert!(f.losses.iter().all(|l| l.is_finite() && *l > 0.0));
}

/// Every family of matmul kernels the adapter can run, and the fused schedule.
#[test]
fn gpu_matches_pytorch_over_50_steps() {
    let f = fixture();
    let m = load_mnist(&default_data_dir()).unwrap();
    for gpu in common::every_schedule() {
        let (arch, r, p) = (&f.init.arch, &recipe(), &f.init.params);
        let mut b = common::backend(gpu, arch, r, p, &m.train, &m.test).unwrap();
        let got = run(&mut b, &f, m.train.len());
        let name = format!("GPU ({})", b.about().device);
        eprintln!("{}", check(&name, &f, &got));
    }
}

#[test]
fn cpu_matches_pytorch_over_50_steps() {
    let f = fixture();
    let m = load_mnist(&default_data_dir()).unwrap();
    let n = m.train.len();
    let mut b = CpuBackend::new(
        f.init.arch.clone(),
        recipe(),
        f.init.params.clone(),
        m.train,
        m.test,
    );
    let got = run(&mut b, &f, n);
    eprintln!("{}", check("CPU backend", &f, &got));
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
        ..recipe()
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
