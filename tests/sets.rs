//! A set of models trained side by side equals, model by model, its own single runs: the same
//! per-step losses and the same weights, bit for bit. On the default adapter (CI runs this
//! file on lavapipe, SwiftShader and llvmpipe GL) with the fused schedule, whose grid has a
//! model axis, and on the CPU backend, whose models run on threads of their own.

mod common;

use pollster::block_on;

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{Dataset, default_data_dir, load_mnist};
use mnist_wgpu::gpu::backend::GpuBackend;
use mnist_wgpu::gpu::device::Gpu;
use mnist_wgpu::gpu::plan::{PerSample, Plan};
use mnist_wgpu::model::Arch;
use mnist_wgpu::recipe::Recipe;
use mnist_wgpu::sweep::Sweep;
use mnist_wgpu::train::{self, Backend};

/// Per model: every step's loss of every epoch, and the final weights.
type Trained = Vec<(Vec<Vec<f32>>, Vec<f32>)>;

/// An odd shape on a split whose last batch is partial (301 = 23 * 13 + 2), two epochs.
fn case() -> (Arch, Dataset, Dataset, Vec<Recipe>) {
    let m = load_mnist(&default_data_dir()).unwrap();
    let arch = Arch::mlp(784, &[37, 19], 10);
    let sweep = Sweep {
        seeds: vec![3, 4],
        lrs: vec![0.01, 0.003],
        momenta: vec![0.9],
    };
    (
        arch,
        m.train.head(301),
        m.test.head(100),
        sweep.recipes(&mnist_wgpu::recipe::Recipe {
            epochs: 2,
            batch_size: 13,
            ..mnist_wgpu::recipe::Recipe::tutorial(0.003, 0.9, 1)
        }),
    )
}

/// Trains `recipes` side by side on `backend` and splits what it holds by model.
fn trained(backend: &mut dyn Backend, recipes: &[Recipe], arch: &Arch, n: usize) -> Trained {
    let reports = block_on(train::train(backend, recipes, n, |_| {})).unwrap();
    let params = block_on(backend.params()).unwrap();
    let p = arch.param_count();
    (0..recipes.len())
        .map(|k| {
            let losses = reports.iter().map(|r| r.models[k].step_losses.clone());
            (losses.collect(), params[k * p..(k + 1) * p].to_vec())
        })
        .collect()
}

/// Where model `k` of a set and a single run part: None when they agree bit for bit.
fn differs(set: &Trained, k: usize, single: &Trained) -> Option<String> {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let (a, b) = (&set[k], &single[0]);
    for (e, (la, lb)) in a.0.iter().zip(&b.0).enumerate() {
        if bits(la) != bits(lb) {
            return Some(format!("model {k}: the losses of epoch {e} differ"));
        }
    }
    (bits(&a.1) != bits(&b.1)).then(|| format!("model {k}: the weights differ"))
}

/// The learning rate one f32 ulp above `lr` (the kernels take it in f32).
fn one_ulp_up(lr: f64) -> f64 {
    f32::from_bits((lr as f32).to_bits() + 1) as f64
}

/// The GPU backend of `plan` training `recipes` side by side from their seeds.
fn gpu_backend(
    (gpu, plan): &(Gpu, Plan),
    recipes: &[Recipe],
    arch: &Arch,
    train: &Dataset,
    test: &Dataset,
) -> GpuBackend {
    let params: Vec<f32> = recipes.iter().flat_map(|r| arch.init(r.seed)).collect();
    GpuBackend::new(gpu, *plan, arch, recipes, &params, train, test).unwrap()
}

/// On every schedule and kernel family: the layered schedule's dispatches and the fused
/// schedule's both carry the set.
#[test]
fn gpu_set_models_equal_their_single_runs() {
    let (arch, tr, te, recipes) = case();
    let n = tr.len();
    for way in common::every_schedule() {
        let set = trained(
            &mut gpu_backend(&way, &recipes, &arch, &tr, &te),
            &recipes,
            &arch,
            n,
        );
        for (k, r) in recipes.iter().enumerate() {
            let one = std::slice::from_ref(r);
            let single = trained(&mut gpu_backend(&way, one, &arch, &tr, &te), one, &arch, n);
            assert_eq!(differs(&set, k, &single), None, "{}: {r:?}", way.1);
        }
        // The check sees one ulp: model 0's run with its learning rate one ulp higher differs.
        let off = Recipe {
            lr: one_ulp_up(recipes[0].lr),
            ..recipes[0].clone()
        };
        let offs = std::slice::from_ref(&off);
        let single = trained(
            &mut gpu_backend(&way, offs, &arch, &tr, &te),
            offs,
            &arch,
            n,
        );
        assert!(
            differs(&set, 0, &single).is_some(),
            "{}: one ulp of lr went unseen",
            way.1
        );
    }
}

