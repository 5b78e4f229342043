// Conv2d with a square K x K kernel, STRIDE and zero padding PAD along both axes (the recipes'
// are 1 and 0), on feature-major activations: every
// tensor is [features, BP], a sample's column each, the features in PyTorch's order (channel,
// row, column), so that Flatten copies nothing and the Linear kernels read a conv's output as
// they read a Linear's. BP is a multiple of 4 and every invocation takes four adjacent samples
// as one vec4: a quarter of the index arithmetic and weight loads per multiply-add, which on a
// CPU-type adapter (one SIMD lane per invocation) is most of the cost.
//
//   params  weight [COUT, CIN, K, K] at W_OFF, bias [COUT] at B_OFF
//   x       X^T [CIN * H * W, BP], the layer's input
//   y       Y^T [COUT * HO * WO, BP], its output (HO = (H + 2 PAD - K) / STRIDE + 1, WO alike)
//   dy      dY^T, the gradient of y; dx dX^T, the gradient of x
//   grads   the gradients of the weight and bias, where params holds them
//
// Output (oy, ox) reads input (oy * STRIDE + ky - PAD, ox * STRIDE + kx - PAD) through kernel
// tap (ky, kx); taps that land in the padding read zero, so every loop below runs over the taps
// that land inside, in the order a loop over all of them would take.
//
// Three entry points: the forward, the input's gradient (a direct convolution with the
// flipped kernel, each input element gathering what it fed, so no two invocations write one
// element) and the weight and bias gradients (one workgroup per four output channels' weights
// of one tap, or per bias, its WG lanes summing strided parts of the batch and positions, then
// a tree in workgroup memory: a fixed order, no atomics, the same bits every run). Columns past a step's valid samples carry a zero
// gradient, so they add nothing. A set of models: the grid's z is the model, its parameters
// (and gradients) P_STRIDE floats after the one before, its activations one tensor after.
// CPU twins: `cpu::conv::conv2d_forward`, `cpu::conv::conv2d_backward`.

override CIN: u32;
override COUT: u32;
override K: u32;
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;
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
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dx: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;

// Output channels per forward invocation and per weight-gradient workgroup, input channels
// per input-gradient invocation (four accumulators; a vec4 of sums in the weight gradient's
// tree, one channel each).
const CO_TILE: u32 = 4u;

var<workgroup> partial: array<vec4<f32>, WG>;

// One invocation per output position, four samples and CO_TILE output channels (co0 to co0 + 3),
// the samples fastest so that neighbouring invocations read neighbouring vec4: every x read
// serves four channels, and each channel's sum runs in the order of one channel alone.
// Grid: (x, y) cover CO_TILES * HO * WO * BP / 4, z the model.
@compute @workgroup_size(WG)
fn conv_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    let b4 = BP / 4u;
    let plane = HO * WO * b4;
    if (i >= (COUT + CO_TILE - 1u) / CO_TILE * plane) {
        return;
    }
    let model = gid.z;
    let p0 = model * P_STRIDE;
    let x0 = model * CIN * H * W * b4;
    let n4 = i % b4;
    let pos = (i / b4) % (HO * WO);
    let co0 = i / plane * CO_TILE;
    let oy = pos / WO;
    let ox = pos % WO;
    // The window's first input row and column (PAD before the input's first), and the taps
    // inside the input: ky in [ky0, ky1), kx in [kx0, kx1).
    let ry = oy * STRIDE;
    let rx = ox * STRIDE;
    let ky0 = select(0u, PAD - ry, ry < PAD);
    let kx0 = select(0u, PAD - rx, rx < PAD);
    let ky1 = min(K, H + PAD - ry);
    let kx1 = min(K, W + PAD - rx);
    // Each channel's weights, CIN * K * K apart; a channel past COUT reads the last one's and
    // is never written.
    let taps = CIN * K * K;
    let c1 = min(co0 + 1u, COUT - 1u);
    let c2 = min(co0 + 2u, COUT - 1u);
    let c3 = min(co0 + 3u, COUT - 1u);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var ci = 0u; ci < CIN; ci++) {
        for (var ky = ky0; ky < ky1; ky++) {
            let tap = (ci * K + ky) * K;
            let w0 = p0 + W_OFF + co0 * taps + tap;
            let w1 = p0 + W_OFF + c1 * taps + tap;
            let w2 = p0 + W_OFF + c2 * taps + tap;
            let w3 = p0 + W_OFF + c3 * taps + tap;
            var xi = x0 + ((ci * H + ry + ky - PAD) * W + rx + kx0 - PAD) * b4 + n4;
            for (var kx = kx0; kx < kx1; kx++) {
                let xv = x[xi];
                a0 += params[w0 + kx] * xv;
                a1 += params[w1 + kx] * xv;
                a2 += params[w2 + kx] * xv;
                a3 += params[w3 + kx] * xv;
                xi += b4;
            }
        }
    }
    let out = model * COUT * plane + co0 * plane + pos * b4 + n4;
    y[out] = a0 + params[p0 + B_OFF + co0];
    if (co0 + 1u < COUT) {
        y[out + plane] = a1 + params[p0 + B_OFF + c1];
    }
    if (co0 + 2u < COUT) {
        y[out + 2u * plane] = a2 + params[p0 + B_OFF + c2];
    }
    if (co0 + 3u < COUT) {
        y[out + 3u * plane] = a3 + params[p0 + B_OFF + c3];
    }
}

