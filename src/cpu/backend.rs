//! The `--device cpu` backend: the recipe on the CPU reference of `cpu`, in f32.

use std::ops::Range;

use super::{argmax, forward, gather, log_softmax, loss_and_grad, sgd};
use crate::data::Dataset;
use crate::model::Arch;
use crate::train::{Backend, Eval, Recipe};

/// The `--device cpu` backend: the same recipe, step by step, on the CPU reference.
pub struct CpuBackend {
    arch: Arch,
    recipe: Recipe,
    train: Dataset,
    test: Dataset,
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
            params,
            momentum: vec![0.0; n],
            order: Vec::new(),
            losses: vec![0.0; steps],
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for CpuBackend {
    fn describe(&self) -> String {
        Self::DESCRIPTION.to_string()
    }

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

    async fn evaluate(&mut self) -> anyhow::Result<Eval> {
        let bs = 1000;
        let classes = self.arch.output();
        let mut ev = Eval::new(classes);
        for start in (0..self.test.len()).step_by(bs) {
            let idx: Vec<u32> = (start as u32..(start + bs).min(self.test.len()) as u32).collect();
            let x = gather(&self.test, &idx);
            let acts = forward(&self.arch, &self.params, &x, idx.len());
            let logp = log_softmax(&acts[self.arch.layers()], classes);
            for (row, &i) in logp.chunks(classes).zip(&idx) {
                let label = self.test.labels[i as usize] as usize;
                ev.add(argmax(row), label, -row[label] as f64);
            }
            ev.log_probs.extend_from_slice(&logp);
        }
        Ok(ev)
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
