//! The WGSL kernels: shader sources, bind group layouts, pipelines and thin launchers.
//!
//! A pipeline is specialised through override constants for one shape (sizes, strides and
//! offsets are compile-time constants, which is what lets llvmpipe keep addresses cheap), so
//! the launchers here take a shape, check it, and return an [`Op`]: a pipeline, its bind group
//! and its dispatch size, created once before any step runs.

use crate::gpu::context::Gpu;
use crate::gpu::trainer::pad4;

pub const MATMUL_WGSL: &str = include_str!("../../shaders/matmul.wgsl");
pub const MATMUL_COMMON_WGSL: &str = include_str!("../../shaders/matmul_common.wgsl");
pub const MATMUL_PAIR_WGSL: &str = include_str!("../../shaders/matmul_pair.wgsl");
pub const MATMUL_TILE_SUBGROUP_WGSL: &str = include_str!("../../shaders/matmul_tile_subgroup.wgsl");
pub const MATMUL_TILE_PLAIN_WGSL: &str = include_str!("../../shaders/matmul_tile_plain.wgsl");
pub const BATCH_WGSL: &str = include_str!("../../shaders/batch.wgsl");
pub const LOSS_WGSL: &str = include_str!("../../shaders/loss.wgsl");
pub const SGD_WGSL: &str = include_str!("../../shaders/sgd.wgsl");

/// The matmul module's source: the products and epilogues, then one of the two inner loops.
pub fn matmul_source(subgroups: bool) -> String {
    let tile = if subgroups {
        MATMUL_TILE_SUBGROUP_WGSL
    } else {
        MATMUL_TILE_PLAIN_WGSL
    };
    format!("{MATMUL_WGSL}\n{MATMUL_COMMON_WGSL}\n{tile}")
}

/// The paired backward products' module: matmul_pair.wgsl, the accumulators, an inner loop.
pub fn pair_source(subgroups: bool) -> String {
    let tile = if subgroups {
        MATMUL_TILE_SUBGROUP_WGSL
    } else {
        MATMUL_TILE_PLAIN_WGSL
    };
    format!("{MATMUL_PAIR_WGSL}\n{MATMUL_COMMON_WGSL}\n{tile}")
}

/// Every shader module as (name, source, needs subgroups), for validation.
pub fn all_sources() -> Vec<(&'static str, String, bool)> {
    vec![
        ("matmul (subgroup)", matmul_source(true), true),
        ("matmul (plain)", matmul_source(false), false),
        ("matmul pair (subgroup)", pair_source(true), true),
        ("matmul pair (plain)", pair_source(false), false),
        ("batch", BATCH_WGSL.to_string(), false),
        ("loss", LOSS_WGSL.to_string(), false),
        ("sgd", SGD_WGSL.to_string(), false),
    ]
}

/// Rows and columns one matmul workgroup covers (ROWS and 4 * LANES of matmul.wgsl).
pub const MATMUL_ROWS: u32 = 4;
pub const MATMUL_COLS: u32 = 32;
/// MAX_CLASSES of loss.wgsl: the most logits nll_head keeps per sample.
pub const MAX_HEAD_CLASSES: usize = 16;
/// Workgroup size of the elementwise kernels.
const WG: u32 = 64;
const SGD_WG: u32 = 256;

/// One binding of a layout.
#[derive(Clone, Copy)]
pub enum Slot {
    Read,
    ReadWrite,
    /// A uniform `Step` read at a dynamic offset, one entry per step.
    Step,
}

/// Size of the `Step` uniform of batch.wgsl and loss.wgsl: start, valid, index, pad.
pub const STEP_BYTES: u64 = 16;

/// What a matmul computes; see matmul.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// Z^T = W * H^T + bias (ReLU when `relu`), also stored batch-major.
    Forward { relu: bool },
    /// dZ'^T = W^T * dZ^T, masked by H^T > 0.
    BackwardInput,
    /// dW = dZ^T * H and the bias gradient.
    BackwardWeight,
}

