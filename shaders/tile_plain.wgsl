//#needs Tile, a_block, depth, fma_block
// Matmul inner loop for adapters without subgroups (GL, SwiftShader, browsers through wgpu):
// every invocation reads the A values it needs itself.
//
// The `plain` family's loop, under the tile contract of tile_common.wgsl. LANES comes from
// the host (`gpu::wgsl::LANES`). A is read four k at a time: where loads are costly (robust
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
