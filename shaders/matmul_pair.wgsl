// The two backward products of one layer in one dispatch. They both read dZ^T and neither
// reads what the other writes, so nothing orders them:
//   product 0, input gradient   dX^T [X_M, X_N] = W^T * dZ^T, masked where H^T > 0 (as
//                               backward_input of matmul.wgsl)
//   product 1, weight gradient  dW [W_M, W_N] = dZ^T * H, and the bias gradient (as
//                               backward_weight_vec4)
// Workgroups 0 .. X_GROUPS - 1 compute product 0 (X_GX across), the rest product 1 (W_GX
// across). Which product a workgroup computes is workgroup-uniform, so the subgroup operations
// of the inner loop stay in uniform control flow. On llvmpipe a dispatch costs tens of
// microseconds however small it is; pairing the products saves one per hidden layer.
//
// Layouts as in matmul.wgsl: W is read through strides from the flat parameters, dZ^T and H^T
// are feature-major [features, BP], H batch-major [BP, LDH]. All outputs are stored as vec4,
// so X_N, X_LDC, X_MASK_LD, W_N = W_LDC and W_C_OFF are multiples of 4.
// Appended to this: matmul_common.wgsl, then one inner loop (`tile`).

override X_M: u32;
override X_N: u32;
override X_K: u32;
override X_A_OFF: u32;
override X_A_SM: u32;
override X_A_SK: u32;
override X_LDB4: u32;
override X_LDC: u32;
override X_MASK_LD: u32;
override X_GX: u32;
override X_GROUPS: u32;
override W_M: u32;
override W_N: u32;
override W_K: u32;
override W_A_SM: u32;
override W_A_SK: u32;
override W_LDB4: u32;
override W_C_OFF: u32;
override W_LDC: u32;
override W_BG_OFF: u32;
override W_GX: u32;

// params: the flat parameters (W of product 0)
@group(0) @binding(0) var<storage, read> params: array<f32>;
// dz: dZ^T [X_K = W_M, BP], B of product 0 and A of product 1
@group(0) @binding(1) var<storage, read> dz: array<vec4<f32>>;
// dx: dX^T [X_M, BP], product 0's output
@group(0) @binding(2) var<storage, read_write> dx: array<vec4<f32>>;
// mask: H^T [X_M, BP], the layer's input, for the ReLU mask
@group(0) @binding(3) var<storage, read> mask: array<vec4<f32>>;
// hb: H [BP, LDH] batch-major, B of product 1
@group(0) @binding(4) var<storage, read> hb: array<vec4<f32>>;
// grads: the flat gradients, product 1's output
@group(0) @binding(5) var<storage, read_write> grads: array<vec4<f32>>;

// A[m0 .. m0 + 4, k] of product `which`, zero outside; addresses clamped so no load leaves it.
fn a_rows(m0: u32, k: u32, which: u32) -> vec4<f32> {
    var v: vec4<f32>;
    if (which == 0u) {
        let kc = min(k, X_K - 1u);
        for (var r = 0u; r < ROWS; r++) {
            let m = min(m0 + r, X_M - 1u);
            let x = params[X_A_OFF + m * X_A_SM + kc * X_A_SK];
            v[r] = select(0.0, x, m0 + r < X_M && k < X_K);
        }
    } else {
        let kc = min(k, W_K - 1u);
        for (var r = 0u; r < ROWS; r++) {
            let m = min(m0 + r, W_M - 1u);
            let i = m * W_A_SM + kc * W_A_SK;
            v[r] = select(0.0, dz[i / 4u][i % 4u], m0 + r < W_M && k < W_K);
        }
    }
    return v;
}

// The B row k of product `which` at this invocation's columns (row clamped).
fn b_row(k: u32, col4: u32, which: u32) -> vec4<f32> {
    if (which == 0u) {
        return dz[min(k, X_K - 1u) * X_LDB4 + col4];
    }
    return hb[min(k, W_K - 1u) * W_LDB4 + col4];
}

@compute @workgroup_size(LANES)
fn backward_pair(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    if (wg.x < X_GROUPS) {
        let m0 = (wg.x / X_GX) * ROWS;
        let col4 = (wg.x % X_GX) * LANES + li;
        let t = tile(m0, min(col4, (X_N + 3u) / 4u - 1u), li, X_K, 0u);
        for (var r = 0u; r < ROWS; r++) {
            let m = m0 + r;
            if (m >= X_M || col4 * 4u >= X_N) {
                break;
            }
            let h = mask[m * X_MASK_LD / 4u + col4];
            dx[m * X_LDC / 4u + col4] = select(vec4<f32>(0.0), t.acc[r], h > vec4<f32>(0.0));
        }
    } else {
        let g = wg.x - X_GROUPS;
        let m0 = (g / W_GX) * ROWS;
        let gx = g % W_GX;
        let col4 = gx * LANES + li;
        let t = tile(m0, min(col4, (W_N + 3u) / 4u - 1u), li, W_K, 1u);
        for (var r = 0u; r < ROWS; r++) {
            let m = m0 + r;
            if (m >= W_M) {
                break;
            }
            if (col4 * 4u < W_N) {
                grads[(W_C_OFF + m * W_LDC) / 4u + col4] = t.acc[r];
            }
            if (gx == 0u && li == 0u) {
                let i = W_BG_OFF + m;
                grads[i / 4u][i % 4u] = t.rowsum[r];
            }
        }
    }
}
