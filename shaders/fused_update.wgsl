// The fused schedule's second dispatch: per parameter, what sums over the batch.
//
//   loss.backward() (weights)   update_tile     dW, db summed over the valid samples
//   optimizer.step()            (optimizer_step) params, optimizer state
//   (the step's mean loss)                      losses[step.index]
//
// One invocation per tile of 8 rows of W by two vec4 of columns, every layer's tiles in one
// flat range (`Layer.tile0`); invocation 0 also sums the per-sample losses in order. A set of
// models trained side by side is the grid's z, each with its own hyper-parameters.
// Grid: a 2-D grid of ROW_GROUPS workgroups per row over ceil(TILES / WG), by models.
//#import step.wgsl
//#import layer_table.wgsl
//#import optimizer_rule.wgsl
//#import sample_plain.wgsl if kernels = plain|wide
//#import sample_subgroup.wgsl if kernels = subgroup
//#import linear_update.wgsl

override LAYERS: u32;
override BP: u32;
override TILES: u32;
override WG: u32;
override ROW_GROUPS: u32;
// Floats between consecutive models' tensors (`layer_table.wgsl`) and the models in the set.
override P_STRIDE: u32;
override A_STRIDE: u32;
override D_STRIDE: u32;
override MODELS: u32;

// The invocation's model's (lr, momentum, weight decay, 0), from `hyper`, for the optimizer's
// rule (optimizer_rule.wgsl).
var<private> H: vec4<f32>;

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> state_a: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> layers: array<Layer, MAX_LAYERS>;
@group(0) @binding(3) var<uniform> step: Step;
@group(0) @binding(4) var<storage, read> acts: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> dz: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> sample_loss: array<f32>;
// losses: [steps per epoch, models], step-major, so that a range of steps reads back at once
@group(0) @binding(7) var<storage, read_write> losses: array<f32>;
// hyper: [models] (lr, momentum, weight decay, 0) as f32
@group(0) @binding(8) var<storage, read> hyper: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> state_b: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn update(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    model = gid.z;
    H = hyper[model];
    let t = gid.y * ROW_GROUPS * WG + gid.x;
    if (t == 0u) {
        var total = 0.0;
        for (var c = 0u; c < step.valid; c++) {
            total += sample_loss[model * BP + c];
        }
        losses[step.index * MODELS + model] = total / f32(step.valid);
    }
    if (t >= TILES) {
        return;
    }
    var l = 0u;
    while (l + 1u < LAYERS && t >= layers[l + 1u].tile0) {
        l++;
    }
    update_tile(layer(l), t - layers[l].tile0, li);
}
