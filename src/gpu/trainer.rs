//! The GPU backend: every buffer, pipeline and bind group of a run, created once; training
//! records [`training_step`] 250 steps at a time into one compute pass and one submission.
//!
//! Activations are feature-major, `H_l^T: [s_l, bp]`, with `bp` the batch rounded up to 4;
//! columns of a batch past its valid count carry zero input and zero gradient, so a last
//! partial batch needs no other pipelines. Parameters, gradients and momentum are flat in the
//! device layout (`gpu::layout`) and converted to PyTorch's at the edges (upload, read-back).

use std::ops::Range;

use anyhow::{Context, Result, bail};

use crate::data::Dataset;
use crate::gpu::context::Gpu;
use crate::gpu::evaluator::{Batching, Evaluator};
use crate::gpu::fused::{EVAL_BATCH, FusedActs, normalisation_uniform};
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::profiler::submit_profiled;
use crate::gpu::program::{Op, Schedule, read_back, staging, step_stride, submit, submit_then};
use crate::gpu::readback::LossReads;
use crate::gpu::step::{StepInputs, Weights, forward_products, fused_training_step, training_step};
use crate::gpu::tensors::{Activations, Split, init, normalisation_table, zeros};
use crate::model::Arch;
use crate::profile::Profile;
use crate::train::{Backend, Eval, Recipe};

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

/// The parameters in the device layout, uploaded.
fn upload(
    gpu: &Gpu,
    arch: &Arch,
    params: &[f32],
    test: &Dataset,
) -> Result<(DeviceLayout, wgpu::Buffer)> {
    anyhow::ensure!(
        params.len() == arch.param_count(),
        "parameters do not match the model"
    );
    let (pixels, input) = (test.pixels(), arch.input());
    anyhow::ensure!(
        pixels == input,
        "images of {pixels} pixels for a model of {input}"
    );
    let layout = DeviceLayout::new(arch);
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let buffer = init(
        gpu,
        "params",
        bytemuck::cast_slice(&layout.to_device(params)),
        usage,
    );
    Ok((layout, buffer))
}

/// The activations a training step runs on, by schedule.
enum StepBuffers<'a> {
    /// Feature-major and batch-major activations, and the forward products over them.
    Layered {
        acts: &'a Activations,
        forward: &'a [Op],
    },
    /// Every layer's rows, and the uniform normalisation table.
    Fused {
        acts: &'a FusedActs,
        norm: &'a wgpu::Buffer,
    },
}

/// What only training needs.
struct Training {
    split: Split,
    grads: wgpu::Buffer,
    momentum: wgpu::Buffer,
    /// losses: [steps per epoch], each step's mean loss of the current epoch
    losses: wgpu::Buffer,
    /// Their read-backs in flight, one submission behind the device.
    reads: LossReads,
    /// The dispatches of one step, in order.
    step: Vec<Op>,
    bytes: Vec<(String, u64)>,
}

impl Training {
    fn new(
        gpu: &Gpu,
        m: &Modules,
        (layout, params): (&DeviceLayout, &wgpu::Buffer),
        (recipe, train): (&Recipe, &Dataset),
        buffers: &StepBuffers<'_>,
    ) -> Result<Training> {
        let steps_per_epoch = recipe.steps_per_epoch(train.len());
        let split = Split::new(gpu, "train", train, recipe.batch_size);
        let table = normalisation_table(gpu);
        // The fused schedule applies each gradient where it sums it and keeps none.
        let grad_floats = match buffers {
            StepBuffers::Layered { .. } => layout.len,
            StepBuffers::Fused { .. } => 4,
        };
        let grads = zeros(gpu, "grads", grad_floats);
        let momentum = zeros(gpu, "momentum", layout.len);
        let losses = zeros(gpu, "losses", steps_per_epoch);
        let reads = LossReads::new(gpu, steps_per_epoch);
        let weights = Weights {
            layout,
            params,
            grads: &grads,
            momentum: &momentum,
        };
        let inputs = StepInputs {
            split: &split,
            table: &table,
            losses: &losses,
            steps_per_epoch,
            lr: recipe.lr,
            momentum: recipe.momentum,
        };
        let (step, acts_bytes) = match *buffers {
            StepBuffers::Layered { acts, forward } => (
                training_step(gpu, m, &weights, &inputs, (acts, forward))?,
                acts.bytes(),
            ),
            StepBuffers::Fused { acts, norm } => (
                fused_training_step(gpu, m, &weights, &inputs, (acts, norm))?,
                acts.bytes(),
            ),
        };
        let bytes = vec![
            ("train split".to_string(), split.bytes()),
            (
                "grads + momentum".to_string(),
                grads.size() + momentum.size(),
            ),
            ("losses".to_string(), losses.size()),
            ("losses read-back".to_string(), reads.bytes()),
            ("activations + gradients".to_string(), acts_bytes),
        ];
        Ok(Training {
            split,
            grads,
            momentum,
            losses,
            reads,
            step,
            bytes,
        })
    }
}

