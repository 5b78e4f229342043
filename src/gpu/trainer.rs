//! The GPU backend: every buffer, bind group and pipeline of a run, created once, and the
//! recording of steps into one compute pass per submission.
//!
//! Convention: activations are feature-major, `H_l^T: [s_l, bp]`, with `bp` the batch size
//! rounded up to 4 (the matmul's vec4 columns); a batch-major copy `H_l: [bp, pad4(s_l)]`
//! feeds the weight gradient. Parameters, gradients and momentum are flat, in the table of
//! [`crate::model::Arch::table`] (PyTorch layout). Columns of a batch past its valid count
//! carry zero input and zero gradient, so a last partial batch needs no other pipelines.

use std::ops::Range;

use anyhow::Result;
use wgpu::util::DeviceExt;

use crate::data::{Dataset, normalize_table};
use crate::gpu::context::Gpu;
use crate::gpu::kernels::{
    Kernels, LossInput, MatmulSpec, Op, Profile, read_back, step_stride, step_table, submit,
    submit_profiled,
};
use crate::model::Arch;
use crate::train::{Backend, Eval, Recipe};

pub fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Bytes and grid sizes a run needs, checked against the adapter before anything is built.
pub fn check_limits(gpu: &Gpu, arch: &Arch, batch: usize, n_train: usize) -> Result<(), String> {
    let bp = pad4(batch) as u64;
    let widest = *arch.sizes.iter().max().unwrap() as u64;
    let act_bytes = widest * bp * 4;
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

/// A device split of the data: packed images, labels, and the order the steps read.
struct Split {
    images: wgpu::Buffer,
    labels: wgpu::Buffer,
    order: wgpu::Buffer,
    steps: wgpu::Buffer,
    len: usize,
}

impl Split {
    fn new(gpu: &Gpu, name: &str, data: &Dataset, batch: usize) -> Split {
        let d = &gpu.device;
        let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
        let identity: Vec<u32> = (0..data.len() as u32).collect();
        let stride = step_stride(gpu);
        Split {
            images: init(
                d,
                &format!("{name} images (u8 x4)"),
                bytemuck::cast_slice(&pack_images(data)),
                wgpu::BufferUsages::STORAGE,
            ),
            labels: init(
                d,
                &format!("{name} labels"),
                bytemuck::cast_slice(&labels),
                wgpu::BufferUsages::STORAGE,
            ),
            order: init(
                d,
                &format!("{name} order"),
                bytemuck::cast_slice(&identity),
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            ),
            steps: init(
                d,
                &format!("{name} steps"),
                &step_table(data.len(), batch, stride),
                wgpu::BufferUsages::UNIFORM,
            ),
            len: data.len(),
        }
    }
}

fn init(
    device: &wgpu::Device,
    label: &str,
    bytes: &[u8],
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage,
    })
}

fn zeros(
    device: &wgpu::Device,
    label: &str,
    floats: usize,
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(1) * 4) as u64,
        usage: usage | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

pub struct GpuBackend {
    pub gpu: Gpu,
    recipe: Recipe,
    /// None for a backend that only evaluates.
    train: Option<Split>,
    test: Split,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    momentum: wgpu::Buffer,
    losses: wgpu::Buffer,
    eval_correct: wgpu::Buffer,
    eval_logp: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// The dispatches of one training step, in order.
    pub step_ops: Vec<Op>,
    /// The dispatches of one evaluation batch.
    eval_ops: Vec<Op>,
    test_labels: Vec<u8>,
    stride: u64,
    param_count: usize,
    classes: usize,
    /// Buffers and their sizes, for the memory listing.
    pub buffer_sizes: Vec<(String, u64)>,
    /// Per-kernel times, when profiling.
    profile: Option<Profile>,
}

/// Steps recorded into one compute pass and submission.
pub const STEPS_PER_SUBMIT: usize = 250;

