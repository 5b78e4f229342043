//! The linear layer's functions in the fused schedule, checked against the same CPU twins as
//! its layered kernels: `forward_layer` and `input_grad_layer` (shaders/linear_sample.wgsl),
//! and `update_tile` with the optimizer's rule (shaders/linear_update.wgsl,
//! optimizer_rule.wgsl), on the tensors one fused step wrote
//! (`gpu::selftest::fused_step_checks`).

use crate::cpu;
use crate::gpu::check::{Check, FUSED_LR, FUSED_MOMENTUM, FusedCase, FusedOutputs, Tally};
use crate::gpu::check::{
    block, layer_weights, padding_is_zero, sum_tolerance, unpad, wide, wide_abs,
};
use crate::gpu::layout::pad4;
use crate::optim::{self, Hyper, Optimizer};

/// forward_layer l against cpu::linear_forward on the layer's input as the GPU wrote it.
pub fn check_forward(case: &FusedCase, o: &FusedOutputs, l: usize) -> Check {
    let mut t = Tally::new(format!("fused forward {l}"), case.shape());
    let (r, bp) = (o.rows[l], o.bp);
    let (i, out) = case.arch.linear_dims()[l];
    let x = &o.acts[r.x_off as usize..];
    let (xs, xa) = (
        block(x, 0, (bp, r.ldw as usize, i)),
        wide_abs(&unpad(x, bp, r.ldw as usize, i)),
    );
    let [w, b, wa, ba] = layer_weights(case, &case.params, l);
    let relu = l + 1 < case.arch.linear_dims().len();
    let (mut want, mut scale) = (vec![0f64; bp * out], vec![0f64; bp * out]);
    cpu::linear_forward(&xs, &w, &b, &mut want, bp, (i, out), relu);
    cpu::linear_forward(&xa, &wa, &ba, &mut scale, bp, (i, out), false);
    let ld = pad4(out);
    let got = block(&o.acts, r.y_off as usize, (bp, ld, out));
    for k in 0..bp * out {
        let tol = sum_tolerance(i, scale[k]);
        t.close(
            || format!("Y[{},{}]", k / out, k % out),
            got[k],
            want[k],
            tol,
        );
    }
    if !padding_is_zero(&o.acts, r.y_off as usize, (bp, ld, out)) {
        t.fail("Y's padding features are not zero".into());
    }
    t.done()
}

/// input_grad_layer l against cpu::linear_backward and cpu::relu_backward on the GPU's dZ_l
/// and X_l.
pub fn check_input_grad(case: &FusedCase, o: &FusedOutputs, l: usize) -> Check {
    let mut t = Tally::new(format!("fused input grad {l}"), case.shape());
    let (r, below, bp) = (o.rows[l], o.rows[l - 1], o.bp);
    let (i, out) = case.arch.linear_dims()[l];
    let (ld_o, ld_i) = (pad4(out), r.ldw as usize);
    let dy = &o.dz[r.dz_off as usize..];
    let (dys, dya) = (
        block(dy, 0, (bp, ld_o, out)),
        wide_abs(&unpad(dy, bp, ld_o, out)),
    );
    let [w, _, wa, _] = layer_weights(case, &case.params, l);
    let x = block(&o.acts, r.x_off as usize, (bp, ld_i, i));
    let grads = |dy: &[f64], w: &[f64]| {
        let (mut dw, mut db, mut dx) = (vec![0f64; out * i], vec![0f64; out], vec![0f64; bp * i]);
        cpu::linear_backward(dy, &x, w, &mut dw, &mut db, Some(&mut dx), bp, (i, out));
        dx
    };
    let (mut want, scale) = (grads(&dys, &w), grads(&dya, &wa));
    cpu::relu_backward(&mut want, &x);
    let got = block(&o.dz, below.dz_off as usize, (bp, ld_i, i));
    for k in 0..bp * i {
        let tol = sum_tolerance(out, scale[k]);
        t.close(|| format!("dX[{},{}]", k / i, k % i), got[k], want[k], tol);
    }
    if !padding_is_zero(&o.dz, below.dz_off as usize, (bp, ld_i, i)) {
        t.fail("dX's padding features are not zero".into());
    }
    t.done()
}

