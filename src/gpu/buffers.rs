//! The device buffers both schedules share: how a buffer is made, a data split (images,
//! labels, order, step uniforms), the normalisation table, and the bundles of buffers a
//! schedule's training step and evaluation are built from. Each schedule keeps its own
//! activations (`gpu::layered`, `gpu::fused`).

use wgpu::util::DeviceExt;

use crate::data::Dataset;
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{no_corrections, step_stride, step_table};
use crate::gpu::layout::{DeviceLayout, pad4};
use crate::optim::{Hyper, Optimizer};

/// A buffer holding `bytes`, padded with zeros to whole vec4 (copied only when it needs the
/// padding: the training images are 47 MB).
pub fn init(gpu: &Gpu, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    let whole = !bytes.is_empty() && bytes.len().is_multiple_of(16);
    let padded;
    let contents = match whole {
        true => bytes,
        false => {
            let mut p = bytes.to_vec();
            p.resize(bytes.len().max(16).next_multiple_of(16), 0);
            padded = p;
            &padded
        }
    };
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage,
        })
}

/// The 256-entry table that normalises a pixel value of `split` as ToTensor and its Normalize,
/// as a storage buffer (the layered gather reads it) or a uniform one (the fused kernels).
pub fn normalisation_table(gpu: &Gpu, usage: wgpu::BufferUsages, split: &Split) -> wgpu::Buffer {
    let table = split.normalize.table();
    init(
        gpu,
        "normalisation table",
        bytemuck::cast_slice(&table),
        usage,
    )
}

/// Packs u8 images four to a u32, each image padded to whole words.
pub fn pack_images(data: &Dataset) -> Vec<u32> {
    let words = data.pixels().div_ceil(4);
    let mut out = vec![0u32; data.len() * words];
    for i in 0..data.len() {
        for (p, &v) in data.image(i).iter().enumerate() {
            out[i * words + p / 4] |= (v as u32) << (8 * (p % 4));
        }
    }
    out
}

