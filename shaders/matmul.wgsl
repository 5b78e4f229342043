// The three matrix products of training, with their epilogues fused.
//
//   C[M, N] = A[M, K] * B[K, N]
//
// Activations are feature-major on the device (H^T: [features, batch_padded]) so that a batch
// runs along N, where each invocation owns four adjacent columns as one vec4.
//   forward          Z^T  = W * H^T, + bias, ReLU; also stored batch-major (H: [batch, features])
//                    because the weight gradient needs it as its B operand
//   backward_input   dZ'^T = W^T * dZ^T, masked where the layer's input H^T was not positive
//   backward_weight  dW = dZ^T * H, and the bias gradient (row sums of dZ^T) beside it
//
// A is read one element at a time through strides (A_SM per row, A_SK per column) from A_OFF,
// so one flat parameter buffer serves as W and as W^T. B is row-major in vec4 with LDB4 vec4
// per row (its N padded to a multiple of 4). C is row-major from C_OFF with row stride LDC.
// Appended to this: matmul_common.wgsl (the tile's accumulators) and one inner loop (`tile`),
// matmul_tile_subgroup.wgsl or matmul_tile_plain.wgsl.
//
// A workgroup computes ROWS rows by 4 * LANES columns; the dispatch is
// (ceil(ceil(N / 4) / LANES), ceil(M / ROWS), 1). Rows and columns past the edge are computed
// on clamped (valid) addresses and never stored, so every load stays in bounds.

override M: u32;
override N: u32;
override K: u32;
override A_OFF: u32 = 0u;
override A_SM: u32;
override A_SK: u32;
override LDB4: u32;
override C_OFF: u32 = 0u;
override LDC: u32;
// forward: bias offset in `aux`, ReLU or not, row stride of the batch-major copy in `c2`.
// backward_input: row stride of the mask source H^T in `aux`.
// backward_weight: offset of the bias gradient in `c`.
override AUX_OFF: u32 = 0u;
override AUX_LD: u32 = 0u;
override RELU: bool = true;
override LDC2: u32 = 0u;
override BG_OFF: u32 = 0u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;
// forward's batch-major copy: row n holds LDC2 (a multiple of 4) floats, so the four rows of
// a tile at one column are one vec4.
@group(0) @binding(4) var<storage, read_write> c2: array<vec4<f32>>;
// forward, backward_input and backward_weight_vec4 write C through this instead of `c` (the
// same buffer, as vec4): on llvmpipe every store to a per-invocation address is a loop over
// the lanes, so one vec4 store replaces four. They need C_OFF and LDC to be multiples of 4.
@group(0) @binding(5) var<storage, read_write> c4: array<vec4<f32>>;
// backward_input reads its mask source through this (feature-major, rows of LDC floats).
@group(0) @binding(6) var<storage, read> aux4: array<vec4<f32>>;

// A[m0 .. m0 + 4, k], zero outside the matrix; addresses are clamped so no load leaves it.
// `which` selects the product in matmul_pair.wgsl; this module has one.
fn a_rows(m0: u32, k: u32, which: u32) -> vec4<f32> {
    let kc = min(k, K - 1u);
    var v: vec4<f32>;
    for (var r = 0u; r < ROWS; r++) {
        let m = min(m0 + r, M - 1u);
        v[r] = select(0.0, a[A_OFF + m * A_SM + kc * A_SK], m0 + r < M && k < K);
    }
    return v;
}

// The B row k at this invocation's columns (row clamped; callers multiply it by zero then).
fn b_row(k: u32, col4: u32, which: u32) -> vec4<f32> {
    return b[min(k, K - 1u) * LDB4 + col4];
}

// The tile of rows m0.. and vec4 column col4; lanes past the last column compute on the last
// one (every lane must take part in the subgroup operations) and store nothing.
fn tile_at(m0: u32, col4: u32, li: u32) -> Tile {
    return tile(m0, min(col4, (N + 3u) / 4u - 1u), li, K, 0u);
}

@compute @workgroup_size(LANES)
fn forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m0 = wg.y * ROWS;
    let col4 = wg.x * LANES + li;
    let t = tile_at(m0, col4, li);
    if (col4 * 4u >= N) {
        return;
    }
    // out[r] = row m0 + r at this invocation's four columns; rows past M stay zero (they
    // land in the padding of the batch-major copy, which nothing reads).
    var out: array<vec4<f32>, 4>;
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m >= M) {
            break;
        }
        var v = t.acc[r] + vec4<f32>(aux[AUX_OFF + m]);
        if (RELU) {
            v = select(vec4<f32>(0.0), v, v > vec4<f32>(0.0));
        }
        c4[(C_OFF + m * LDC) / 4u + col4] = v;
        out[r] = v;
    }
    for (var j = 0u; j < 4u; j++) {
        let n = col4 * 4u + j;
        c2[(n * LDC2 + m0) / 4u] = vec4<f32>(out[0][j], out[1][j], out[2][j], out[3][j]);
    }
}

@compute @workgroup_size(LANES)
fn backward_input(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m0 = wg.y * ROWS;
    let col4 = wg.x * LANES + li;
    let t = tile_at(m0, col4, li);
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m >= M || col4 * 4u >= N) {
            break;
        }
        let h = aux4[m * AUX_LD / 4u + col4];
        c4[(C_OFF + m * LDC) / 4u + col4] = select(vec4<f32>(0.0), t.acc[r], h > vec4<f32>(0.0));
    }
}

@compute @workgroup_size(LANES)
fn backward_weight(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m0 = wg.y * ROWS;
    let col4 = wg.x * LANES + li;
    let t = tile_at(m0, col4, li);
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m >= M) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = col4 * 4u + j;
            if (n < N) {
                c[C_OFF + m * LDC + n] = t.acc[r][j];
            }
        }
        if (wg.x == 0u && li == 0u) {
            c[BG_OFF + m] = t.rowsum[r];
        }
    }
}

// backward_weight where C_OFF, LDC (and so N, which equals LDC for a weight) are multiples of
// 4: each invocation stores its four columns of a row as one vec4. The weight gradient sums
// over only the batch, so its cost is in the stores, and on llvmpipe every store to a
// per-invocation address is a loop over the lanes: one per vec4 instead of one per float.
@compute @workgroup_size(LANES)
fn backward_weight_vec4(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m0 = wg.y * ROWS;
    let col4 = wg.x * LANES + li;
    let t = tile_at(m0, col4, li);
    for (var r = 0u; r < ROWS; r++) {
        let m = m0 + r;
        if (m >= M) {
            break;
        }
        if (col4 * 4u < N) {
            c4[(C_OFF + m * LDC) / 4u + col4] = t.acc[r];
        }
        if (wg.x == 0u && li == 0u) {
            let i = BG_OFF + m;
            c4[i / 4u][i % 4u] = t.rowsum[r];
        }
    }
}
