//! The CPU reference: the math of every kernel on plain slices, generic over f32 and f64.
//!
//! It is the oracle of the kernel tests (f32), of the finite-difference gradient check (f64),
//! and the `--device cpu` backend. Convention: PyTorch's layouts throughout, batch-major
//! activations `[batch, features]`, weights `[out, in]`; the flat parameter table of
//! [`crate::model::Arch::table`].

use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

mod backend;
mod conv;
mod layers;

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

/// The outputs of every layer of one forward pass, evaluating (no dropout): `acts[0]` is the
/// input, `acts[i + 1]` the output of layer `i`; the last is the log-probabilities.
pub fn forward<T: Real>(arch: &Arch, params: &[T], x: &[T], batch: usize) -> Vec<Vec<T>> {
    forward_drawn(arch, params, x, batch, None)
}

/// [`forward`] while training: each dropout layer draws its mask from `mask` with the
/// layer's index.
fn forward_drawn<T: Real>(
    arch: &Arch,
    params: &[T],
    x: &[T],
    batch: usize,
    mask: Option<Mask>,
) -> Vec<Vec<T>> {
    let (at, shapes) = (arch.offsets(), arch.shapes());
    let mut acts = vec![x[..batch * arch.input()].to_vec()];
    for (i, layer) in arch.layers().iter().enumerate() {
        let p = &params[at[i]..at[i + 1]];
        let m = mask.map(|m| Mask {
            layer: i as u32,
            ..m
        });
        let y = layers::forward(layer, p, &acts[i], (batch, shapes[i]), m);
        acts.push(y);
    }
    acts
}

/// Mean NLL loss of a batch and the gradient of every parameter (flat, the table's layout);
/// dropout draws from `mask` (None: none drops, as when evaluating).
pub fn loss_and_grad<T: Real>(
    arch: &Arch,
    params: &[T],
    x: &[T],
    labels: &[u8],
    mask: Option<Mask>,
) -> (T, Vec<T>) {
    let batch = labels.len();
    let acts = forward_drawn(arch, params, x, batch, mask);
    let n = arch.layers().len();
    // The last layer is LogSoftmax: NLLLoss's gradient with respect to its input, as one.
    let (loss, mut dy) = nll_loss_grad(&acts[n], labels, arch.output());
    let (at, shapes) = (arch.offsets(), arch.shapes());
    let mut grads = vec![T::default(); params.len()];
    for i in (0..n - 1).rev() {
        let (p, g) = (&params[at[i]..at[i + 1]], &mut grads[at[i]..at[i + 1]]);
        let io = (&acts[i][..], &acts[i + 1][..]);
        let m = mask.map(|m| Mask {
            layer: i as u32,
            ..m
        });
        dy = layers::backward(
            &arch.layers()[i],
            (p, g),
            io,
            dy,
            (batch, shapes[i]),
            m,
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
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The whole network's analytic gradient against central differences, in f64: the
    /// largest relative error over every parameter.
    fn worst_gradient_error(arch: &Arch, mask: Option<Mask>) -> f64 {
        let p32 = arch.init(3);
        let params: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
        let mut rng = Rng::new(5, 9);
        let batch = 5;
        let x: Vec<f64> = (0..batch * arch.input())
            .map(|_| rng.uniform(-1.0, 1.0) as f64)
            .collect();
        let labels: Vec<u8> = (0..batch).map(|_| rng.below(10) as u8).collect();
        let (_, g) = loss_and_grad(arch, &params, &x, &labels, mask);
        let h = 1e-6;
        let mut worst: f64 = 0.0;
        for i in 0..params.len() {
            let mut p = params.clone();
            p[i] += h;
            let (lp, _) = loss_and_grad(arch, &p, &x, &labels, mask);
            p[i] -= 2.0 * h;
            let (lm, _) = loss_and_grad(arch, &p, &x, &labels, mask);
            let fd = (lp - lm) / (2.0 * h);
            let err = (fd - g[i]).abs() / (1e-6 + fd.abs().max(g[i].abs()));
            // A ReLU kink inside [p-h, p+h] would break the difference; with random data at
            // this scale that does not happen, and the check is strict everywhere else.
            worst = worst.max(err);
        }
        worst
    }

    #[test]
    fn finite_difference_gradient_check() {
        let worst = worst_gradient_error(&Arch::mlp(13, &[9, 7], 10), None);
        assert!(worst < 1e-5, "largest relative gradient error {worst}");
    }

    /// Any list of layers, not only the tutorial's kind, walks forward and backward.
    #[test]
    fn finite_difference_gradient_check_of_any_list() {
        use crate::model::Layer;
        let lin = |inp, out| Layer::Linear { inp, out };
        let layers = vec![
            lin(13, 9),
            lin(9, 7),
            Layer::Relu,
            lin(7, 10),
            Layer::LogSoftmax,
        ];
        let arch = Arch::from_layers([13, 1, 1], layers).unwrap();
        let worst = worst_gradient_error(&arch, None);
        assert!(worst < 1e-5, "largest relative gradient error {worst}");
    }

    /// Every layer kind of the CNNs (Conv2d, MaxPool2d, Dropout2d, Flatten, Dropout) on odd
    /// shapes, with the masks of one step drawn: the same masks in both differences.
    #[test]
    fn finite_difference_gradient_check_of_a_cnn() {
        use crate::model::{DropP, Layer::*};
        let (half, third) = (DropP::new(0.5).unwrap(), DropP::new(0.3).unwrap());
        let layers = vec![
            Conv2d {
                cin: 2,
                cout: 3,
                k: 3,
            },
            MaxPool2d,
            Relu,
            Dropout2d(half),
            Conv2d {
                cin: 3,
                cout: 4,
                k: 2,
            },
            Flatten,
            Linear { inp: 16, out: 12 },
            Relu,
            Dropout(third),
            Linear { inp: 12, out: 10 },
            LogSoftmax,
        ];
        let arch = Arch::from_layers([2, 9, 8], layers).unwrap();
        assert_eq!(arch.shapes()[4], [3, 3, 3]);
        let mask = Mask {
            seed: 4,
            step: 11,
            layer: 0,
        };
        let worst = worst_gradient_error(&arch, Some(mask));
        assert!(worst < 1e-5, "largest relative gradient error {worst}");
    }

    #[test]
    fn log_softmax_rows_sum_to_one() {
        let z = [1.0f32, 2.0, 3.0, -1000.0, 0.0, 1000.0];
        let lp = log_softmax(&z, 3);
        for row in lp.chunks(3) {
            let s: f32 = row.iter().map(|v| v.exp()).sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        assert!(lp.iter().all(|v| v.is_finite()));
    }
}