pub struct GpuBackend {
    pub gpu: Gpu,
    layout: DeviceLayout,
    param_count: usize,
    /// params: the flat parameters, device layout
    params: wgpu::Buffer,
    staging: wgpu::Buffer,
    evaluator: Evaluator,
    /// None for a backend that only evaluates.
    training: Option<Training>,
    profile: Option<Profile>,
}

impl GpuBackend {
    /// A backend that trains `recipe` on `train` and evaluates on `test` from the
    /// PyTorch-layout `params`; evaluation shares the training's activations and products.
    pub fn new(
        gpu: Gpu,
        arch: &Arch,
        recipe: &Recipe,
        params: &[f32],
        train: &Dataset,
        test: &Dataset,
    ) -> Result<GpuBackend> {
        let m = Modules::new(&gpu, gpu.kernels)?;
        let (layout, params_buf) = upload(&gpu, arch, params, test)?;
        let weights = (&layout, &params_buf);
        let bp = pad4(recipe.batch_size);
        let (training, evaluator) = match gpu.schedule {
            Schedule::Layered => {
                let acts = Activations::new(&gpu, arch, bp, true);
                let forward = forward_products(&gpu, &m, weights, &acts)?;
                let buffers = StepBuffers::Layered {
                    acts: &acts,
                    forward: &forward,
                };
                let training = Training::new(&gpu, &m, weights, (recipe, train), &buffers)?;
                let shared = Batching::Shared {
                    acts: &acts,
                    forward: &forward,
                };
                let eval = Evaluator::new(&gpu, &m, (arch, &layout, &params_buf), test, shared)?;
                (training, eval)
            }
            Schedule::Fused => {
                let acts = FusedActs::new(&gpu, &layout, bp, true)?;
                let norm = normalisation_uniform(&gpu);
                let buffers = StepBuffers::Fused {
                    acts: &acts,
                    norm: &norm,
                };
                let training = Training::new(&gpu, &m, weights, (recipe, train), &buffers)?;
                let own = Batching::Own(EVAL_BATCH);
                let eval = Evaluator::new(&gpu, &m, (arch, &layout, &params_buf), test, own)?;
                (training, eval)
            }
        };
        let floats = layout.len.max(recipe.steps_per_epoch(train.len()));
        Ok(GpuBackend {
            staging: staging(&gpu, "staging (read-back)", 4 * floats),
            gpu,
            param_count: params.len(),
            layout,
            params: params_buf,
            evaluator,
            training: Some(training),
            profile: None,
        })
    }

    /// A backend that only evaluates `test` in batches of `batch`.
    pub fn evaluator(
        gpu: Gpu,
        arch: &Arch,
        params: &[f32],
        test: &Dataset,
        batch: usize,
    ) -> Result<GpuBackend> {
        let m = Modules::new(&gpu, gpu.kernels)?;
        let (layout, params_buf) = upload(&gpu, arch, params, test)?;
        let own = Batching::Own(batch);
        let evaluator = Evaluator::new(&gpu, &m, (arch, &layout, &params_buf), test, own)?;
        Ok(GpuBackend {
            staging: staging(&gpu, "staging (read-back)", 4 * layout.len),
            gpu,
            param_count: params.len(),
            layout,
            params: params_buf,
            evaluator,
            training: None,
            profile: None,
        })
    }

    fn training(&self) -> Result<&Training> {
        self.training
            .as_ref()
            .context("this GPU backend was built to evaluate only")
    }

    /// The dispatches of one training step (for `bench` and the tests).
    pub fn step_ops(&self) -> &[Op] {
        self.training.as_ref().map_or(&[], |t| &t.step)
    }

    /// Every pipeline it built: the training step's and the evaluation's (for the tests).
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.step_ops().iter().chain(self.evaluator.ops())
    }

    /// A device-layout buffer, read back in PyTorch's flat order.
    async fn read_flat(&self, src: &wgpu::Buffer) -> Result<Vec<f32>> {
        let device: Vec<f32> = read_back(&self.gpu, src, 0, self.layout.len, &self.staging).await?;
        Ok(self.layout.from_device(&device))
    }

    /// Gradients of the last step, PyTorch's flat order (for tests).
    pub async fn grads(&mut self) -> Result<Vec<f32>> {
        anyhow::ensure!(
            self.gpu.schedule == Schedule::Layered,
            "the fused schedule keeps no gradients: it applies each where it sums it"
        );
        self.read_flat(&self.training()?.grads).await
    }

    /// Writes new parameter values (PyTorch's flat order).
    pub fn set_params(&mut self, params: &[f32]) {
        assert_eq!(params.len(), self.param_count);
        let device = self.layout.to_device(params);
        self.gpu
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(&device));
    }
}

