//#needs BP, LAYERS, O_STRIDE, SAMPLES, WG, acts, dz, labels, layer, model, order, sample_loss, step
// LogSoftmax and NLLLoss for the fused schedule, per sample (the twin of the loss half of
// nll_head.wgsl): each sample's loss -logp[label] into sample_loss (its mean over the batch is
// taken by fused_update.wgsl), and the gradient of the logits as autograd computes it for the
// batch's mean: g = -1/valid at the label, dz = g - exp(logp) * g. Samples past step.valid get
// loss 0 and gradient 0. CPU twins: `cpu::log_softmax`, `cpu::nll_loss_grad`. What it uses of
// its importer is its `//#needs` line.

// log(sum(exp(z))) of the logits row at vec4 index z4 (`out` of them), shifted by the max as
// PyTorch does, summed in class order.
fn log_sum_exp(z4: u32, out: u32) -> f32 {
    var m = -3.4e38;
    for (var c = 0u; c < out; c++) {
        m = max(m, acts[z4 + c / 4u][c % 4u]);
    }
    var e = 0.0;
    for (var c = 0u; c < out; c++) {
        e += exp(acts[z4 + c / 4u][c % 4u] - m);
    }
    return m + log(e);
}

fn nll_samples(s0: u32, li: u32) {
    let ly = layer(LAYERS - 1u);
    let c4s = (ly.out + 3u) / 4u;
    let g = -(1.0 / f32(step.valid));
    for (var t = li; t < SAMPLES; t += WG) {
        let col = s0 + t;
        if (col >= BP) {
            break;
        }
        let z4 = ly.y_off / 4u + col * c4s;
        let ok = col < step.valid;
        var label = ly.out;
        if (ok) {
            label = labels[order[model * O_STRIDE + step.start + col]];
        }
        let lse = log_sum_exp(z4, ly.out);
        var loss = 0.0;
        for (var c4 = 0u; c4 < c4s; c4++) {
            let logp = acts[z4 + c4] - vec4<f32>(lse);
            let c = vec4<u32>(c4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
            let is_label = (c == vec4<u32>(label)) & vec4<bool>(ok);
            loss -= dot(select(vec4<f32>(0.0), logp, is_label), vec4<f32>(1.0));
            let d = select(vec4<f32>(0.0), vec4<f32>(g), is_label) - exp(logp) * g;
            dz[ly.dz_off / 4u + col * c4s + c4] = select(vec4<f32>(0.0), d, (c < vec4<u32>(ly.out)) & vec4<bool>(ok));
        }
        sample_loss[model * BP + col] = loss;
    }
}
