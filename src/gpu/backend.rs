//! The GPU backend: a [`Trainer`] (the model's state, the training split and the dispatches of
//! one step, as the plan's schedule builds them) beside an [`Evaluator`] that reads the same
//! parameters. Everything is created once, before step 0; training records the step 250 times
//! into one compute pass and one submission. Parameters and momentum buffers are flat in the
//! device layout (`gpu::layout`) and converted to PyTorch's at the edges (upload, read-back).

use std::ops::Range;
use std::sync::Arc;

use anyhow::{Result, ensure};

use crate::data::Dataset;
use crate::gpu::buffers::{Split, StepInputs, Weights, zeros};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Dispatch, step_stride, submit, submit_then};
use crate::gpu::evaluator::{Evaluator, about, upload};
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::plan::Plan;
use crate::gpu::profiler::submit_profiled;
use crate::gpu::readback::{LossReads, read_back, staging};
use crate::gpu::schedules::Schedules;
use crate::model::Arch;
use crate::profile::Profile;
use crate::train::{About, Backend, Eval, Evaluate, Recipe};

/// Steps recorded into one compute pass and submission.
pub const STEPS_PER_SUBMIT: usize = 250;

/// Bytes and grid sizes a run needs, checked against the adapter before anything is built.
pub fn check_limits(gpu: &Gpu, arch: &Arch, batch: usize, n_train: usize) -> Result<(), String> {
    let bp = pad4(batch) as u64;
    let widest = *arch.sizes.iter().max().unwrap() as u64;
    let act_bytes = widest.next_multiple_of(4) * bp * 4;
    let max_bind = gpu.limits.max_storage_buffer_binding_size;
    let max_groups = gpu.limits.max_compute_workgroups_per_dimension as u64;
    let images = n_train as u64 * pad4(arch.input()) as u64;
    if act_bytes > max_bind {
        return Err(format!(
            "--batch-size {batch}: an activation buffer of {widest} x {bp} floats ({act_bytes} bytes) exceeds \
             the adapter's {max_bind}-byte storage binding limit; use a smaller batch"
        ));
    }
    if bp > max_groups {
        return Err(format!(
            "--batch-size {batch}: exceeds the adapter's {max_groups} workgroups per dimension"
        ));
    }
    if images > max_bind {
        return Err(format!(
            "the training images ({images} bytes) exceed the adapter's {max_bind}-byte storage binding limit"
        ));
    }
    Ok(())
}

/// Training on the device: the model's state, the training split, and one step's dispatches.
pub struct Trainer {
    gpu: Gpu,
    pub plan: Plan,
    /// The compiled modules, shared with the evaluation (and its pipelines with them).
    pub modules: Arc<Modules>,
    layout: DeviceLayout,
    param_count: usize,
    /// params, momentum_buffer: [layout.len], device layout
    params: wgpu::Buffer,
    momentum_buffer: wgpu::Buffer,
    /// losses: [steps per epoch], each step's mean loss of the current epoch
    losses: wgpu::Buffer,
    /// Their read-backs in flight, one submission behind the device.
    reads: LossReads,
    split: Split,
    /// The dispatches of one step, in order.
    step: Vec<Dispatch>,
    grads: Option<wgpu::Buffer>,
    staging: wgpu::Buffer,
    profile: Option<Profile>,
    bytes: Vec<(String, u64)>,
}

