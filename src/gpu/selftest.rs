//! Every WGSL kernel against the CPU reference (in f64) on random data, on shapes that are and
//! are not multiples of the workgroup and tile sizes. `mnist-wgpu selftest` runs these on the
//! user's adapter and `tests/kernels.rs` runs the same functions, so a driver that miscompiles a
//! kernel is caught the same way in both places.
//!
//! Convention: as in the trainer, activations are feature-major `[features, bp]` with `bp` the
//! batch rounded up to 4; weights are PyTorch's `[out, in]` inside a flat buffer that does not
//! start at the weight (a nonzero offset), so offsets are exercised too.

use wgpu::util::DeviceExt;

use crate::cpu;
use crate::data::{Dataset, normalize_table};
use crate::gpu::context::Gpu;
use crate::gpu::kernels::{
    Kernels, LossInput, MatmulSpec, Op, read_back, step_stride, step_table, submit,
};
use crate::gpu::trainer::{pack_images, pad4};
use crate::rng::Rng;

/// Batch sizes and inner sizes of the matmul checks: 1, 7, 33 and 785 are no multiple of
/// anything the kernels tile by.
pub const BATCHES: [usize; 4] = [1, 7, 32, 33];
pub const INNER: [usize; 5] = [1, 10, 64, 784, 785];
/// Neither a multiple of the 4 rows of a matmul workgroup nor of its 32 columns.
pub const OTHER: usize = 13;

