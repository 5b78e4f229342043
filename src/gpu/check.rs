//! The harness of the kernel checks: every op's check runs its kernel on random data and
//! compares with its CPU twin in `cpu.rs`, evaluated in f64. `mnist-wgpu selftest` and
//! tests/kernels.rs run the same checks (`gpu::selftest`).

use anyhow::Result;
use futures_util::future::{LocalBoxFuture, join_all};

use crate::data::Dataset;
use crate::gpu::buffers::init;
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{Dispatch, step_stride, step_table, submit};
use crate::gpu::layout::{DeviceLayout, LayerRow};
use crate::gpu::plan::PerSample;
use crate::gpu::readback::{read_back, staging};
use crate::model::Arch;
use crate::rng::Rng;

/// Batch sizes and inner sizes of the matmul checks: 1, 7, 33 and 785 are no multiple of
/// anything the kernels tile by.
pub const BATCHES: [usize; 4] = [1, 7, 32, 33];
pub const INNER: [usize; 5] = [1, 10, 64, 784, 785];
/// Neither a multiple of the 4 rows of a matmul tile nor of its 32 columns.
pub const OTHER: usize = 13;

/// One line of the self-test table.
#[derive(Clone, Debug)]
pub struct Check {
    pub kernel: String,
    pub shape: String,
    /// The error of the element nearest its tolerance, and that tolerance; both 0 for exact
    /// checks that passed.
    pub max_err: f64,
    pub tol: f64,
    /// What failed first, if anything did.
    pub failure: Option<String>,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Accumulates element errors against per-element tolerances.
pub struct Tally {
    check: Check,
    worst_ratio: f64,
}

impl Tally {
    pub fn new(kernel: impl Into<String>, shape: impl Into<String>) -> Tally {
        Tally {
            check: Check {
                kernel: kernel.into(),
                shape: shape.into(),
                max_err: 0.0,
                tol: 0.0,
                failure: None,
            },
            worst_ratio: -1.0,
        }
    }

    /// Records `|got - want| <= tol`, naming the element `what` if it fails.
    pub fn close(&mut self, what: impl FnOnce() -> String, got: f64, want: f64, tol: f64) {
        let err = (got - want).abs();
        let ratio = match (err.is_nan(), tol > 0.0) {
            (true, _) => f64::INFINITY,
            (false, true) => err / tol,
            (false, false) if err == 0.0 => 0.0,
            (false, false) => f64::INFINITY,
        };
        if ratio > self.worst_ratio {
            self.worst_ratio = ratio;
            self.check.max_err = if err.is_nan() { f64::INFINITY } else { err };
            self.check.tol = tol;
        }
        if ratio > 1.0 && self.check.failure.is_none() {
            self.check.failure = Some(format!(
                "{}: got {got}, expected {want} (|diff| {err:e} > {tol:e})",
                what()
            ));
        }
    }

    pub fn fail(&mut self, message: String) {
        if self.check.failure.is_none() {
            self.check.failure = Some(message);
        }
    }

    /// A check whose kernel could not even be built or run.
    pub fn broken(kernel: impl Into<String>, shape: impl Into<String>, e: anyhow::Error) -> Check {
        let mut t = Tally::new(kernel, shape);
        t.fail(format!("{e:#}"));
        t.done()
    }

