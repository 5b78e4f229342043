// Linear backward: the gradients of one layer from the gradient of its output, dZ^T.
// CPU twin: `cpu::linear_backward` (and `cpu::relu_backward` for the mask).
//
//   product INPUT (p = 0)   dX^T [IN, BP] = W^T * dZ^T, zero where the layer's input H^T was
//                           not positive (the ReLU of the layer below, fused)
//   product WEIGHT (p = 1)  dW [OUT, LDW] = dZ^T * H, and db [OUT] = the row sums of dZ^T
//
//   params W [OUT, LDW] at W_OFF in the device layout (`gpu::layout`)
//   dz     dZ^T [OUT, BP]  feature-major
//   dx     dX^T [IN, BP]   (entry `backward` only)
//   mask   H^T [IN, BP]    the layer's input (entry `backward` only)
//   h_rows H [BP, LDW]     the layer's input batch-major, zero past IN, so dW's padding
//                          columns come out zero
//   grads  the flat gradients in the device layout: dW at W_OFF, db at B_OFF (a multiple of
//          4, with pad4(OUT) floats of room: a tile stores its four bias rows as one vec4)
//
// Entry `backward` runs both products in one dispatch: they both read dZ^T and neither reads
// what the other writes. Workgroups 0 .. X_GROUPS - 1 compute INPUT (X_GX across), the rest
// WEIGHT (W_GX across); which one is workgroup-uniform, so the subgroup loop stays in uniform
// control flow. Entry `backward_weight` runs WEIGHT alone, for the first layer, whose input
// needs no gradient. A workgroup of LANES x ROW_GROUPS invocations covers ROW_GROUPS x ROWS
// rows and LANES vec4 columns. A set of models runs along the grid's z: model k's parameters
// and gradients are P_STRIDE floats after model k-1's, its dz, dx, mask and h_rows one whole
// tensor after.
//#import tile_common.wgsl
//#import tile_plain.wgsl if kernels = plain
//#import tile_subgroup.wgsl if kernels = subgroup
//#import tile_shared.wgsl if kernels = wide

override IN: u32;
override OUT: u32;
override BP: u32;
override W_OFF: u32;
override B_OFF: u32;
override LDW: u32;
override X_GX: u32;
override X_GROUPS: u32;
override W_GX: u32;
override BP4: u32 = BP / 4u;
override LDW4: u32 = LDW / 4u;
override P_STRIDE: u32 = 0u;

// This invocation's model (the grid's z) and where its parameters and dZ^T start (floats).
var<private> model: u32;
var<private> p0: u32;
var<private> dz0: u32;

const INPUT: u32 = 0u;
const WEIGHT: u32 = 1u;

// The flat parameters as vec4 (every tensor starts at a multiple of 4 floats, rows of W too).
@group(0) @binding(0) var<storage, read> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> dz: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dx: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> mask: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> h_rows: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> grads: array<vec4<f32>>;

// The tile loop's contract (see tile_common.wgsl): M, K, A and B of product p.
fn rows_of(p: u32) -> u32 {
    return select(OUT, IN, p == INPUT);
}

fn depth(p: u32) -> u32 {
    return select(BP, OUT, p == INPUT);
}

// A[m0 .. m0 + ROWS, k], zero outside. INPUT: W^T, whose four rows at one k are one vec4 of
// W's row k (m0 + 3 < LDW); WEIGHT: dZ^T, one float of a vec4 per row.
fn a_rows(p: u32, m0: u32, k: u32) -> vec4<f32> {
    let kc = min(k, depth(p) - 1u);
    let inside = vec4<bool>(k < depth(p)) & (vec4<u32>(m0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(rows_of(p)));
    if (p == INPUT) {
        return select(vec4<f32>(0.0), params[(p0 + W_OFF + kc * LDW + m0) / 4u], inside);
    }
    var v: vec4<f32>;
    for (var r = 0u; r < ROWS; r++) {
        let i = dz0 + min(m0 + r, OUT - 1u) * BP + kc;
        v[r] = dz[i / 4u][i % 4u];
    }
    return select(vec4<f32>(0.0), v, inside);
}

// dZ^T[m, k0 .. k0 + 4] (row clamped, zero past OUT): one vec4 (BP is a multiple of 4).
fn dz_row(m: u32, k0: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), dz[(dz0 + min(m, OUT - 1u) * BP + k0) / 4u], m < OUT);
}

// Column j = A[m0 .. m0 + ROWS, k0 + j] (k0 a multiple of 4), zero outside. INPUT: four of
// a_rows; WEIGHT: four vec4 along the rows of dZ^T, transposed.
fn a_block(p: u32, m0: u32, k0: u32) -> mat4x4<f32> {
    if (p == INPUT) {
        return mat4x4<f32>(a_rows(p, m0, k0), a_rows(p, m0, k0 + 1u), a_rows(p, m0, k0 + 2u), a_rows(p, m0, k0 + 3u));
    }
    return transpose(mat4x4<f32>(dz_row(m0, k0), dz_row(m0 + 1u, k0), dz_row(m0 + 2u, k0), dz_row(m0 + 3u, k0)));
}

fn b_row(p: u32, k: u32, col4: u32) -> vec4<f32> {
    if (p == INPUT) {
        return dz[dz0 / 4u + min(k, OUT - 1u) * BP4 + col4];
    }
    return h_rows[model * BP * LDW4 + min(k, BP - 1u) * LDW4 + col4];
}

fn set_model(z: u32) {
    model = z;
    p0 = model * P_STRIDE;
    dz0 = model * OUT * BP;
}

// Workgroup g of the INPUT product: dX^T, masked.
fn input_gradient(g: u32, lid: vec3<u32>) {
    let m0 = ((g / X_GX) * ROW_GROUPS + lid.y) * ROWS;
    let col4 = (g % X_GX) * LANES + lid.x;
    let t = tile(INPUT, m0, min(col4, BP4 - 1u), lid.x);
    if (col4 >= BP4) {
        return;
    }
    let x0 = model * IN * BP4;
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m < IN) {
            let h = mask[x0 + m * BP4 + col4];
            dx[x0 + m * BP4 + col4] = select(vec4<f32>(0.0), t.acc[r], h > vec4<f32>(0.0));
        }
    }
}

// Workgroup g of the WEIGHT product: dW and, from the first column of workgroups, db.
fn weight_gradient(g: u32, lid: vec3<u32>) {
    let m0 = ((g / W_GX) * ROW_GROUPS + lid.y) * ROWS;
    let gx = g % W_GX;
    let col4 = gx * LANES + lid.x;
    let t = tile(WEIGHT, m0, min(col4, LDW4 - 1u), lid.x);
    if (col4 < LDW4) {
        for (var r = 0u; r < ROWS; r++) {
            if (m0 + r < OUT) {
                grads[(p0 + W_OFF + (m0 + r) * LDW) / 4u + col4] = t.acc[r];
            }
        }
    }
    // Rows past OUT have rowsum 0 (a_rows is zero there) and land in the bias's padding; a
    // row group wholly past OUT stores nothing.
    if (gx == 0u && lid.x == 0u && m0 < OUT) {
        grads[(p0 + B_OFF + m0) / 4u] = t.rowsum;
    }
}

@compute @workgroup_size(LANES, ROW_GROUPS)
fn backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    set_model(wg.z);
    if (wg.x < X_GROUPS) {
        input_gradient(wg.x, lid);
    } else {
        weight_gradient(wg.x - X_GROUPS, lid);
    }
}

@compute @workgroup_size(LANES, ROW_GROUPS)
fn backward_weight(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    set_model(wg.z);
    weight_gradient(wg.x, lid);
}