/// One line of the self-test table.
#[derive(Clone, Debug)]
pub struct Check {
    pub kernel: String,
    pub shape: String,
    /// The error of the element nearest its tolerance (largest error / tolerance), and that
    /// tolerance; both 0 for exact checks that passed.
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
struct Tally {
    check: Check,
    worst_ratio: f64,
}

impl Tally {
    fn new(kernel: impl Into<String>, shape: impl Into<String>) -> Tally {
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
    fn close(&mut self, what: impl FnOnce() -> String, got: f64, want: f64, tol: f64) {
        let err = (got - want).abs();
        let ratio = if tol > 0.0 {
            err / tol
        } else if err == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        let ratio = if err.is_nan() { f64::INFINITY } else { ratio };
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
    fn fail(&mut self, message: String) {
        if self.check.failure.is_none() {
            self.check.failure = Some(message);
        }
    }
    fn done(self) -> Check {
        self.check
    }
}

/// Bound on the error of an f32 sum of `k` products, relative to Σ|a·b|: a sum of K f32 terms
/// in any order is within K·2⁻²⁴·Σ|terms| of the exact value (Higham's γ_K), plus two
/// roundings for the epilogue, so a correct kernel never exceeds it whatever its order.
pub fn sum_tolerance(k: usize, scale: f64) -> f64 {
    (k as f64 + 2.0) * 2f64.powi(-24) * scale + 1e-30
}

/// Σ a(k)·b(k) over k < n in f64, and Σ |a(k)·b(k)|, the scale of its f32 rounding error.
fn dot_f64(n: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> (f64, f64) {
    (0..n).fold((0.0, 0.0), |(sum, scale), k| {
        let p = a(k) as f64 * b(k) as f64;
        (sum + p, scale + p.abs())
    })
}

/// A storage buffer holding `data` (at least 4 bytes), readable back.
pub fn buffer<T: bytemuck::Pod>(gpu: &Gpu, label: &str, data: &[T]) -> wgpu::Buffer {
    let mut bytes = bytemuck::cast_slice::<T, u8>(data).to_vec();
    bytes.resize(bytes.len().max(4), 0);
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}

/// The step uniforms of `n` samples in batches of `batch`, at the adapter's stride.
pub fn steps_buffer(gpu: &Gpu, n: usize, batch: usize) -> wgpu::Buffer {
    let table = step_table(n, batch, step_stride(gpu));
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("self-test steps"),
            contents: &table,
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Runs `op` for step `step` and waits.
pub fn run_op(gpu: &Gpu, op: &Op, step: usize) {
    submit(
        gpu,
        "self-test",
        std::slice::from_ref(op),
        step..step + 1,
        step_stride(gpu),
    );
}

pub fn read<T: bytemuck::Pod>(gpu: &Gpu, src: &wgpu::Buffer, count: usize) -> Vec<T> {
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("self-test staging"),
        size: (count * std::mem::size_of::<T>()).max(4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    read_back(gpu, src, 0, count, &staging).expect("read-back")
}

pub fn random(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi)).collect()
}

/// "subgroup" or "plain": which matmul inner loop `gpu` runs.
pub fn variant(gpu: &Gpu) -> &'static str {
    if gpu.subgroups { "subgroup" } else { "plain" }
}

/// Z^T [o, bp] = W [o, i] * H^T [i, bp] + bias (ReLU when `relu`), and its batch-major copy.
pub fn check_forward(
    gpu: &Gpu,
    k: &Kernels,
    batch: usize,
    i: usize,
    o: usize,
    relu: bool,
) -> Check {
    let mut rng = Rng::new(batch as u64 * 1000 + i as u64, o as u64);
    let bp = pad4(batch);
    let off = 5;
    // params: [off + o*i + o], the weight [o, i] at `off`, then the bias [o]
    let params = random(&mut rng, off + o * i + o, -1.0, 1.0);
    let ht = random(&mut rng, i * bp, -1.0, 1.0);
    let pb = buffer(gpu, "params", &params);
    let hb = buffer(gpu, "H^T", &ht);
    let cb = buffer(gpu, "Z^T", &vec![0f32; o * bp]);
    let c2b = buffer(gpu, "Z", &vec![0f32; bp * pad4(o)]);
    let s = MatmulSpec::forward(i, o, bp, off, off + o * i, relu);
    let op = k.matmul(gpu, "forward", s, &pb, &hb, &cb, Some(&pb), Some(&c2b));
    run_op(gpu, &op, 0);
    let got: Vec<f32> = read(gpu, &cb, o * bp);
    let got2: Vec<f32> = read(gpu, &c2b, bp * pad4(o));
    let name = if relu { "forward+relu" } else { "forward" };
    let mut t = Tally::new(
        format!("{name} ({})", variant(gpu)),
        format!("[{o},{i}]x[{i},{bp}]"),
    );
    for m in 0..o {
        for n in 0..bp {
            let (dot, sc) = dot_f64(i, |kk| params[off + m * i + kk], |kk| ht[kk * bp + n]);
            let z = params[off + o * i + m] as f64 + dot;
            let want = if relu && z <= 0.0 { 0.0 } else { z };
            let tol = sum_tolerance(i, sc + z.abs());
            t.close(|| format!("Z[{m},{n}]"), got[m * bp + n] as f64, want, tol);
            if got2[n * pad4(o) + m].to_bits() != got[m * bp + n].to_bits() {
                t.fail(format!("batch-major copy differs from Z^T at [{m},{n}]"));
            }
        }
    }
    t.done()
}

/// dX^T [i, bp] = W^T * dZ^T [o, bp], masked by H^T > 0.
pub fn check_backward_input(gpu: &Gpu, k: &Kernels, batch: usize, i: usize, o: usize) -> Check {
    let mut rng = Rng::new(batch as u64 * 7 + i as u64, 100 + o as u64);
    let bp = pad4(batch);
    let off = 3;
    let params = random(&mut rng, off + o * i, -1.0, 1.0);
    let dz = random(&mut rng, o * bp, -1.0, 1.0);
    let h = random(&mut rng, i * bp, -1.0, 1.0);
    let pb = buffer(gpu, "params", &params);
    let dzb = buffer(gpu, "dZ^T", &dz);
    let hb = buffer(gpu, "H^T", &h);
    let cb = buffer(gpu, "dX^T", &vec![0f32; i * bp]);
    let s = MatmulSpec::backward_input(i, o, bp, off);
    let op = k.matmul(gpu, "backward input", s, &pb, &dzb, &cb, Some(&hb), None);
    run_op(gpu, &op, 0);
    let got: Vec<f32> = read(gpu, &cb, i * bp);
    let mut t = Tally::new(
        format!("backward input ({})", variant(gpu)),
        format!("[{o},{i}]^T x[{o},{bp}]"),
    );
    tally_input_gradient(&mut t, &got, &params[off..], &dz, &h, (i, o, bp));
    t.done()
}

/// Compares `got` = dX^T [i, bp] with W^T [i, o] * dZ^T [o, bp] masked by H^T > 0, in f64;
/// `w` starts at the weight `[o, i]`.
fn tally_input_gradient(
    t: &mut Tally,
    got: &[f32],
    w: &[f32],
    dz: &[f32],
    h: &[f32],
    (i, o, bp): (usize, usize, usize),
) {
    for m in 0..i {
        for n in 0..bp {
            let (z, sc) = dot_f64(o, |kk| w[kk * i + m], |kk| dz[kk * bp + n]);
            let want = if h[m * bp + n] > 0.0 { z } else { 0.0 };
            let tol = sum_tolerance(o, sc);
            t.close(|| format!("dX[{m},{n}]"), got[m * bp + n] as f64, want, tol);
        }
    }
}

/// dW [o, i] = dZ^T [o, bp] * H [bp, i] and db [o] = row sums of dZ^T, into a flat buffer
/// at offset `off`, whose other elements must stay untouched. An offset and `i` that are
/// multiples of 4 take the vec4-store variant, others the scalar one.
pub fn check_backward_weight(
    gpu: &Gpu,
    k: &Kernels,
    batch: usize,
    i: usize,
    o: usize,
    off: usize,
) -> Check {
    let mut rng = Rng::new(batch as u64 * 31 + i as u64, 200 + o as u64);
    let bp = pad4(batch);
    let ldh = pad4(i);
    let dz = random(&mut rng, o * bp, -1.0, 1.0);
    let h = random(&mut rng, bp * ldh, -1.0, 1.0);
    let dzb = buffer(gpu, "dZ^T", &dz);
    let hb = buffer(gpu, "H", &h);
    let total = off + o * i + o + 2;
    let cb = buffer(gpu, "grads", &vec![f32::NAN; total]);
    let s = MatmulSpec::backward_weight(i, o, bp, off, off + o * i);
    let op = k.matmul(gpu, "backward weight", s, &dzb, &hb, &cb, None, None);
    run_op(gpu, &op, 0);
    let got: Vec<f32> = read(gpu, &cb, total);
    let stores = if off.is_multiple_of(4) && i.is_multiple_of(4) {
        "vec4"
    } else {
        "scalar"
    };
    let mut t = Tally::new(
        format!("backward weight+bias ({}, {stores})", variant(gpu)),
        format!("[{o},{bp}]x[{bp},{i}]"),
    );
    tally_weight_gradient(&mut t, &got, off, &dz, &h, (i, o, bp));
    t.done()
}

/// Compares the flat `got` (NaN-filled before the kernel ran) with dW [o, i] = dZ^T [o, bp] *
/// H [bp, pad4(i)] at `off` and db [o] after it, in f64, and checks nothing else was written.
fn tally_weight_gradient(
    t: &mut Tally,
    got: &[f32],
    off: usize,
    dz: &[f32],
    h: &[f32],
    (i, o, bp): (usize, usize, usize),
) {
    let ldh = pad4(i);
    for m in 0..o {
        for n in 0..i {
            let (z, sc) = dot_f64(bp, |b| dz[m * bp + b], |b| h[b * ldh + n]);
            let g = got[off + m * i + n] as f64;
            t.close(|| format!("dW[{m},{n}]"), g, z, sum_tolerance(bp, sc));
        }
        let z: f64 = (0..bp).map(|b| dz[m * bp + b] as f64).sum();
        let sc: f64 = (0..bp).map(|b| (dz[m * bp + b] as f64).abs()).sum();
        let g = got[off + o * i + m] as f64;
        t.close(|| format!("db[{m}]"), g, z, sum_tolerance(bp, sc));
    }
    if !got[..off]
        .iter()
        .chain(&got[off + o * i + o..])
        .all(|v| v.is_nan())
    {
        t.fail("wrote outside dW and db".into());
    }
}

/// Both backward products of one layer in one dispatch (matmul_pair.wgsl): dX^T [i, bp] and
/// dW [o, i] + db from the same dZ^T; `i` a multiple of 4 (the pair stores vec4).
pub fn check_backward_pair(gpu: &Gpu, k: &Kernels, batch: usize, i: usize, o: usize) -> Check {
    let mut rng = Rng::new(batch as u64 * 13 + i as u64, 300 + o as u64);
    let bp = pad4(batch);
    let ldh = pad4(i);
    // params: the weight [o, i] at 4, then the bias; grads: the same table, NaN-filled
    let off = 4;
    let params = random(&mut rng, off + o * i + o, -1.0, 1.0);
    let dz = random(&mut rng, o * bp, -1.0, 1.0);
    let ht = random(&mut rng, i * bp, -1.0, 1.0);
    let hbm = random(&mut rng, bp * ldh, -1.0, 1.0);
    let total = pad4(off + o * i + o + 2);
    let (pb, dzb, htb, hbb) = (
        buffer(gpu, "params", &params),
        buffer(gpu, "dZ^T", &dz),
        buffer(gpu, "H^T", &ht),
        buffer(gpu, "H", &hbm),
    );
    let dxb = buffer(gpu, "dX^T", &vec![0f32; i * bp]);
    let gb = buffer(gpu, "grads", &vec![f32::NAN; total]);
    let x = MatmulSpec::backward_input(i, o, bp, off);
    let w = MatmulSpec::backward_weight(i, o, bp, off, off + o * i);
    let op = k.matmul_pair(gpu, "backward pair", x, w, &pb, &dzb, &dxb, &htb, &hbb, &gb);
    run_op(gpu, &op, 0);
    let dx: Vec<f32> = read(gpu, &dxb, i * bp);
    let grads: Vec<f32> = read(gpu, &gb, total);
    let mut t = Tally::new(
        format!("backward pair ({})", variant(gpu)),
        format!("i{i} o{o} b{bp}"),
    );
    tally_input_gradient(&mut t, &dx, &params[off..], &dz, &ht, (i, o, bp));
    tally_weight_gradient(
        &mut t,
        &grads[..off + o * i + o + 2],
        off,
        &dz,
        &hbm,
        (i, o, bp),
    );
    t.done()
}

/// Every matmul check of the test suite: each product on the batch and inner sizes above,
/// then the tutorial's own shapes and the logits layer without ReLU.
pub fn matmul_checks(gpu: &Gpu, k: &Kernels) -> Vec<Check> {
    let mut out = Vec::new();
    for &b in &BATCHES {
        for &i in &INNER {
            out.push(check_forward(gpu, k, b, i, OTHER, true));
            out.push(check_backward_input(gpu, k, b, i, OTHER));
            out.push(check_backward_weight(gpu, k, b, i, OTHER, 3));
            if i.is_multiple_of(4) {
                out.push(check_backward_weight(gpu, k, b, i, OTHER, 4));
            }
        }
    }
    out.push(check_forward(gpu, k, 32, 784, 128, true));
    out.push(check_forward(gpu, k, 32, 64, 10, false));
    out.push(check_backward_input(gpu, k, 32, 128, 128));
    out.push(check_backward_weight(gpu, k, 32, 784, 128, 0));
    for (b, i, o) in [
        (1, 4, OTHER),
        (7, 64, OTHER),
        (33, 128, 64),
        (32, 128, 128),
        (32, 64, 10),
    ] {
        out.push(check_backward_pair(gpu, k, b, i, o));
    }
    out
}

fn dataset(rng: &mut Rng, n: usize, rows: usize, cols: usize) -> Dataset {
    Dataset {
        images: (0..n * rows * cols).map(|_| rng.below(256) as u8).collect(),
        labels: (0..n).map(|_| rng.below(10) as u8).collect(),
        rows,
        cols,
    }
}

/// The gather of a partial last batch must equal the CPU's normalised pixels bit for bit,
/// with zero columns past the valid count; 7x13 images are no whole number of u32 words.
pub fn gather_checks(gpu: &Gpu, k: &Kernels) -> Vec<Check> {
    let mut rng = Rng::new(11, 0);
    let mut out = Vec::new();
    for (rows, cols, batch) in [(28, 28, 32), (7, 13, 7), (7, 13, 33)] {
        let data = dataset(&mut rng, 50, rows, cols);
        let p = data.pixels();
        let mut order: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut order);
        let bp = pad4(batch);
        let ldx = pad4(p);
        let images = buffer(gpu, "images", &pack_images(&data));
        let orderb = buffer(gpu, "order", &order);
        let table = buffer(gpu, "table", &normalize_table());
        let xt = buffer(gpu, "x^T", &vec![f32::NAN; p * bp]);
        let xb = buffer(gpu, "x", &vec![f32::NAN; bp * ldx]);
        let steps = steps_buffer(gpu, 50, batch);
        let op = k.gather(
            gpu, "gather", p, bp, ldx, &images, &orderb, &table, &xt, &xb, &steps,
        );
        let last = 50usize.div_ceil(batch) - 1;
        run_op(gpu, &op, last);
        let start = last * batch;
        let valid = (50 - start).min(batch);
        let reference = cpu::gather(&data, &order[start..start + valid]);
        let got_t: Vec<f32> = read(gpu, &xt, p * bp);
        let got_b: Vec<f32> = read(gpu, &xb, bp * ldx);
        let mut t = Tally::new("gather+normalise", format!("{rows}x{cols} batch {batch}"));
        for col in 0..bp {
            for px in 0..p {
                let want = if col < valid {
                    reference[col * p + px]
                } else {
                    0.0
                };
                let what = || format!("pixel {px} of column {col}");
                t.close(what, got_t[px * bp + col] as f64, want as f64, 0.0);
                t.close(what, got_b[col * ldx + px] as f64, want as f64, 0.0);
            }
        }
        out.push(t.done());
    }
    out
}

/// Device buffers of a loss kernel's inputs: logits `[classes, bp]`, labels, order, steps.
struct LossBuffers {
    logits: wgpu::Buffer,
    labels: wgpu::Buffer,
    order: wgpu::Buffer,
    steps: wgpu::Buffer,
}

impl LossBuffers {
    fn new(gpu: &Gpu, logits: &[f32], labels: &[u32], order: &[u32], batch: usize) -> Self {
        LossBuffers {
            logits: buffer(gpu, "logits", logits),
            labels: buffer(gpu, "labels", labels),
            order: buffer(gpu, "order", order),
            steps: steps_buffer(gpu, order.len(), batch),
        }
    }
    fn input(&self, classes: usize, bp: usize) -> LossInput<'_> {
        LossInput {
            classes,
            bp,
            logits: &self.logits,
            labels: &self.labels,
            order: &self.order,
            steps: &self.steps,
        }
    }
}

/// The fused LogSoftmax + NLLLoss + logit gradient of the third step of an epoch.
pub fn nll_checks(gpu: &Gpu, k: &Kernels) -> Vec<Check> {
    let mut rng = Rng::new(12, 0);
    let mut out = Vec::new();
    for (batch, classes) in [(1usize, 10usize), (7, 10), (32, 10), (33, 3), (200, 10)] {
        let bp = pad4(batch);
        let n = 3 * batch;
        let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        let logits = random(&mut rng, classes * bp, -8.0, 8.0);
        let bufs = LossBuffers::new(gpu, &logits, &labels, &order, batch);
        let grad = buffer(gpu, "grad", &vec![f32::NAN; classes * bp]);
        let losses = buffer(gpu, "losses", &[f32::NAN; 3]);
        let op = k.nll(gpu, "nll", &bufs.input(classes, bp), &grad, &losses);
        run_op(gpu, &op, 2);
        // Reference in f64, batch-major.
        let z: Vec<f64> = (0..batch * classes)
            .map(|x| logits[(x % classes) * bp + x / classes] as f64)
            .collect();
        let lab: Vec<u8> = (0..batch)
            .map(|b| labels[order[2 * batch + b] as usize] as u8)
            .collect();
        let logp = cpu::log_softmax(&z, classes);
        let (loss, dz) = cpu::nll_loss_grad(&logp, &lab, classes);
        let got_loss: Vec<f32> = read(gpu, &losses, 3);
        let got: Vec<f32> = read(gpu, &grad, classes * bp);
        let shape = format!("{classes} classes, batch {batch}");
        let (tl, tg) = tally_nll(
            ("nll", shape),
            &got_loss,
            &got,
            (loss, &dz),
            (batch, classes),
            0.0,
        );
        out.push(tl);
        out.push(tg);
    }
    for (batch, classes, kin) in [
        (1usize, 10usize, 13usize),
        (7, 10, 64),
        (32, 10, 64),
        (33, 3, 5),
    ] {
        out.extend(check_nll_head(gpu, k, &mut rng, batch, classes, kin));
    }
    out
}

/// Compares the third step's loss and the logits' gradient [classes, bp] with the f64
/// reference; `extra` widens both tolerances by an error already in the logits (nll_head).
fn tally_nll(
    (kernel, shape): (&str, String),
    got_loss: &[f32],
    got: &[f32],
    (loss, dz): (f64, &[f64]),
    (batch, classes): (usize, usize),
    extra: f64,
) -> (Check, Check) {
    let bp = pad4(batch);
    let mut tl = Tally::new(format!("{kernel} loss"), shape.clone());
    // exp and log are accurate to a few ulp; the batch mean adds `batch` roundings.
    tl.close(
        || "the step's loss".into(),
        got_loss[2] as f64,
        loss,
        1e-5 * loss + extra,
    );
    if !(got_loss[0].is_nan() && got_loss[1].is_nan()) {
        tl.fail("wrote another step's loss".into());
    }
    let mut tg = Tally::new(format!("{kernel} gradient"), shape);
    for b in 0..bp {
        for c in 0..classes {
            let want = if b < batch { dz[b * classes + c] } else { 0.0 };
            // a difference of values up to 1/batch, each within a few ulp
            tg.close(
                || format!("dz[{b},{c}]"),
                got[c * bp + b] as f64,
                want,
                (1e-6 + extra) / batch as f64,
            );
        }
    }
    (tl.done(), tg.done())
}

/// The last layer fused with the loss (nll_head): logits W h + b [classes] from H^T [kin, bp]
/// and the flat parameters, then as nll_forward_backward; the third step of an epoch.
fn check_nll_head(
    gpu: &Gpu,
    k: &Kernels,
    rng: &mut Rng,
    batch: usize,
    classes: usize,
    kin: usize,
) -> [Check; 2] {
    let bp = pad4(batch);
    let n = 3 * batch;
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut order);
    // params: 5 other values, the weight [classes, kin], the bias [classes]
    let (w_off, b_off) = (5, 5 + classes * kin);
    let params = random(rng, b_off + classes, -1.0, 1.0);
    let h = random(rng, kin * bp, -1.0, 1.0);
    let bufs = LossBuffers::new(gpu, &[0.0], &labels, &order, batch);
    let (pb, hb) = (buffer(gpu, "params", &params), buffer(gpu, "H^T", &h));
    let grad = buffer(gpu, "grad", &vec![f32::NAN; classes * bp]);
    let losses = buffer(gpu, "losses", &[f32::NAN; 3]);
    let op = k.nll_head(
        gpu,
        "nll head",
        &bufs.input(classes, bp),
        kin,
        w_off,
        b_off,
        &pb,
        &hb,
        &grad,
        &losses,
    );
    run_op(gpu, &op, 2);
    // Reference in f64, batch-major, from the exact logits; the device's f32 logits are within
    // the summation bound of them, which widens the tolerances.
    let mut z = vec![0f64; batch * classes];
    let mut worst_scale: f64 = 0.0;
    for b in 0..batch {
        for c in 0..classes {
            let bias = params[b_off + c] as f64;
            let (dot, sc) = dot_f64(kin, |kk| params[w_off + c * kin + kk], |kk| h[kk * bp + b]);
            let sc = sc + bias.abs();
            z[b * classes + c] = bias + dot;
            worst_scale = worst_scale.max(sc);
        }
    }
    let lab: Vec<u8> = (0..batch)
        .map(|b| labels[order[2 * batch + b] as usize] as u8)
        .collect();
    let logp = cpu::log_softmax(&z, classes);
    let (loss, dz) = cpu::nll_loss_grad(&logp, &lab, classes);
    let got_loss: Vec<f32> = read(gpu, &losses, 3);
    let got: Vec<f32> = read(gpu, &grad, classes * bp);
    let extra = 2.0 * sum_tolerance(kin, worst_scale);
    let (tl, tg) = tally_nll(
        (
            "nll head",
            format!("{classes} classes, k {kin}, batch {batch}"),
        ),
        &got_loss,
        &got,
        (loss, &dz),
        (batch, classes),
        extra,
    );
    [tl, tg]
}

