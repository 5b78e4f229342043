// The fused schedule's first dispatch: everything in a training step that is independent per
// sample, for SAMPLES samples per workgroup (the step's batch columns s0 .. s0 + SAMPLES):
//
//   images, labels = batch            gather_samples          X
//   output = model(images)            forward_layer 0 .. L-1  Y_l (bias, ReLU)
//   loss = criterion(output, labels)  nll_samples             per-sample loss, dZ_{L-1}
//   loss.backward() (activations)     input_grad_layer L-1..1 dZ_{l-1} (ReLU mask)
//
// The weight gradients sum over the batch and are left to fused_update.wgsl. Entry
// `eval_sample` is the forward half and the evaluation. Invocations share a layer's output
// through storage (the rows the weight gradient needs anyway) and a storageBarrier, so
// workgroup memory is not used and any layer width fits. A set of models trained side by side
// is the grid's z, one model per layer of workgroups (`layer_table.wgsl`); each has its own
// order of the split. Grid: (ceil(BP / SAMPLES), 1, models).
//#import step.wgsl
//#import layer_table.wgsl
//#import gather_sample.wgsl
//#import sample_plain.wgsl if kernels = plain|wide
//#import sample_subgroup.wgsl if kernels = subgroup
//#import linear_sample.wgsl
//#import nll_sample.wgsl
//#import evaluate_sample.wgsl

// BP: the batch's columns, a multiple of 4; SAMPLES: the samples of one workgroup, any from 1
// (`gpu::plan::PerSample`, which auto measures); WG: its invocations, a multiple of 8 (the
// subgroup flavour shares rows among 8 neighbouring lanes)
override BP: u32;
override SAMPLES: u32;
override WG: u32;
override LAYERS: u32;
override PIXELS: u32;
override WORDS: u32;
// Floats between consecutive models' params, acts and dz rows (`layer_table.wgsl`), and u32
// between their orders (the split's length in training; 0 in evaluation, where every model
// reads the same identity order). SPLIT: the evaluated split's length.
override P_STRIDE: u32;
override A_STRIDE: u32;
override D_STRIDE: u32;
override O_STRIDE: u32;
override SPLIT: u32;

// params: [models, P_STRIDE], each model's flat parameters in the device layout (`gpu::layout`)
@group(0) @binding(0) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(1) var<uniform> layers: array<Layer, MAX_LAYERS>;
// images: [split, WORDS] u8 x4; order: [models, O_STRIDE]; labels: [split]
@group(0) @binding(2) var<storage, read> images: array<u32>;
@group(0) @binding(3) var<storage, read> order: array<u32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
// table: the 256 normalised pixel values, four to a vec4
@group(0) @binding(5) var<uniform> table: array<vec4<f32>, 64>;
@group(0) @binding(6) var<uniform> step: Step;
// acts: [models, A_STRIDE], every layer's input and output rows; dz: [models, D_STRIDE], every
// layer's output gradient rows
@group(0) @binding(7) var<storage, read_write> acts: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dz: array<vec4<f32>>;
// sample_loss: [models, BP]
@group(0) @binding(9) var<storage, read_write> sample_loss: array<f32>;
// correct: [models, split] is_correct | predicted << 8; log_probs: [models, split, classes]
// (eval_sample)
@group(0) @binding(10) var<storage, read_write> correct: array<u32>;
@group(0) @binding(11) var<storage, read_write> log_probs: array<f32>;

// images = batch; output = model(images): the samples s0 .. s0 + SAMPLES through every
// layer, each layer's rows visible to the whole workgroup before the next reads them.
fn forward_samples(s0: u32, li: u32) {
    gather_samples(s0, li);
    storageBarrier();
    for (var l = 0u; l < LAYERS; l++) {
        forward_layer(l, s0, li);
        storageBarrier();
    }
}

@compute @workgroup_size(WG)
fn train_sample(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    model = wg.z;
    let s0 = wg.x * SAMPLES;
    forward_samples(s0, li);
    nll_samples(s0, li);
    storageBarrier();
    for (var l = LAYERS - 1u; l > 0u; l--) {
        input_grad_layer(l, s0, li);
        storageBarrier();
    }
}

@compute @workgroup_size(WG)
fn eval_sample(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    model = wg.z;
    let s0 = wg.x * SAMPLES;
    forward_samples(s0, li);
    evaluate_samples(s0, li);
}
