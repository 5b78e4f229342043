//! Each layer kind's CPU twin, forward and backward: one arm per kind of `model::Layer`.
//! `cpu::forward` and `cpu::loss_and_grad` walk a model's list through these.

use super::Pass;
use super::conv::{conv2d_backward, conv2d_forward, maxpool2, maxpool2_backward};
use super::conv::{dropout_apply, dropout_keeps};
use super::{Real, linear_backward, linear_forward, log_softmax, positive, relu_backward};
use crate::model::{Layer, Shape};

/// One layer's output for a batch of `batch` samples of shape `x_shape` (`p` its tensors;
/// `pass` where its dropout draws and on how many threads it runs), and what its backward
/// pass needs of the forward besides its input and output: MaxPool2d's winners, or which units a drawn dropout keeps.
pub fn forward<T: Real>(
    layer: &Layer,
    p: &[T],
    x: &[T],
    (batch, x_shape): (usize, Shape),
    pass: Pass,
) -> (Vec<T>, Vec<usize>) {
    if *layer == Layer::MaxPool2d {
        return maxpool2(x, batch, (x_shape, pass.threads));
    }
    if let (Some(m), Some((p, plane))) = (pass.mask, drop(layer, x_shape)) {
        // Which units are kept, drawn once here and kept for the backward pass.
        let keeps = dropout_keeps(m, p, x.len() / plane, pass.threads);
        let mut y = x.to_vec();
        dropout_apply(&mut y, &keeps, p, plane);
        return (y, keeps);
    }
    let out: usize = layer.output(x_shape).map_or(0, |s| s.iter().product());
    let y = match *layer {
        Layer::Linear { inp, out } => {
            let (w, b) = p.split_at(out * inp);
            let mut y = vec![T::default(); batch * out];
            linear_forward(x, w, b, &mut y, batch, (inp, out), false);
            y
        }
        Layer::Conv2d(conv) => {
            let (w, b) = p.split_at(conv.weight_len());
            let mut y = vec![T::default(); batch * out];
            conv2d_forward(x, (w, b), &mut y, (x_shape, pass.threads), conv);
            y
        }
        Layer::MaxPool2d => unreachable!("taken above"),
        Layer::Relu => x
            .iter()
            .map(|&v| if positive(v) { v } else { T::default() })
            .collect(),
        // Dropping nothing (evaluating, or p = 0); a drawn dropout is taken above.
        Layer::Dropout(_) | Layer::Dropout2d(_) | Layer::Flatten => x.to_vec(),
        Layer::LogSoftmax => log_softmax(x, x_shape[0]),
    };
    (y, Vec::new())
}

/// A dropout layer's probability and the elements one draw covers (1, or a channel's plane
/// for Dropout2d); None when it drops nothing.
fn drop(layer: &Layer, [_, h, w]: Shape) -> Option<(f32, usize)> {
    match *layer {
        Layer::Dropout(p) if p.get() > 0.0 => Some((p.get(), 1)),
        Layer::Dropout2d(p) if p.get() > 0.0 => Some((p.get(), h * w)),
        _ => None,
    }
}

/// One layer's backward pass: the gradient of its input from `dy`, the gradient of its
/// output (`x` its input of shape `x_shape`, `y` its output, `p` its tensors, `g` their
/// gradients, `pass` and `kept` as [`forward`] gave them); `input` says whether anything below needs the
/// input's gradient (a Linear or Conv2d computes it only then).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    layer: &Layer,
    (p, g): (&[T], &mut [T]),
    (x, y, kept): (&[T], &[T], &[usize]),
    mut dy: Vec<T>,
    (batch, x_shape): (usize, Shape),
    pass: Pass,
    input: bool,
) -> Vec<T> {
    let in_len = batch * x_shape.iter().product::<usize>();
    let mut dx = vec![T::default(); if input { in_len } else { 0 }];
    match *layer {
        Layer::Linear { inp, out } => {
            let (gw, gb) = g.split_at_mut(out * inp);
            let dx_wanted = input.then_some(&mut dx[..]);
            linear_backward(
                &dy,
                x,
                &p[..out * inp],
                gw,
                gb,
                dx_wanted,
                batch,
                (inp, out),
            );
            dx
        }
        Layer::Conv2d(conv) => {
            let (gw, gb) = g.split_at_mut(conv.weight_len());
            let dx_wanted = input.then_some(&mut dx[..]);
            let w = &p[..conv.weight_len()];
            let shape = (x_shape, pass.threads);
            conv2d_backward(&dy, x, w, (gw, gb), dx_wanted, batch, shape, conv);
            dx
        }
        Layer::MaxPool2d => maxpool2_backward(kept, &dy, batch, (x_shape, pass.threads)),
        Layer::Relu => {
            relu_backward(&mut dy, y);
            dy
        }
        Layer::Dropout(_) | Layer::Dropout2d(_) => {
            if let (Some(_), Some((p, plane))) = (pass.mask, drop(layer, x_shape)) {
                dropout_apply(&mut dy, kept, p, plane);
            }
            dy
        }
        Layer::Flatten => dy,
        Layer::LogSoftmax => unreachable!("the loss head takes LogSoftmax's gradient"),
    }
}
