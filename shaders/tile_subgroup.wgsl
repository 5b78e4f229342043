//#needs Tile, a_rows, b_row, depth, fma_rows
// Matmul inner loop for adapters whose subgroups are at least LANES = 8 wide (llvmpipe).
//
// The `subgroup` family's loop, under the tile contract of tile_common.wgsl. Each invocation loads A for
// one k of a chunk of LANES k-values and subgroupBroadcast hands the values to every
// invocation: on llvmpipe a load whose address is not provably uniform is a loop over the
// lanes, so this cuts A loads by LANES; B is one vec4 load per k for 16 multiply-adds.
// LANES is a const because subgroupBroadcast takes a const-expression lane (so the chunk is
// unrolled by hand); tests/shaders.rs holds it equal to the host's `gpu::wgsl::LANES`.
// Which k the value in lane j belongs to is broadcast once up front, so nothing assumes how
// local invocations map to subgroup lanes.

const LANES: u32 = 8u;
// One subgroup per workgroup: the broadcast shares A within it.
const ROW_GROUPS: u32 = 1u;

fn tile(p: u32, m0: u32, col4: u32, li: u32) -> Tile {
    let k_of = array<u32, 8>(
        subgroupBroadcast(li, 0u), subgroupBroadcast(li, 1u),
        subgroupBroadcast(li, 2u), subgroupBroadcast(li, 3u),
        subgroupBroadcast(li, 4u), subgroupBroadcast(li, 5u),
        subgroupBroadcast(li, 6u), subgroupBroadcast(li, 7u),
    );
    var t: Tile;
    var rowsum = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < depth(p); k0 += LANES) {
        let av = a_rows(p, m0, k0 + li);
        rowsum += av;
        fma_rows(&t, subgroupBroadcast(av, 0u), b_row(p, k0 + k_of[0], col4));
        fma_rows(&t, subgroupBroadcast(av, 1u), b_row(p, k0 + k_of[1], col4));
        fma_rows(&t, subgroupBroadcast(av, 2u), b_row(p, k0 + k_of[2], col4));
        fma_rows(&t, subgroupBroadcast(av, 3u), b_row(p, k0 + k_of[3], col4));
        fma_rows(&t, subgroupBroadcast(av, 4u), b_row(p, k0 + k_of[4], col4));
        fma_rows(&t, subgroupBroadcast(av, 5u), b_row(p, k0 + k_of[5], col4));
        fma_rows(&t, subgroupBroadcast(av, 6u), b_row(p, k0 + k_of[6], col4));
        fma_rows(&t, subgroupBroadcast(av, 7u), b_row(p, k0 + k_of[7], col4));
    }
    t.rowsum = subgroupAdd(rowsum);
    return t;
}