#[async_trait::async_trait(?Send)]
impl Backend for GpuBackend {
    fn describe(&self) -> String {
        self.gpu.to_string()
    }

    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        let t = self.training()?;
        anyhow::ensure!(
            order.len() == t.split.len,
            "an order of {} for {} samples",
            order.len(),
            t.split.len
        );
        self.gpu
            .queue
            .write_buffer(&t.split.order, 0, bytemuck::cast_slice(order));
        Ok(())
    }

    /// Submits `steps` in submissions of [`STEPS_PER_SUBMIT`]; the last one ends with the
    /// copy of their losses to read back, mapped at once, so that [`Backend::losses`] finds
    /// them in flight (not when profiling: the profiler waits on every submission anyway).
    async fn run_steps(&mut self, steps: Range<usize>) -> Result<()> {
        let stride = step_stride(&self.gpu);
        let Some(t) = &mut self.training else {
            bail!("this GPU backend was built to evaluate only");
        };
        let mut s = steps.start;
        while s < steps.end {
            let e = (s + STEPS_PER_SUBMIT).min(steps.end);
            match &mut self.profile {
                Some(p) => submit_profiled(&self.gpu, &t.step, s..e, stride, p).await?,
                None if e < steps.end => submit(&self.gpu, "train steps", &t.step, s..e, stride)?,
                None => {
                    let slot = t.reads.free_slot(&self.gpu).await?;
                    let (reads, losses) = (&t.reads, &t.losses);
                    let copy = |enc: &mut wgpu::CommandEncoder| {
                        reads.copy(enc, losses, &steps, slot);
                    };
                    let ops = (&t.step[..], s..e, stride);
                    let index = submit_then(&self.gpu, "train steps", ops, copy)?;
                    t.reads.submitted(steps.clone(), slot, index);
                }
            }
            s = e;
        }
        Ok(())
    }

    /// The losses of `steps`: the read in flight for exactly those steps, else a read-back.
    async fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>> {
        let Some(t) = &mut self.training else {
            bail!("this GPU backend was built to evaluate only");
        };
        if let Some(losses) = t.reads.take(&self.gpu, &steps).await? {
            return Ok(losses);
        }
        read_back(
            &self.gpu,
            &t.losses,
            steps.start,
            steps.len(),
            &self.staging,
        )
        .await
    }

    async fn evaluate(&mut self) -> Result<Eval> {
        self.evaluator.run(&self.gpu).await
    }

    async fn params(&mut self) -> Result<Vec<f32>> {
        self.read_flat(&self.params).await
    }

    async fn momentum(&mut self) -> Result<Vec<f32>> {
        self.read_flat(&self.training()?.momentum).await
    }

    fn start_profile(&mut self) -> bool {
        if self.gpu.timestamps {
            self.profile = Some(Profile::default());
        }
        self.gpu.timestamps
    }

    fn profile(&self) -> Option<Profile> {
        self.profile.clone()
    }

    fn schedule(&self) -> (&'static str, &'static str) {
        match self.gpu.schedule {
            Schedule::Layered => ("layered", self.gpu.kernels.name()),
            Schedule::Fused => ("fused", self.gpu.kernels.fused().name()),
        }
    }

    fn tuned(&self) -> Option<String> {
        self.gpu.tuned.clone()
    }

    fn queues_work(&self) -> bool {
        true
    }

    fn dispatches_per_step(&self) -> usize {
        self.step_ops().len()
    }

    fn buffer_sizes(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("params".to_string(), self.params.size()),
            (
                "test split + evaluation".to_string(),
                self.evaluator.bytes(),
            ),
            ("staging".to_string(), self.staging.size()),
        ];
        if let Some(t) = &self.training {
            out.extend(t.bytes.iter().cloned());
        }
        out
    }

    fn load_state(&mut self, params: &[f32], momentum: &[f32]) -> Result<()> {
        anyhow::ensure!(
            momentum.len() == self.param_count,
            "momentum does not match the model"
        );
        self.set_params(params);
        let device = self.layout.to_device(momentum);
        self.gpu
            .queue
            .write_buffer(&self.training()?.momentum, 0, bytemuck::cast_slice(&device));
        Ok(())
    }
}
