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
// A workgroup of LANES x ROW_GROUPS invocations computes ROW_GROUPS x ROWS rows by LANES vec4
// of columns; grid (ceil(BP / 4 / LANES), ceil(OUT / (ROWS ROW_GROUPS))). BP is a multiple of 4. Out-of-range rows and columns are computed on
// clamped addresses and never stored, so every access stays in bounds. A set of models runs
// along the grid's z: model k's parameters are P_STRIDE floats after model k-1's, and its h, z
// and z_rows one whole tensor after.
//#import tile_common.wgsl
//#import tile_plain.wgsl if kernels = plain
//#import tile_subgroup.wgsl if kernels = subgroup
//#import tile_shared.wgsl if kernels = wide

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
override P_STRIDE: u32 = 0u;

// This invocation's model (the grid's z), and where its tensors start.
var<private> model: u32;
var<private> p0: u32;
var<private> h0: u32;

// The flat parameters as vec4 (every tensor starts at a multiple of 4 floats, rows of W too).
@group(0) @binding(0) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> h: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> z: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> z_rows: array<vec4<f32>>;

// The tile loop's contract (see tile_common.wgsl); this module has one product, p = 0.
fn depth(p: u32) -> u32 {
    return IN;
}

fn a_rows(p: u32, m0: u32, k: u32) -> vec4<f32> {
    let kc = min(k, IN - 1u);
    var v: vec4<f32>;
    for (var r = 0u; r < ROWS; r++) {
        let i = p0 + W_OFF + min(m0 + r, OUT - 1u) * LDW + kc;
        v[r] = select(0.0, params[i / 4u][i % 4u], m0 + r < OUT && k < IN);
    }
    return v;
}

// W[m, k0 .. k0 + 4] (row clamped, zero past OUT): one vec4, inside the row's padding.
fn w_row(m: u32, k0: u32) -> vec4<f32> {
    let row = params[(p0 + W_OFF + min(m, OUT - 1u) * LDW + k0) / 4u];
    return select(vec4<f32>(0.0), row, m < OUT);
}

// Column j = A[m0 .. m0 + ROWS, k0 + j] (k0 a multiple of 4), zero outside: four vec4 loads
// along the rows of W, transposed.
fn a_block(p: u32, m0: u32, k0: u32) -> mat4x4<f32> {
    return transpose(mat4x4<f32>(w_row(m0, k0), w_row(m0 + 1u, k0), w_row(m0 + 2u, k0), w_row(m0 + 3u, k0)));
}

fn b_row(p: u32, k: u32, col4: u32) -> vec4<f32> {
    return h[h0 + min(k, IN - 1u) * BP4 + col4];
}

@compute @workgroup_size(LANES, ROW_GROUPS)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    model = wg.z;
    p0 = model * P_STRIDE;
    h0 = model * IN * BP4;
    let m0 = (wg.y * ROW_GROUPS + lid.y) * ROWS;
    let col4 = wg.x * LANES + lid.x;
    // Lanes past the last column compute on it (all lanes take part in a subgroup loop).
    let t = tile(0u, m0, min(col4, BP4 - 1u), lid.x);
    if (col4 >= BP4 || m0 >= OUT) {
        return;
    }
    var out: array<vec4<f32>, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m < OUT) {
            var v = t.acc[r] + vec4<f32>(params[(p0 + B_OFF + m0) / 4u][r]);
            if (RELU) {
                v = select(vec4<f32>(0.0), v, v > vec4<f32>(0.0));
            }
            z[model * OUT * BP4 + m * BP4 + col4] = v;
            out[r] = v;
        }
    }
    // The tile's four rows at one column are one vec4 of the batch-major copy (m0 + 3 < LDZ).
    for (var j = 0u; j < 4u; j++) {
        let n = col4 * 4u + j;
        z_rows[model * (BP * LDZ / 4u) + (n * LDZ + m0) / 4u] = vec4<f32>(out[0][j], out[1][j], out[2][j], out[3][j]);
    }
}
