//#needs BP, LAYERS, O_STRIDE, SAMPLES, SPLIT, WG, acts, correct, labels, layer, log_probs, log_sum_exp, model, order, step
// Evaluation for the fused schedule, per sample (the twin of evaluate.wgsl): whether the first
// largest logit is the label, and the log-probabilities, at the sample's position in the split.
// CPU twins: `cpu::argmax`, `cpu::log_softmax`. What it uses of its importer is its `//#needs`
// line.

fn evaluate_samples(s0: u32, li: u32) {
    let ly = layer(LAYERS - 1u);
    let c4s = (ly.out + 3u) / 4u;
    for (var t = li; t < SAMPLES; t += WG) {
        let col = s0 + t;
        if (col >= BP || col >= step.valid) {
            break;
        }
        let z4 = ly.y_off / 4u + col * c4s;
        let sample = order[model * O_STRIDE + step.start + col];
        // the sample's verdict and log-probabilities among the model's: [models, split]
        let at = model * SPLIT + sample;
        var best = 0u;
        var m = acts[z4][0];
        for (var c = 1u; c < ly.out; c++) {
            let v = acts[z4 + c / 4u][c % 4u];
            if (v > m) {
                best = c;
                m = v;
            }
        }
        correct[at] = select(0u, 1u, best == labels[sample]) | (best << 8u);
        let lse = log_sum_exp(z4, ly.out);
        for (var c = 0u; c < ly.out; c++) {
            log_probs[at * ly.out + c] = acts[z4 + c / 4u][c % 4u] - lse;
        }
    }
}
