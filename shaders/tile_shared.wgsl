//#needs ROWS, Tile, a_block, depth, fma_block
// Matmul inner loop staged in workgroup memory, for workgroups of many invocations (hardware
// GPUs, and adapters without subgroups): the LANES invocations of a row group all need the
// same rows of A, so each loads one block of 4 k of them into workgroup memory, and all read
// the LANES blocks from there: one load of A from the buffer per 4 LANES k instead of 4.
//
// The `wide` family's loop, under the tile contract of tile_common.wgsl. The workgroup is LANES x
// ROW_GROUPS invocations (from the host, at most SHARED of them); the row group is recovered
// from m0. Sums run over k in the same order as tile_plain.wgsl.

override LANES: u32;
override ROW_GROUPS: u32;

// One block of A (column j = rows m0 .. m0 + 4 at k0 + j) per invocation: 8 KiB.
const SHARED: u32 = 128u;
var<workgroup> blocks: array<mat4x4<f32>, SHARED>;

fn tile(p: u32, m0: u32, col4: u32, li: u32) -> Tile {
    var t: Tile;
    let kk = depth(p);
    let g = (m0 / ROWS) % ROW_GROUPS;
    let last = (kk - 1u) / 4u * 4u;
    for (var c0 = 0u; c0 < kk; c0 += 4u * LANES) {
        let k0 = c0 + 4u * li;
        let a = a_block(p, m0, min(k0, last));
        let keep = k0 < kk;
        blocks[g * LANES + li] = mat4x4<f32>(
            select(vec4<f32>(0.0), a[0], vec4<bool>(keep)),
            select(vec4<f32>(0.0), a[1], vec4<bool>(keep)),
            select(vec4<f32>(0.0), a[2], vec4<bool>(keep)),
            select(vec4<f32>(0.0), a[3], vec4<bool>(keep)),
        );
        workgroupBarrier();
        for (var j = 0u; j < LANES; j++) {
            let kb = c0 + 4u * j;
            if (kb >= kk) {
                break;
            }
            fma_block(&t, p, blocks[g * LANES + j], kb, col4);
        }
        workgroupBarrier();
    }
    return t;
}
