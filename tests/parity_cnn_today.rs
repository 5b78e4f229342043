//! Parity with PyTorch for the CNN of `--recipe cnn` (today's pytorch/examples network) with
//! dropout off: `tests/parity/make_cnn_fixtures.py fixtures-cnn` (PyTorch 2.15, CPU) ran 50
//! steps of Adadelta (lr 1.0) in batches of 16 from weights both sides compute from one
//! formula (so the fixture holds no 4.8 MB of fc1), and kept each step's loss, the final
//! tensors (fc1's weight every 97th float), Adadelta's two state tensors of conv1, conv2 and
//! fc2, and the first 16 test images' log-probabilities. The CPU backend and the GPU's layered
//! schedule (every kernel family) run the same 50 steps.
//!
//! Tolerances, against PyTorch's own drift: its f32 run lies 4.2e-6 of a tensor's change and
//! 3.1e-7 of the losses from its f64 run (the fixture's metadata; no max-pool window flipped
//! in these 50 steps). The limits are those of the MLP's and cnn-small's parity: losses 1e-5
//! relative, weights and state 1e-4 of their change or largest value, log-probabilities 1e-4,
//! for both backends, on every tensor but one output channel of one convolution, whose weight,
//! bias and state are held to 1e-3. That channel is a near-tie: at the last step, conv1's
//! channel 23 computes 1.04e-7 at one position in PyTorch's f32 (5.8e-8 in f64), the
//! smallest of any channel in any step, within the rounding of its 9-term sum, so the ReLU
//! after it passes or stops that position's gradient as the order of the sum falls; the GPU
//! (every family, on lavapipe) lands on the other side and that channel's weights lie 2.5e-4
//! of their change from PyTorch's, every other tensor 4.0e-6. The test finds the channel
//! (the one whose leaving out lowers the worst difference most), so a kernel error spread
//! over channels still fails the tight limit.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::f32s;
use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{default_data_dir, load_mnist};
use mnist_wgpu::model::{Arch, DropP};
use mnist_wgpu::optim::Optimizer;
use mnist_wgpu::recipe::{EXAMPLES_NORMALIZE, Recipe};
use mnist_wgpu::train::Backend;
use pollster::block_on;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

const STEPS: usize = 50;
const BATCH: usize = 16;
const EVERY: usize = 97;

fn arch() -> Arch {
    Arch::cnn().with_dropout(DropP::new(0.0).unwrap())
}

/// The fixture's initial weights: tensor t's element i is ((i * 7919 + 13 t) % 1000 / 1000 -
/// 0.5) * 2 / sqrt(fan_in), in f64, rounded once to f32 (as `formula_init` in the script).
fn formula_init(arch: &Arch) -> Vec<f32> {
    let mut flat = vec![0f32; arch.param_count()];
    let table = arch.table();
    for (t, e) in table.iter().enumerate() {
        let weight = table
            .iter()
            .find(|w| w.name == e.name.replace("bias", "weight"))
            .unwrap();
        let fan_in: usize = weight.shape[1..].iter().product();
        for (i, v) in flat[e.range()].iter_mut().enumerate() {
            let u = ((i * 7919 + 13 * t) % 1000) as f64 / 1000.0 - 0.5;
            *v = (u * 2.0 / (fan_in as f64).sqrt()) as f32;
        }
    }
    flat
}

/// What one backend computed in the 50 steps.
struct Run {
    losses: Vec<f32>,
    params: Vec<f32>,
    /// square_avg, acc_delta
    state: Vec<Vec<f32>>,
    log_probs: Vec<f32>,
}

fn run(backend: &mut dyn Backend, batches: &[u32], n: usize) -> Run {
    let mut order = batches.to_vec();
    order.extend((0..(n - order.len()) as u32).map(|i| i % n as u32));
    backend.begin_epoch(0, &order).unwrap();
    block_on(backend.run_steps(0..STEPS)).unwrap();
    Run {
        losses: block_on(backend.losses(0..STEPS)).unwrap(),
        params: block_on(backend.params()).unwrap(),
        state: block_on(backend.state()).unwrap(),
        log_probs: block_on(backend.evaluate()).unwrap().log_probs[..160].to_vec(),
    }
}

