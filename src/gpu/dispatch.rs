//! The dispatch plumbing every operation shares: the `Step` uniform, a launcher's description
//! of a dispatch (`DispatchDesc`) and the dispatch built from it, ready to record (`Dispatch`:
//! pipeline, bind group, grid, created once before step 0 with WebGPU's binding rules
//! checked), the launchers' preconditions, and submission.

use std::sync::Arc;

use anyhow::{Result, ensure};

use crate::gpu::device::Gpu;
use crate::gpu::wgsl::Module;

// ---- the Step uniform ----

/// One step's uniform; WGSL twin `Step` in shaders/step.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Step {
    /// Position of the step's first sample in the split's order.
    pub start: u32,
    /// Samples in the step's batch.
    pub valid: u32,
    /// The step's number within the epoch.
    pub index: u32,
    /// The step's number over the whole run (the epoch's first step `first` + `index`), which
    /// keys dropout's masks.
    pub run: u32,
    /// What the optimizer's rule takes from the host for this step of the run
    /// (`optim::Optimizer::corrections`).
    pub correction1: f32,
    pub correction2: f32,
    pub pad2: u32,
    pub pad3: u32,
}

pub const STEP_BYTES: u64 = std::mem::size_of::<Step>() as u64;

/// Per-step uniforms at a stride the adapter accepts for dynamic offsets.
pub fn step_stride(gpu: &Gpu) -> u64 {
    (gpu.limits.min_uniform_buffer_offset_alignment as u64).max(STEP_BYTES)
}

/// The bytes of a step-uniform buffer: step s covers samples `s * batch ..` of `n`, is step
/// `first + s` of the run; its optimizer values are `corrections(s)` (all 1 where no optimizer
/// reads them).
pub fn step_table(
    (n, batch, first): (usize, usize, usize),
    stride: u64,
    corrections: impl Fn(usize) -> [f32; 2],
) -> Vec<u8> {
    let steps = n.div_ceil(batch);
    let mut bytes = vec![0u8; steps * stride as usize];
    for s in 0..steps {
        let [correction1, correction2] = corrections(s);
        let step = Step {
            start: (s * batch) as u32,
            valid: batch.min(n - s * batch) as u32,
            index: s as u32,
            run: (first + s) as u32,
            correction1,
            correction2,
            ..Step::default()
        };
        let at = s * stride as usize;
        bytes[at..at + STEP_BYTES as usize].copy_from_slice(bytemuck::bytes_of(&step));
    }
    bytes
}

/// No optimizer values: the evaluation's steps, and the checks that run no optimizer.
pub fn no_corrections(_: usize) -> [f32; 2] {
    [1.0, 1.0]
}

// ---- dispatches ----

/// One binding of a dispatch, by its access in the shader.
#[derive(Clone, Copy)]
pub enum Bind<'a> {
    Read(&'a wgpu::Buffer),
    ReadWrite(&'a wgpu::Buffer),
    /// A uniform buffer read whole (a table of constants).
    Uniform(&'a wgpu::Buffer),
    /// The step uniforms, read at the dynamic offset of the step being recorded.
    Step(&'a wgpu::Buffer),
}

impl<'a> Bind<'a> {
    fn buffer(&self) -> &'a wgpu::Buffer {
        match *self {
            Bind::Read(b) | Bind::ReadWrite(b) | Bind::Uniform(b) | Bind::Step(b) => b,
        }
    }
}

/// What a launcher hands to [`Dispatch::new`].
pub struct DispatchDesc<'a> {
    pub label: String,
    pub module: &'a Module,
    pub entry: &'a str,
    pub constants: &'a [(&'a str, f64)],
    /// (binding number, binding) of every binding the entry point uses.
    pub bindings: &'a [(u32, Bind<'a>)],
    pub groups: [u32; 3],
}

/// A dispatch ready to record: pipeline, bind group, grid; `step` says whether its bind group
/// takes the dynamic offset of the step being recorded.
#[derive(Clone)]
pub struct Dispatch {
    pub label: String,
    /// What the pipeline was built from: module, entry point and override constants.
    pub source: PipelineSource,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    step: bool,
}

/// The WGSL, entry point and override values of a pipeline, as the launcher set them.
#[derive(Clone)]
pub struct PipelineSource {
    pub module: &'static str,
    pub wgsl: Arc<str>,
    pub entry: String,
    pub constants: Vec<(String, f64)>,
}

