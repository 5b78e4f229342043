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
// `gpu::ops::nll_head::MAX_CLASSES`, held equal by tests/shaders.rs). A set of models has one
// workgroup each (the grid's z): model k's parameters P_STRIDE floats after model k-1's, its
// order O_STRIDE after (0 when shared), its h and grad one whole tensor after, and its loss at
// losses[step.index * MODELS + k].
//#import step.wgsl

override CLASSES: u32;
override IN: u32;
override BP: u32;
override W_OFF: u32;
override B_OFF: u32;
override LDW: u32;
override WG: u32;
override P_STRIDE: u32 = 0u;
override O_STRIDE: u32 = 0u;
override MODELS: u32 = 1u;

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
fn nll_head(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let model = wg.z;
    let p0 = model * P_STRIDE;
    let valid = step.valid;
    let g = -(1.0 / f32(valid));
    let bp4 = BP / 4u;
    let h0 = model * IN * bp4;
    let g0 = model * CLASSES * bp4;
    var sum = 0.0;
    for (var c4 = li; c4 < bp4; c4 += WG) {
        // z[c] = W h + bias for the four columns, summed over k in order like linear_forward
        var z: array<vec4<f32>, MAX_CLASSES>;
        var m = vec4<f32>(-3.4e38);
        for (var c = 0u; c < CLASSES; c++) {
            var acc = vec4<f32>(0.0);
            for (var k = 0u; k < IN; k++) {
                acc += params[p0 + W_OFF + c * LDW + k] * h[h0 + k * bp4 + c4];
            }
            z[c] = acc + vec4<f32>(params[p0 + B_OFF + c]);
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
                label[j] = labels[order[model * O_STRIDE + step.start + col]];
            }
        }
        for (var c = 0u; c < CLASSES; c++) {
            let logp = z[c] - lse;
            let is_label = label == vec4<u32>(c);
            sum -= dot(select(vec4<f32>(0.0), logp, is_label), vec4<f32>(1.0));
            let d = select(vec4<f32>(0.0), vec4<f32>(g), is_label) - exp(logp) * g;
            grad[g0 + c * bp4 + c4] = select(vec4<f32>(0.0), d, ok);
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
        losses[step.index * MODELS + model] = total / f32(valid);
    }
}
