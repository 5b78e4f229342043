// Conv2d with a square K x K kernel, stride 1, no padding, on feature-major activations: every
// tensor is [features, BP], a sample's column each, the features in PyTorch's order (channel,
// row, column), so that Flatten copies nothing and the Linear kernels read a conv's output as
// they read a Linear's.
//
//   params  weight [COUT, CIN, K, K] at W_OFF, bias [COUT] at B_OFF
//   x       X^T [CIN * H * W, BP], the layer's input
//   y       Y^T [COUT * HO * WO, BP], its output (HO = H - K + 1, WO = W - K + 1)
//   dy      dY^T, the gradient of y; dx dX^T, the gradient of x
//   grads   the gradients of the weight and bias, where params holds them
//
// Three entry points: the forward, the input's gradient (a direct convolution with the
// flipped kernel, each input element gathering what it fed, so no two invocations write one
// element) and the weight and bias gradients (one workgroup per weight or bias, its WG lanes
// summing strided parts of the batch and positions, then a tree in workgroup memory: a fixed
// order, no atomics, the same bits every run). Columns past a step's valid samples carry a zero
// gradient, so they add nothing. A set of models: the grid's z is the model, its parameters
// (and gradients) P_STRIDE floats after the one before, its activations one tensor after.
// CPU twins: `cpu::conv::conv2d_forward`, `cpu::conv::conv2d_backward`.

override CIN: u32;
override COUT: u32;
override K: u32;
override H: u32;
override W: u32;
override HO: u32;
override WO: u32;
override BP: u32;
override W_OFF: u32;
override B_OFF: u32;
override WG: u32;
override P_STRIDE: u32 = 0u;

@group(0) @binding(0) var<storage, read> params: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;

var<workgroup> partial: array<f32, WG>;

// One invocation per output element and sample, the sample fastest so that neighbouring
// invocations read neighbouring floats. Grid: (x, y) cover COUT * HO * WO * BP, z the model.
@compute @workgroup_size(WG)
fn conv_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    let total = COUT * HO * WO * BP;
    if (i >= total) {
        return;
    }
    let model = gid.z;
    let p0 = model * P_STRIDE;
    let x0 = model * CIN * H * W * BP;
    let n = i % BP;
    let f = i / BP;
    let co = f / (HO * WO);
    let oy = (f / WO) % HO;
    let ox = f % WO;
    var acc = 0.0;
    for (var ci = 0u; ci < CIN; ci++) {
        for (var ky = 0u; ky < K; ky++) {
            let w_row = p0 + W_OFF + ((co * CIN + ci) * K + ky) * K;
            let x_row = x0 + ((ci * H + oy + ky) * W + ox) * BP + n;
            for (var kx = 0u; kx < K; kx++) {
                acc += params[w_row + kx] * x[x_row + kx * BP];
            }
        }
    }
    y[model * total + i] = acc + params[p0 + B_OFF + co];
}

// dx[ci, iy, ix] = sum over co, ky, kx of w[co, ci, ky, kx] * dy[co, iy - ky, ix - kx], where
// that output exists. Grid: (x, y) cover CIN * H * W * BP, z the model.
@compute @workgroup_size(WG)
fn conv_input_grad(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    let total = CIN * H * W * BP;
    if (i >= total) {
        return;
    }
    let model = gid.z;
    let p0 = model * P_STRIDE;
    let d0 = model * COUT * HO * WO * BP;
    let n = i % BP;
    let f = i / BP;
    let ci = f / (H * W);
    let iy = (f / W) % H;
    let ix = f % W;
    var acc = 0.0;
    for (var co = 0u; co < COUT; co++) {
        for (var ky = 0u; ky < K; ky++) {
            if (iy < ky || iy - ky >= HO) {
                continue;
            }
            for (var kx = 0u; kx < K; kx++) {
                if (ix < kx || ix - kx >= WO) {
                    continue;
                }
                let wv = params[p0 + W_OFF + ((co * CIN + ci) * K + ky) * K + kx];
                acc += wv * dy[d0 + ((co * HO + iy - ky) * WO + ix - kx) * BP + n];
            }
        }
    }
    dx[model * total + i] = acc;
}

// Workgroup g < COUT * CIN * K * K: the gradient of weight g, the sum over samples and output
// positions of dy[co, oy, ox] * x[ci, oy + ky, ox + kx]; the COUT workgroups after it: each
// bias's gradient, the sum of dy over its channel. Grid: (x, y) cover the workgroups, z the
// model. WG is a power of two.
@compute @workgroup_size(WG)
fn conv_weight_grad(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let g = wid.x + wid.y * groups.x;
    let weights = COUT * CIN * K * K;
    if (g >= weights + COUT) {
        return;
    }
    let model = wid.z;
    let x0 = model * CIN * H * W * BP;
    let d0 = model * COUT * HO * WO * BP;
    let terms = HO * WO * BP;
    var acc = 0.0;
    if (g < weights) {
        let kx = g % K;
        let ky = (g / K) % K;
        let ci = (g / (K * K)) % CIN;
        let co = g / (CIN * K * K);
        for (var j = lane; j < terms; j += WG) {
            let n = j % BP;
            let pos = j / BP;
            let oy = pos / WO;
            let ox = pos % WO;
            let xi = ((ci * H + oy + ky) * W + ox + kx) * BP + n;
            acc += dy[d0 + (co * HO * WO + pos) * BP + n] * x[x0 + xi];
        }
    } else {
        let co = g - weights;
        for (var j = lane; j < terms; j += WG) {
            acc += dy[d0 + co * terms + j];
        }
    }
    partial[lane] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[lane] += partial[lane + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        let p0 = model * P_STRIDE;
        if (g < weights) {
            grads[p0 + W_OFF + g] = partial[0];
        } else {
            grads[p0 + B_OFF + g - weights] = partial[0];
        }
    }
}
