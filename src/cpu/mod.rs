//! The CPU reference: the math of every kernel on plain slices, generic over f32 and f64.
//!
//! It is the oracle of the kernel tests (f32), of the finite-difference gradient check (f64),
//! and the `--device cpu` backend. Convention: PyTorch's layouts throughout, batch-major
//! activations `[batch, features]`, weights `[out, in]`; the flat parameter table of
//! [`crate::model::Arch::table`].

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

mod backend;
pub mod conv;
pub mod layers;

pub use backend::{CpuBackend, CpuEvaluator};

use crate::data::Dataset;
use crate::model::Arch;
use crate::philox::Mask;

pub trait Real:
    Copy
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    /// `c = a * b` for strided row/column layouts (`rs*` row stride, `cs*` column stride).
    #[allow(clippy::too_many_arguments)]
    fn gemm_raw(m: usize, k: usize, n: usize, a: Mat<Self>, b: Mat<Self>, c: MatMut<Self>);
}

/// A strided read-only matrix view: element (i, j) at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}
pub struct MatMut<'a, T> {
    pub data: &'a mut [T],
    pub rs: usize,
    pub cs: usize,
}

fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

macro_rules! real_impl {
    ($t:ty, $gemm:path) => {
        impl Real for $t {
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn gemm_raw(m: usize, k: usize, n: usize, a: Mat<Self>, b: Mat<Self>, c: MatMut<Self>) {
                if m == 0 || n == 0 {
                    return;
                }
                if k == 0 {
                    for i in 0..m {
                        for j in 0..n {
                            c.data[i * c.rs + j * c.cs] = 0.0;
                        }
                    }
                    return;
                }
                // The slices must hold every element the strides reach; this makes the
                // unsafe call below sound.
                assert!(
                    last_index(m, k, a.rs, a.cs) < a.data.len(),
                    "gemm: A too short"
                );
                assert!(
                    last_index(k, n, b.rs, b.cs) < b.data.len(),
                    "gemm: B too short"
                );
                assert!(
                    last_index(m, n, c.rs, c.cs) < c.data.len(),
                    "gemm: C too short"
                );
                // SAFETY: bounds checked above; C does not alias A or B (distinct borrows).
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.data.as_ptr(),
                        a.rs as isize,
                        a.cs as isize,
                        b.data.as_ptr(),
                        b.rs as isize,
                        b.cs as isize,
                        0.0,
                        c.data.as_mut_ptr(),
                        c.rs as isize,
                        c.cs as isize,
                    )
                }
            }
        }
    };
}
real_impl!(f32, matrixmultiply::sgemm);
real_impl!(f64, matrixmultiply::dgemm);

/// y[b, out] = x[b, in] · w[out, in]^T + bias[out]; ReLU after when `relu`.
pub fn linear_forward<T: Real>(
    x: &[T],
    w: &[T],
    bias: &[T],
    y: &mut [T],
    batch: usize,
    (inp, out): (usize, usize),
    relu: bool,
) {
    T::gemm_raw(
        batch,
        inp,
        out,
        Mat {
            data: x,
            rs: inp,
            cs: 1,
        },
        Mat {
            data: w,
            rs: 1,
            cs: inp,
        },
        MatMut {
            data: y,
            rs: out,
            cs: 1,
        },
    );
    for row in y[..batch * out].chunks_mut(out) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
            if relu && !positive(*v) {
                *v = T::default();
            }
        }
    }
}

/// Gradients of a Linear layer: dw[out, in] = dy^T · x, db[out] = column sums of dy, and,
/// when asked, dx[b, in] = dy · w.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Real>(
    dy: &[T],
    x: &[T],
    w: &[T],
    dw: &mut [T],
    db: &mut [T],
    dx: Option<&mut [T]>,
    batch: usize,
    (inp, out): (usize, usize),
) {
    T::gemm_raw(
        out,
        batch,
        inp,
        Mat {
            data: dy,
            rs: 1,
            cs: out,
        },
        Mat {
            data: x,
            rs: inp,
            cs: 1,
        },
        MatMut {
            data: dw,
            rs: inp,
            cs: 1,
        },
    );
    for (o, d) in db.iter_mut().enumerate().take(out) {
        let mut s = T::default();
        for b in 0..batch {
            s += dy[b * out + o];
        }
        *d = s;
    }
    if let Some(dx) = dx {
        T::gemm_raw(
            batch,
            out,
            inp,
            Mat {
                data: dy,
                rs: out,
                cs: 1,
            },
            Mat {
                data: w,
                rs: inp,
                cs: 1,
            },
            MatMut {
                data: dx,
                rs: inp,
                cs: 1,
            },
        );
    }
}

/// Whether a value passes ReLU (NaN does not, as in the kernels).
pub(crate) fn positive<T: Real>(v: T) -> bool {
    v > T::default()
}

/// ReLU backward: the gradient passes where the layer's output was positive.
pub fn relu_backward<T: Real>(dx: &mut [T], y: &[T]) {
    for (d, &v) in dx.iter_mut().zip(y) {
        if !positive(v) {
            *d = T::default();
        }
    }
}

