// LogSoftmax + NLLLoss over the logits of one batch, and what follows from them.
//
// Logits are feature-major: z^T [CLASSES, BP], column b is sample b of the step.
//   nll_forward_backward: the step's mean loss into losses[step.index] and the gradient with
//     respect to the logits into grad^T [CLASSES, BP] (zero in columns past `valid`), in
//     autograd's form: g = -1/valid at the label, dz = g - exp(logp) * g.
//     One workgroup; the batch is summed in a fixed order, so the loss is deterministic.
//   nll_head: the same, fused with the last Linear layer that makes the logits: it reads the
//     layer's input H^T [HEAD_K, BP] and its weight and bias from the flat parameters, so a
//     training step needs no separate dispatch for the last forward product.
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

// nll_head's inputs: the flat parameters (weight [CLASSES, HEAD_K] at W_OFF, bias at B_OFF)
// and the last layer's input H^T [HEAD_K, BP].
override HEAD_K: u32 = 1u;
override W_OFF: u32 = 0u;
override B_OFF: u32 = 0u;
@group(0) @binding(8) var<storage, read> head_params: array<f32>;
@group(0) @binding(9) var<storage, read> head_h: array<vec4<f32>>;
// nll_head's output: the logits' gradient dZ^T [CLASSES, BP], as vec4 of four columns.
@group(0) @binding(10) var<storage, read_write> head_grad: array<vec4<f32>>;

// The most classes nll_head keeps logits for, per invocation.
const MAX_CLASSES: u32 = 16u;

var<workgroup> partial: array<f32, WG>;

// The step's mean loss from every invocation's partial sum, added in a fixed order so that the
// loss is deterministic. Called by every invocation, in uniform control flow.
fn store_mean_loss(li: u32, sum: f32, valid: u32) {
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
    store_mean_loss(li, sum, valid);
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

// Each invocation takes four adjacent columns as one vec4, so that every load of H^T and every
// store of the gradient does four samples (on llvmpipe each is a loop over the lanes).
@compute @workgroup_size(WG)
fn nll_head(@builtin(local_invocation_index) li: u32) {
    let valid = step.valid;
    let g = -(1.0 / f32(valid));
    var sum = 0.0;
    for (var c4 = li; c4 < BP / 4u; c4 += WG) {
        // z[c] = W h + bias for the four columns, summed over k in order like the forward product
        var z: array<vec4<f32>, MAX_CLASSES>;
        var m = vec4<f32>(-3.4e38);
        for (var c = 0u; c < CLASSES; c++) {
            var acc = vec4<f32>(0.0);
            for (var k = 0u; k < HEAD_K; k++) {
                acc += head_params[W_OFF + c * HEAD_K + k] * head_h[k * BP / 4u + c4];
            }
            z[c] = acc + vec4<f32>(head_params[B_OFF + c]);
            m = max(m, z[c]);
        }
        var e = vec4<f32>(0.0);
        for (var c = 0u; c < CLASSES; c++) {
            e += exp(z[c] - m);
        }
        let lse = m + log(e);
        // Columns past `valid` (a last, partial batch) get no loss and zero gradient.
        var ok = vec4<bool>(false);
        var label = vec4<u32>(CLASSES);
        for (var j = 0u; j < 4u; j++) {
            let col = c4 * 4u + j;
            if (col < valid) {
                ok[j] = true;
                label[j] = labels[order[step.start + col]];
            }
        }
        for (var c = 0u; c < CLASSES; c++) {
            let logp = z[c] - lse;
            let is_label = label == vec4<u32>(c);
            sum -= dot(select(vec4<f32>(0.0), logp, is_label), vec4<f32>(1.0));
            let d = select(vec4<f32>(0.0), vec4<f32>(g), is_label) - exp(logp) * g;
            head_grad[c * BP / 4u + c4] = select(vec4<f32>(0.0), d, ok);
        }
    }
    store_mean_loss(li, sum, valid);
}