// The first kernel tap through which input position t - PAD (t the position plus PAD) feeds
// an output of an axis of `outs` positions: the smallest tap at least t - (outs - 1) * STRIDE
// whose distance from t STRIDE divides. Past the last tap when none does.
fn first_tap(t: u32, outs: u32) -> u32 {
    let lo = t - min(t, (outs - 1u) * STRIDE);
    return lo + (t - lo) % STRIDE;
}

// dx[ci, iy, ix] = sum over co, ky, kx of w[co, ci, ky, kx] * dy[co, oy, ox] for the outputs
// (oy, ox) that read (iy, ix) through tap (ky, kx); one invocation per input position, four
// samples and CO_TILE input channels (ci0 to ci0 + 3), so that every dy read serves four
// channels, each channel's sum in the order of one channel alone. Grid: (x, y) cover
// CI_TILES * H * W * BP / 4 (CI_TILES = CIN / CO_TILE rounded up), z the model.
@compute @workgroup_size(WG)
fn conv_input_grad(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    let b4 = BP / 4u;
    let plane = H * W * b4;
    if (i >= (CIN + CO_TILE - 1u) / CO_TILE * plane) {
        return;
    }
    let model = gid.z;
    let p0 = model * P_STRIDE;
    let d0 = model * COUT * HO * WO * b4;
    let n4 = i % b4;
    let pos = (i / b4) % (H * W);
    let ci0 = i / plane * CO_TILE;
    let iy = pos / W;
    let ix = pos % W;
    // Tap ky reaches here from output row (iy + PAD - ky) / STRIDE where that divides and the
    // row exists: ky from ky0 to below ky1 in steps of STRIDE; kx alike.
    let ty = iy + PAD;
    let tx = ix + PAD;
    let ky0 = first_tap(ty, HO);
    let kx0 = first_tap(tx, WO);
    let ky1 = min(K, ty + 1u);
    let kx1 = min(K, tx + 1u);
    // The four channels' weights, K * K apart within an output channel's; a channel past CIN
    // reads the last one's and is never written.
    let kk = K * K;
    let s1 = (min(ci0 + 1u, CIN - 1u) - ci0) * kk;
    let s2 = (min(ci0 + 2u, CIN - 1u) - ci0) * kk;
    let s3 = (min(ci0 + 3u, CIN - 1u) - ci0) * kk;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var co = 0u; co < COUT; co++) {
        for (var ky = ky0; ky < ky1; ky += STRIDE) {
            let w0 = p0 + W_OFF + ((co * CIN + ci0) * K + ky) * K;
            let oy = (ty - ky) / STRIDE;
            var di = d0 + ((co * HO + oy) * WO + (tx - kx0) / STRIDE) * b4 + n4;
            for (var kx = kx0; kx < kx1; kx += STRIDE) {
                let d = dy[di];
                a0 += params[w0 + kx] * d;
                a1 += params[w0 + s1 + kx] * d;
                a2 += params[w0 + s2 + kx] * d;
                a3 += params[w0 + s3 + kx] * d;
                di -= b4;
            }
        }
    }
    let out = model * CIN * plane + ci0 * plane + pos * b4 + n4;
    dx[out] = a0;
    if (ci0 + 1u < CIN) {
        dx[out + plane] = a1;
    }
    if (ci0 + 2u < CIN) {
        dx[out + 2u * plane] = a2;
    }
    if (ci0 + 3u < CIN) {
        dx[out + 3u * plane] = a3;
    }
}

