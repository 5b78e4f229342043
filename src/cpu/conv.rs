//! The CPU twins of the convolutional layers: Conv2d (square kernel, any stride and padding) by
//! im2col and one product per sample, MaxPool2d 2x2 with PyTorch's tie rule, dropout's masks.
//! Layouts are PyTorch's: activations `[batch, channels, height, width]`, a Conv2d's weight
//! `[cout, cin, k, k]`. Sums over the batch run in sample order.

use super::{Mat, MatMut, Real};
use crate::model::{Conv2d, Shape};
use crate::philox::Mask;

/// `cols[(c, ky, kx), (oy, ox)] = x[c, oy * stride + ky - pad, ox * stride + kx - pad]` of one
/// sample `[cin, h, w]`, zero where that falls in the padding: `[cin * k * k, ho * wo]`.
fn im2col<T: Real>(x: &[T], [cin, h, w]: Shape, conv: Conv2d, cols: &mut [T]) {
    let (ho, wo) = out_hw(conv, h, w);
    let hw = ho * wo;
    for (r, row) in cols.chunks_mut(hw).take(cin * conv.k * conv.k).enumerate() {
        let (c, ky, kx) = (r / (conv.k * conv.k), r / conv.k % conv.k, r % conv.k);
        let plane = &x[c * h * w..(c + 1) * h * w];
        if conv.stride == 1 && conv.pad == 0 {
            // The recipes' convolutions: each output row is a run of the input row.
            for y in 0..ho {
                row[y * wo..(y + 1) * wo].copy_from_slice(&plane[(y + ky) * w + kx..][..wo]);
            }
            continue;
        }
        for (i, v) in row.iter_mut().enumerate() {
            *v = match tap(conv, (i / wo, ky, h), (i % wo, kx, w)) {
                Some((iy, ix)) => plane[iy * w + ix],
                None => T::default(),
            };
        }
    }
}

/// The input element an output position `o` reads through kernel tap `t` along each axis
/// (`(o, t, n)`, `n` the input's extent), None where it falls in the padding.
fn tap(
    conv: Conv2d,
    (oy, ky, h): (usize, usize, usize),
    (ox, kx, w): (usize, usize, usize),
) -> Option<(usize, usize)> {
    let at = |o: usize, t: usize, n: usize| {
        (o * conv.stride + t)
            .checked_sub(conv.pad)
            .filter(|&i| i < n)
    };
    Some((at(oy, ky, h)?, at(ox, kx, w)?))
}

fn out_hw(conv: Conv2d, h: usize, w: usize) -> (usize, usize) {
    conv.out_hw(h, w)
        .expect("a Conv2d's input was checked against it")
}

/// The adjoint of [`im2col`]: adds each column entry back to the input element it came from,
/// in the order of the columns.
fn col2im_add<T: Real>(cols: &[T], [cin, h, w]: Shape, conv: Conv2d, dx: &mut [T]) {
    let (ho, wo) = out_hw(conv, h, w);
    let hw = ho * wo;
    for (r, row) in cols.chunks(hw).take(cin * conv.k * conv.k).enumerate() {
        let (c, ky, kx) = (r / (conv.k * conv.k), r / conv.k % conv.k, r % conv.k);
        let plane = &mut dx[c * h * w..(c + 1) * h * w];
        if conv.stride == 1 && conv.pad == 0 {
            for (y, src) in row.chunks(wo).enumerate() {
                let dst = &mut plane[(y + ky) * w + kx..][..wo];
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            }
            continue;
        }
        for (i, &v) in row.iter().enumerate() {
            if let Some((iy, ix)) = tap(conv, (i / wo, ky, h), (i % wo, kx, w)) {
                plane[iy * w + ix] += v;
            }
        }
    }
}

/// Runs `f(first sample, its outputs)` over the batch cut into `threads` runs of samples, `out`
/// holding `len` values per sample, on the process's pool of threads (natively; on one thread
/// in wasm). Every sample is computed alone, so the result is the same on any number of threads.
pub(super) fn per_sample<T: Send>(
    out: &mut [T],
    len: usize,
    threads: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let batch = out.len() / len.max(1);
    let per = batch.div_ceil(threads.max(1)).max(1);
    if per >= batch {
        return f(0, out);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (out.par_chunks_mut(per * len).enumerate()).for_each(|(i, chunk)| f(i * per, chunk));
    }
    #[cfg(target_arch = "wasm32")]
    for (i, chunk) in out.chunks_mut(per * len).enumerate() {
        f(i * per, chunk);
    }
}