/// WebGPU's rule, which browsers enforce and native wgpu does not: within one dispatch a buffer
/// that is bound writable is bound once (the bindings here are whole buffers, so any second
/// binding of it overlaps).
fn check_aliasing(label: &str, bindings: &[(u32, Bind<'_>)]) -> Result<()> {
    for (i, (bi, a)) in bindings.iter().enumerate() {
        for (bj, b) in &bindings[i + 1..] {
            let writable = matches!(a, Bind::ReadWrite(_)) || matches!(b, Bind::ReadWrite(_));
            ensure!(
                !(writable && a.buffer() == b.buffer()),
                "{label}: buffer {:?} is bound at {bi} and {bj} and written through one of them; \
                 WebGPU forbids writable aliasing",
                a.buffer()
            );
        }
    }
    Ok(())
}

fn layout_entry(binding: u32, bind: &Bind<'_>) -> wgpu::BindGroupLayoutEntry {
    let ty = match bind {
        Bind::Read(_) | Bind::ReadWrite(_) => wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage {
                read_only: matches!(bind, Bind::Read(_)),
            },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        Bind::Uniform(_) => wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        Bind::Step(_) => wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: wgpu::BufferSize::new(STEP_BYTES),
        },
    };
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty,
        count: None,
    }
}

fn group_entry<'a>(binding: u32, bind: &Bind<'a>) -> wgpu::BindGroupEntry<'a> {
    let resource = match *bind {
        Bind::Read(b) | Bind::ReadWrite(b) | Bind::Uniform(b) => b.as_entire_binding(),
        Bind::Step(b) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: b,
            offset: 0,
            size: wgpu::BufferSize::new(STEP_BYTES),
        }),
    };
    wgpu::BindGroupEntry { binding, resource }
}

/// A new bind group layout and compute pipeline for `d`, whose layout entries are `entries`.
fn build_pipeline(
    gpu: &Gpu,
    d: &DispatchDesc<'_>,
    entries: &[wgpu::BindGroupLayoutEntry],
) -> (wgpu::BindGroupLayout, wgpu::ComputePipeline) {
    let label = Some(d.label.as_str());
    let layout = gpu
        .device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label, entries });
    let pipeline_layout = gpu
        .device
        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label,
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
    let pipeline = gpu
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label,
            layout: Some(&pipeline_layout),
            module: &d.module.module,
            entry_point: Some(d.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: d.constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
    (layout, pipeline)
}

impl Dispatch {
    /// Builds the pipeline and bind group of `d`, after checking its grid against the adapter
    /// and its bindings against WebGPU's aliasing rule; a driver error is an error, not a panic.
    pub fn new(gpu: &Gpu, d: DispatchDesc<'_>) -> Result<Dispatch> {
        let max = gpu.limits.max_compute_workgroups_per_dimension;
        ensure!(
            d.groups.iter().all(|&g| (1..=max).contains(&g)),
            "{}: a grid of {:?} workgroups is outside the adapter's 1 to {max} per dimension",
            d.label,
            d.groups
        );
        check_aliasing(&d.label, d.bindings)?;
        let label = Some(d.label.as_str());
        let (pipeline, bind_group) = gpu.scoped(&format!("building {}", d.label), || {
            let entries: Vec<_> = d
                .bindings
                .iter()
                .map(|(i, b)| layout_entry(*i, b))
                .collect();
            let (layout, pipeline) = d.module.pipeline(&entries, d.entry, d.constants, || {
                build_pipeline(gpu, &d, &entries)
            });
            let entries: Vec<_> = d.bindings.iter().map(|(i, b)| group_entry(*i, b)).collect();
            let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label,
                layout: &layout,
                entries: &entries,
            });
            (pipeline, bind_group)
        })?;
        Ok(Dispatch {
            source: PipelineSource {
                module: d.module.name,
                wgsl: d.module.wgsl.clone(),
                entry: d.entry.to_string(),
                constants: d
                    .constants
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            },
            step: d.bindings.iter().any(|(_, b)| matches!(b, Bind::Step(_))),
            label: d.label,
            pipeline,
            bind_group,
            groups: d.groups,
        })
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step_offset: u32) {
        pass.set_pipeline(&self.pipeline);
        let offsets: &[u32] = if self.step { &[step_offset] } else { &[] };
        pass.set_bind_group(0, &self.bind_group, offsets);
        let [x, y, z] = self.groups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// A launcher's precondition on a buffer it reads or writes through `array<vec4<f32>>`:
/// whole vec4s (where shaders clamp out-of-range indices, as browsers and SwiftShader do, a
/// partial last vec4 is unreachable) and room for `floats`.
pub fn need_vec4(label: &str, name: &str, buffer: &wgpu::Buffer, floats: usize) -> Result<()> {
    ensure!(
        buffer.size().is_multiple_of(16),
        "{label}: {name} holds {} bytes, not a whole number of vec4",
        buffer.size()
    );
    need(label, name, buffer, floats * 4)
}

/// A launcher's precondition on the padded batch: columns are owned four at a time (vec4).
pub fn need_batch(label: &str, bp: usize) -> Result<()> {
    ensure!(
        bp > 0 && bp.is_multiple_of(4),
        "{label}: batch {bp} is not a multiple of 4"
    );
    Ok(())
}

/// Where a set of models sits in the buffers: the one statement of every per-model stride, which
/// every kernel takes through [`ModelAxis::p_stride`] and [`ModelAxis::o_stride`] and every
/// launcher's size check through
/// [`ModelAxis::need_params`] and [`ModelAxis::need_acts`]. The grid's z is the model (the
/// optimizer's flat run aside); model k's parameters, gradients and optimizer state are
/// `params` floats after model k-1's (`P_STRIDE`), its order `order` entries after (`O_STRIDE`;
/// 0: one order shared), its hyper-parameters one vec4 after, and its activations one whole
/// tensor after. One model: [`ModelAxis::ONE`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelAxis {
    pub models: usize,
    pub params: usize,
    pub order: usize,
}

