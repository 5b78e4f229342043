// SGD with PyTorch's momentum rule (sgd_rule.wgsl) over the flat parameter, gradient and
// momentum buffers, for the layered schedule.
//
// The buffers are read and written as vec4 (they are allocated padded to whole vec4, the
// padding zero in all three, so it stays zero): on llvmpipe every load whose address differs
// per invocation is a loop over the lanes, and a vec4 makes it one loop per four parameters.
// Grid: one invocation per vec4, over a 2-D grid of ROW_GROUPS workgroups per row.
// CPU twin: `cpu::sgd`.
//#import sgd_rule.wgsl

override COUNT4: u32;
override LR: f32;
override MU: f32;
override WG: u32;
override ROW_GROUPS: u32;

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> momentum: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * ROW_GROUPS * WG + gid.x;
    if (i >= COUNT4) {
        return;
    }
    sgd_step(i, grads[i]);
}