impl Trainer {
    /// Trains `recipe` from the PyTorch-layout `params` of `arch` on `split` (the training
    /// set, uploaded once: the tuner shares one among its candidates).
    pub fn new(
        gpu: &Gpu,
        plan: Plan,
        modules: Arc<Modules>,
        arch: &Arch,
        recipe: &Recipe,
        params: &[f32],
        split: Split,
    ) -> Result<Trainer> {
        ensure!(
            params.len() == arch.param_count(),
            "parameters do not match the model"
        );
        ensure!(
            split.pixels == arch.input(),
            "images of {} pixels for a model of {}",
            split.pixels,
            arch.input()
        );
        let layout = DeviceLayout::new(arch);
        let steps_per_epoch = recipe.steps_per_epoch(split.len);
        let params_buf = upload(gpu, &layout, params);
        let momentum_buffer = zeros(gpu, "momentum buffer", layout.len);
        let losses = zeros(gpu, "losses", steps_per_epoch);
        let inputs = StepInputs {
            split: &split,
            momentum_buffer: &momentum_buffer,
            losses: &losses,
            steps_per_epoch,
            lr: recipe.lr,
            momentum: recipe.momentum,
        };
        let weights = Weights {
            layout: &layout,
            params: &params_buf,
        };
        let built = Schedules::of(plan).training(gpu, &modules, &weights, &inputs)?;
        let reads = LossReads::new(gpu, steps_per_epoch);
        let mut bytes = vec![
            ("params".to_string(), params_buf.size()),
            ("train split".to_string(), split.bytes()),
            ("momentum buffer".to_string(), momentum_buffer.size()),
            ("losses".to_string(), losses.size()),
            ("losses read-back".to_string(), reads.bytes()),
        ];
        bytes.extend(built.bytes);
        let staging = staging(
            gpu,
            "staging (read-back)",
            4 * layout.len.max(steps_per_epoch),
        );
        bytes.push(("staging".to_string(), staging.size()));
        Ok(Trainer {
            gpu: gpu.clone(),
            plan,
            modules,
            layout,
            param_count: params.len(),
            params: params_buf,
            momentum_buffer,
            losses,
            reads,
            split,
            step: built.dispatches,
            grads: built.grads,
            staging,
            profile: None,
            bytes,
        })
    }

    /// Samples in the training split.
    pub fn split_len(&self) -> usize {
        self.split.len
    }

    /// The dispatches of one training step (for `bench` and the tests).
    pub fn step(&self) -> &[Dispatch] {
        &self.step
    }

    /// A device-layout buffer, read back in PyTorch's flat order.
    async fn read_flat(&self, src: &wgpu::Buffer) -> Result<Vec<f32>> {
        let device: Vec<f32> = read_back(&self.gpu, src, 0, self.layout.len, &self.staging).await?;
        Ok(self.layout.from_device(&device))
    }

    /// Hands over the epoch's shuffled order of the training set.
    pub fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        ensure!(
            order.len() == self.split.len,
            "an order of {} for {} samples",
            order.len(),
            self.split.len
        );
        let order = bytemuck::cast_slice(order);
        self.gpu.queue.write_buffer(&self.split.order, 0, order);
        Ok(())
    }

    /// Submits `steps` in submissions of [`STEPS_PER_SUBMIT`]; the last one ends with the copy
    /// of their losses to read back, mapped at once, so that [`Trainer::losses`] finds them in
    /// flight (not when profiling: the profiler waits on every submission anyway).
    pub async fn run_steps(&mut self, steps: Range<usize>) -> Result<()> {
        let (gpu, stride) = (&self.gpu, step_stride(&self.gpu));
        let mut s = steps.start;
        while s < steps.end {
            let e = (s + STEPS_PER_SUBMIT).min(steps.end);
            match &mut self.profile {
                Some(p) => submit_profiled(gpu, &self.step, s..e, stride, p).await?,
                None if e < steps.end => submit(gpu, "train steps", &self.step, s..e, stride)?,
                None => {
                    let slot = self.reads.free_slot(gpu).await?;
                    let (reads, losses) = (&self.reads, &self.losses);
                    let copy = |enc: &mut wgpu::CommandEncoder| {
                        reads.copy(enc, losses, &steps, slot);
                    };
                    let index = submit_then(gpu, "train steps", &self.step, s..e, stride, copy)?;
                    self.reads.submitted(steps.clone(), slot, index);
                }
            }
            s = e;
        }
        Ok(())
    }

    /// The losses of `steps`: the read in flight for exactly those steps, else a read-back.
    pub async fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>> {
        if let Some(losses) = self.reads.take(&self.gpu, &steps).await? {
            return Ok(losses);
        }
        let (start, len) = (steps.start, steps.len());
        read_back(&self.gpu, &self.losses, start, len, &self.staging).await
    }
}

/// The GPU backend: training and, beside it, the evaluation of the weights it trains.
pub struct GpuBackend {
    pub trainer: Trainer,
    evaluator: Evaluator,
    about: About,
}

