// LogSoftmax + NLLLoss over the logits of one batch, and what follows from them.
//
// Logits are feature-major: z^T [CLASSES, BP], column b is sample b of the step.
//   nll_forward_backward: the step's mean loss into losses[step.index] and the gradient with
//     respect to the logits into grad^T [CLASSES, BP] (zero in columns past `valid`), in
//     autograd's form: g = -1/valid at the label, dz = g - exp(logp) * g.
//     One workgroup; the batch is summed in a fixed order, so the loss is deterministic.
//   evaluate: for each sample, whether the first largest logit is the label, and its
//     log-probabilities, into correct[] and log_probs [N, CLASSES] at the sample's position in
//     the data set (its loss is -log_probs[label]).

override CLASSES: u32;
override BP: u32;
override WG: u32 = 64u;

struct Step {
    start: u32,
    valid: u32,
    index: u32,
    pad: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<uniform> step: Step;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;
@group(0) @binding(5) var<storage, read_write> losses: array<f32>;
@group(0) @binding(6) var<storage, read_write> correct: array<u32>;
@group(0) @binding(7) var<storage, read_write> log_probs: array<f32>;

var<workgroup> partial: array<f32, WG>;

// log(sum(exp(z))) of column b, shifted by the max as PyTorch does.
fn logsumexp(b: u32) -> f32 {
    var m = logits[b];
    for (var c = 1u; c < CLASSES; c++) {
        m = max(m, logits[c * BP + b]);
    }
    var s = 0.0;
    for (var c = 0u; c < CLASSES; c++) {
        s += exp(logits[c * BP + b] - m);
    }
    return m + log(s);
}

@compute @workgroup_size(WG)
fn nll_forward_backward(@builtin(local_invocation_index) li: u32) {
    let valid = step.valid;
    let g = -(1.0 / f32(valid));
    var sum = 0.0;
    for (var b = li; b < BP; b += WG) {
        if (b < valid) {
            let label = labels[order[step.start + b]];
            let lse = logsumexp(b);
            for (var c = 0u; c < CLASSES; c++) {
                let logp = logits[c * BP + b] - lse;
                if (c == label) {
                    sum -= logp;
                }
                grad[c * BP + b] = select(0.0, g, c == label) - exp(logp) * g;
            }
        } else {
            for (var c = 0u; c < CLASSES; c++) {
                grad[c * BP + b] = 0.0;
            }
        }
    }
    partial[li] = sum;
    workgroupBarrier();
    if (li == 0u) {
        var total = 0.0;
        for (var i = 0u; i < WG; i++) {
            total += partial[i];
        }
        losses[step.index] = total / f32(valid);
    }
}

@compute @workgroup_size(WG)
fn evaluate(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if (b >= step.valid) {
        return;
    }
    let sample = order[step.start + b];
    let label = labels[sample];
    var best = 0u;
    for (var c = 1u; c < CLASSES; c++) {
        if (logits[c * BP + b] > logits[best * BP + b]) {
            best = c;
        }
    }
    correct[sample] = select(0u, 1u, best == label) | (best << 8u);
    let lse = logsumexp(b);
    for (var c = 0u; c < CLASSES; c++) {
        log_probs[sample * CLASSES + c] = logits[c * BP + b] - lse;
    }
}
