// SGD with PyTorch's momentum rule (sgd_rule.wgsl) over the flat parameter, gradient and
// momentum buffers, for the layered schedule.
//
// The buffers are read and written as vec4 (they are allocated padded to whole vec4, the
// padding zero in all three, so it stays zero): on llvmpipe every load whose address differs
// per invocation is a loop over the lanes, and a vec4 makes it one loop per four parameters.
// Grid: one invocation per vec4, over a 2-D grid of ROW_GROUPS workgroups per row. A set of
// models is one flat run of COUNT4 vec4, model after model (P_STRIDE4 each), each model with
// its own learning rate and momentum from `hyper`. CPU twin: `cpu::sgd`.
//#import sgd_rule.wgsl

override COUNT4: u32;
override P_STRIDE4: u32;
override WG: u32;
override ROW_GROUPS: u32;

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> momentum: array<vec4<f32>>;
// hyper: [models] (lr, momentum)
@group(0) @binding(3) var<storage, read> hyper: array<vec2<f32>>;

// This invocation's model's learning rate and momentum (sgd_rule.wgsl reads them).
var<private> LR: f32;
var<private> MU: f32;

@compute @workgroup_size(WG)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * ROW_GROUPS * WG + gid.x;
    if (i >= COUNT4) {
        return;
    }
    let h = hyper[i / P_STRIDE4];
    LR = h.x;
    MU = h.y;
    sgd_step(i, grads[i]);
}
