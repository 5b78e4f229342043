//! The `--device cpu` backend: the recipe on the CPU reference of `cpu`, in f32, and the
//! evaluation of a model on it.

use std::ops::Range;

use super::{Pass, argmax, forward, gather, loss_and_grad};
use crate::data::Dataset;
use crate::model::Arch;
use crate::optim;
use crate::philox::Mask;
use crate::recipe::Recipe;
use crate::train::{About, Backend, Eval, Evaluate};

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
        let logp = forward(arch, params, &x, idx.len()).pop().unwrap();
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

    async fn evaluate_all(&mut self) -> anyhow::Result<Vec<Eval>> {
        Ok(vec![evaluate(&self.arch, &self.params, &self.test)])
    }
}

/// One model of a CPU set: its recipe, weights, optimizer state, order and losses, and the
/// epoch it is in.
struct CpuModel {
    recipe: Recipe,
    params: Vec<f32>,
    /// The optimizer's state tensors (`Optimizer::state_names`), each as `params`; SGD's
    /// second is empty.
    state: [Vec<f32>; 2],
    order: Vec<u32>,
    losses: Vec<f32>,
    epoch: usize,
}

impl CpuModel {
    /// Steps `steps` of the epoch, each convolution spread over `threads`.
    fn run_steps(&mut self, arch: &Arch, train: &Dataset, steps: Range<usize>, threads: usize) {
        let (r, bs) = (&self.recipe, self.recipe.batch_size);
        // The epoch's hyper-parameters, once; only Adam's corrections change from step to step.
        let h = r.hyper(self.epoch);
        for s in steps {
            let idx = &self.order[s * bs..((s + 1) * bs).min(self.order.len())];
            let x = gather(train, idx);
            let labels: Vec<u8> = idx.iter().map(|&i| train.labels[i as usize]).collect();
            let mask = Mask {
                seed: r.seed,
                step: (self.epoch * r.steps_per_epoch(train.len()) + s) as u64,
                layer: 0,
            };
            let pass = Pass {
                mask: Some(mask),
                threads,
            };
            let (loss, g) = loss_and_grad(arch, &self.params, &x, &labels, pass);
            let corrections = r.corrections(train.len(), self.epoch, s);
            let [a, b] = &mut self.state;
            optim::step(&r.optimizer, &h, corrections, &mut self.params, a, b, &g);
            self.losses[s] = loss;
        }
    }
}

/// The `--device cpu` backend: the same recipe, step by step, on the CPU reference; a set of
/// models is spread over the machine's cores, each model on one thread at a time, so that each
/// computes exactly what it computes alone.
pub struct CpuBackend {
    arch: Arch,
    train: Dataset,
    test: Dataset,
    about: About,
    models: Vec<CpuModel>,
    threads: usize,
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
        CpuBackend::set(arch, vec![recipe], vec![params], train, test)
    }

    /// A set of models trained side by side: `recipes[k]` from `params[k]` (PyTorch's flat
    /// order), on as many threads as the machine has cores.
    pub fn set(
        arch: Arch,
        recipes: Vec<Recipe>,
        params: Vec<Vec<f32>>,
        train: Dataset,
        test: Dataset,
    ) -> Self {
        assert_eq!(recipes.len(), params.len(), "one recipe per model");
        let models = recipes
            .into_iter()
            .zip(params)
            .map(|(recipe, params)| CpuModel {
                losses: vec![0.0; recipe.steps_per_epoch(train.len())],
                state: [
                    vec![0.0; params.len()],
                    match recipe.optimizer.state_names().len() {
                        1 => Vec::new(),
                        _ => vec![0.0; params.len()],
                    },
                ],
                epoch: 0,
                recipe,
                params,
                order: Vec::new(),
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuBackend {
            arch,
            train,
            test,
            about: about(),
            models,
            threads,
        }
    }

    /// Runs on `threads` threads at most (1: every model on the calling thread).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Each model's values concatenated, model-major.
    fn flat(&self, f: impl Fn(&CpuModel) -> &[f32]) -> Vec<f32> {
        self.models
            .iter()
            .flat_map(|m| f(m).iter().copied())
            .collect()
    }
}

#[async_trait::async_trait(?Send)]
impl Evaluate for CpuBackend {
    fn about(&self) -> &About {
        &self.about
    }

    fn models(&self) -> usize {
        self.models.len()
    }

    async fn evaluate_all(&mut self) -> anyhow::Result<Vec<Eval>> {
        let (arch, test) = (&self.arch, &self.test);
        Ok(self
            .models
            .iter()
            .map(|m| evaluate(arch, &m.params, test))
            .collect())
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for CpuBackend {
    fn begin_epoch(&mut self, epoch: usize, orders: &[u32]) -> anyhow::Result<()> {
        let n = self.train.len();
        anyhow::ensure!(
            orders.len() == n * self.models.len(),
            "orders of {} for {} models of {n} samples",
            orders.len(),
            self.models.len()
        );
        for (m, order) in self.models.iter_mut().zip(orders.chunks(n.max(1))) {
            m.order = order.to_vec();
            m.epoch = epoch;
        }
        Ok(())
    }

    async fn run_steps(&mut self, steps: Range<usize>) -> anyhow::Result<()> {
        let (arch, train) = (&self.arch, &self.train);
        let per_thread = self.models.len().div_ceil(self.threads);
        if per_thread == self.models.len() {
            // One model on all the threads (its convolutions' samples spread over them).
            let threads = self.threads;
            let mut run = || {
                for m in &mut self.models {
                    m.run_steps(arch, train, steps.clone(), threads);
                }
            };
            // Natively, on a thread of the pool the convolutions spread over, so that each
            // spread starts from a worker rather than waking the pool from outside and waiting.
            #[cfg(not(target_arch = "wasm32"))]
            rayon::scope(|_| run());
            #[cfg(target_arch = "wasm32")]
            run();
            return Ok(());
        }
        std::thread::scope(|scope| {
            for chunk in self.models.chunks_mut(per_thread) {
                let steps = steps.clone();
                scope.spawn(move || {
                    for m in chunk {
                        m.run_steps(arch, train, steps.clone(), 1);
                    }
                });
            }
        });
        Ok(())
    }

    async fn losses(&mut self, steps: Range<usize>) -> anyhow::Result<Vec<f32>> {
        Ok(self.flat(|m| &m.losses[steps.clone()]))
    }

    async fn params(&mut self) -> anyhow::Result<Vec<f32>> {
        Ok(self.flat(|m| &m.params))
    }

    async fn state(&mut self) -> anyhow::Result<Vec<Vec<f32>>> {
        let tensors = self.models[0].recipe.optimizer.state_names().len();
        Ok((0..tensors).map(|j| self.flat(|m| &m.state[j])).collect())
    }

    fn load_state(&mut self, params: &[f32], state: &[Vec<f32>]) -> anyhow::Result<()> {
        let n = self.arch.param_count();
        let want = n * self.models.len();
        let tensors = self.models[0].recipe.optimizer.state_names().len();
        anyhow::ensure!(
            params.len() == want && state.len() == tensors && state.iter().all(|s| s.len() == want),
            "a state of {} parameters and {} tensors for {} models of {n} and {tensors} tensors",
            params.len(),
            state.len(),
            self.models.len()
        );
        for (k, m) in self.models.iter_mut().enumerate() {
            m.params.copy_from_slice(&params[k * n..(k + 1) * n]);
            for (j, s) in state.iter().enumerate() {
                m.state[j].copy_from_slice(&s[k * n..(k + 1) * n]);
            }
        }
        Ok(())
    }
}