/// Shape and addressing of one matmul: C[m, n] = A[m, k] * B[k, n], all in f32 elements.
#[derive(Clone, Copy, Debug)]
pub struct MatmulSpec {
    pub product: Product,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_off: usize,
    pub a_sm: usize,
    pub a_sk: usize,
    /// Row stride of B in f32; a multiple of 4.
    pub ldb: usize,
    pub c_off: usize,
    pub ldc: usize,
    /// Forward: the bias offset in `aux`; BackwardInput: unused.
    pub aux_off: usize,
    /// BackwardInput: row stride of the mask source in `aux`.
    pub aux_ld: usize,
    /// Forward: row stride of the batch-major copy.
    pub ldc2: usize,
    /// BackwardWeight: offset of the bias gradient in `c`.
    pub bg_off: usize,
}

impl MatmulSpec {
    /// The forward product of a layer `i -> o` at padded batch `bp`: Z^T [o, bp] = W [o, i] *
    /// H^T [i, bp] + bias (ReLU when `relu`), and Z [bp, pad4(o)]; the weight at `w_off` and
    /// the bias at `b_off` of the flat parameters.
    pub fn forward(i: usize, o: usize, bp: usize, w_off: usize, b_off: usize, relu: bool) -> Self {
        MatmulSpec {
            product: Product::Forward { relu },
            m: o,
            n: bp,
            k: i,
            a_off: w_off,
            a_sm: i,
            a_sk: 1,
            ldb: bp,
            c_off: 0,
            ldc: bp,
            aux_off: b_off,
            aux_ld: 0,
            ldc2: pad4(o),
            bg_off: 0,
        }
    }

    /// The input gradient of a layer `i -> o`: dX^T [i, bp] = W^T * dZ^T [o, bp], masked by
    /// H^T [i, bp] > 0; the weight [o, i] at `w_off`.
    pub fn backward_input(i: usize, o: usize, bp: usize, w_off: usize) -> Self {
        MatmulSpec {
            product: Product::BackwardInput,
            m: i,
            n: bp,
            k: o,
            a_off: w_off,
            a_sm: 1,
            a_sk: i,
            ldb: bp,
            c_off: 0,
            ldc: bp,
            aux_off: 0,
            aux_ld: bp,
            ldc2: 0,
            bg_off: 0,
        }
    }

    /// The weight gradient of a layer `i -> o`: dW [o, i] = dZ^T [o, bp] * H [bp, pad4(i)] into
    /// the flat gradients at `w_off`, and the bias gradient at `b_off`.
    pub fn backward_weight(i: usize, o: usize, bp: usize, w_off: usize, b_off: usize) -> Self {
        MatmulSpec {
            product: Product::BackwardWeight,
            m: o,
            n: i,
            k: bp,
            a_off: 0,
            a_sm: bp,
            a_sk: 1,
            ldb: pad4(i),
            c_off: w_off,
            ldc: i,
            aux_off: 0,
            aux_ld: 0,
            ldc2: 0,
            bg_off: b_off,
        }
    }

    pub fn groups(&self) -> [u32; 3] {
        let n4 = self.n.div_ceil(4) as u32;
        [
            n4.div_ceil(MATMUL_COLS / 4),
            (self.m as u32).div_ceil(MATMUL_ROWS),
            1,
        ]
    }

    fn check(&self) {
        assert!(
            self.m > 0 && self.n > 0 && self.k > 0,
            "empty matmul {self:?}"
        );
        assert!(
            self.ldb.is_multiple_of(4) && self.ldb >= self.n,
            "B row stride {self:?}"
        );
        assert!(self.ldc >= self.n, "C row stride {self:?}");
    }
}

/// What both loss.wgsl kernels read: logits `z^T [classes, bp]`, the split's labels and
/// order, and its step uniforms.
pub struct LossInput<'a> {
    pub classes: usize,
    pub bp: usize,
    pub logits: &'a wgpu::Buffer,
    pub labels: &'a wgpu::Buffer,
    pub order: &'a wgpu::Buffer,
    pub steps: &'a wgpu::Buffer,
}

/// A recorded dispatch: pipeline, bind group and grid. `step` says whether the bind group
/// takes the dynamic offset of the current step.
#[derive(Clone)]
pub struct Op {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    pub step: bool,
}