/// Evaluation: the first largest logit (a tie included) and every log-probability.
pub fn evaluate_checks(gpu: &Gpu, k: &Kernels) -> Vec<Check> {
    let mut rng = Rng::new(13, 0);
    let (batch, classes, n) = (33usize, 10usize, 40usize);
    let bp = pad4(batch);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    let order: Vec<u32> = (0..n as u32).collect();
    let mut logits = random(&mut rng, classes * bp, -4.0, 4.0);
    // a tie: the first largest wins, as in the tutorial's list.index(max(...))
    logits[3 * bp] = 9.0;
    logits[5 * bp] = 9.0;
    let bufs = LossBuffers::new(gpu, &logits, &labels, &order, batch);
    let correct = buffer(gpu, "correct", &vec![u32::MAX; n]);
    let logp_b = buffer(gpu, "log-probs", &vec![f32::NAN; n * classes]);
    let op = k.evaluate(gpu, "evaluate", &bufs.input(classes, bp), &correct, &logp_b);
    run_op(gpu, &op, 0);
    let got_c: Vec<u32> = read(gpu, &correct, n);
    let got_l: Vec<f32> = read(gpu, &logp_b, n * classes);
    let shape = format!("{classes} classes, batch {batch}");
    let mut tp = Tally::new("evaluate argmax", shape.clone());
    let mut tl = Tally::new("evaluate log-softmax", shape);
    for b in 0..batch {
        let z: Vec<f64> = (0..classes).map(|c| logits[c * bp + b] as f64).collect();
        let pred = cpu::argmax(&z);
        let lp = cpu::log_softmax(&z, classes);
        let want = (pred == labels[b] as usize) as u32 | (pred as u32) << 8;
        if got_c[b] != want {
            tp.fail(format!(
                "sample {b}: predicted {} (correct {}), expected {pred}",
                got_c[b] >> 8,
                got_c[b] & 1
            ));
        }
        for c in 0..classes {
            let g = got_l[b * classes + c] as f64;
            let tol = 1e-5 * (1.0 + lp[c].abs());
            tl.close(|| format!("logp[{b},{c}]"), g, lp[c], tol);
        }
    }
    if got_c[0] >> 8 != 3 {
        tp.fail("a tie went to a later class, not the first".into());
    }
    if got_c[batch..].iter().any(|&c| c != u32::MAX)
        || got_l[batch * classes..].iter().any(|v| !v.is_nan())
    {
        tp.fail("wrote past the step".into());
    }
    vec![tp.done(), tl.done()]
}