impl GpuBackend {
    /// A backend that trains `recipe` on `train` and evaluates on `test` from the PyTorch-layout
    /// `params`, as `plan` says.
    pub fn new(
        gpu: &Gpu,
        plan: Plan,
        arch: &Arch,
        recipe: &Recipe,
        params: &[f32],
        train: &Dataset,
        test: &Dataset,
    ) -> Result<GpuBackend> {
        let modules = Arc::new(Modules::new(gpu, plan.kernels)?);
        let split = Split::new(gpu, "train", train, recipe.batch_size);
        let trainer = Trainer::new(gpu, plan, modules, arch, recipe, params, split)?;
        GpuBackend::from_trainer(trainer, test)
    }

    /// `trainer` with an evaluation of `test` beside it.
    pub fn from_trainer(trainer: Trainer, test: &Dataset) -> Result<GpuBackend> {
        let schedule = Schedules::of(trainer.plan);
        let batch = schedule.evaluation_batch_in_training(trainer.split.batch);
        let (gpu, m) = (&trainer.gpu, &trainer.modules);
        let weights = Weights {
            layout: &trainer.layout,
            params: &trainer.params,
        };
        let evaluator = Evaluator::new(gpu, trainer.plan, m, &weights, test, batch)?;
        let mut about = about(gpu, trainer.plan, trainer.step.len());
        about.buffers = trainer.bytes.clone();
        let eval = ("test split + evaluation".to_string(), evaluator.bytes());
        about.buffers.insert(1, eval);
        Ok(GpuBackend {
            trainer,
            evaluator,
            about,
        })
    }

    /// Records what `--schedule auto` chose (for the header).
    pub fn set_tuned(&mut self, line: String, ms: Option<f64>) {
        self.about.tuned = Some(line);
        self.about.step_ms = ms;
    }

    /// Every pipeline it built: the training step's and the evaluation's (for the tests).
    pub fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.trainer.step.iter().chain(self.evaluator.dispatches())
    }

    /// Gradients of the last step, PyTorch's flat order (for tests; the layered schedule).
    pub async fn grads(&mut self) -> Result<Vec<f32>> {
        let t = &self.trainer;
        let grads = t.grads.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "the fused schedule keeps no gradients: it applies each where it sums it"
            )
        })?;
        t.read_flat(grads).await
    }

    /// Writes new parameter values (PyTorch's flat order).
    pub fn set_params(&mut self, params: &[f32]) {
        let t = &self.trainer;
        assert_eq!(params.len(), t.param_count);
        let device = t.layout.to_device(params);
        t.gpu
            .queue
            .write_buffer(&t.params, 0, bytemuck::cast_slice(&device));
    }
}

#[async_trait::async_trait(?Send)]
impl Evaluate for GpuBackend {
    fn about(&self) -> &About {
        &self.about
    }

    async fn evaluate(&mut self) -> Result<Eval> {
        self.evaluator.evaluate().await
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for GpuBackend {
    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        self.trainer.begin_epoch(order)
    }

    async fn run_steps(&mut self, steps: Range<usize>) -> Result<()> {
        self.trainer.run_steps(steps).await
    }

    async fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>> {
        self.trainer.losses(steps).await
    }

    async fn params(&mut self) -> Result<Vec<f32>> {
        self.trainer.read_flat(&self.trainer.params).await
    }

    async fn momentum(&mut self) -> Result<Vec<f32>> {
        self.trainer.read_flat(&self.trainer.momentum_buffer).await
    }

    fn load_state(&mut self, params: &[f32], momentum: &[f32]) -> Result<()> {
        ensure!(
            momentum.len() == self.trainer.param_count,
            "momentum does not match the model"
        );
        self.set_params(params);
        let t = &self.trainer;
        let device = t.layout.to_device(momentum);
        let bytes = bytemuck::cast_slice(&device);
        t.gpu.queue.write_buffer(&t.momentum_buffer, 0, bytes);
        Ok(())
    }

    fn start_profile(&mut self) -> bool {
        let t = &mut self.trainer;
        if t.gpu.timestamps {
            t.profile = Some(Profile::default());
        }
        t.gpu.timestamps
    }

    fn profile(&self) -> Option<Profile> {
        self.trainer.profile.clone()
    }
}