impl Op {
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step_offset: u32) {
        pass.set_pipeline(&self.pipeline);
        if self.step {
            pass.set_bind_group(0, &self.bind_group, &[step_offset]);
        } else {
            pass.set_bind_group(0, &self.bind_group, &[]);
        }
        let [x, y, z] = self.groups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Shader modules, compiled once per device.
pub struct Kernels {
    matmul: wgpu::ShaderModule,
    pair: wgpu::ShaderModule,
    batch: wgpu::ShaderModule,
    loss: wgpu::ShaderModule,
    sgd: wgpu::ShaderModule,
    pub subgroups: bool,
    max_groups: u32,
}

fn module(gpu: &Gpu, label: &str, src: &str) -> wgpu::ShaderModule {
    gpu.device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        })
}

impl Kernels {
    pub fn new(gpu: &Gpu) -> Kernels {
        Kernels {
            matmul: module(gpu, "matmul.wgsl", &matmul_source(gpu.subgroups)),
            pair: module(gpu, "matmul_pair.wgsl", &pair_source(gpu.subgroups)),
            batch: module(gpu, "batch.wgsl", BATCH_WGSL),
            loss: module(gpu, "loss.wgsl", LOSS_WGSL),
            sgd: module(gpu, "sgd.wgsl", SGD_WGSL),
            subgroups: gpu.subgroups,
            max_groups: gpu.limits.max_compute_workgroups_per_dimension,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        gpu: &Gpu,
        label: &str,
        module: &wgpu::ShaderModule,
        entry: &str,
        constants: &[(&str, f64)],
        bindings: &[(u32, Slot, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
    ) -> Op {
        assert!(
            groups.iter().all(|&g| g <= self.max_groups),
            "{label}: grid {groups:?} exceeds the adapter's {} workgroups per dimension",
            self.max_groups
        );
        let entries: Vec<_> = bindings
            .iter()
            .map(|(i, s, _)| wgpu::BindGroupLayoutEntry {
                binding: *i,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match s {
                    Slot::Read | Slot::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: matches!(s, Slot::Read),
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Slot::Step => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(STEP_BYTES),
                    },
                },
                count: None,
            })
            .collect();
        let layout = gpu
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(label),
                entries: &entries,
            });
        let pipeline_layout = gpu
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = gpu
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &layout,
            entries: &bindings
                .iter()
                .map(|(i, _, r)| wgpu::BindGroupEntry {
                    binding: *i,
                    resource: r.clone(),
                })
                .collect::<Vec<_>>(),
        });
        Op {
            label: label.to_string(),
            pipeline,
            bind_group,
            groups,
            step: bindings.iter().any(|(_, s, _)| matches!(s, Slot::Step)),
        }
    }

    /// A matmul. Buffers: `a` (read), `b` (read, row-major vec4 rows), `c` (written), and by
    /// product: Forward `aux` = bias source and `c2` = batch-major copy; BackwardInput `aux` =
    /// mask source H^T; BackwardWeight nothing more.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        gpu: &Gpu,
        label: &str,
        spec: MatmulSpec,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        aux: Option<&wgpu::Buffer>,
        c2: Option<&wgpu::Buffer>,
    ) -> Op {
        spec.check();
        let s = &spec;
        let mut constants: Vec<(&str, f64)> = vec![
            ("M", s.m as f64),
            ("N", s.n as f64),
            ("K", s.k as f64),
            ("A_OFF", s.a_off as f64),
            ("A_SM", s.a_sm as f64),
            ("A_SK", s.a_sk as f64),
            ("LDB4", (s.ldb / 4) as f64),
            ("C_OFF", s.c_off as f64),
            ("LDC", s.ldc as f64),
        ];
        use Slot::*;
        let mut bindings = vec![
            (0, Read, a.as_entire_binding()),
            (1, Read, b.as_entire_binding()),
            (2, ReadWrite, c.as_entire_binding()),
        ];
        let entry = match s.product {
            Product::Forward { relu } => {
                assert!(
                    s.c_off.is_multiple_of(4)
                        && s.ldc.is_multiple_of(4)
                        && s.n == s.ldc
                        && s.ldc2.is_multiple_of(4)
                        && s.ldc2 >= s.m,
                    "forward stores Z^T and its batch-major copy as vec4: {s:?}"
                );
                constants.push(("AUX_OFF", s.aux_off as f64));
                constants.push(("RELU", if relu { 1.0 } else { 0.0 }));
                constants.push(("LDC2", s.ldc2 as f64));
                let aux = aux.expect("forward needs the bias buffer");
                let c2 = c2.expect("forward needs the batch-major output");
                let c = bindings.pop().expect("c").2;
                bindings.push((3, Read, aux.as_entire_binding()));
                bindings.push((4, ReadWrite, c2.as_entire_binding()));
                bindings.push((5, ReadWrite, c));
                "forward"
            }
            Product::BackwardInput => {
                assert!(
                    s.c_off.is_multiple_of(4)
                        && s.ldc.is_multiple_of(4)
                        && s.aux_ld.is_multiple_of(4)
                        && s.n == s.ldc,
                    "backward_input works in vec4: {s:?}"
                );
                constants.push(("AUX_LD", s.aux_ld as f64));
                let aux = aux.expect("backward_input needs the mask source");
                let c = bindings.pop().expect("c").2;
                bindings.push((5, ReadWrite, c));
                bindings.push((6, Read, aux.as_entire_binding()));
                "backward_input"
            }
            Product::BackwardWeight => {
                constants.push(("BG_OFF", s.bg_off as f64));
                if s.c_off.is_multiple_of(4) && s.ldc.is_multiple_of(4) && s.n == s.ldc {
                    // The same buffer, bound as vec4 instead (see backward_weight_vec4).
                    let c = bindings.pop().expect("c").2;
                    bindings.push((5, ReadWrite, c));
                    "backward_weight_vec4"
                } else {
                    "backward_weight"
                }
            }
        };
        self.op(
            gpu,
            label,
            &self.matmul,
            entry,
            &constants,
            &bindings,
            spec.groups(),
        )
    }

    /// Whether the two backward products of a layer can share one dispatch
    /// ([`Kernels::matmul_pair`]): every output vec4-aligned, and the grid within the limit.
    pub fn can_pair(&self, x: &MatmulSpec, w: &MatmulSpec) -> bool {
        let [xg, xy, _] = x.groups();
        let [wg, wy, _] = w.groups();
        x.product == Product::BackwardInput
            && w.product == Product::BackwardWeight
            && x.k == w.m
            && x.ldc.is_multiple_of(4)
            && x.aux_ld.is_multiple_of(4)
            && x.n == x.ldc
            && w.c_off.is_multiple_of(4)
            && w.ldc.is_multiple_of(4)
            && w.n == w.ldc
            && (xg * xy + wg * wy) as u64 <= self.max_groups as u64
    }

    /// The input gradient `x` (W^T * dZ^T, masked) and the weight gradient `w` (dZ^T * H and
    /// the bias gradient) of one layer in one dispatch; see matmul_pair.wgsl. Both read `dz`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_pair(
        &self,
        gpu: &Gpu,
        label: &str,
        x: MatmulSpec,
        w: MatmulSpec,
        params: &wgpu::Buffer,
        dz: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        mask: &wgpu::Buffer,
        hb: &wgpu::Buffer,
        grads: &wgpu::Buffer,
    ) -> Op {
        x.check();
        w.check();
        assert!(
            self.can_pair(&x, &w),
            "{label}: cannot pair {x:?} with {w:?}"
        );
        let [xg, xy, _] = x.groups();
        let [wg, wy, _] = w.groups();
        let constants = [
            ("X_M", x.m as f64),
            ("X_N", x.n as f64),
            ("X_K", x.k as f64),
            ("X_A_OFF", x.a_off as f64),
            ("X_A_SM", x.a_sm as f64),
            ("X_A_SK", x.a_sk as f64),
            ("X_LDB4", (x.ldb / 4) as f64),
            ("X_LDC", x.ldc as f64),
            ("X_MASK_LD", x.aux_ld as f64),
            ("X_GX", xg as f64),
            ("X_GROUPS", (xg * xy) as f64),
            ("W_M", w.m as f64),
            ("W_N", w.n as f64),
            ("W_K", w.k as f64),
            ("W_A_SM", w.a_sm as f64),
            ("W_A_SK", w.a_sk as f64),
            ("W_LDB4", (w.ldb / 4) as f64),
            ("W_C_OFF", w.c_off as f64),
            ("W_LDC", w.ldc as f64),
            ("W_BG_OFF", w.bg_off as f64),
            ("W_GX", wg as f64),
        ];
        use Slot::*;
        self.op(
            gpu,
            label,
            &self.pair,
            "backward_pair",
            &constants,
            &[
                (0, Read, params.as_entire_binding()),
                (1, Read, dz.as_entire_binding()),
                (2, ReadWrite, dx.as_entire_binding()),
                (3, Read, mask.as_entire_binding()),
                (4, Read, hb.as_entire_binding()),
                (5, ReadWrite, grads.as_entire_binding()),
            ],
            [xg * xy + wg * wy, 1, 1],
        )
    }

    /// Batch assembly from packed u8 images; see batch.wgsl.
    #[allow(clippy::too_many_arguments)]
    pub fn gather(
        &self,
        gpu: &Gpu,
        label: &str,
        pixels: usize,
        bp: usize,
        ldx: usize,
        images: &wgpu::Buffer,
        order: &wgpu::Buffer,
        table: &wgpu::Buffer,
        xt: &wgpu::Buffer,
        xb: &wgpu::Buffer,
        steps: &wgpu::Buffer,
    ) -> Op {
        assert!(ldx >= pixels && ldx.is_multiple_of(4) && bp.is_multiple_of(4));
        let words = pixels.div_ceil(4);
        self.op(
            gpu,
            label,
            &self.batch,
            "gather",
            &[
                ("PIXELS", pixels as f64),
                ("WORDS", words as f64),
                ("BP", bp as f64),
                ("LDX", ldx as f64),
                ("WG", WG as f64),
            ],
            &[
                (0, Slot::Read, images.as_entire_binding()),
                (1, Slot::Read, order.as_entire_binding()),
                (2, Slot::Read, table.as_entire_binding()),
                (3, Slot::ReadWrite, xt.as_entire_binding()),
                (4, Slot::ReadWrite, xb.as_entire_binding()),
                (5, Slot::Step, step_binding(steps)),
            ],
            [(words as u32).div_ceil(WG), bp as u32 / 4, 1],
        )
    }

    /// LogSoftmax + NLLLoss and the gradient of the logits; see loss.wgsl.
    pub fn nll(
        &self,
        gpu: &Gpu,
        label: &str,
        input: &LossInput<'_>,
        grad: &wgpu::Buffer,
        losses: &wgpu::Buffer,
    ) -> Op {
        self.loss_op(
            gpu,
            label,
            "nll_forward_backward",
            input,
            [(4, grad), (5, losses)],
            [1, 1, 1],
        )
    }

    /// The last Linear layer (input `h`: H^T [k, bp], weight [classes, k] at `w_off` and bias
    /// at `b_off` in `params`) fused with LogSoftmax + NLLLoss and the logits' gradient; see
    /// nll_head in loss.wgsl. `input.logits` is not read.
    #[allow(clippy::too_many_arguments)]
    pub fn nll_head(
        &self,
        gpu: &Gpu,
        label: &str,
        input: &LossInput<'_>,
        k: usize,
        w_off: usize,
        b_off: usize,
        params: &wgpu::Buffer,
        h: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        losses: &wgpu::Buffer,
    ) -> Op {
        assert!(
            input.classes <= MAX_HEAD_CLASSES && k > 0 && input.bp.is_multiple_of(4),
            "{label}: nll_head keeps at most {MAX_HEAD_CLASSES} logits per sample, in vec4 columns"
        );
        let constants = [
            ("CLASSES", input.classes as f64),
            ("BP", input.bp as f64),
            ("WG", WG as f64),
            ("HEAD_K", k as f64),
            ("W_OFF", w_off as f64),
            ("B_OFF", b_off as f64),
        ];
        let bindings = [
            (1, Slot::Read, input.labels.as_entire_binding()),
            (2, Slot::Read, input.order.as_entire_binding()),
            (3, Slot::Step, step_binding(input.steps)),
            (5, Slot::ReadWrite, losses.as_entire_binding()),
            (8, Slot::Read, params.as_entire_binding()),
            (9, Slot::Read, h.as_entire_binding()),
            (10, Slot::ReadWrite, grad.as_entire_binding()),
        ];
        self.op(
            gpu,
            label,
            &self.loss,
            "nll_head",
            &constants,
            &bindings,
            [1, 1, 1],
        )
    }

    /// Prediction and log-probabilities per sample; see loss.wgsl. `correct` holds per sample
    /// `is_correct | predicted << 8`, `log_probs` is `[samples, classes]`.
    pub fn evaluate(
        &self,
        gpu: &Gpu,
        label: &str,
        input: &LossInput<'_>,
        correct: &wgpu::Buffer,
        log_probs: &wgpu::Buffer,
    ) -> Op {
        let groups = [(input.bp as u32).div_ceil(WG), 1, 1];
        self.loss_op(
            gpu,
            label,
            "evaluate",
            input,
            [(6, correct), (7, log_probs)],
            groups,
        )
    }

    fn loss_op(
        &self,
        gpu: &Gpu,
        label: &str,
        entry: &str,
        input: &LossInput<'_>,
        outputs: [(u32, &wgpu::Buffer); 2],
        groups: [u32; 3],
    ) -> Op {
        let mut bindings = vec![
            (0, Slot::Read, input.logits.as_entire_binding()),
            (1, Slot::Read, input.labels.as_entire_binding()),
            (2, Slot::Read, input.order.as_entire_binding()),
            (3, Slot::Step, step_binding(input.steps)),
        ];
        bindings.extend(outputs.map(|(i, b)| (i, Slot::ReadWrite, b.as_entire_binding())));
        let constants = [
            ("CLASSES", input.classes as f64),
            ("BP", input.bp as f64),
            ("WG", WG as f64),
        ];
        self.op(gpu, label, &self.loss, entry, &constants, &bindings, groups)
    }

    /// One momentum-SGD update over the flat buffers of `count` parameters; see sgd.wgsl.
    /// The three buffers hold `count` rounded up to a multiple of 4 floats, zero-padded.
    #[allow(clippy::too_many_arguments)]
    pub fn sgd(
        &self,
        gpu: &Gpu,
        label: &str,
        count: usize,
        lr: f64,
        momentum: f64,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        mom: &wgpu::Buffer,
    ) -> Op {
        let count4 = count.div_ceil(4);
        for (name, buf) in [("params", params), ("grads", grads), ("momentum", mom)] {
            assert!(
                buf.size() >= (count4 * 16) as u64,
                "sgd: {name} holds {} bytes, needs {} (padded to whole vec4)",
                buf.size(),
                count4 * 16
            );
        }
        let groups = (count4 as u32).div_ceil(SGD_WG);
        let row = groups.min(self.max_groups);
        self.op(
            gpu,
            label,
            &self.sgd,
            "sgd_momentum",
            &[
                ("COUNT4", count4 as f64),
                ("LR", lr),
                ("MU", momentum),
                ("WG", SGD_WG as f64),
                ("ROW_GROUPS", row as f64),
            ],
            &[
                (0, Slot::ReadWrite, params.as_entire_binding()),
                (1, Slot::Read, grads.as_entire_binding()),
                (2, Slot::ReadWrite, mom.as_entire_binding()),
            ],
            [row, groups.div_ceil(row), 1],
        )
    }
}