/// The fused schedule's per-sample workgroups change which invocation computes what, never the
/// arithmetic: a set trained with each shape auto measures (and with 3 samples of 40
/// invocations, which no tile of 8 divides) equals the default shape's, every model bit for
/// bit, and evaluates the same.
#[test]
fn gpu_fused_per_sample_shapes_train_the_same_bits() {
    let (arch, tr, te, recipes) = case();
    let n = tr.len();
    let (gpu, plan) = common::fused();
    let reference = trained(
        &mut gpu_backend(&(gpu.clone(), plan), &recipes, &arch, &tr, &te),
        &recipes,
        &arch,
        n,
    );
    let mut shapes = PerSample::CANDIDATES.to_vec();
    shapes.push(PerSample::new(3, 40));
    for p in shapes {
        let way = (gpu.clone(), plan.with(p));
        let set = trained(
            &mut gpu_backend(&way, &recipes, &arch, &tr, &te),
            &recipes,
            &arch,
            n,
        );
        for (k, one) in reference.iter().enumerate() {
            let one = vec![one.clone()];
            assert_eq!(differs(&set, k, &one), None, "{}", way.1);
        }
        evaluates_every_model(&way, &arch, &tr, &te, &recipes);
    }
}

#[test]
fn gpu_set_evaluates_every_model() {
    let (arch, tr, te, recipes) = case();
    for way in common::every_schedule() {
        evaluates_every_model(&way, &arch, &tr, &te, &recipes);
    }
}

fn evaluates_every_model(
    way: &(Gpu, Plan),
    arch: &Arch,
    tr: &Dataset,
    te: &Dataset,
    recipes: &[Recipe],
) {
    let (arch, recipes) = (arch.clone(), recipes.to_vec());
    let mut set = gpu_backend(way, &recipes, &arch, tr, te);
    block_on(train::train(&mut set, &recipes, tr.len(), |_| {})).unwrap();
    let evals = block_on(mnist_wgpu::train::Evaluate::evaluate_all(&mut set)).unwrap();
    let params = block_on(set.params()).unwrap();
    let p = arch.param_count();
    for (k, ev) in evals.iter().enumerate() {
        let mut cpu = mnist_wgpu::cpu::CpuEvaluator::new(
            arch.clone(),
            params[k * p..(k + 1) * p].to_vec(),
            te.clone(),
        );
        let want = block_on(mnist_wgpu::train::Evaluate::evaluate(&mut cpu)).unwrap();
        assert_eq!(ev.correct, want.correct, "{}: model {k}: correct", way.1);
        assert!(
            (ev.mean_loss() - want.mean_loss()).abs() < 1e-4,
            "{}: model {k}: loss",
            way.1
        );
    }
}

#[test]
fn cpu_set_models_equal_their_single_runs() {
    let (arch, tr, te, recipes) = case();
    let n = tr.len();
    let params: Vec<Vec<f32>> = recipes.iter().map(|r| arch.init(r.seed)).collect();
    let backend = CpuBackend::set(
        arch.clone(),
        recipes.clone(),
        params,
        tr.clone(),
        te.clone(),
    );
    let set = trained(&mut backend.with_threads(2), &recipes, &arch, n);
    for (k, r) in recipes.iter().enumerate() {
        let mut b = CpuBackend::new(
            arch.clone(),
            r.clone(),
            arch.init(r.seed),
            tr.clone(),
            te.clone(),
        );
        let single = trained(&mut b, std::slice::from_ref(r), &arch, n);
        assert_eq!(differs(&set, k, &single), None, "{r:?}");
    }
    let off = Recipe {
        lr: one_ulp_up(recipes[1].lr),
        ..recipes[1].clone()
    };
    let mut b = CpuBackend::new(arch.clone(), off.clone(), arch.init(off.seed), tr, te);
    let single = trained(&mut b, std::slice::from_ref(&off), &arch, n);
    assert!(
        differs(&set, 1, &single).is_some(),
        "one ulp of lr went unseen"
    );
}