// Workgroup g < CO_TILES * CIN * K * K (CO_TILES = COUT / CO_TILE rounded up): the gradients
// of the CO_TILE weights of tap (ci, ky, kx) of output channels co0 to co0 + 3, each the sum
// over samples and output positions of dy[co, oy, ox] * x[ci, oy * STRIDE + ky - PAD,
// ox * STRIDE + kx - PAD] (zero in the padding): every x read serves four channels, its index
// worked out once. The COUT workgroups after them: each bias's gradient, the sum of dy over
// its channel. Each lane sums every WG-th vec4 of the terms per channel, then the lanes' sums
// meet in a tree, one component per channel: per weight the same order of additions as one
// workgroup per weight. Grid: (x, y) cover the workgroups, z the model. WG is a power of two.
@compute @workgroup_size(WG)
fn conv_weight_grad(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let g = wid.x + wid.y * groups.x;
    let taps = CIN * K * K;
    let tiled = (COUT + CO_TILE - 1u) / CO_TILE * taps;
    if (g >= tiled + COUT) {
        return;
    }
    let model = wid.z;
    let b4 = BP / 4u;
    let x0 = model * CIN * H * W * b4;
    let d0 = model * COUT * HO * WO * b4;
    let terms = HO * WO * b4;
    var sums = vec4<f32>(0.0);
    if (g < tiled) {
        let tap = g % taps;
        let co0 = g / taps * CO_TILE;
        let kx = tap % K;
        let ky = (tap / K) % K;
        let ci = tap / (K * K);
        // The four channels' rows of dy; a channel past COUT reads the last one's and is
        // never written.
        let r0 = d0 + co0 * terms;
        let r1 = d0 + min(co0 + 1u, COUT - 1u) * terms;
        let r2 = d0 + min(co0 + 2u, COUT - 1u) * terms;
        let r3 = d0 + min(co0 + 3u, COUT - 1u) * terms;
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var j = lane; j < terms; j += WG) {
            let n4 = j % b4;
            let pos = j / b4;
            let oy = pos / WO;
            let ox = pos % WO;
            // The input these outputs read through the tap, if it is not padding.
            let sy = oy * STRIDE + ky;
            let sx = ox * STRIDE + kx;
            if (sy >= PAD && sx >= PAD && sy - PAD < H && sx - PAD < W) {
                let xv = x[x0 + ((ci * H + sy - PAD) * W + sx - PAD) * b4 + n4];
                a0 += dy[r0 + j] * xv;
                a1 += dy[r1 + j] * xv;
                a2 += dy[r2 + j] * xv;
                a3 += dy[r3 + j] * xv;
            }
        }
        sums = vec4<f32>(
            (a0.x + a0.y) + (a0.z + a0.w),
            (a1.x + a1.y) + (a1.z + a1.w),
            (a2.x + a2.y) + (a2.z + a2.w),
            (a3.x + a3.y) + (a3.z + a3.w),
        );
    } else {
        let co = g - tiled;
        var acc = vec4<f32>(0.0);
        for (var j = lane; j < terms; j += WG) {
            acc += dy[d0 + co * terms + j];
        }
        sums.x = (acc.x + acc.y) + (acc.z + acc.w);
    }
    partial[lane] = sums;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[lane] += partial[lane + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        let p0 = model * P_STRIDE;
        if (g < tiled) {
            let tap = g % taps;
            let co0 = g / taps * CO_TILE;
            for (var t = 0u; t < CO_TILE; t++) {
                if (co0 + t < COUT) {
                    grads[p0 + W_OFF + (co0 + t) * taps + tap] = partial[0][t];
                }
            }
        } else {
            grads[p0 + B_OFF + g - tiled] = partial[0].x;
        }
    }
}