/// [`per_sample`] over two outputs of `len` values per sample each.
fn per_sample_pair<A: Send, B: Send>(
    (a, b): (&mut [A], &mut [B]),
    len: usize,
    threads: usize,
    f: impl Fn(usize, (&mut [A], &mut [B])) + Sync,
) {
    let batch = a.len() / len.max(1);
    let per = batch.div_ceil(threads.max(1)).max(1);
    if per >= batch {
        return f(0, (a, b));
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        let chunks = a.par_chunks_mut(per * len).zip(b.par_chunks_mut(per * len));
        chunks.enumerate().for_each(|(i, ab)| f(i * per, ab));
    }
    #[cfg(target_arch = "wasm32")]
    for (i, ab) in a
        .chunks_mut(per * len)
        .zip(b.chunks_mut(per * len))
        .enumerate()
    {
        f(i * per, ab);
    }
}

/// y[b, cout, ho, wo] = conv(x[b], weight) + bias, for input samples of shape `x_shape`, the
/// samples spread over `threads`.
pub fn conv2d_forward<T: Real>(
    x: &[T],
    (weight, bias): (&[T], &[T]),
    y: &mut [T],
    (x_shape, threads): (Shape, usize),
    conv: Conv2d,
) {
    let [cin, h, w] = x_shape;
    let (ho, wo) = out_hw(conv, h, w);
    let (cout, ckk, hw) = (conv.cout, cin * conv.k * conv.k, ho * wo);
    per_sample(y, cout * hw, threads, |first, ys| {
        let mut cols = vec![T::default(); ckk * hw];
        for (j, yb) in ys.chunks_mut(cout * hw).enumerate() {
            im2col(&x[(first + j) * cin * h * w..], x_shape, conv, &mut cols);
            let (a, c) = (mat(weight, ckk, 1), mat(&cols, hw, 1));
            T::gemm_raw(cout, ckk, hw, a, c, mat_mut(yb, hw));
            for (row, &bo) in yb.chunks_mut(hw).zip(bias) {
                for v in row {
                    *v += bo;
                }
            }
        }
    });
}

/// Gradients of a Conv2d: dweight = the sum over samples, in sample order, of dy[b] *
/// cols[b]^T, dbias the sums of dy over samples and positions, and, when asked, dx[b] =
/// col2im(weight^T * dy[b]); the per-sample products spread over `threads`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Real>(
    dy: &[T],
    x: &[T],
    weight: &[T],
    (dw, db): (&mut [T], &mut [T]),
    dx: Option<&mut [T]>,
    batch: usize,
    (x_shape, threads): (Shape, usize),
    conv: Conv2d,
) {
    let [cin, h, w] = x_shape;
    let (ho, wo) = out_hw(conv, h, w);
    let (cout, ckk, hw) = (conv.cout, cin * conv.k * conv.k, ho * wo);
    // Each sample's weight gradient alone, then their sum in sample order.
    let mut partial = vec![T::default(); batch * cout * ckk];
    per_sample(&mut partial, cout * ckk, threads, |first, parts| {
        let mut cols = vec![T::default(); ckk * hw];
        for (j, dw_b) in parts.chunks_mut(cout * ckk).enumerate() {
            let b = first + j;
            im2col(&x[b * cin * h * w..], x_shape, conv, &mut cols);
            let (a, c) = (mat(&dy[b * cout * hw..], hw, 1), mat(&cols, 1, hw));
            T::gemm_raw(cout, hw, ckk, a, c, mat_mut(dw_b, ckk));
        }
    });
    // Each element's sum in sample order, the elements spread over the threads.
    per_sample(dw, 1, threads, |first, dws| {
        dws.fill(T::default());
        for dw_b in partial.chunks(cout * ckk) {
            for (d, &v) in dws.iter_mut().zip(&dw_b[first..]) {
                *d += v;
            }
        }
    });
    db.fill(T::default());
    for dyb in dy.chunks(cout * hw) {
        for (d, row) in db.iter_mut().zip(dyb.chunks(hw)) {
            let mut s = T::default();
            for &v in row {
                s += v;
            }
            *d += s;
        }
    }
    if let Some(dx) = dx {
        per_sample(dx, cin * h * w, threads, |first, dxs| {
            let mut cols = vec![T::default(); ckk * hw];
            for (j, dxb) in dxs.chunks_mut(cin * h * w).enumerate() {
                let (a, c) = (
                    mat(weight, 1, ckk),
                    mat(&dy[(first + j) * cout * hw..], hw, 1),
                );
                T::gemm_raw(ckk, cout, hw, a, c, mat_mut(&mut cols, hw));
                dxb.fill(T::default());
                col2im_add(&cols, x_shape, conv, dxb);
            }
        });
    }
}

fn mat<T>(data: &[T], rs: usize, cs: usize) -> Mat<'_, T> {
    Mat { data, rs, cs }
}

/// A row-major matrix of rows `rs` apart.
fn mat_mut<T>(data: &mut [T], rs: usize) -> MatMut<'_, T> {
    MatMut { data, rs, cs: 1 }
}

