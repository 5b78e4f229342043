//! The `--device cpu` backend: the recipe on the CPU reference of `cpu`, in f32, and the
//! evaluation of a model on it.

use std::ops::Range;

use super::{argmax, forward, gather, log_softmax, loss_and_grad, sgd};
use crate::data::Dataset;
use crate::model::Arch;
use crate::train::{About, Backend, Eval, Evaluate, Recipe};

/// What a CPU run's `about` says.
fn about() -> About {
    About {
        device: CpuBackend::DESCRIPTION.to_string(),
        schedule: "cpu",
        kernels: "cpu",
        ..About::default()
    }
}

/// Accuracy, loss and every sample's log-probabilities of `params` on `test`, 1000 at a time.
fn evaluate(arch: &Arch, params: &[f32], test: &Dataset) -> Eval {
    let bs = 1000;
    let classes = arch.output();
    let mut ev = Eval::new(classes);
    for start in (0..test.len()).step_by(bs) {
        let idx: Vec<u32> = (start as u32..(start + bs).min(test.len()) as u32).collect();
        let x = gather(test, &idx);
        let acts = forward(arch, params, &x, idx.len());
        let logp = log_softmax(&acts[arch.layers()], classes);
        for (row, &i) in logp.chunks(classes).zip(&idx) {
            let label = test.labels[i as usize] as usize;
            ev.add(argmax(row), label, -row[label] as f64);
        }
        ev.log_probs.extend_from_slice(&logp);
    }
    ev
}

/// A model evaluated on the CPU reference (`eval --device cpu`, `predict`, the page without
/// WebGPU).
pub struct CpuEvaluator {
    arch: Arch,
    params: Vec<f32>,
    test: Dataset,
    about: About,
}

impl CpuEvaluator {
    pub fn new(arch: Arch, params: Vec<f32>, test: Dataset) -> CpuEvaluator {
        CpuEvaluator {
            arch,
            params,
            test,
            about: about(),
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Evaluate for CpuEvaluator {
    fn about(&self) -> &About {
        &self.about
    }

    async fn evaluate(&mut self) -> anyhow::Result<Eval> {
        Ok(evaluate(&self.arch, &self.params, &self.test))
    }
}

/// The `--device cpu` backend: the same recipe, step by step, on the CPU reference.
pub struct CpuBackend {
    arch: Arch,
    recipe: Recipe,
    train: Dataset,
    test: Dataset,
    about: About,
    params: Vec<f32>,
    momentum: Vec<f32>,
    order: Vec<u32>,
    losses: Vec<f32>,
}

impl CpuBackend {
    /// What `describe` says.
    pub const DESCRIPTION: &str = "CPU reference (matrixmultiply sgemm) | no GPU";

    pub fn new(
        arch: Arch,
        recipe: Recipe,
        params: Vec<f32>,
        train: Dataset,
        test: Dataset,
    ) -> Self {
        let n = params.len();
        let steps = recipe.steps_per_epoch(train.len());
        CpuBackend {
            arch,
            recipe,
            train,
            test,
            about: about(),
            params,
            momentum: vec![0.0; n],
            order: Vec::new(),
            losses: vec![0.0; steps],
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Evaluate for CpuBackend {
    fn about(&self) -> &About {
        &self.about
    }

    async fn evaluate(&mut self) -> anyhow::Result<Eval> {
        Ok(evaluate(&self.arch, &self.params, &self.test))
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for CpuBackend {
    fn begin_epoch(&mut self, order: &[u32]) -> anyhow::Result<()> {
        self.order = order.to_vec();
        Ok(())
    }

    async fn run_steps(&mut self, steps: Range<usize>) -> anyhow::Result<()> {
        let bs = self.recipe.batch_size;
        for s in steps {
            let idx = &self.order[s * bs..((s + 1) * bs).min(self.order.len())];
            let x = gather(&self.train, idx);
            let labels: Vec<u8> = idx.iter().map(|&i| self.train.labels[i as usize]).collect();
            let (loss, g) = loss_and_grad(&self.arch, &self.params, &x, &labels);
            sgd(
                &mut self.params,
                &mut self.momentum,
                &g,
                self.recipe.lr as f32,
                self.recipe.momentum as f32,
            );
            self.losses[s] = loss;
        }
        Ok(())
    }

    async fn losses(&mut self, steps: Range<usize>) -> anyhow::Result<Vec<f32>> {
        Ok(self.losses[steps].to_vec())
    }

    async fn params(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.params.clone())
    }

    async fn momentum(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.momentum.clone())
    }

    fn load_state(&mut self, params: &[f32], momentum: &[f32]) -> anyhow::Result<()> {
        assert_eq!(params.len(), self.params.len());
        assert_eq!(momentum.len(), self.momentum.len());
        self.params.copy_from_slice(params);
        self.momentum.copy_from_slice(momentum);
        Ok(())
    }
}
