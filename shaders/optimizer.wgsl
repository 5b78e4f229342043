// The optimizer's step (optimizer_rule.wgsl) over the flat parameter, gradient and state
// buffers, for the layered schedule.
//
// The buffers are read and written as vec4 (they are allocated padded to whole vec4, the
// padding zero in all of them, so it stays zero): on llvmpipe every load whose address differs
// per invocation is a loop over the lanes, and a vec4 makes it one loop per four parameters.
// Grid: one invocation per vec4, over a 2-D grid of ROW_GROUPS workgroups per row. A set of
// models is one flat run of COUNT4 vec4, model after model (P_STRIDE floats each), each model with
// its own hyper-parameters from `hyper`. CPU twin: `optim::step`.
//#import step.wgsl
//#import optimizer_rule.wgsl

override COUNT4: u32;
override P_STRIDE: u32;
override WG: u32;
override ROW_GROUPS: u32;

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> state_a: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> state_b: array<vec4<f32>>;
// hyper: [models] (lr, momentum, weight decay, 0)
@group(0) @binding(4) var<storage, read> hyper: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> step: Step;

// This invocation's model's hyper-parameters (optimizer_rule.wgsl reads them).
var<private> H: vec4<f32>;

@compute @workgroup_size(WG)
fn optimizer_step_all(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * ROW_GROUPS * WG + gid.x;
    if (i >= COUNT4) {
        return;
    }
    H = hyper[i / (P_STRIDE / 4u)];
    optimizer_step(i, grads[i]);
}
