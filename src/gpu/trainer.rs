//! The GPU backend: every buffer, pipeline and bind group of a run, created once; training
//! records [`training_step`] 250 steps at a time into one compute pass and one submission.
//!
//! Activations are feature-major, `H_l^T: [s_l, bp]`, with `bp` the batch rounded up to 4;
//! columns of a batch past its valid count carry zero input and zero gradient, so a last
//! partial batch needs no other pipelines. Parameters, gradients and momentum are flat in the
//! device layout (`gpu::layout`) and converted to PyTorch's at the edges (upload, read-back).

use std::ops::Range;

use anyhow::{Context, Result, bail};

use crate::data::{Dataset, normalize_table};
use crate::gpu::context::Gpu;
use crate::gpu::evaluator::{EVAL_BATCH, Evaluator};
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::gpu::ops::Modules;
use crate::gpu::profiler::submit_profiled;
use crate::gpu::program::{Op, read_back, staging, step_stride, submit};
use crate::gpu::step::{StepInputs, Weights, training_step};
use crate::gpu::tensors::{Activations, Split, init, zeros};
use crate::model::Arch;
use crate::profile::Profile;
use crate::train::{Backend, Eval, Recipe};

/// Steps recorded into one compute pass and submission.
pub const STEPS_PER_SUBMIT: usize = 250;

/// Bytes and grid sizes a run needs, checked against the adapter before anything is built.
pub fn check_limits(gpu: &Gpu, arch: &Arch, batch: usize, n_train: usize) -> Result<(), String> {
    let bp = pad4(batch.max(EVAL_BATCH.min(n_train))) as u64;
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

/// What only training needs.
struct Training {
    split: Split,
    grads: wgpu::Buffer,
    momentum: wgpu::Buffer,
    /// losses: [steps per epoch], each step's mean loss of the current epoch
    losses: wgpu::Buffer,
    /// The dispatches of one step, in order.
    step: Vec<Op>,
    bytes: Vec<(String, u64)>,
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
    /// A backend that trains `recipe` on `train` and evaluates on `test` (in batches of
    /// [`EVAL_BATCH`]) from the PyTorch-layout `params`.
    pub fn new(
        gpu: Gpu,
        arch: &Arch,
        recipe: &Recipe,
        params: &[f32],
        train: &Dataset,
        test: &Dataset,
    ) -> Result<GpuBackend> {
        let mut b = GpuBackend::evaluator(gpu, arch, params, test, EVAL_BATCH)?;
        let m = Modules::new(&b.gpu, b.gpu.tile_loop())?;
        let gpu = &b.gpu;
        let bp = pad4(recipe.batch_size);
        let steps_per_epoch = recipe.steps_per_epoch(train.len());
        let split = Split::new(gpu, "train", train, recipe.batch_size);
        let acts = Activations::new(gpu, arch, bp, true);
        let table = init(
            gpu,
            "normalisation table",
            bytemuck::cast_slice(&normalize_table()),
            wgpu::BufferUsages::STORAGE,
        );
        let grads = zeros(gpu, "grads", b.layout.len);
        let momentum = zeros(gpu, "momentum", b.layout.len);
        let losses = zeros(gpu, "losses", steps_per_epoch);
        let weights = Weights {
            layout: &b.layout,
            params: &b.params,
            grads: &grads,
            momentum: &momentum,
        };
        let inputs = StepInputs {
            split: &split,
            table: &table,
            acts: &acts,
            losses: &losses,
            steps_per_epoch,
            lr: recipe.lr,
            momentum: recipe.momentum,
        };
        let step = training_step(gpu, &m, &weights, &inputs)?;
        let bytes = vec![
            ("train split".to_string(), split.bytes()),
            (
                "grads + momentum".to_string(),
                grads.size() + momentum.size(),
            ),
            ("losses".to_string(), losses.size()),
            ("training activations + gradients".to_string(), acts.bytes()),
        ];
        b.staging = staging(
            gpu,
            "staging (read-back)",
            4 * b.layout.len.max(steps_per_epoch),
        );
        b.training = Some(Training {
            split,
            grads,
            momentum,
            losses,
            step,
            bytes,
        });
        Ok(b)
    }

    /// A backend that only evaluates `test` in batches of `batch`.
    pub fn evaluator(
        gpu: Gpu,
        arch: &Arch,
        params: &[f32],
        test: &Dataset,
        batch: usize,
    ) -> Result<GpuBackend> {
        anyhow::ensure!(
            params.len() == arch.param_count(),
            "parameters do not match the model"
        );
        anyhow::ensure!(
            test.pixels() == arch.input(),
            "images of {} pixels for a model of {}",
            test.pixels(),
            arch.input()
        );
        let m = Modules::new(&gpu, gpu.tile_loop())?;
        let layout = DeviceLayout::new(arch);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let params_buf = init(
            &gpu,
            "params",
            bytemuck::cast_slice(&layout.to_device(params)),
            usage,
        );
        let evaluator = Evaluator::new(&gpu, &m, (arch, &layout, &params_buf), test, batch)?;
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

    /// A device-layout buffer, read back in PyTorch's flat order.
    fn read_flat(&self, src: &wgpu::Buffer) -> Result<Vec<f32>> {
        let device: Vec<f32> = read_back(&self.gpu, src, 0, self.layout.len, &self.staging)?;
        Ok(self.layout.from_device(&device))
    }

    /// Gradients of the last step, PyTorch's flat order (for tests).
    pub fn grads(&mut self) -> Result<Vec<f32>> {
        self.read_flat(&self.training()?.grads)
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

    fn run_steps(&mut self, steps: Range<usize>) -> Result<()> {
        let stride = step_stride(&self.gpu);
        let Some(t) = &self.training else {
            bail!("this GPU backend was built to evaluate only");
        };
        let mut s = steps.start;
        while s < steps.end {
            let e = (s + STEPS_PER_SUBMIT).min(steps.end);
            match &mut self.profile {
                Some(p) => submit_profiled(&self.gpu, &t.step, s..e, stride, p)?,
                None => submit(&self.gpu, "train steps", &t.step, s..e, stride)?,
            }
            s = e;
        }
        Ok(())
    }

    fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>> {
        read_back(
            &self.gpu,
            &self.training()?.losses,
            steps.start,
            steps.len(),
            &self.staging,
        )
    }

    fn evaluate(&mut self) -> Result<Eval> {
        self.evaluator.run(&self.gpu)
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        self.read_flat(&self.params)
    }

    fn momentum(&mut self) -> Result<Vec<f32>> {
        self.read_flat(&self.training()?.momentum)
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