/// A zeroed storage buffer of `floats` (rounded up to whole vec4), also a copy source and
/// destination.
pub fn zeros(gpu: &Gpu, label: &str, floats: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (pad4(floats.max(1)) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// A data split on the device: packed images, labels, the order the steps read, and one step
/// uniform per batch of `batch`. A clone shares the buffers (the tuner times every candidate on
/// one upload).
#[derive(Clone)]
pub struct Split {
    /// images: [len, ceil(pixels / 4)] u32, from [`pack_images`]
    pub images: wgpu::Buffer,
    /// labels: [len] u32
    pub labels: wgpu::Buffer,
    /// order: [orders, len] u32, each model's order of the epoch (one identity order for the
    /// test split)
    pub order: wgpu::Buffer,
    /// steps: one `Step` per batch, at `step_stride`
    pub steps: wgpu::Buffer,
    pub len: usize,
    /// Samples per step.
    pub batch: usize,
    pub pixels: usize,
    /// How its pixels become inputs (the normalisation table's values).
    pub normalize: crate::data::Normalize,
}

impl Split {
    pub fn new(gpu: &Gpu, name: &str, data: &Dataset, batch: usize) -> Split {
        let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
        let identity: Vec<u32> = (0..data.len() as u32).collect();
        let storage = wgpu::BufferUsages::STORAGE;
        Split {
            images: init(
                gpu,
                &format!("{name} images (u8 x4)"),
                bytemuck::cast_slice(&pack_images(data)),
                storage,
            ),
            labels: init(
                gpu,
                &format!("{name} labels"),
                bytemuck::cast_slice(&labels),
                storage,
            ),
            order: init(
                gpu,
                &format!("{name} order"),
                bytemuck::cast_slice(&identity),
                storage | wgpu::BufferUsages::COPY_DST,
            ),
            steps: init(
                gpu,
                &format!("{name} steps"),
                &step_table((data.len(), batch, 0), step_stride(gpu), no_corrections),
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
            len: data.len(),
            batch,
            pixels: data.pixels(),
            normalize: data.normalize,
        }
    }

    /// The same split with room for one order per model of a set (written every epoch).
    pub fn with_orders(mut self, gpu: &Gpu, name: &str, models: usize) -> Split {
        if models > 1 {
            self.order = zeros(gpu, &format!("{name} orders"), models * self.len);
        }
        self
    }

    pub fn bytes(&self) -> u64 {
        self.images.size() + self.labels.size() + self.order.size() + self.steps.size()
    }

    /// Rewrites the step uniforms of an epoch whose first step is step `first` of the run,
    /// with the optimizer values of each of its steps (`corrections(step)`), before the
    /// epoch's first step is queued.
    pub fn write_steps(&self, gpu: &Gpu, first: usize, corrections: impl Fn(usize) -> [f32; 2]) {
        let shape = (self.len, self.batch, first);
        let table = step_table(shape, step_stride(gpu), corrections);
        gpu.queue.write_buffer(&self.steps, 0, &table);
    }
}

/// A model on the device, in the device layout (`gpu::layout`).
pub struct Weights<'a> {
    pub layout: &'a DeviceLayout,
    /// params: [models, layout.len], each model's flat parameters, device layout
    pub params: &'a wgpu::Buffer,
    /// Models side by side in `params` (1 for a single run).
    pub models: usize,
}

/// What a training step reads and writes besides the parameters.
pub struct StepInputs<'a> {
    pub split: &'a Split,
    pub state: &'a OptimizerState,
    /// losses: [steps per epoch, models], each step's mean loss
    pub losses: &'a wgpu::Buffer,
    pub steps_per_epoch: usize,
    /// hyper: [models] (lr, momentum, weight decay, 0) f32, [`hyper_buffer`]
    pub hyper: &'a wgpu::Buffer,
    /// keys: [models] (u32, u32), each model's seed, which keys its dropout masks
    pub keys: &'a wgpu::Buffer,
}

/// The optimizer's state tensors on the device, each [models, layout.len] in the device
/// layout and zero at the start, as PyTorch's (`Optimizer::state_names`, in order).
pub struct OptimizerState {
    pub optimizer: Optimizer,
    /// state_a: `momentum_buffer`, `exp_avg` or `square_avg`
    pub a: wgpu::Buffer,
    /// state_b: `exp_avg_sq` or `acc_delta`; for SGD, which has one tensor, a placeholder of
    /// one vec4 that the rule never reads
    pub b: wgpu::Buffer,
    /// Floats in each tensor.
    pub floats: usize,
}

impl OptimizerState {
    pub fn new(gpu: &Gpu, optimizer: Optimizer, floats: usize) -> OptimizerState {
        let names = optimizer.state_names();
        let b_floats = if names.len() > 1 { floats } else { 4 };
        OptimizerState {
            optimizer,
            a: zeros(gpu, names[0], floats),
            b: zeros(gpu, names.get(1).unwrap_or(&"unused state"), b_floats),
            floats,
        }
    }

    /// The tensors `state_names` names, in order.
    pub fn tensors(&self) -> Vec<&wgpu::Buffer> {
        [&self.a, &self.b][..self.optimizer.state_names().len()].to_vec()
    }

    pub fn bytes(&self) -> u64 {
        self.a.size() + self.b.size()
    }
}

/// Each model's hyper-parameters as the kernels read them ([models] vec4 of
/// `optim::Hyper::to_f32`); rewritten every epoch (the learning rate under StepLR).
pub fn hyper_buffer(gpu: &Gpu, hyper: &[Hyper]) -> wgpu::Buffer {
    let values: Vec<[f32; 4]> = hyper.iter().map(Hyper::to_f32).collect();
    init(
        gpu,
        "hyper-parameters",
        bytemuck::cast_slice(&values),
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
    )
}

/// Where an evaluation writes each sample's verdict.
pub struct Verdicts<'a> {
    /// correct: [models, split] u32, is_correct | predicted << 8
    pub correct: &'a wgpu::Buffer,
    /// log_probs: [models, split, classes]
    pub log_probs: &'a wgpu::Buffer,
    pub classes: usize,
}

/// A schedule's training step or evaluation, built: its dispatches in order, and the bytes of
/// the buffers only it holds (the dispatches keep those alive).
pub struct Built {
    pub dispatches: Vec<crate::gpu::dispatch::Dispatch>,
    pub bytes: Vec<(String, u64)>,
    /// The layered schedule's weight gradients (device layout), which the tests read; the fused
    /// schedule applies each gradient where it sums it and keeps none.
    pub grads: Option<wgpu::Buffer>,
}
