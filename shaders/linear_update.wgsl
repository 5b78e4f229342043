// The weight gradient of a linear layer with the SGD step fused, for the fused schedule (the
// twin of the weight product of linear_backward.wgsl followed by sgd.wgsl): one tile of 8 rows
// of W by two vec4 of its columns sums dW = dZ^T X over the batch's valid samples, four at a
// time in order (four vec4 loads per 64 multiply-adds), then applies the momentum rule (sgd_rule.wgsl) to
// those 64 weights; the tiles of the first columns also do the 8 biases (db = the column sums
// of dZ). No gradient is stored. CPU twins: `cpu::linear_backward` (dw, db), `cpu::sgd`. Uses
// the importing module's `acts`, `dz`, `step` and what sgd_rule.wgsl uses.

// Tiles of a layer: ceil(out / 8) row groups by ceil(ldw / 8) column pairs (host twin
// `gpu::fused::layer_rows`).
fn update_tile(ly: Layer, t: u32) {
    let k4s = ly.ldw / 4u;
    let o4s = (ly.out + 3u) / 4u;
    let pairs = (k4s + 1u) / 2u;
    let i4 = (t % pairs) * 2u;
    let o4 = (t / pairs) * 2u;
    // The second vec4 of rows or columns may lie past the tensor: read clamped, used as zero.
    let o4b = min(o4 + 1u, o4s - 1u);
    let i4b = min(i4 + 1u, k4s - 1u);
    let has_o = o4 + 1u < o4s;
    let has_i = i4 + 1u < k4s;
    // Four samples at a time: columns of D are the samples' dZ (four rows of W), columns of X
    // their inputs (four columns of W); X * transpose(D) adds their products to a 4 x 4 block
    // of dW (column r: row r of the block). Matrices, not arrays: SwiftShader keeps a local
    // array in memory and clamps every access to it.
    var w_aa = mat4x4<f32>();
    var w_ab = mat4x4<f32>();
    var w_ba = mat4x4<f32>();
    var w_bb = mat4x4<f32>();
    var bias_a = vec4<f32>(0.0);
    var bias_b = vec4<f32>(0.0);
    let d_at = ly.dz_off / 4u;
    let x_at = ly.x_off / 4u;
    for (var c0 = 0u; c0 < step.valid; c0 += 4u) {
        // Samples past `valid` are read clamped and count as zero.
        let c = min(vec4<u32>(c0) + LANE4, vec4<u32>(step.valid - 1u));
        let live = vec4<u32>(c0) + LANE4 < vec4<u32>(step.valid);
        let zero = vec4<f32>(0.0);
        let da = mat4x4<f32>(
            select(zero, dz[d_at + c.x * o4s + o4], live.x),
            select(zero, dz[d_at + c.y * o4s + o4], live.y),
            select(zero, dz[d_at + c.z * o4s + o4], live.z),
            select(zero, dz[d_at + c.w * o4s + o4], live.w),
        );
        let db = mat4x4<f32>(
            select(zero, dz[d_at + c.x * o4s + o4b], live.x && has_o),
            select(zero, dz[d_at + c.y * o4s + o4b], live.y && has_o),
            select(zero, dz[d_at + c.z * o4s + o4b], live.z && has_o),
            select(zero, dz[d_at + c.w * o4s + o4b], live.w && has_o),
        );
        let xa = mat4x4<f32>(acts[x_at + c.x * k4s + i4], acts[x_at + c.y * k4s + i4], acts[x_at + c.z * k4s + i4], acts[x_at + c.w * k4s + i4]);
        let xb = mat4x4<f32>(acts[x_at + c.x * k4s + i4b], acts[x_at + c.y * k4s + i4b], acts[x_at + c.z * k4s + i4b], acts[x_at + c.w * k4s + i4b]);
        let dta = transpose(da);
        let dtb = transpose(db);
        w_aa += xa * dta;
        w_ab += xb * dta;
        w_ba += xa * dtb;
        w_bb += xb * dtb;
        bias_a += da[0] + da[1] + da[2] + da[3];
        bias_b += db[0] + db[1] + db[2] + db[3];
    }
    for (var r = 0u; r < 8u; r++) {
        let o = o4 * 4u + r;
        if (o < ly.out) {
            let row = (ly.w_off + o * ly.ldw) / 4u;
            let q = r % 4u;
            if (r < 4u) {
                sgd_step(row + i4, w_aa[q]);
                if (has_i) {
                    sgd_step(row + i4 + 1u, w_ab[q]);
                }
            } else {
                sgd_step(row + i4, w_ba[q]);
                if (has_i) {
                    sgd_step(row + i4 + 1u, w_bb[q]);
                }
            }
        }
    }
    if (i4 == 0u) {
        sgd_step(ly.b_off / 4u + o4, bias_a);
        if (has_o) {
            sgd_step(ly.b_off / 4u + o4 + 1u, bias_b);
        }
    }
}
