// Evaluation of one batch of the test split: for each sample, whether the first largest logit
// is its label (the tutorial's probab.index(max(probab))), and its log-probabilities.
// CPU twins: `cpu::argmax`, `cpu::log_softmax`.
//
//   logits    Z^T [CLASSES, BP]       the logits layer's output, feature-major
//   labels    [split size]
//   order     [split size]             step.start indexes it
//   correct   [split size]             is_correct | predicted << 8, at the sample's position
//   log_probs [split size, CLASSES]    at the sample's position (its loss is -logp[label])
//
// One invocation per column; grid (ceil(BP / WG), 1, models): a set of models has its logits
// one whole tensor after the one before, and its verdicts SPLIT samples after (the order is
// shared).
//#import step.wgsl

override CLASSES: u32;
override BP: u32;
override WG: u32;
override SPLIT: u32 = 0u;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<uniform> step: Step;
@group(0) @binding(4) var<storage, read_write> correct: array<u32>;
@group(0) @binding(5) var<storage, read_write> log_probs: array<f32>;

@compute @workgroup_size(WG)
fn evaluate(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= step.valid || b >= BP) {
        return;
    }
    let z0 = gid.z * CLASSES * BP;
    let sample = order[step.start + b];
    let at = gid.z * SPLIT + sample;
    let label = labels[sample];
    var best = 0u;
    var m = logits[z0 + b];
    for (var c = 1u; c < CLASSES; c++) {
        let v = logits[z0 + c * BP + b];
        if (v > m) {
            best = c;
            m = v;
        }
    }
    correct[at] = select(0u, 1u, best == label) | (best << 8u);
    // log(sum(exp(z))), shifted by the max as PyTorch does
    var s = 0.0;
    for (var c = 0u; c < CLASSES; c++) {
        s += exp(logits[z0 + c * BP + b] - m);
    }
    let lse = m + log(s);
    for (var c = 0u; c < CLASSES; c++) {
        log_probs[at * CLASSES + c] = logits[z0 + c * BP + b] - lse;
    }
}