impl ModelAxis {
    pub const ONE: ModelAxis = ModelAxis {
        models: 1,
        params: 0,
        order: 0,
    };

    /// The parameters' stride as the kernels' override constant `P_STRIDE`, in floats.
    pub fn p_stride(&self) -> (&'static str, f64) {
        ("P_STRIDE", self.params as f64)
    }

    /// The orders' stride as the kernels' override constant `O_STRIDE`, in entries.
    pub fn o_stride(&self) -> (&'static str, f64) {
        ("O_STRIDE", self.order as f64)
    }

    /// A launcher's precondition: a parameter-shaped `buffer` (parameters, gradients, state)
    /// reaches float `end` of the last model's block.
    pub fn need_params(
        &self,
        label: &str,
        name: &str,
        buffer: &wgpu::Buffer,
        end: usize,
    ) -> Result<()> {
        ensure!(
            self.models >= 1
                && self.params.is_multiple_of(4)
                && (self.models == 1 || end <= self.params),
            "{label}: {self:?} cannot hold {name} up to float {end}"
        );
        need_vec4(label, name, buffer, (self.models - 1) * self.params + end)
    }

    /// A launcher's precondition: an activation `buffer` holds `floats` for every model.
    pub fn need_acts(
        &self,
        label: &str,
        name: &str,
        buffer: &wgpu::Buffer,
        floats: usize,
    ) -> Result<()> {
        need_vec4(label, name, buffer, self.models * floats)
    }
}

/// A launcher's precondition: `buffer` holds at least `bytes`.
pub fn need(label: &str, name: &str, buffer: &wgpu::Buffer, bytes: usize) -> Result<()> {
    ensure!(
        buffer.size() >= bytes as u64,
        "{label}: {name} holds {} bytes, the dispatch reaches {bytes}",
        buffer.size()
    );
    Ok(())
}

/// Records `steps` of `ops` into one compute pass and submits it; the ops that take a step
/// uniform get step `s` at offset `s * stride`.
pub fn submit(
    gpu: &Gpu,
    label: &str,
    ops: &[Dispatch],
    steps: std::ops::Range<usize>,
    stride: u64,
) -> Result<()> {
    submit_then(gpu, label, ops, steps, stride, |_| {}).map(drop)
}

/// [`submit`], with `then` recording more (a copy to read back) after the pass, in the same
/// submission; the submission's index.
pub fn submit_then(
    gpu: &Gpu,
    label: &str,
    ops: &[Dispatch],
    steps: std::ops::Range<usize>,
    stride: u64,
    then: impl FnOnce(&mut wgpu::CommandEncoder),
) -> Result<wgpu::SubmissionIndex> {
    let mut enc = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for s in steps {
            let offset = u32::try_from(s as u64 * stride)?;
            for op in ops {
                op.encode(&mut pass, offset);
            }
        }
    }
    then(&mut enc);
    Ok(gpu.scoped(label, || gpu.queue.submit([enc.finish()]))?)
}

/// The grid of a kernel that numbers its invocations `gid.x + gid.y * groups.x * wg` (as the
/// layer kernels do) for `invocations` of each of `models` models: x at most 32768 workgroups,
/// y as many rows of them as it takes, z the model.
pub fn flat_grid(invocations: usize, wg: u32, models: usize) -> [u32; 3] {
    let groups = invocations.div_ceil(wg as usize).max(1);
    let x = groups.min(32768);
    [x as u32, groups.div_ceil(x) as u32, models as u32]
}
