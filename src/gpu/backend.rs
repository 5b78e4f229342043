//! The GPU backend: a [`Trainer`] (the model's state, the training split and the dispatches of
//! one step, as the plan's schedule builds them) beside an [`Evaluator`] that reads the same
//! parameters. Everything is created once, before step 0; training records the step 250 times
//! into one compute pass and one submission. Parameters and optimizer state are flat in the
//! device layout (`gpu::layout`) and converted to PyTorch's at the edges (upload, read-back).

use std::ops::Range;
use std::sync::Arc;

use anyhow::{Result, ensure};

use crate::data::Dataset;
use crate::gpu::buffers::{OptimizerState, Split, StepInputs, Weights, hyper_buffer, zeros};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Dispatch, step_stride, submit, submit_then};
use crate::gpu::evaluator::{Evaluator, about, upload};
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::gpu::net::runnable;
use crate::gpu::ops::Modules;
use crate::gpu::plan::Plan;
use crate::gpu::profiler::submit_profiled;
use crate::gpu::readback::{LossReads, read_back, staging};
use crate::gpu::schedules::Schedules;
use crate::model::Arch;
use crate::optim::Hyper;
use crate::profile::Profile;
use crate::recipe::Recipe;
use crate::train::{About, Backend, Eval, Evaluate};

/// Steps recorded into one compute pass and submission.
pub const STEPS_PER_SUBMIT: usize = 250;

/// Bytes and grid sizes a run needs, checked against the adapter before anything is built:
/// the model's and the batch's before the data is read (`n_train` None), then the images' too.
pub fn check_limits(
    gpu: &Gpu,
    arch: &Arch,
    batch: usize,
    n_train: Option<usize>,
    models: usize,
) -> Result<(), String> {
    let widest = runnable(arch)? as u64;
    let bp = pad4(batch) as u64;
    let act_bytes = widest.next_multiple_of(4) * bp * 4;
    let max_bind = gpu.limits.max_storage_buffer_binding_size;
    let max_groups = gpu.limits.max_compute_workgroups_per_dimension as u64;
    let images = n_train.unwrap_or(0) as u64 * pad4(arch.input()) as u64;
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
    // A set's activations: one tensor per model in each buffer.
    let set_bytes = act_bytes * models as u64;
    if models > 1 && set_bytes > max_bind {
        return Err(format!(
            "a set of {models} models: their activations of {widest} x {bp} floats each \
             ({set_bytes} bytes in one buffer) exceed the adapter's {max_bind}-byte storage \
             binding limit; at most {} models fit at --batch-size {batch}",
            max_bind / act_bytes
        ));
    }
    if images > max_bind {
        return Err(format!(
            "the training images ({images} bytes) exceed the adapter's {max_bind}-byte storage binding limit"
        ));
    }
    // Every model's parameters (and, alike, momentum and gradients) in one binding.
    let budget = crate::limits::Budget {
        bytes: max_bind.min(gpu.limits.max_buffer_size),
        what: "the adapter's storage binding limit".into(),
    };
    let need = |a: &Arch| DeviceLayout::new(a).len as u64 * 4;
    crate::limits::fit(arch, models, need, &budget)
}

/// Each model's hyper-parameters in epoch `epoch`, as the kernels take them.
fn hypers(recipes: &[Recipe], epoch: usize) -> Vec<Hyper> {
    recipes.iter().map(|r| r.hyper(epoch)).collect()
}