/// PyTorch's momentum rule over flat buffers, including a size that is no multiple of the
/// workgroup and the tutorial's 130,058 parameters.
pub fn sgd_checks(gpu: &Gpu, k: &Kernels) -> Vec<Check> {
    let mut rng = Rng::new(14, 0);
    let mut out = Vec::new();
    for count in [1usize, 255, 257, 130_058] {
        let p = random(&mut rng, count, -1.0, 1.0);
        let v = random(&mut rng, count, -1.0, 1.0);
        let g = random(&mut rng, count, -1.0, 1.0);
        // Zero-padded to whole vec4, as the trainer allocates them.
        let padded = |x: &[f32]| {
            let mut x = x.to_vec();
            x.resize(pad4(count), 0.0);
            x
        };
        let (pb, vb, gb) = (
            buffer(gpu, "p", &padded(&p)),
            buffer(gpu, "v", &padded(&v)),
            buffer(gpu, "g", &padded(&g)),
        );
        let op = k.sgd(gpu, "sgd", count, 0.003, 0.9, &pb, &gb, &vb);
        run_op(gpu, &op, 0);
        let (mut rp, mut rv) = (p.clone(), v.clone());
        cpu::sgd(&mut rp, &mut rv, &g, 0.003f32, 0.9f32);
        let gp: Vec<f32> = read(gpu, &pb, pad4(count));
        let gv: Vec<f32> = read(gpu, &vb, pad4(count));
        let mut t = Tally::new("sgd momentum", format!("{count} parameters"));
        if gp[count..].iter().chain(&gv[count..]).any(|&x| x != 0.0) {
            t.fail("the padding past the last parameter is no longer zero".into());
        }
        for i in 0..count {
            // The device may fuse a multiply-add (one rounding less): one ulp of the terms.
            let tv = 2.0 * f32::EPSILON * (0.9 * v[i].abs() + g[i].abs());
            t.close(|| format!("v[{i}]"), gv[i] as f64, rv[i] as f64, tv as f64);
            let tp = 2.0 * f32::EPSILON * (p[i].abs() + 0.003 * rv[i].abs()) + 0.003 * tv;
            t.close(|| format!("p[{i}]"), gp[i] as f64, rp[i] as f64, tp as f64);
        }
        out.push(t.done());
    }
    out
}

/// Every check on `gpu`'s matmul variant plus the other kernels.
pub fn all_checks(gpu: &Gpu) -> Vec<Check> {
    let k = Kernels::new(gpu);
    let mut out = matmul_checks(gpu, &k);
    out.extend(gather_checks(gpu, &k));
    out.extend(nll_checks(gpu, &k));
    out.extend(evaluate_checks(gpu, &k));
    out.extend(sgd_checks(gpu, &k));
    out
}

/// Checks that `checks` all passed; otherwise every failure, one per line.
pub fn failures(checks: &[Check]) -> Result<(), String> {
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            c.failure
                .as_ref()
                .map(|f| format!("{} {}: {f}", c.kernel, c.shape))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
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