impl GpuBackend {
    pub fn new(
        gpu: Gpu,
        arch: &Arch,
        recipe: Recipe,
        params: &[f32],
        train: Option<&Dataset>,
        test: &Dataset,
    ) -> Result<GpuBackend> {
        assert_eq!(params.len(), arch.param_count());
        assert_eq!(test.pixels(), arch.input());
        assert!(train.is_none_or(|t| t.pixels() == arch.input()));
        let kernels = Kernels::new(&gpu);
        let d = &gpu.device;
        let layers = arch.layers();
        let bs = recipe.batch_size;
        let bp = pad4(bs);
        let n = params.len();
        let rw = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;

        let train_split = train.map(|t| Split::new(&gpu, "train", t, bs));
        let test_split = Split::new(&gpu, "test", test, bs);
        let table = init(
            d,
            "normalisation table",
            bytemuck::cast_slice(&normalize_table()),
            wgpu::BufferUsages::STORAGE,
        );
        // params/grads/momentum: [param_count], the table's flat layout
        // Padded to whole vec4 for the SGD kernel; the padding is zero in all three.
        let mut padded = params.to_vec();
        padded.resize(pad4(n), 0.0);
        let params_buf = init(
            d,
            "params",
            bytemuck::cast_slice(&padded),
            wgpu::BufferUsages::STORAGE | rw,
        );
        let grads = zeros(d, "grads", pad4(n), rw);
        let momentum = zeros(d, "momentum", pad4(n), rw);
        let steps = recipe.steps_per_epoch(train.map_or(0, |t| t.len()));
        // losses: [steps per epoch], the mean loss of each step of the current epoch
        let losses = zeros(d, "losses", steps, rw);
        // eval_correct: [test len], correct | predicted << 8; eval_logp: [test len, classes]
        let eval_correct = zeros(d, "eval correct", test.len(), rw);
        let eval_logp = zeros(d, "eval log-probs", test.len() * arch.output(), rw);
        let staging_floats = n.max(steps).max(test.len() * arch.output());
        let staging = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging (read-back)"),
            size: (staging_floats * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // acts_t[l]: H_l^T [s_l, bp]; acts_b[l]: H_l [bp, pad4(s_l)]; dz[l]: dZ_l^T [s_{l+1}, bp]
        let acts_t: Vec<_> = (0..=layers)
            .map(|l| {
                zeros(
                    d,
                    &format!("H{l}^T"),
                    arch.sizes[l] * bp,
                    wgpu::BufferUsages::empty(),
                )
            })
            .collect();
        let acts_b: Vec<_> = (0..=layers)
            .map(|l| {
                zeros(
                    d,
                    &format!("H{l}"),
                    bp * pad4(arch.sizes[l]),
                    wgpu::BufferUsages::empty(),
                )
            })
            .collect();
        let dz: Vec<_> = (0..layers)
            .map(|l| {
                zeros(
                    d,
                    &format!("dZ{l}^T"),
                    arch.sizes[l + 1] * bp,
                    wgpu::BufferUsages::empty(),
                )
            })
            .collect();

        let gather = |split: &Split, name: &str| {
            kernels.gather(
                &gpu,
                &format!("gather {name}"),
                arch.input(),
                bp,
                pad4(arch.input()),
                &split.images,
                &split.order,
                &table,
                &acts_t[0],
                &acts_b[0],
                &split.steps,
            )
        };
        let forward: Vec<Op> = (0..layers)
            .map(|l| {
                let (i, o) = arch.dims(l);
                let (wo, bo) = arch.offsets(l);
                let spec = MatmulSpec::forward(i, o, bp, wo, bo, l + 1 < layers);
                kernels.matmul(
                    &gpu,
                    &format!("forward {l}"),
                    spec,
                    &params_buf,
                    &acts_t[l],
                    &acts_t[l + 1],
                    Some(&params_buf),
                    Some(&acts_b[l + 1]),
                )
            })
            .collect();

        let loss_input = |split| loss_input(arch.output(), bp, &acts_t[layers], split);
        let mut step_ops = Vec::new();
        if let Some(train_split) = &train_split {
            step_ops.push(gather(train_split, "train"));
            // The last layer's product rides in the loss kernel (nll_head): the logits are
            // needed only there, so training skips its forward dispatch. Evaluation keeps it.
            let last = layers - 1;
            step_ops.extend(forward[..last].iter().cloned());
            let (w_off, b_off) = arch.offsets(last);
            step_ops.push(kernels.nll_head(
                &gpu,
                &format!("forward {last} + nll loss + grad"),
                &loss_input(train_split),
                arch.dims(last).0,
                w_off,
                b_off,
                &params_buf,
                &acts_t[last],
                &dz[last],
                &losses,
            ));
            for l in (0..layers).rev() {
                let (i, o) = arch.dims(l);
                let (wo, bo) = arch.offsets(l);
                // dX^T [i, bp] = W^T * dZ^T, masked (not needed for the input layer); dW, db
                let input = MatmulSpec::backward_input(i, o, bp, wo);
                let weight = MatmulSpec::backward_weight(i, o, bp, wo, bo);
                if l > 0 && kernels.can_pair(&input, &weight) {
                    step_ops.push(kernels.matmul_pair(
                        &gpu,
                        &format!("backward {l} (input + weight)"),
                        input,
                        weight,
                        &params_buf,
                        &dz[l],
                        &dz[l - 1],
                        &acts_t[l],
                        &acts_b[l],
                        &grads,
                    ));
                    continue;
                }
                if l > 0 {
                    step_ops.push(kernels.matmul(
                        &gpu,
                        &format!("backward input {l}"),
                        input,
                        &params_buf,
                        &dz[l],
                        &dz[l - 1],
                        Some(&acts_t[l]),
                        None,
                    ));
                }
                step_ops.push(kernels.matmul(
                    &gpu,
                    &format!("backward weight {l}"),
                    weight,
                    &dz[l],
                    &acts_b[l],
                    &grads,
                    None,
                    None,
                ));
            }
            step_ops.push(kernels.sgd(
                &gpu,
                "sgd",
                n,
                recipe.lr,
                recipe.momentum,
                &params_buf,
                &grads,
                &momentum,
            ));
        }

        let mut eval_ops = vec![gather(&test_split, "test")];
        eval_ops.extend(forward);
        eval_ops.push(kernels.evaluate(
            &gpu,
            "evaluate",
            &loss_input(&test_split),
            &eval_correct,
            &eval_logp,
        ));

        let train_size = |f: fn(&Split) -> u64| train_split.as_ref().map_or(0, f);
        let mut buffer_sizes = vec![
            ("train images".to_string(), train_size(|t| t.images.size())),
            ("train labels".to_string(), train_size(|t| t.labels.size())),
            ("train order".to_string(), train_size(|t| t.order.size())),
            ("test images".to_string(), test_split.images.size()),
            (
                "test labels + order".to_string(),
                test_split.labels.size() + test_split.order.size(),
            ),
            (
                "step uniforms".to_string(),
                train_size(|t| t.steps.size()) + test_split.steps.size(),
            ),
            (
                "params + grads + momentum".to_string(),
                3 * params_buf.size(),
            ),
            ("losses".to_string(), losses.size()),
            (
                "eval outputs".to_string(),
                eval_correct.size() + eval_logp.size(),
            ),
            ("staging".to_string(), staging.size()),
        ];
        let act: u64 = acts_t
            .iter()
            .chain(&acts_b)
            .chain(&dz)
            .map(|b| b.size())
            .sum();
        buffer_sizes.push(("activations + their gradients".to_string(), act));

        Ok(GpuBackend {
            stride: step_stride(&gpu),
            gpu,
            recipe,
            train: train_split,
            test: test_split,
            params: params_buf,
            grads,
            momentum,
            losses,
            eval_correct,
            eval_logp,
            staging,
            step_ops,
            eval_ops,
            test_labels: test.labels.clone(),
            param_count: n,
            classes: arch.output(),
            buffer_sizes,
            profile: None,
        })
    }

    fn read_f32(&self, src: &wgpu::Buffer, offset_floats: usize, count: usize) -> Result<Vec<f32>> {
        read_back(&self.gpu, src, offset_floats, count, &self.staging)
    }

    /// Gradients of the last step (for tests).
    pub fn grads(&mut self) -> Result<Vec<f32>> {
        self.read_f32(&self.grads, 0, self.param_count)
    }

    /// Writes new parameter values (for tests and `--init`).
    pub fn set_params(&mut self, params: &[f32]) {
        assert_eq!(params.len(), self.param_count);
        self.gpu
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(params));
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        self.gpu.to_string()
    }

