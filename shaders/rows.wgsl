// The batch-major copy of a feature-major tensor, for a Linear layer whose input comes from a
// layer that is not a Linear: X [BP, LDX] from X^T [F, BP], the padding columns past F zero;
// the weight gradient reads it as its B operand (linear_backward.wgsl). A set: the grid's z is
// the model, its tensors one after another.

override F: u32;
override LDX: u32;
override BP: u32;
override WG: u32;

@group(0) @binding(0) var<storage, read> xt: array<f32>;
@group(0) @binding(1) var<storage, read_write> xb: array<f32>;

// Grid: (x, y) cover BP * LDX, z the model.
@compute @workgroup_size(WG)
fn rows(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    if (i >= BP * LDX) {
        return;
    }
    let n = i / LDX;
    let f = i % LDX;
    var v = 0.0;
    if (f < F) {
        v = xt[gid.z * F * BP + f * BP + n];
    }
    xb[gid.z * BP * LDX + i] = v;
}