fn step_binding(steps: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer: steps,
        offset: 0,
        size: wgpu::BufferSize::new(STEP_BYTES),
    })
}

/// Per-step uniforms at a stride the adapter accepts for dynamic offsets.
pub fn step_stride(gpu: &Gpu) -> u64 {
    (gpu.limits.min_uniform_buffer_offset_alignment as u64).max(STEP_BYTES)
}

/// The bytes of a step-uniform buffer: for step s, (start, valid, index) of `batch` out of `n`.
pub fn step_table(n: usize, batch: usize, stride: u64) -> Vec<u8> {
    let steps = n.div_ceil(batch);
    let mut bytes = vec![0u8; steps * stride as usize];
    for s in 0..steps {
        let start = s * batch;
        let valid = batch.min(n - start);
        let words = [start as u32, valid as u32, s as u32, 0];
        let at = s * stride as usize;
        bytes[at..at + 16].copy_from_slice(bytemuck::cast_slice(&words));
    }
    bytes
}

/// Records `steps` of `ops` into one compute pass of one command buffer and submits it; the
/// bind groups that take a step uniform get step `s` at offset `s * stride`.
pub fn submit(gpu: &Gpu, label: &str, ops: &[Op], steps: std::ops::Range<usize>, stride: u64) {
    let mut enc = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for s in steps {
            let offset = u32::try_from(s as u64 * stride).expect("step uniform offset fits u32");
            for op in ops {
                op.encode(&mut pass, offset);
            }
        }
    }
    gpu.queue.submit([enc.finish()]);
}