    fn begin_epoch(&mut self, order: &[u32]) -> Result<()> {
        let Some(train) = &self.train else {
            anyhow::bail!("this GPU backend was built for evaluation only");
        };
        assert_eq!(order.len(), train.len);
        self.gpu
            .queue
            .write_buffer(&train.order, 0, bytemuck::cast_slice(order));
        Ok(())
    }

    fn run_steps(&mut self, steps: Range<usize>) -> Result<()> {
        let mut s = steps.start;
        while s < steps.end {
            let e = (s + STEPS_PER_SUBMIT).min(steps.end);
            match &mut self.profile {
                Some(p) => submit_profiled(&self.gpu, &self.step_ops, s..e, self.stride, p)?,
                None => submit(&self.gpu, "train steps", &self.step_ops, s..e, self.stride),
            }
            s = e;
        }
        Ok(())
    }

    fn losses(&mut self, steps: Range<usize>) -> Result<Vec<f32>> {
        self.read_f32(&self.losses, steps.start, steps.len())
    }

    fn evaluate(&mut self) -> Result<Eval> {
        let n = self.test.len;
        let steps = n.div_ceil(self.recipe.batch_size);
        let mut s = 0;
        while s < steps {
            let e = (s + STEPS_PER_SUBMIT * 2).min(steps);
            submit(&self.gpu, "evaluate", &self.eval_ops, s..e, self.stride);
            s = e;
        }
        let correct: Vec<u32> = read_back(&self.gpu, &self.eval_correct, 0, n, &self.staging)?;
        let classes = self.classes;
        let log_probs = self.read_f32(&self.eval_logp, 0, n * classes)?;
        let mut ev = Eval::new(classes);
        for (i, (&c, logp)) in correct.iter().zip(log_probs.chunks(classes)).enumerate() {
            let label = self.test_labels[i] as usize;
            ev.add((c >> 8) as usize, label, -logp[label] as f64);
        }
        ev.log_probs = log_probs;
        Ok(ev)
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        self.read_f32(&self.params, 0, self.param_count)
    }

    fn momentum(&mut self) -> Result<Vec<f32>> {
        self.read_f32(&self.momentum, 0, self.param_count)
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
        self.step_ops.len()
    }

    fn buffer_sizes(&self) -> Vec<(String, u64)> {
        self.buffer_sizes.clone()
    }

    fn load_state(&mut self, params: &[f32], momentum: &[f32]) -> Result<()> {
        assert_eq!(momentum.len(), self.param_count);
        self.set_params(params);
        self.gpu
            .queue
            .write_buffer(&self.momentum, 0, bytemuck::cast_slice(momentum));
        Ok(())
    }
}

fn loss_input<'a>(
    classes: usize,
    bp: usize,
    logits: &'a wgpu::Buffer,
    split: &'a Split,
) -> LossInput<'a> {
    LossInput {
        classes,
        bp,
        logits,
        labels: &split.labels,
        order: &split.order,
        steps: &split.steps,
    }
}
