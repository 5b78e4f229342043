// Linear forward, bias and ReLU fused: Z^T = W * H^T + bias, ReLU unless this is the logits
// layer. CPU twin: `cpu::linear_forward` (batch-major there, feature-major here).
//
//   h      H^T [IN, BP]        the layer's input, feature-major (a batch runs along a row)
//   params W [OUT, LDW] at W_OFF, bias [OUT] at B_OFF: the device layout of the parameters
//          (`gpu::layout`), each row padded to LDW floats with zeros
//   z      Z^T [OUT, BP]       the output, feature-major: the next layer's input
//   z_rows Z [BP, LDZ]         the same output batch-major (LDZ a multiple of 4), which the weight
//                              gradient reads as its B operand; rows past OUT are written 0
//
// A workgroup computes ROWS rows by LANES vec4 of columns; grid (ceil(BP / 4 / LANES),
// ceil(OUT / ROWS)). BP is a multiple of 4. Out-of-range rows and columns are computed on
// clamped addresses and never stored, so every access stays in bounds.
//#import tile_common.wgsl
//#import tile_loop.wgsl

override IN: u32;
override OUT: u32;
override BP: u32;
override W_OFF: u32;
override B_OFF: u32;
override RELU: bool;
// Row strides from the host's layouts: LDW >= IN and LDZ >= OUT, both multiples of 4.
override LDW: u32;
override LDZ: u32;
override BP4: u32 = BP / 4u;

@group(0) @binding(0) var<storage, read> params: array<f32>;
@group(0) @binding(1) var<storage, read> h: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> z_rows: array<vec4<f32>>;

// The tile loop's contract (see tile_plain.wgsl); this module has one product, p = 0.
fn depth(p: u32) -> u32 {
    return IN;
}

fn a_rows(p: u32, m0: u32, k: u32) -> vec4<f32> {
    let kc = min(k, IN - 1u);
    var v: vec4<f32>;
    for (var r = 0u; r < ROWS; r++) {
        let m = min(m0 + r, OUT - 1u);
        v[r] = select(0.0, params[W_OFF + m * LDW + kc], m0 + r < OUT && k < IN);
    }
    return v;
}

fn b_row(p: u32, k: u32, col4: u32) -> vec4<f32> {
    return h[min(k, IN - 1u) * BP4 + col4];
}

@compute @workgroup_size(LANES)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m0 = wg.y * ROWS;
    let col4 = wg.x * LANES + li;
    // Lanes past the last column compute on it (all lanes take part in a subgroup loop).
    let t = tile(0u, m0, min(col4, BP4 - 1u), li);
    if (col4 >= BP4 || m0 >= OUT) {
        return;
    }
    var out: array<vec4<f32>, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m < OUT) {
            var v = t.acc[r] + vec4<f32>(params[B_OFF + m]);
            if (RELU) {
                v = select(vec4<f32>(0.0), v, v > vec4<f32>(0.0));
            }
            z[m * BP4 + col4] = v;
            out[r] = v;
        }
    }
    // The tile's four rows at one column are one vec4 of the batch-major copy (m0 + 3 < LDZ).
    for (var j = 0u; j < 4u; j++) {
        let n = col4 * 4u + j;
        z_rows[(n * LDZ + m0) / 4u] = vec4<f32>(out[0][j], out[1][j], out[2][j], out[3][j]);
    }
}