/// GPU time per kernel, summed over the steps profiled.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// (kernel label, calls, total nanoseconds), in the order of the step.
    pub kernels: Vec<(String, u64, f64)>,
    pub steps: u64,
}

impl Profile {
    fn add(&mut self, label: &str, ns: f64) {
        match self.kernels.iter_mut().find(|k| k.0 == label) {
            Some(k) => {
                k.1 += 1;
                k.2 += ns;
            }
            None => self.kernels.push((label.to_string(), 1, ns)),
        }
    }

    pub fn total_ns(&self) -> f64 {
        self.kernels.iter().map(|k| k.2).sum()
    }

    /// A fixed-width table: kernel, calls, total ms, mean µs per call, share of the GPU time.
    pub fn table(&self) -> String {
        let total = self.total_ns();
        let mut out = format!(
            "{:<32} {:>7} {:>10} {:>10} {:>7}\n",
            "kernel", "calls", "total ms", "mean us", "share"
        );
        for (label, calls, ns) in &self.kernels {
            out += &format!(
                "{label:<32} {calls:>7} {:>10.1} {:>10.1} {:>6.1}%\n",
                ns / 1e6,
                ns / 1e3 / *calls as f64,
                100.0 * ns / total.max(1e-9)
            );
        }
        out += &format!(
            "{:<32} {:>7} {:>10.1} {:>10.1} {:>6.1}%\n",
            "one step",
            self.steps,
            total / 1e6,
            total / 1e3 / self.steps.max(1) as f64,
            100.0
        );
        out
    }
}