/// One output channel of a convolution: its layer's name and the channel.
type Channel = (&'static str, usize);

/// The largest difference of `ours` from the fixture's tensors `prefix<key>` (fc1's weight
/// every 97th float), each as a fraction of `scale(key, its values)`, leaving out the weight
/// and bias of channel `skip`.
fn worst(
    ours: &[f32],
    t: &HashMap<String, TensorView<'_>>,
    prefix: &str,
    scale: impl Fn(&str, &[f32]) -> f64,
    skip: Option<Channel>,
) -> f64 {
    let mut worst: f64 = 0.0;
    for e in arch().table() {
        let (mine, key): (Vec<f32>, String) = match e.name.as_str() {
            "fc1.weight" => (
                ours[e.range()].iter().step_by(EVERY).copied().collect(),
                format!("{prefix}fc1.weight.every97"),
            ),
            _ => (ours[e.range()].to_vec(), format!("{prefix}{}", e.name)),
        };
        let Some(view) = t.get(&key) else { continue };
        let torch = f32s(view);
        let s = scale(&e.name, &torch);
        // Elements per output channel, where this tensor is the skipped layer's.
        let skipped = skip
            .filter(|(layer, _)| e.name.starts_with(&format!("{layer}.")))
            .map(|(_, c)| (c, torch.len() / e.shape[0]));
        for (i, (a, b)) in mine.iter().zip(&torch).enumerate() {
            if skipped.is_some_and(|(c, per)| i / per == c) {
                continue;
            }
            worst = worst.max((a - b).abs() as f64 / s);
        }
    }
    worst
}

/// The convolution channel whose weight and bias lie furthest from PyTorch's, as a fraction
/// of each tensor's `scale`.
fn worst_channel(
    ours: &[f32],
    t: &HashMap<String, TensorView<'_>>,
    scale: impl Fn(&str, &[f32]) -> f64,
) -> Channel {
    let all = worst(ours, t, "param.", &scale, None);
    let mut out = (("conv1", 0), -1.0);
    for layer in ["conv1", "conv2"] {
        let cout = arch()
            .table()
            .iter()
            .find(|e| e.name == format!("{layer}.bias"))
            .unwrap()
            .shape[0];
        for c in 0..cout {
            let rest = worst(ours, t, "param.", &scale, Some((layer, c)));
            // The channel whose leaving out lowers the worst the most.
            let gain = all - rest;
            if gain > out.1 {
                out = ((layer, c), gain);
            }
        }
    }
    out.0
}

/// One backend's 50 steps against PyTorch's, within the header's limits; the figures.
fn check(gpu: Option<(mnist_wgpu::gpu::device::Gpu, mnist_wgpu::gpu::plan::Plan)>) -> String {
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/cnn.safetensors"))
            .expect("the cnn fixture");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t: HashMap<String, _> = st.tensors().into_iter().collect();
    let arch = arch();
    let init = formula_init(&arch);
    // Our formula is the script's: its initial tensors, bit for bit.
    assert_eq!(
        worst(&init, &t, "init.", |_, _| 1.0, None),
        0.0,
        "the formula's weights differ"
    );
    let batches: Vec<u32> = (t["batches"].data().chunks_exact(4))
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
        .collect();
    let m = load_mnist(&default_data_dir()).unwrap();
    // The first 16 test images are all the fixture holds log-probabilities of.
    let test = mnist_wgpu::data::Dataset {
        images: m.test.images[..16 * 784].to_vec(),
        labels: m.test.labels[..16].to_vec(),
        ..m.test
    };
    let (train, test) = (
        m.train.normalized(EXAMPLES_NORMALIZE),
        test.normalized(EXAMPLES_NORMALIZE),
    );
    let n = train.len();
    let recipe = Recipe {
        batch_size: BATCH,
        lr: 1.0,
        optimizer: Optimizer::named("adadelta", 0.0).unwrap(),
        ..Recipe::tutorial(1.0, 0.0, 1)
    };
    let mut b: Box<dyn Backend> = match gpu {
        None => Box::new(CpuBackend::new(
            arch.clone(),
            recipe,
            init.clone(),
            train,
            test,
        )),
        Some(g) => Box::new(common::backend(g, &arch, &recipe, &init, &train, &test).unwrap()),
    };
    let ours = run(b.as_mut(), &batches, n);
    let torch_losses = f32s(&t["losses"]);
    let mut worst_loss: f64 = 0.0;
    for (s, (&g, &w)) in ours.losses.iter().zip(&torch_losses).enumerate() {
        let rel = ((g - w) / w).abs() as f64;
        worst_loss = worst_loss.max(rel);
        assert!(rel <= 1e-5, "step {s}: loss {g} vs PyTorch's {w}");
    }
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let init_of = |key: &str| match key {
        "fc1.weight" => f32s(&t["init.fc1.weight.every97"]),
        k => f32s(&t[&format!("init.{k}")]),
    };
    let change = |key: &str, torch: &[f32]| {
        let init = init_of(key);
        largest(
            &torch
                .iter()
                .zip(&init)
                .map(|(a, b)| a - b)
                .collect::<Vec<_>>(),
        )
    };
    // One channel may lie further (see the header): the one that does, left out of the tight
    // limit and held to the loose one.
    let flip = worst_channel(&ours.params, &t, change);
    let of_max = |_: &str, v: &[f32]| largest(v);
    let [w, sq, ad, w_all, sq_all, ad_all] = [Some(flip), None]
        .map(|skip| {
            [
                worst(&ours.params, &t, "param.", change, skip),
                worst(&ours.state[0], &t, "square_avg.", of_max, skip),
                worst(&ours.state[1], &t, "acc_delta.", of_max, skip),
            ]
        })
        .concat()
        .try_into()
        .unwrap();
    let lp = (ours.log_probs.iter().zip(f32s(&t["test_log_probs"])))
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    assert!(w <= 1e-4, "weights {w:e} of their change from PyTorch's");
    assert!(
        sq <= 1e-4 && ad <= 1e-4,
        "Adadelta's state {sq:e}, {ad:e} of its largest"
    );
    assert!(lp <= 1e-4, "log-probabilities {lp:e} from PyTorch's");
    assert!(
        w_all <= 1e-3 && sq_all <= 1e-3 && ad_all <= 1e-3,
        "{}'s channel {}: weights {w_all:e} of their change, state {sq_all:e}, {ad_all:e}",
        flip.0,
        flip.1
    );
    format!(
        "loss rel {worst_loss:.2e}, weights {w:.2e} of change, square_avg {sq:.2e} and \
         acc_delta {ad:.2e} of max, log-probs abs {lp:.2e}; with {}'s channel {}: weights \
         {w_all:.2e}, state {sq_all:.2e} and {ad_all:.2e}",
        flip.0, flip.1
    )
}

#[test]
fn cpu_cnn_matches_pytorch_over_50_adadelta_steps() {
    eprintln!("CPU backend: {}", check(None));
}

#[test]
fn gpu_cnn_matches_pytorch_over_50_adadelta_steps() {
    for g in common::layered_all() {
        let device = format!("{} {}", g.0, g.1);
        eprintln!("{device}: {}", check(Some(g)));
    }
}
