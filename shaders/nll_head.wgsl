// The logits layer fused with LogSoftmax, NLLLoss (mean over the batch) and the gradient of
// the logits, as autograd computes it: g = -1/valid at the label, dz = g - exp(logp) * g.
// CPU twins: `cpu::linear_forward`, `cpu::log_softmax`, `cpu::nll_loss_grad`.
//
//   params W [CLASSES, LDW] at W_OFF, bias [CLASSES] at B_OFF (device layout, `gpu::layout`)
//   h      H^T [IN, BP]           the last hidden layer's output, feature-major
//   labels [split size]           the split's labels
//   order  [split size]           this epoch's order of the split; step.start indexes it
//   grad   dZ^T [CLASSES, BP]     the logits' gradient, zero in columns past step.valid
//   losses [steps per epoch]      the step's mean loss goes to losses[step.index]
//
// One workgroup of WG invocations; each takes four adjacent columns as one vec4 at a time, so
// every load of H^T and store of the gradient does four samples. The batch is summed in a
// fixed order, so the loss is deterministic. CLASSES <= MAX_CLASSES (host twin
// `gpu::ops::nll_head::MAX_CLASSES`, held equal by tests/shaders.rs).
//#import step.wgsl

override CLASSES: u32;
override IN: u32;
override BP: u32;
override W_OFF: u32;
override B_OFF: u32;
override LDW: u32;
override WG: u32;

const MAX_CLASSES: u32 = 16u;

@group(0) @binding(0) var<storage, read> params: array<f32>;
@group(0) @binding(1) var<storage, read> h: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> order: array<u32>;
@group(0) @binding(4) var<uniform> step: Step;
@group(0) @binding(5) var<storage, read_write> grad: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> losses: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn nll_head(@builtin(local_invocation_index) li: u32) {
    let valid = step.valid;
    let g = -(1.0 / f32(valid));
    let bp4 = BP / 4u;
    var sum = 0.0;
    for (var c4 = li; c4 < bp4; c4 += WG) {
        // z[c] = W h + bias for the four columns, summed over k in order like linear_forward
        var z: array<vec4<f32>, MAX_CLASSES>;
        var m = vec4<f32>(-3.4e38);
        for (var c = 0u; c < CLASSES; c++) {
            var acc = vec4<f32>(0.0);
            for (var k = 0u; k < IN; k++) {
                acc += params[W_OFF + c * LDW + k] * h[k * bp4 + c4];
            }
            z[c] = acc + vec4<f32>(params[B_OFF + c]);
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
            grad[c * bp4 + c4] = select(vec4<f32>(0.0), d, ok);
        }
    }
    // The step's mean loss from every invocation's partial sum, added in a fixed order.
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