/// Training on the device: the models' state, the training split, and one step's dispatches.
/// A set of models trains side by side in the same dispatches, each model's tensors one model
/// stride after the one before.
pub struct Trainer {
    gpu: Gpu,
    pub plan: Plan,
    /// The compiled modules, shared with the evaluation (and its pipelines with them).
    pub modules: Arc<Modules>,
    layout: DeviceLayout,
    param_count: usize,
    /// Models side by side (1 for a single run).
    models: usize,
    /// params: [models, layout.len], device layout, and the optimizer's state beside them
    params: wgpu::Buffer,
    state: OptimizerState,
    /// hyper: [models] vec4, each model's hyper-parameters of the current epoch
    hyper: wgpu::Buffer,
    recipes: Vec<Recipe>,
    /// losses: [steps per epoch, models], each step's mean loss of the current epoch
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
    /// Trains `recipes` (one per model, side by side) from the PyTorch-layout `params` of
    /// `arch` ([models, param_count]) on `split` (the training set, uploaded once: the tuner
    /// shares one among its candidates).
    pub fn new(
        gpu: &Gpu,
        plan: Plan,
        modules: Arc<Modules>,
        arch: &Arch,
        recipes: &[Recipe],
        params: &[f32],
        split: Split,
    ) -> Result<Trainer> {
        crate::train::check_set(recipes)?;
        let (models, recipe) = (recipes.len(), &recipes[0]);
        ensure!(
            params.len() == models * arch.param_count(),
            "parameters do not match the model"
        );
        let split = split.with_orders(gpu, "train", models);
        ensure!(
            split.pixels == arch.input(),
            "images of {} pixels for a model of {}",
            split.pixels,
            arch.input()
        );
        let layout = DeviceLayout::new(arch);
        let steps_per_epoch = recipe.steps_per_epoch(split.len);
        let params_buf = upload(gpu, &layout, params);
        let state = OptimizerState::new(gpu, recipe.optimizer, models * layout.len);
        let losses = zeros(gpu, "losses", steps_per_epoch * models);
        let hyper = hyper_buffer(gpu, &hypers(recipes, 0));
        split.write_steps(gpu, 0, |s| recipe.corrections(split.len, 0, s));
        let keys = crate::gpu::ops::dropout::keys_buffer(gpu, recipes);
        let inputs = StepInputs {
            keys: &keys,
            split: &split,
            state: &state,
            losses: &losses,
            steps_per_epoch,
            hyper: &hyper,
        };
        let weights = Weights {
            layout: &layout,
            params: &params_buf,
            models,
        };
        let built = Schedules::of(plan).training(gpu, &modules, &weights, &inputs)?;
        let reads = LossReads::new(gpu, steps_per_epoch * models);
        let mut bytes = vec![
            ("params".to_string(), params_buf.size()),
            ("train split".to_string(), split.bytes()),
            ("optimizer state".to_string(), state.bytes()),
            ("losses".to_string(), losses.size()),
            ("losses read-back".to_string(), reads.bytes()),
        ];
        bytes.extend(built.bytes);
        let staging = staging(
            gpu,
            "staging (read-back)",
            4 * models * layout.len.max(steps_per_epoch),
        );
        bytes.push(("staging".to_string(), staging.size()));
        Ok(Trainer {
            gpu: gpu.clone(),
            plan,
            modules,
            layout,
            param_count: arch.param_count(),
            models,
            params: params_buf,
            state,
            hyper,
            recipes: recipes.to_vec(),
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

    /// A device-layout buffer of every model, read back in PyTorch's flat order, model after
    /// model.
    async fn read_flat(&self, src: &wgpu::Buffer) -> Result<Vec<f32>> {
        let floats = self.models * self.layout.len;
        let device: Vec<f32> = read_back(&self.gpu, src, 0, floats, &self.staging).await?;
        Ok(self.layout.from_device_set(&device))
    }

    /// The losses buffer's entries of `steps`: [steps, models], step-major.
    fn entries(&self, steps: &Range<usize>) -> Range<usize> {
        steps.start * self.models..steps.end * self.models
    }

    /// Step-major losses [steps, models] as the loop takes them: [models, steps].
    fn by_model(&self, losses: Vec<f32>) -> Vec<f32> {
        let m = self.models;
        if m == 1 {
            return losses;
        }
        let steps = losses.len() / m;
        (0..m * steps)
            .map(|i| losses[(i % steps) * m + i / steps])
            .collect()
    }

    /// Hands over epoch `epoch`'s orders of the training set ([models, n]), and writes the
    /// epoch's learning rates and the optimizer's values of its steps.
    pub fn begin_epoch(&mut self, epoch: usize, order: &[u32]) -> Result<()> {
        ensure!(
            order.len() == self.models * self.split.len,
            "orders of {} for {} models of {} samples",
            order.len(),
            self.models,
            self.split.len
        );
        let (gpu, split, recipe) = (&self.gpu, &self.split, &self.recipes[0]);
        gpu.queue
            .write_buffer(&split.order, 0, bytemuck::cast_slice(order));
        let hyper: Vec<[f32; 4]> = hypers(&self.recipes, epoch)
            .iter()
            .map(Hyper::to_f32)
            .collect();
        gpu.queue
            .write_buffer(&self.hyper, 0, bytemuck::cast_slice(&hyper));
        let first = epoch * recipe.steps_per_epoch(split.len);
        split.write_steps(gpu, first, |s| recipe.corrections(split.len, epoch, s));
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
                    let entries = self.entries(&steps);
                    let (reads, losses) = (&self.reads, &self.losses);
                    let copy = |enc: &mut wgpu::CommandEncoder| {
                        reads.copy(enc, losses, &entries, slot);
                    };
                    let index = submit_then(gpu, "train steps", &self.step, s..e, stride, copy)?;
                    self.reads.submitted(entries, slot, index);
                }
            }
            s = e;
        }
        Ok(())
    }

