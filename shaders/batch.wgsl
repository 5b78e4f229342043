// Batch assembly: gather the shuffled images of one step from the resident data set and
// normalise them, writing the input both feature-major (x^T: [PIXELS, BP]) for the forward
// product and batch-major (x: [BP, LDX]) for the first weight gradient.
//
// Images are u8, packed four to a u32, each image padded to WORDS words. Columns of the batch
// past `valid` (a last, partial batch) are written as zeros, and so are the batch-major
// copy's padding pixels. Each invocation takes one word (four pixels) of four adjacent
// columns, so that both outputs are written as vec4 (on llvmpipe a store to a per-invocation
// address is a loop over the lanes; one vec4 store does four floats). BP and LDX are
// multiples of 4. Grid: (ceil(WORDS / WG), BP / 4, models): a set of models has one order
// each (O_STRIDE apart; 0 when they share one) and one x^T and x each, model after model.
// CPU twin: `cpu::gather`.
//#import step.wgsl

override PIXELS: u32;
override WORDS: u32;
override BP: u32;
override LDX: u32;
override WG: u32;
override O_STRIDE: u32 = 0u;

@group(0) @binding(0) var<storage, read> images: array<u32>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32, 256>;
@group(0) @binding(3) var<uniform> step: Step;
@group(0) @binding(4) var<storage, read_write> xt: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> xb: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let c4 = gid.y;
    let model = gid.z;
    if (w >= WORDS || c4 * 4u >= BP) {
        return;
    }
    let o = model * O_STRIDE + step.start;
    let xt0 = model * (PIXELS * BP / 4u);
    let xb0 = model * (BP * LDX / 4u);
    // v[q][j]: pixel 4w + j of column 4 * c4 + q
    var v: array<vec4<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
        let col = c4 * 4u + q;
        if (col < step.valid) {
            let word = images[order[o + col] * WORDS + w];
            for (var j = 0u; j < 4u; j++) {
                if (w * 4u + j < PIXELS) {
                    v[q][j] = table[(word >> (8u * j)) & 255u];
                }
            }
        }
        xb[xb0 + (col * LDX) / 4u + w] = v[q];
    }
    for (var j = 0u; j < 4u; j++) {
        let p = w * 4u + j;
        if (p < PIXELS) {
            xt[xt0 + (p * BP) / 4u + c4] = vec4<f32>(v[0][j], v[1][j], v[2][j], v[3][j]);
        }
    }
}