/// As [`submit`], with a timestamp before the first dispatch and after every one, then waits
/// and adds each dispatch's time to `profile`. Needs TIMESTAMP_QUERY_INSIDE_PASSES.
pub fn submit_profiled(
    gpu: &Gpu,
    ops: &[Op],
    steps: std::ops::Range<usize>,
    stride: u64,
    profile: &mut Profile,
) -> anyhow::Result<()> {
    let per_chunk = ((wgpu::QUERY_SET_MAX_QUERIES as usize - 1) / ops.len()).max(1);
    let mut s = steps.start;
    while s < steps.end {
        let e = (s + per_chunk).min(steps.end);
        let count = 1 + (e - s) * ops.len();
        let queries = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: count as u32,
        });
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps (resolved)"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps (read-back)"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profiled steps"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("profiled steps"),
                timestamp_writes: None,
            });
            let mut q = 0;
            pass.write_timestamp(&queries, q);
            for step in s..e {
                let offset = u32::try_from(step as u64 * stride).expect("offset fits u32");
                for op in ops {
                    op.encode(&mut pass, offset);
                    q += 1;
                    pass.write_timestamp(&queries, q);
                }
            }
        }
        enc.resolve_query_set(&queries, 0..count as u32, &resolved, 0);
        gpu.queue.submit([enc.finish()]);
        let ticks: Vec<u64> = read_back(gpu, &resolved, 0, count, &staging)?;
        let period = gpu.queue.get_timestamp_period() as f64;
        for (i, w) in ticks.windows(2).enumerate() {
            let ns = w[1].saturating_sub(w[0]) as f64 * period;
            profile.add(&ops[i % ops.len()].label, ns);
        }
        profile.steps += (e - s) as u64;
        s = e;
    }
    Ok(())
}

/// Copies `count` elements from `src` (starting at element `offset`) through `staging`, a
/// MAP_READ buffer large enough for them, and waits for them.
pub fn read_back<T: bytemuck::Pod>(
    gpu: &Gpu,
    src: &wgpu::Buffer,
    offset: usize,
    count: usize,
    staging: &wgpu::Buffer,
) -> anyhow::Result<Vec<T>> {
    use anyhow::Context;
    let size = std::mem::size_of::<T>() as u64;
    let bytes = count as u64 * size;
    let mut enc = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("read-back"),
        });
    enc.copy_buffer_to_buffer(src, offset as u64 * size, staging, 0, bytes);
    gpu.queue.submit([enc.finish()]);
    let slice = staging.slice(..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .context("waiting for the device")?;
    rx.recv()
        .context("read-back callback dropped")?
        .context("mapping the staging buffer")?;
    let out = bytemuck::pod_collect_to_vec(
        &slice
            .get_mapped_range()
            .context("reading the staging buffer")?,
    );
    staging.unmap();
    Ok(out)
}
