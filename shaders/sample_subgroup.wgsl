//#needs LANE4, acts, dz
// How the per-sample kernels read the rows of eight samples, with subgroups of 8 or more lanes
// (fused_step.wgsl and fused_update.wgsl import it for the subgroup family): invocation li loads the row of sample
// c0 + li % 8 and subgroupBroadcast hands it to the others, one load where the plain flavour
// (sample_plain.wgsl) makes eight; on llvmpipe every load whose address differs per lane is
// a loop over the lanes. It needs lane j of a subgroup to be an invocation with li % 8 == j
// (llvmpipe's mapping); `lanes_in_order` checks that once, and where it fails, every
// invocation loads all eight as the plain flavour does. The callers keep every loop's trips
// the same across the workgroup, so the broadcasts run in uniform control flow.

struct Rows8 {
    a: mat4x4<f32>,
    b: mat4x4<f32>,
}

// Whether lane j of this invocation's subgroup is an invocation with li % 8 == j, j < 8.
fn lanes_in_order(li: u32) -> bool {
    let r = li % 8u;
    let lanes = vec4<u32>(subgroupBroadcast(r, 0u), subgroupBroadcast(r, 1u), subgroupBroadcast(r, 2u), subgroupBroadcast(r, 3u));
    let more = vec4<u32>(subgroupBroadcast(r, 4u), subgroupBroadcast(r, 5u), subgroupBroadcast(r, 6u), subgroupBroadcast(r, 7u));
    return subgroupAll(all(lanes == LANE4) && all(more == LANE4 + vec4<u32>(4u)));
}

fn share8(mine: vec4<f32>) -> Rows8 {
    return Rows8(
        mat4x4<f32>(subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u)),
        mat4x4<f32>(subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u), subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u)),
    );
}

// The vec4 at column k4 of the rows c0 .. c0 + 8 of acts (rows past `last` read row `last`).
fn acts8(at: u32, ld4: u32, c0: u32, k4: u32, last: u32, li: u32) -> Rows8 {
    let mine = acts[at + min(c0 + li % 8u, last) * ld4 + k4];
    return share8(mine);
}

fn dz8(at: u32, ld4: u32, c0: u32, k4: u32, last: u32, li: u32) -> Rows8 {
    let mine = dz[at + min(c0 + li % 8u, last) * ld4 + k4];
    return share8(mine);
}
