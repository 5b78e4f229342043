// Dropout (each element) and Dropout2d (whole channels) while training, on feature-major
// activations [F, BP] (see conv.wgsl): an element is kept and scaled by SCALE = 1/(1-P), or
// zeroed, as its unit's draw says. A unit is an element (PLANE = 1) or a channel of PLANE
// elements; unit u of sample n draws at element n * (F / PLANE) + u, so a mask does not depend
// on the batch's padding or layout and the CPU twin draws the same one.
//
//   x, y    the input and output, X^T and Y^T [F, BP]
//   dy, dx  their gradients
//   keys    [models] the Philox key of each model of a set: its seed
//   step    the step uniform: `run` is the step's index over the whole run
//
// The backward multiplies by the same factors, drawn again rather than stored. A set: the
// grid's z is the model. CPU twin: `cpu::conv::dropout_factors` (`philox::Mask`).
//#import step.wgsl
//#import philox.wgsl

override F: u32;
override PLANE: u32;
override BP: u32;
override P: f32;
override SCALE: f32;
override LAYER: u32;
override WG: u32;

@group(0) @binding(0) var<storage, read> keys: array<vec2<u32>>;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// The factor of element i of model `model`'s [F, BP] tensor.
fn factor(i: u32, model: u32) -> f32 {
    let n = i % BP;
    let unit = (i / BP) / PLANE;
    let e = n * (F / PLANE) + unit;
    return select(0.0, SCALE, keeps(e, LAYER, step.run, keys[model], P));
}

// y = x * factor, forward; the backward binds dy as x and dx as y. Grid: (x, y) cover F * BP,
// z the model.
@compute @workgroup_size(WG)
fn dropout(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let i = gid.x + gid.y * groups.x * WG;
    if (i >= F * BP) {
        return;
    }
    let at = gid.z * F * BP + i;
    y[at] = x[at] * factor(i, gid.z);
}
