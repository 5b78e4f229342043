//! Evaluation of a model on a test split, on the device: its own split, verdict buffers,
//! activations and dispatches, reading the parameters it is given. It needs no training
//! state: `eval`, `predict` and the page build one from a model file, and the GPU backend one
//! that reads the parameters it trains.

use anyhow::{Result, ensure};

use crate::data::Dataset;
use crate::gpu::buffers::{Split, Verdicts, Weights, init, zeros};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Dispatch, step_stride, submit};
use crate::gpu::layout::DeviceLayout;
use crate::gpu::ops::Modules;
use crate::gpu::plan::Plan;
use crate::gpu::readback::{read_back, staging};
use crate::gpu::schedules::Schedules;
use crate::model::Arch;
use crate::train::{About, Eval, Evaluate};

/// Evaluation batches per submission (training records `backend::STEPS_PER_SUBMIT` steps).
const BATCHES_PER_SUBMIT: usize = 500;

pub struct Evaluator {
    gpu: Gpu,
    about: About,
    split: Split,
    /// correct: [models, test len] u32, is_correct | predicted << 8; log_probs: [models, test
    /// len, classes]
    correct: wgpu::Buffer,
    log_probs: wgpu::Buffer,
    staging: wgpu::Buffer,
    dispatches: Vec<Dispatch>,
    labels: Vec<u8>,
    classes: usize,
    bytes: u64,
    models: usize,
}

impl Evaluator {
    /// Evaluates `test` with the parameters `params` (device layout `layout`, which the caller
    /// keeps writing: the backend's training) in steps of about `batch` samples, as `plan` says.
    pub fn new(
        gpu: &Gpu,
        plan: Plan,
        m: &Modules,
        weights: &Weights<'_>,
        test: &Dataset,
        batch: usize,
    ) -> Result<Evaluator> {
        let layout = weights.layout;
        let schedule = Schedules::of(plan);
        let classes = layout.layers.last().map_or(0, |l| l.out);
        let batch = schedule.evaluation_batch(gpu, weights, batch, test.len());
        let split = Split::new(gpu, "test", test, batch);
        let models = weights.models;
        let correct = zeros(gpu, "eval correct", models * test.len());
        let log_probs = zeros(gpu, "eval log-probs", models * test.len() * classes);
        let verdicts = Verdicts {
            correct: &correct,
            log_probs: &log_probs,
            classes,
        };
        let built = schedule.evaluation(gpu, m, weights, &split, &verdicts)?;
        let staging = staging(gpu, "eval read-back", models * test.len() * classes * 4);
        let own: u64 = built.bytes.iter().map(|(_, b)| b).sum();
        let bytes = split.bytes() + own + correct.size() + log_probs.size() + staging.size();
        Ok(Evaluator {
            gpu: gpu.clone(),
            about: about(gpu, plan, built.dispatches.len()),
            split,
            correct,
            log_probs,
            staging,
            dispatches: built.dispatches,
            labels: test.labels.clone(),
            classes,
            bytes,
            models,
        })
    }

    /// A standalone evaluator of the PyTorch-layout `params` of `arch` (uploaded here).
    pub fn of_model(
        gpu: &Gpu,
        plan: Plan,
        arch: &Arch,
        params: &[f32],
        test: &Dataset,
        batch: usize,
    ) -> Result<Evaluator> {
        let layout = upload_layout(arch, params, test)?;
        let params = upload(gpu, &layout, params);
        let m = Modules::new(gpu, plan.kernels)?;
        let weights = Weights {
            layout: &layout,
            params: &params,
            models: 1,
        };
        Evaluator::new(gpu, plan, &m, &weights, test, batch)
    }

    /// Its dispatches (for the tests).
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// The bytes of the buffers it holds, for the memory listing.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records what `--schedule auto` chose (for the header).
    pub fn set_tuned(&mut self, line: String, ms: Option<f64>) {
        self.about.tuned = Some(line);
        self.about.step_ms = ms;
    }
}

#[async_trait::async_trait(?Send)]
impl Evaluate for Evaluator {
    fn about(&self) -> &About {
        &self.about
    }

    fn models(&self) -> usize {
        self.models
    }

    /// Each model's accuracy, loss, confusion matrix and every sample's log-probabilities.
    async fn evaluate_all(&mut self) -> Result<Vec<Eval>> {
        let gpu = &self.gpu;
        let n = self.split.len;
        let steps = n.div_ceil(self.split.batch);
        let mut s = 0;
        while s < steps {
            let e = (s + BATCHES_PER_SUBMIT).min(steps);
            submit(gpu, "evaluate", &self.dispatches, s..e, step_stride(gpu))?;
            s = e;
        }
        let (models, classes) = (self.models, self.classes);
        let correct: Vec<u32> = read_back(gpu, &self.correct, 0, models * n, &self.staging).await?;
        let log_probs: Vec<f32> =
            read_back(gpu, &self.log_probs, 0, models * n * classes, &self.staging).await?;
        let evals = correct
            .chunks(n.max(1))
            .zip(log_probs.chunks((n * classes).max(1)))
            .map(|(correct, log_probs)| {
                let mut ev = Eval::new(classes);
                for (i, (&c, logp)) in correct.iter().zip(log_probs.chunks(classes)).enumerate() {
                    let label = self.labels[i] as usize;
                    ev.add((c >> 8) as usize, label, -logp[label] as f64);
                }
                ev.log_probs = log_probs.to_vec();
                ev
            })
            .collect();
        Ok(evals)
    }
}

/// What `about` says of a GPU run: the device line with the plan, and the plan's words.
pub fn about(gpu: &Gpu, plan: Plan, dispatches_per_step: usize) -> About {
    About {
        device: format!("{gpu} | {plan}"),
        schedule: plan.schedule().name(),
        kernels: plan.kernels.name(),
        per_sample: plan.named_per_sample().map(|p| p.name()),
        tuned: None,
        step_ms: None,
        dispatches_per_step,
        buffers: Vec::new(),
        queues_work: true,
    }
}

/// The device layout of `arch`, after checking that `params` and `data` fit it.
pub fn upload_layout(arch: &Arch, params: &[f32], data: &Dataset) -> Result<DeviceLayout> {
    ensure!(
        params.len() == arch.param_count(),
        "parameters do not match the model"
    );
    crate::gpu::net::runnable(arch).map_err(anyhow::Error::msg)?;
    let (pixels, input) = (data.pixels(), arch.input());
    ensure!(
        pixels == input,
        "images of {pixels} pixels for a model of {input}"
    );
    Ok(DeviceLayout::new(arch))
}

/// PyTorch-layout `params` in the device layout, uploaded: one model's, or a set's model after
/// model.
pub fn upload(gpu: &Gpu, layout: &DeviceLayout, params: &[f32]) -> wgpu::Buffer {
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    init(
        gpu,
        "params",
        bytemuck::cast_slice(&layout.to_device_set(params)),
        usage,
    )
}