/// update_tile over layer l against cpu::linear_backward (dW, db over the valid samples) and
/// optim::step (SGD); W's and b's padding stays zero.
pub fn check_update(case: &FusedCase, o: &FusedOutputs, l: usize) -> Check {
    let mut t = Tally::new(format!("fused weight grad+optimizer {l}"), case.shape());
    let (r, valid) = (o.rows[l], case.valid());
    let (i, out) = case.arch.linear_dims()[l];
    let dy = &o.dz[r.dz_off as usize..];
    let x = &o.acts[r.x_off as usize..];
    let (ld_o, ld_i) = (pad4(out), r.ldw as usize);
    let (dys, xs) = (
        block(dy, 0, (valid, ld_o, out)),
        block(x, 0, (valid, ld_i, i)),
    );
    let (dya, xa) = (
        wide_abs(&unpad(dy, valid, ld_o, out)),
        wide_abs(&unpad(x, valid, ld_i, i)),
    );
    let grads = |dy: &[f64], x: &[f64]| {
        let (mut dw, mut db) = (vec![0f64; out * i], vec![0f64; out]);
        cpu::linear_backward(dy, x, &[], &mut dw, &mut db, None, valid, (i, out));
        [dw, db].concat()
    };
    let (g, gs) = (grads(&dys, &xs), grads(&dya, &xa));
    let wo = case.arch.linear_offsets()[l];
    let range = wo..wo + out * (i + 1);
    let (p0, v0) = (
        wide(&case.params[range.clone()]),
        wide(&case.momentum[range]),
    );
    let (mut p, mut v) = (p0.clone(), v0.clone());
    let sgd = Optimizer::Sgd {
        momentum: FUSED_MOMENTUM,
    };
    let h = Hyper {
        lr: FUSED_LR,
        momentum: FUSED_MOMENTUM,
        weight_decay: 0.0,
    };
    let mut unused = Vec::new();
    optim::step(&sgd, &h, [1.0, 1.0], &mut p, &mut v, &mut unused, &g);
    let got_p = case.layout.from_device(&o.params)[wo..wo + out * (i + 1)].to_vec();
    let got_v = case.layout.from_device(&o.momentum)[wo..wo + out * (i + 1)].to_vec();
    let eps = f32::EPSILON as f64;
    for k in 0..g.len() {
        let tg = sum_tolerance(valid, gs[k]);
        let tv = tg + 2.0 * eps * (FUSED_MOMENTUM * v0[k].abs() + g[k].abs());
        let tp = 2.0 * eps * (p0[k].abs() + FUSED_LR * v[k].abs()) + FUSED_LR * tv;
        t.close(|| format!("v[{k}]"), got_v[k] as f64, v[k], tv);
        t.close(|| format!("p[{k}]"), got_p[k] as f64, p[k], tp);
    }
    let lay = case.layout.layers[l];
    let padding = (0..out)
        .flat_map(|o| lay.w_off + o * lay.ldw + i..lay.w_off + (o + 1) * lay.ldw)
        .chain(lay.b_off + out..lay.b_off + pad4(out));
    if padding
        .into_iter()
        .any(|k| o.params[k] != 0.0 || o.momentum[k] != 0.0)
    {
        t.fail("the padding of W or b is no longer zero".into());
    }
    if l == 0 {
        // The step's mean loss, from the per-sample losses in order.
        let s: Vec<f64> = wide(&o.sample_loss[..valid]);
        let want = s.iter().sum::<f64>() / valid as f64;
        let tol = sum_tolerance(valid, s.iter().map(|x| x.abs()).sum::<f64>() / valid as f64);
        t.close(|| "mean loss".into(), o.loss as f64, want, tol);
    }
    t.done()
}
