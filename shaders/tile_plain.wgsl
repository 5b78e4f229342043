// Matmul inner loop for adapters without subgroups (GL, SwiftShader, browsers through wgpu):
// every invocation reads the A values it needs itself.
//
// Imported as tile_loop.wgsl by linear_forward.wgsl and linear_backward.wgsl, which define
// depth(p) (the K of product p), a_rows(p, m0, k) (A[m0 .. m0 + ROWS, k], zero outside),
// a_block(p, m0, k0) (a mat4x4 whose column j is a_rows of k0 + j, read as whole vec4 where
// A's rows run along k; columns past K may hold anything)
// and b_row(p, k, col4) (B[k, 4 col4 .. 4 col4 + 4], row clamped). The workgroup is LANES
// invocations, each owning one vec4 of columns; LANES comes from the host
// (`gpu::ops::linear::LANES`). A is read four k at a time: where loads are costly (robust
// buffer access in SwiftShader and browsers) one vec4 per row replaces four floats, and the
// sums run over k in the same order as one k at a time.

override LANES: u32;
// Tiles of ROWS rows stacked in one workgroup (its y size): larger workgroups cost less to
// schedule on some adapters.
override ROW_GROUPS: u32;

fn tile(p: u32, m0: u32, col4: u32, li: u32) -> Tile {
    var t: Tile;
    for (var k0 = 0u; k0 < depth(p); k0 += 4u) {
        fma_block(&t, p, a_block(p, m0, k0), k0, col4);
    }
    return t;
}
