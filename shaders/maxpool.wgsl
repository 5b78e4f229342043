// MaxPool2d with 2x2 windows and stride 2 (an odd last row or column dropped) on feature-major
// activations [C * H * W, BP] (see conv.wgsl), as `F.max_pool2d(x, 2)`.
//
//   x    X^T [C * H * W, BP], the input
//   y    Y^T [C * HO * WO, BP], each window's largest value (HO = H / 2, WO = W / 2)
//   arg  [C * HO * WO, BP] u32, the input feature each window took its value from
//   dy   dY^T, the gradient of y; dx dX^T, the gradient of x
//
// The forward keeps PyTorch's rule: in row-major order a value replaces the best so far when it
// is larger or NaN, so the first of equal maxima wins. The backward is a gather, each input
// element taking its window's gradient when it was the one picked: no two invocations write
// one element. A set of models: the grid's z is the model, its tensors one after another.
// CPU twin: `cpu::conv::maxpool2_argmax`, and `cpu::layers::backward`'s MaxPool2d arm.

override C: u32;
override H: u32;
override W: u32;
override HO: u32;
override WO: u32;
override BP: u32;
override WG: u32;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> arg: array<u32>;
@group(0) @binding(3) var<storage, read> kept: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

// NaN by its bits: a compiler may fold `v != v` away.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Grid: (x, y) cover C * HO * WO * BP, z the model.
@compute @workgroup_size(WG)
fn pool_forward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    let total = C * HO * WO * BP;
    if (i >= total) {
        return;
    }
    let x0 = gid.z * C * H * W * BP;
    let n = i % BP;
    let f = i / BP;
    let c = f / (HO * WO);
    let oy = (f / WO) % HO;
    let ox = f % WO;
    let top = (c * H + 2u * oy) * W + 2u * ox;
    var at = top;
    var best = x[x0 + top * BP + n];
    for (var q = 1u; q < 4u; q++) {
        let j = top + (q / 2u) * W + q % 2u;
        let v = x[x0 + j * BP + n];
        if (v > best || is_nan(v)) {
            best = v;
            at = j;
        }
    }
    y[gid.z * total + i] = best;
    arg[gid.z * total + i] = at;
}

// Grid: (x, y) cover C * H * W * BP, z the model.
@compute @workgroup_size(WG)
fn pool_backward(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    let total = C * H * W * BP;
    if (i >= total) {
        return;
    }
    let out0 = gid.z * C * HO * WO * BP;
    let n = i % BP;
    let f = i / BP;
    let c = f / (H * W);
    let oy = ((f / W) % H) / 2u;
    let ox = (f % W) / 2u;
    var d = 0.0;
    if (oy < HO && ox < WO) {
        let o = out0 + ((c * HO + oy) * WO + ox) * BP + n;
        if (kept[o] == f) {
            d = dy[o];
        }
    }
    dx[gid.z * total + i] = d;
}