    pub fn done(self) -> Check {
        self.check
    }
}

/// Checks still to run, each boxed to one type: a kernel and its shapes.
pub type Pending<'a> = Vec<LocalBoxFuture<'a, Vec<Check>>>;

/// Runs `pending` together and lists their checks in order. Each submits its work and awaits
/// its own read-backs; in a browser, where a mapping resolves only when the browser next looks
/// for finished GPU work (every 100 ms in Firefox), those waits then overlap rather than add
/// up. Natively each blocks on the device in turn, as if run one by one.
pub async fn together(pending: Pending<'_>) -> Vec<Check> {
    join_all(pending).await.into_iter().flatten().collect()
}

/// Bound on the error of an f32 sum of `k` products, relative to Σ|a·b|: a sum of K f32 terms
/// in any order is within K·2⁻²⁴·Σ|terms| of the exact value (Higham's γ_K), plus two
/// roundings for the epilogue, so a correct kernel never exceeds it whatever its order.
pub fn sum_tolerance(k: usize, scale: f64) -> f64 {
    (k as f64 + 2.0) * 2f64.powi(-24) * scale + 1e-30
}

/// A storage buffer holding `data`, padded with zeros to whole vec4, readable back.
pub fn buffer<T: bytemuck::Pod>(gpu: &Gpu, label: &str, data: &[T]) -> wgpu::Buffer {
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    init(gpu, label, bytemuck::cast_slice(data), usage)
}

/// The step uniforms of `n` samples in batches of `batch`, at the adapter's stride, each with
/// the optimizer values `corrections` gives it.
pub fn steps_buffer(
    gpu: &Gpu,
    n: usize,
    batch: usize,
    corrections: impl Fn(usize) -> [f32; 2],
) -> wgpu::Buffer {
    let table = step_table((n, batch, 0), step_stride(gpu), corrections);
    init(gpu, "self-test steps", &table, wgpu::BufferUsages::UNIFORM)
}

/// Runs `op` for step `step` and waits.
pub fn run_dispatch(gpu: &Gpu, op: &Dispatch, step: usize) -> Result<()> {
    submit(
        gpu,
        "self-test",
        std::slice::from_ref(op),
        step..step + 1,
        step_stride(gpu),
    )
}

pub async fn read<T: bytemuck::Pod>(gpu: &Gpu, src: &wgpu::Buffer, count: usize) -> Result<Vec<T>> {
    let staging = staging(gpu, "self-test staging", count * std::mem::size_of::<T>());
    read_back(gpu, src, 0, count, &staging).await
}

pub fn random(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi)).collect()
}

/// f32 values as f64, for the f64 references.
pub fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// |x| in f64: a reference computed on these gives Σ|a·b|, the scale of a product's rounding.
pub fn wide_abs(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| (v as f64).abs()).collect()
}

/// A feature-major `[rows, ld]` matrix's first `cols` columns, batch-major `[cols, rows]`.
pub fn transpose(x: &[f32], rows: usize, ld: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * ld + c];
        }
    }
    out
}

/// The first `cols` of each of `rows` rows of stride `ld`: `[rows, cols]`.
pub fn unpad(x: &[f32], rows: usize, ld: usize, cols: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|r| x[r * ld..r * ld + cols].iter().copied())
        .collect()
}

// ---- the fused step's cases: one step of one model on random data ----

/// One step of one model on random data.
pub struct FusedCase {
    pub arch: Arch,
    pub layout: DeviceLayout,
    pub data: Dataset,
    pub order: Vec<u32>,
    pub batch: usize,
    pub step: usize,
    /// the per-sample dispatch's workgroups
    pub per_sample: PerSample,
    /// params, momentum: PyTorch's flat order
    pub params: Vec<f32>,
    pub momentum: Vec<f32>,
}

impl FusedCase {
    pub fn new(
        seed: u64,
        (rows, cols): (usize, usize),
        hidden: &[usize],
        classes: usize,
    ) -> FusedCase {
        let mut rng = Rng::new(seed, 7);
        let arch = Arch::mlp(rows * cols, hidden, classes);
        let n = 40;
        let data = Dataset {
            images: (0..n * rows * cols).map(|_| rng.below(256) as u8).collect(),
            labels: (0..n).map(|_| rng.below(classes as u64) as u8).collect(),
            rows,
            cols,
            normalize: crate::data::Normalize::TUTORIAL,
        };
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        let momentum = (0..arch.param_count())
            .map(|_| rng.uniform(-0.1, 0.1))
            .collect();
        FusedCase {
            layout: DeviceLayout::new(&arch),
            params: arch.init(seed),
            arch,
            data,
            order,
            batch: 0,
            step: 0,
            per_sample: PerSample::DEFAULT,
            momentum,
        }
    }

