//#needs BP, LANE4, Layer, Rows8, acts4, dz8, optimizer_step, step
// The weight gradient of a linear layer with the optimizer's step fused, for the fused schedule
// (the twin of the weight product of linear_backward.wgsl followed by optimizer.wgsl): one tile
// of 8 rows of W by two vec4 of its columns sums dW = dZ^T X over the batch's valid samples,
// eight at a time in order, then applies the optimizer's rule (optimizer_rule.wgsl) to those 64
// weights; the tiles of the first columns also do the 8 biases (db = the column sums of dZ). No
// gradient is stored. CPU twins: `cpu::linear_backward` (dw, db), `optim::step`. What it uses
// of its importer is its `//#needs` line (with what optimizer_rule.wgsl and the sample loop use).

// Tiles of a layer: ceil(out / 8) row blocks by ceil(ldw / 8) column pairs rounded up to a
// multiple of 8, so that eight neighbouring invocations share their rows (host twin
// `gpu::layout::layer_rows`). The rows' dZ of eight samples at a time comes through dz8
// (sample_plain.wgsl or sample_subgroup.wgsl): in the subgroup flavour one load per invocation, shared.
fn update_tile(ly: Layer, t: u32, li: u32) {
    let k4s = ly.ldw / 4u;
    let o4s = (ly.out + 3u) / 4u;
    let pairs = ((k4s + 1u) / 2u + 7u) / 8u * 8u;
    let i4 = (t % pairs) * 2u;
    let o4 = (t / pairs) * 2u;
    // The second vec4 of rows, and the columns past the row, are read clamped, used as zero
    // and not stored.
    let o4b = min(o4 + 1u, o4s - 1u);
    let has_o = o4 + 1u < o4s;
    let ia = min(i4, k4s - 1u);
    let ib = min(i4 + 1u, k4s - 1u);
    // Columns of D are the samples' dZ (four rows of W), columns of X their inputs (four
    // columns of W); X * transpose(D) adds their products to a 4 x 4 block of dW (column r:
    // row r of the block). Matrices, not arrays: SwiftShader keeps a local array in memory and
    // clamps every access to it.
    var w_aa = mat4x4<f32>();
    var w_ab = mat4x4<f32>();
    var w_ba = mat4x4<f32>();
    var w_bb = mat4x4<f32>();
    var bias_a = vec4<f32>(0.0);
    var bias_b = vec4<f32>(0.0);
    let d_at = ly.dz_off / 4u;
    let x_at = ly.x_off / 4u;
    for (var c0 = 0u; c0 < step.valid; c0 += 8u) {
        let dsa = dz8(d_at, o4s, c0, o4, BP - 1u, li);
        let dsb = dz8(d_at, o4s, c0, o4b, BP - 1u, li);
        var da = dsa;
        var db = dsb;
        // Samples past `valid`, and rows past the tensor, count as zero.
        if (c0 + 8u > step.valid) {
            da = Rows8(mask4(da.a, c0), mask4(da.b, c0 + 4u));
            db = Rows8(mask4(db.a, c0), mask4(db.b, c0 + 4u));
        }
        if (!has_o) {
            db = Rows8(mat4x4<f32>(), mat4x4<f32>());
        }
        let xa = Rows8(acts4(x_at, k4s, c0, ia, BP - 1u), acts4(x_at, k4s, c0 + 4u, ia, BP - 1u));
        let xb = Rows8(acts4(x_at, k4s, c0, ib, BP - 1u), acts4(x_at, k4s, c0 + 4u, ib, BP - 1u));
        let dta = transpose(da.a);
        let dta2 = transpose(da.b);
        let dtb = transpose(db.a);
        let dtb2 = transpose(db.b);
        w_aa += xa.a * dta + xa.b * dta2;
        w_ab += xb.a * dta + xb.b * dta2;
        w_ba += xa.a * dtb + xa.b * dtb2;
        w_bb += xb.a * dtb + xb.b * dtb2;
        bias_a += (da.a[0] + da.a[1] + da.a[2] + da.a[3]) + (da.b[0] + da.b[1] + da.b[2] + da.b[3]);
        bias_b += (db.a[0] + db.a[1] + db.a[2] + db.a[3]) + (db.b[0] + db.b[1] + db.b[2] + db.b[3]);
    }
    if (i4 < k4s) {
        for (var r = 0u; r < 4u; r++) {
            let o = o4 * 4u + r;
            let row = (ly.w_off + o * ly.ldw) / 4u + i4;
            let row_b = (ly.w_off + (o + 4u) * ly.ldw) / 4u + i4;
            if (o < ly.out) {
                optimizer_step(row, w_aa[r]);
                if (i4 + 1u < k4s) {
                    optimizer_step(row + 1u, w_ab[r]);
                }
            }
            if (o + 4u < ly.out) {
                optimizer_step(row_b, w_ba[r]);
                if (i4 + 1u < k4s) {
                    optimizer_step(row_b + 1u, w_bb[r]);
                }
            }
        }
    }
    if (i4 == 0u) {
        optimizer_step(ly.b_off / 4u + o4, bias_a);
        if (has_o) {
            optimizer_step(ly.b_off / 4u + o4 + 1u, bias_b);
        }
    }
}

// The columns of `d` whose sample (c0 + j) is in the step's batch, the rest zero.
fn mask4(d: mat4x4<f32>, c0: u32) -> mat4x4<f32> {
    let live = vec4<u32>(c0) + LANE4 < vec4<u32>(step.valid);
    let z = vec4<f32>(0.0);
    return mat4x4<f32>(select(z, d[0], live.x), select(z, d[1], live.y), select(z, d[2], live.z), select(z, d[3], live.w));
}