/// LogSoftmax over each row of `logits` [batch, classes], in PyTorch's formulation.
pub fn log_softmax<T: Real>(logits: &[T], classes: usize) -> Vec<T> {
    let mut out = vec![T::default(); logits.len()];
    for (z, o) in logits.chunks(classes).zip(out.chunks_mut(classes)) {
        let mut m = z[0];
        for &v in z {
            if v > m {
                m = v;
            }
        }
        let mut s = T::default();
        for &v in z {
            s += (v - m).exp();
        }
        let lse = m + s.ln();
        for (oi, &v) in o.iter_mut().zip(z) {
            *oi = v - lse;
        }
    }
    out
}

/// NLLLoss (mean over the batch) of log-probabilities, and its gradient with respect to the
/// logits through LogSoftmax, as autograd computes it: g = -1/N at the label, then
/// dz = g - exp(logp) * sum(g).
pub fn nll_loss_grad<T: Real>(logp: &[T], labels: &[u8], classes: usize) -> (T, Vec<T>) {
    let n = labels.len();
    let g = -(T::from_f64(1.0) / T::from_f64(n as f64));
    let mut loss = T::default();
    let mut dz = vec![T::default(); logp.len()];
    for (b, &label) in labels.iter().enumerate() {
        let row = &logp[b * classes..(b + 1) * classes];
        loss += -row[label as usize];
        for c in 0..classes {
            let gc = if c == label as usize { g } else { T::default() };
            dz[b * classes + c] = gc - row[c].exp() * g;
        }
    }
    (loss / T::from_f64(n as f64), dz)
}

/// Gathers the images `idx` into a batch-major `[idx.len(), pixels]` input, normalised.
pub fn gather(data: &Dataset, idx: &[u32]) -> Vec<f32> {
    let lut = data.normalize.table();
    let mut x = Vec::with_capacity(idx.len() * data.pixels());
    for &i in idx {
        x.extend(data.image(i as usize).iter().map(|&v| lut[v as usize]));
    }
    x
}

/// How a training pass runs: where its dropout layers draw their masks (None: none drops, as
/// when evaluating), and over how many threads a convolution spreads its samples, which
/// changes no bit of the result.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    pub mask: Option<Mask>,
    pub threads: usize,
}

impl Pass {
    /// No dropout, one thread.
    pub const PLAIN: Pass = Pass {
        mask: None,
        threads: 1,
    };

    /// The pass of layer `layer` (its index in the model), whose mask it keys.
    fn layer(self, layer: usize) -> Pass {
        let mask = self.mask.map(|m| Mask {
            layer: layer as u32,
            ..m
        });
        Pass { mask, ..self }
    }
}

/// The outputs of every layer of one forward pass, evaluating (no dropout): `acts[0]` is the
/// input, `acts[i + 1]` the output of layer `i`; the last is the log-probabilities.
pub fn forward<T: Real>(arch: &Arch, params: &[T], x: &[T], batch: usize) -> Vec<Vec<T>> {
    forward_drawn(arch, params, x, batch, Pass::PLAIN).0
}

/// [`forward`] as `pass` says (dropout's masks, threads), with what each layer keeps for its
/// backward pass (`layers::forward`).
type Forward<T> = (Vec<Vec<T>>, Vec<Vec<usize>>);
fn forward_drawn<T: Real>(
    arch: &Arch,
    params: &[T],
    x: &[T],
    batch: usize,
    pass: Pass,
) -> Forward<T> {
    let (at, shapes) = (arch.offsets(), arch.shapes());
    let mut acts = vec![x[..batch * arch.input()].to_vec()];
    let mut kept = Vec::new();
    for (i, layer) in arch.layers().iter().enumerate() {
        let p = &params[at[i]..at[i + 1]];
        let (y, k) = layers::forward(layer, p, &acts[i], (batch, shapes[i]), pass.layer(i));
        acts.push(y);
        kept.push(k);
    }
    (acts, kept)
}

/// Mean NLL loss of a batch and the gradient of every parameter (flat, the table's layout);
/// dropout draws as `pass` says.
pub fn loss_and_grad<T: Real>(
    arch: &Arch,
    params: &[T],
    x: &[T],
    labels: &[u8],
    pass: Pass,
) -> (T, Vec<T>) {
    let batch = labels.len();
    let (acts, kept) = forward_drawn(arch, params, x, batch, pass);
    let n = arch.layers().len();
    // The last layer is LogSoftmax: NLLLoss's gradient with respect to its input, as one.
    let (loss, mut dy) = nll_loss_grad(&acts[n], labels, arch.output());
    let (at, shapes) = (arch.offsets(), arch.shapes());
    let mut grads = vec![T::default(); params.len()];
    for i in (0..n - 1).rev() {
        let (p, g) = (&params[at[i]..at[i + 1]], &mut grads[at[i]..at[i + 1]]);
        let io = (&acts[i][..], &acts[i + 1][..], &kept[i][..]);
        dy = layers::backward(
            &arch.layers()[i],
            (p, g),
            io,
            dy,
            (batch, shapes[i]),
            pass.layer(i),
            i > 0,
        );
    }
    (loss, grads)
}

/// Index of the first largest value.
pub fn argmax<T: Real>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests;