    pub fn valid(&self) -> usize {
        self.batch.min(self.data.len() - self.step * self.batch)
    }

    pub fn shape(&self) -> String {
        format!(
            "{} batch {} (valid {})",
            crate::flags::arch_string(&self.arch),
            self.batch,
            self.valid()
        )
    }
}

/// What the fused step's two dispatches wrote, read back (`gpu::selftest::fused_step_checks`).
pub struct FusedOutputs {
    pub rows: Vec<LayerRow>,
    pub bp: usize,
    /// acts, dz: every layer's rows; sample_loss: [bp]
    pub acts: Vec<f32>,
    pub dz: Vec<f32>,
    pub sample_loss: Vec<f32>,
    /// params, momentum: device layout after the update; loss: the step's mean loss
    pub params: Vec<f32>,
    pub momentum: Vec<f32>,
    pub loss: f32,
}

/// What the fused evaluation wrote, read back: each sample's verdict and log-probabilities,
/// and every layer's rows.
pub struct FusedVerdicts {
    pub correct: Vec<u32>,
    pub log_probs: Vec<f32>,
    pub acts: Vec<f32>,
}

/// The learning rate and momentum coefficient of the fused step's checks.
pub const FUSED_LR: f64 = 0.003;
pub const FUSED_MOMENTUM: f64 = 0.9;

/// `rows` rows of `cols` (stride `ld`) at `off` of `v`, in f64.
pub fn block(v: &[f32], off: usize, (rows, ld, cols): (usize, usize, usize)) -> Vec<f64> {
    wide(&unpad(&v[off..], rows, ld, cols))
}

/// The padding columns of `rows` rows at `off` are zero.
pub fn padding_is_zero(v: &[f32], off: usize, (rows, ld, cols): (usize, usize, usize)) -> bool {
    (0..rows).all(|r| {
        v[off + r * ld + cols..off + (r + 1) * ld]
            .iter()
            .all(|&x| x == 0.0)
    })
}

/// The weight [out, in] and bias of layer `l` of PyTorch-order `params`, in f64 and |f64|.
pub fn layer_weights(case: &FusedCase, params: &[f32], l: usize) -> [Vec<f64>; 4] {
    let (i, out) = case.arch.linear_dims()[l];
    let wo = case.arch.linear_offsets()[l];
    let bo = wo + out * i;
    let (w, b) = (&params[wo..bo], &params[bo..bo + out]);
    [wide(w), wide(b), wide_abs(w), wide_abs(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check can fail: an error over its tolerance, a NaN, or an inexact exact check.
    #[test]
    fn tally_fails_on_errors_beyond_tolerance() {
        let mut t = Tally::new("k", "s");
        t.close(|| "a".into(), 1.0, 1.0 + 1e-7, 1e-6);
        assert!(t.check.failure.is_none());
        t.close(|| "b".into(), 1.0, 1.1, 1e-6);
        t.close(|| "c".into(), 1.0, 2.0, 1e-6);
        let c = t.done();
        assert!(c.failure.as_deref().unwrap().starts_with("b:"));
        assert_eq!((c.max_err, c.tol), (1.0, 1e-6));
        let mut t = Tally::new("k", "s");
        t.close(|| "nan".into(), f64::NAN, 0.0, 1.0);
        t.close(|| "exact".into(), 0.5, 0.5, 0.0);
        assert!(t.done().failure.unwrap().starts_with("nan:"));
        let mut t = Tally::new("k", "s");
        t.close(|| "exact".into(), 0.5, 0.25, 0.0);
        assert!(!t.done().ok());
    }
}
