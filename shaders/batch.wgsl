// Batch assembly: gather the shuffled images of one step from the resident data set and
// normalise them, writing the input both feature-major (x^T: [PIXELS, BP]) for the forward
// product and batch-major (x: [BP, LDX]) for the first weight gradient.
//
// Images are u8, packed four to a u32, each image padded to WORDS words. Columns of the batch
// past `valid` (a last, partial batch) are written as zeros. Grid: (WORDS, BP).

override PIXELS: u32;
override WORDS: u32;
override BP: u32;
override LDX: u32;
override WG: u32 = 64u;

struct Step {
    start: u32,
    valid: u32,
    index: u32,
    pad: u32,
}

@group(0) @binding(0) var<storage, read> images: array<u32>;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32, 256>;
@group(0) @binding(3) var<storage, read_write> xt: array<f32>;
@group(0) @binding(4) var<storage, read_write> xb: array<f32>;
@group(0) @binding(5) var<uniform> step: Step;

@compute @workgroup_size(WG)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let col = gid.y;
    if (w >= WORDS || col >= BP) {
        return;
    }
    var word = 0u;
    if (col < step.valid) {
        word = images[order[step.start + col] * WORDS + w];
    }
    for (var j = 0u; j < 4u; j++) {
        let p = w * 4u + j;
        if (p < PIXELS) {
            let v = select(0.0, table[(word >> (8u * j)) & 255u], col < step.valid);
            xt[p * BP + col] = v;
            xb[col * LDX + p] = v;
        }
    }
}