/// Each 2x2 window's largest value and its index (in the batch's `[batch, c, h, w]`), as
/// PyTorch's kernel picks it: in row-major order a value replaces the best so far when it is
/// larger or NaN (so the first of equal maxima wins, and the last NaN); each `[batch, c, h /
/// 2, w / 2]`, the samples spread over `threads`.
pub fn maxpool2<T: Real>(
    x: &[T],
    batch: usize,
    ([c, h, w], threads): (Shape, usize),
) -> (Vec<T>, Vec<usize>) {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = vec![T::default(); batch * c * ho * wo];
    let mut at = vec![0usize; batch * c * ho * wo];
    per_sample_pair(
        (&mut y, &mut at),
        c * ho * wo,
        threads,
        |first, (ys, ats)| {
            // Output row i is row i % ho of plane first * c + i / ho.
            let outs = ys.chunks_mut(wo).zip(ats.chunks_mut(wo));
            for (i, (y, at)) in outs.enumerate() {
                let top = (first * c + i / ho) * h * w + 2 * (i % ho) * w;
                let (r0, r1) = (&x[top..top + 2 * wo], &x[top + w..top + w + 2 * wo]);
                let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
                for (xo, ((y, at), (a, b))) in y.iter_mut().zip(at).zip(windows).enumerate() {
                    let i = top + 2 * xo;
                    let (mut best, mut arg) = (a[0], i);
                    // Selects rather than branches: which value wins is data, not predictable.
                    for (v, j) in [(a[1], i + 1), (b[0], i + w), (b[1], i + w + 1)] {
                        let take = (v > best) | is_nan(v);
                        best = if take { v } else { best };
                        arg = if take { j } else { arg };
                    }
                    (*y, *at) = (best, arg);
                }
            }
        },
    );
    (y, at)
}

/// [`maxpool2`]'s backward: `dx` [batch, c, h, w] is `dy` at each window's winner (`at`),
/// zero elsewhere, the samples spread over `threads`.
pub fn maxpool2_backward<T: Real>(
    at: &[usize],
    dy: &[T],
    batch: usize,
    ([c, h, w], threads): (Shape, usize),
) -> Vec<T> {
    let (plane, out) = (c * h * w, c * (h / 2) * (w / 2));
    let mut dx = vec![T::default(); batch * plane];
    per_sample(&mut dx, plane, threads, |first, dxs| {
        let n = dxs.len() / plane;
        let range = first * out..(first + n) * out;
        for (&i, &d) in at[range.clone()].iter().zip(&dy[range]) {
            dxs[i - first * plane] = d;
        }
    });
    dx
}

#[allow(clippy::eq_op)]
fn is_nan<T: Real>(v: T) -> bool {
    v != v
}

/// Which units of a dropout layer (elements, or Dropout2d's channels; `units` in the batch)
/// its draws keep: bit `u % usize::BITS` of word `u / usize::BITS`, the words spread over
/// `threads`.
pub fn dropout_keeps(mask: Mask, p: f32, units: usize, threads: usize) -> Vec<usize> {
    let bits = usize::BITS as usize;
    let mut words = vec![0usize; units.div_ceil(bits)];
    per_sample(&mut words, 1, threads, |first, ws| {
        for (k, word) in ws.iter_mut().enumerate() {
            let start = (first + k) * bits;
            for (b, u) in (start..units.min(start + bits)).enumerate() {
                *word |= (mask.keeps(u as u32, p) as usize) << b;
            }
        }
    });
    words
}

/// Multiplies each element of `x` by its dropout factor: 1/(1-p) where its unit is kept
/// (`keeps` as [`dropout_keeps`] gives it, `plane` elements per unit), 0 where it is dropped.
pub fn dropout_apply<T: Real>(x: &mut [T], keeps: &[usize], p: f32, plane: usize) {
    let (scale, bits) = (T::from_f64((1.0 / (1.0 - p)) as f64), usize::BITS as usize);
    for (u, run) in x.chunks_mut(plane).enumerate() {
        let f = match keeps[u / bits] >> (u % bits) & 1 {
            1 => scale,
            _ => T::default(),
        };
        for v in run {
            *v = *v * f;
        }
    }
}

/// The factor each element of a dropout layer's input is multiplied by ([`dropout_apply`]'s),
/// `n` elements in all.
pub fn dropout_factors<T: Real>(mask: Mask, p: f32, n: usize, plane: usize) -> Vec<T> {
    let mut f = vec![T::from_f64(1.0); n];
    dropout_apply(&mut f, &dropout_keeps(mask, p, n / plane, 1), p, plane);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's rule: the first maximum in row-major order wins a tie, the last NaN wins.
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
        let (y, at) = maxpool2(&x, 1, ([2, 2, 4], 1));
        assert_eq!(at, [1, 2, 13, 10]);
        assert_eq!([y[0], y[1], y[3]], [3.0, 7.0, -1.0]);
        assert!(y[2].is_nan());
    }
}
