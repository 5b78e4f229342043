//! The device buffers of a run: a data split, and the activations of one batch.

use wgpu::util::DeviceExt;

use crate::data::Dataset;
use crate::gpu::context::Gpu;
use crate::gpu::layout::pad4;
use crate::gpu::ops::gather::pack_images;
use crate::gpu::program::{step_stride, step_table};
use crate::model::Arch;

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

/// The 256-entry table that normalises a pixel value as ToTensor and Normalize((0.5,), (0.5,)).
pub fn normalisation_table(gpu: &Gpu) -> wgpu::Buffer {
    let table = crate::data::normalize_table();
    init(
        gpu,
        "normalisation table",
        bytemuck::cast_slice(&table),
        wgpu::BufferUsages::STORAGE,
    )
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
/// uniform per batch of `batch`.
pub struct Split {
    pub images: wgpu::Buffer,
    pub labels: wgpu::Buffer,
    pub order: wgpu::Buffer,
    pub steps: wgpu::Buffer,
    pub len: usize,
    pub pixels: usize,
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
                &step_table(data.len(), batch, step_stride(gpu)),
                wgpu::BufferUsages::UNIFORM,
            ),
            len: data.len(),
            pixels: data.pixels(),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.images.size() + self.labels.size() + self.order.size() + self.steps.size()
    }
}

/// The activations of one batch of `bp` columns and, when training, their gradients.
pub struct Activations {
    pub bp: usize,
    /// h_t[l]: H_l^T [s_l, bp], feature-major; h_t[0] is the input X^T
    pub h_t: Vec<wgpu::Buffer>,
    /// h_rows[l]: H_l [bp, pad4(s_l)], batch-major, zero past s_l
    pub h_rows: Vec<wgpu::Buffer>,
    /// dz[l]: dZ_l^T [s_{l+1}, bp], the gradient of layer l's output (empty when evaluating)
    pub dz: Vec<wgpu::Buffer>,
}

impl Activations {
    pub fn new(gpu: &Gpu, arch: &Arch, bp: usize, gradients: bool) -> Activations {
        let s = &arch.sizes;
        Activations {
            bp,
            h_t: (0..s.len())
                .map(|l| zeros(gpu, &format!("H{l}^T"), s[l] * bp))
                .collect(),
            h_rows: (0..s.len())
                .map(|l| zeros(gpu, &format!("H{l}"), bp * pad4(s[l])))
                .collect(),
            dz: match gradients {
                true => (0..arch.layers())
                    .map(|l| zeros(gpu, &format!("dZ{l}^T"), s[l + 1] * bp))
                    .collect(),
                false => Vec::new(),
            },
        }
    }

    pub fn bytes(&self) -> u64 {
        self.h_t
            .iter()
            .chain(&self.h_rows)
            .chain(&self.dz)
            .map(|b| b.size())
            .sum()
    }
}