    /// The losses of `steps` of every model, [models, steps]: the read in flight for exactly
    /// those steps, else a read-back.
    pub async fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>> {
        let entries = self.entries(&steps);
        if let Some(losses) = self.reads.take(&self.gpu, &entries).await? {
            return Ok(self.by_model(losses));
        }
        let (start, len) = (entries.start, entries.len());
        let losses = read_back(&self.gpu, &self.losses, start, len, &self.staging).await?;
        Ok(self.by_model(losses))
    }
}

/// The GPU backend: training and, beside it, the evaluation of the weights it trains.
pub struct GpuBackend {
    pub trainer: Trainer,
    evaluator: Evaluator,
    about: About,
}

impl GpuBackend {
    /// A backend that trains `recipes` (one per model, side by side) on `train` and evaluates
    /// on `test` from the PyTorch-layout `params` ([models, param_count]), as `plan` says.
    pub fn new(
        gpu: &Gpu,
        plan: Plan,
        arch: &Arch,
        recipes: &[Recipe],
        params: &[f32],
        train: &Dataset,
        test: &Dataset,
    ) -> Result<GpuBackend> {
        let modules = Arc::new(Modules::new(gpu, plan.kernels)?);
        let batch = recipes.first().map_or(1, |r| r.batch_size);
        let split = Split::new(gpu, "train", train, batch);
        let trainer = Trainer::new(gpu, plan, modules, arch, recipes, params, split)?;
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
            models: trainer.models,
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

    /// Writes new parameter values (PyTorch's flat order, model after model).
    pub fn set_params(&mut self, params: &[f32]) {
        let t = &self.trainer;
        assert_eq!(params.len(), t.models * t.param_count);
        let device = t.layout.to_device_set(params);
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

    fn models(&self) -> usize {
        self.trainer.models
    }

    async fn evaluate_all(&mut self) -> Result<Vec<Eval>> {
        self.evaluator.evaluate_all().await
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for GpuBackend {
    fn begin_epoch(&mut self, epoch: usize, order: &[u32]) -> Result<()> {
        self.trainer.begin_epoch(epoch, order)
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

    async fn state(&mut self) -> Result<Vec<Vec<f32>>> {
        let t = &self.trainer;
        let mut out = Vec::new();
        for b in t.state.tensors() {
            out.push(t.read_flat(b).await?);
        }
        Ok(out)
    }

    fn load_state(&mut self, params: &[f32], state: &[Vec<f32>]) -> Result<()> {
        let t = &self.trainer;
        let floats = t.models * t.param_count;
        let tensors = t.state.tensors();
        ensure!(
            params.len() == floats
                && state.len() == tensors.len()
                && state.iter().all(|s| s.len() == floats),
            "a state of {} parameters and {} tensors for {} models of {} and {} tensors",
            params.len(),
            state.len(),
            t.models,
            t.param_count,
            tensors.len()
        );
        for (values, b) in state.iter().zip(tensors) {
            let device = t.layout.to_device_set(values);
            t.gpu
                .queue
                .write_buffer(b, 0, bytemuck::cast_slice(&device));
        }
        self.set_params(params);
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
