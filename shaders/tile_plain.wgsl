// Matmul inner loop for adapters without subgroups (GL, SwiftShader, browsers through wgpu):
// every invocation reads the A values it needs itself.
//
// Imported as tile_loop.wgsl by linear_forward.wgsl and linear_backward.wgsl, which define
// depth(p) (the K of product p), a_rows(p, m0, k) (A[m0 .. m0 + ROWS, k], zero outside) and
// b_row(p, k, col4) (B[k, 4 col4 .. 4 col4 + 4]). The workgroup is LANES invocations, each
// owning one vec4 of columns; LANES comes from the host (`gpu::ops::linear::LANES`).

override LANES: u32;

fn tile(p: u32, m0: u32, col4: u32, li: u32) -> Tile {
    var t: Tile;
    for (var k = 0u; k < depth(p); k++) {
        let av = a_rows(p, m0, k);
        t.rowsum += av;
        fma_rows(&t, av, b_row(p, k, col4));
    }
    return t;
}
