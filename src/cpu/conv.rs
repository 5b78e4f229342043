//! The CPU twins of the convolutional layers: Conv2d (square kernel, stride 1, no padding) by
//! im2col and one product per sample, MaxPool2d 2x2 with PyTorch's tie rule, dropout's masks.
//! Layouts are PyTorch's: activations `[batch, channels, height, width]`, a Conv2d's weight
//! `[cout, cin, k, k]`. Sums over the batch run in sample order.

use super::{Mat, MatMut, Real};
use crate::model::Shape;
use crate::philox::Mask;

/// `cols[(c, dy, dx), (y, x)] = x[c, y + dy, x + dx]` of one sample `[cin, h, w]`:
/// `[cin * k * k, ho * wo]`.
fn im2col<T: Real>(x: &[T], [cin, h, w]: Shape, k: usize, cols: &mut [T]) {
    let (ho, wo) = (h - k + 1, w - k + 1);
    let mut r = 0;
    for c in 0..cin {
        for dy in 0..k {
            for dx in 0..k {
                let row = &mut cols[r * ho * wo..(r + 1) * ho * wo];
                for y in 0..ho {
                    let src = &x[c * h * w + (y + dy) * w + dx..][..wo];
                    row[y * wo..(y + 1) * wo].copy_from_slice(src);
                }
                r += 1;
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back to the input element it came from.
fn col2im_add<T: Real>(cols: &[T], [cin, h, w]: Shape, k: usize, dx: &mut [T]) {
    let (ho, wo) = (h - k + 1, w - k + 1);
    let mut r = 0;
    for c in 0..cin {
        for ky in 0..k {
            for kx in 0..k {
                let row = &cols[r * ho * wo..(r + 1) * ho * wo];
                for y in 0..ho {
                    let dst = &mut dx[c * h * w + (y + ky) * w + kx..][..wo];
                    for (d, &v) in dst.iter_mut().zip(&row[y * wo..(y + 1) * wo]) {
                        *d += v;
                    }
                }
                r += 1;
            }
        }
    }
}

/// y[b, cout, ho, wo] = conv(x[b], weight) + bias, for input samples of shape `x_shape`.
pub fn conv2d_forward<T: Real>(
    x: &[T],
    (weight, bias): (&[T], &[T]),
    y: &mut [T],
    batch: usize,
    x_shape: Shape,
    (cout, k): (usize, usize),
) {
    let [cin, h, w] = x_shape;
    let (ckk, hw) = (cin * k * k, (h - k + 1) * (w - k + 1));
    let mut cols = vec![T::default(); ckk * hw];
    for b in 0..batch {
        im2col(&x[b * cin * h * w..], x_shape, k, &mut cols);
        let yb = &mut y[b * cout * hw..(b + 1) * cout * hw];
        let a = Mat {
            data: weight,
            rs: ckk,
            cs: 1,
        };
        let c = Mat {
            data: &cols,
            rs: hw,
            cs: 1,
        };
        T::gemm_raw(
            cout,
            ckk,
            hw,
            a,
            c,
            MatMut {
                data: yb,
                rs: hw,
                cs: 1,
            },
        );
        for (row, &bo) in yb.chunks_mut(hw).zip(bias) {
            for v in row {
                *v += bo;
            }
        }
    }
}

/// Gradients of a Conv2d: dweight = sum over samples of dy[b] * cols[b]^T, dbias the sums of
/// dy over samples and positions, and, when asked, dx[b] = col2im(weight^T * dy[b]).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Real>(
    dy: &[T],
    x: &[T],
    weight: &[T],
    (dw, db): (&mut [T], &mut [T]),
    dx: Option<&mut [T]>,
    batch: usize,
    x_shape: Shape,
    (cout, k): (usize, usize),
) {
    let [cin, h, w] = x_shape;
    let (ckk, hw) = (cin * k * k, (h - k + 1) * (w - k + 1));
    let mut cols = vec![T::default(); ckk * hw];
    let mut dw_b = vec![T::default(); cout * ckk];
    dw.fill(T::default());
    db.fill(T::default());
    for b in 0..batch {
        let dyb = &dy[b * cout * hw..(b + 1) * cout * hw];
        im2col(&x[b * cin * h * w..], x_shape, k, &mut cols);
        let (a, c) = (mat(dyb, hw, 1), mat(&cols, 1, hw));
        T::gemm_raw(cout, hw, ckk, a, c, mat_mut(&mut dw_b, ckk));
        for (d, &v) in dw.iter_mut().zip(&dw_b) {
            *d += v;
        }
        for (d, row) in db.iter_mut().zip(dyb.chunks(hw)) {
            let mut s = T::default();
            for &v in row {
                s += v;
            }
            *d += s;
        }
    }
    if let Some(dx) = dx {
        dx.fill(T::default());
        for b in 0..batch {
            let dyb = &dy[b * cout * hw..(b + 1) * cout * hw];
            let (a, c) = (mat(weight, 1, ckk), mat(dyb, hw, 1));
            T::gemm_raw(ckk, cout, hw, a, c, mat_mut(&mut cols, hw));
            col2im_add(
                &cols,
                x_shape,
                k,
                &mut dx[b * cin * h * w..(b + 1) * cin * h * w],
            );
        }
    }
}

fn mat<T>(data: &[T], rs: usize, cs: usize) -> Mat<'_, T> {
    Mat { data, rs, cs }
}

/// A row-major matrix of rows `rs` apart.
fn mat_mut<T>(data: &mut [T], rs: usize) -> MatMut<'_, T> {
    MatMut { data, rs, cs: 1 }
}

/// Index (in the sample's `[c, h, w]`) of each 2x2 window's largest value, as PyTorch picks
/// it: the first maximum in row-major order, NaN winning; `[c, h / 2, w / 2]` per sample.
pub fn maxpool2_argmax<T: Real>(x: &[T], batch: usize, [c, h, w]: Shape) -> Vec<usize> {
    let (ho, wo) = (h / 2, w / 2);
    let mut at = Vec::with_capacity(batch * c * ho * wo);
    for bc in 0..batch * c {
        let plane = bc * h * w;
        for y in 0..ho {
            for xo in 0..wo {
                let mut best = plane + 2 * y * w + 2 * xo;
                for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                    let i = plane + (2 * y + dy) * w + 2 * xo + dx;
                    if x[i] > x[best] || is_nan(x[i]) && !is_nan(x[best]) {
                        best = i;
                    }
                }
                at.push(best);
            }
        }
    }
    at
}

fn is_nan<T: Real>(v: T) -> bool {
    v.partial_cmp(&v).is_none()
}

/// Whether element `e` of a dropout layer's input survives, and the factor it is scaled by
/// then: Dropout draws per element, Dropout2d per channel (`plane` elements per channel).
pub fn dropout_factor<T: Real>(mask: Mask, p: f32, e: usize, plane: usize) -> T {
    match mask.keeps((e / plane) as u32, p) {
        true => T::from_f64((1.0 / (1.0 - p)) as f64),
        false => T::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's rule: the first maximum in row-major order wins a tie, NaN wins over numbers.
    #[test]
    fn maxpool_picks_the_first_maximum_and_nan() {
        // One sample, two channels of 2x4: windows (0,1,4,5) and (2,3,6,7) per channel.
        let x = [
            1.0f32,
            3.0,
            7.0,
            2.0, //
            3.0,
            0.0,
            7.0,
            7.0, //
            f32::NAN,
            5.0,
            -1.0,
            -1.0, //
            9.0,
            f32::NAN,
            -1.0,
            -1.0,
        ];
        assert_eq!(maxpool2_argmax(&x, 1, [2, 2, 4]), [1, 2, 8, 10]);
    }
}
