//#needs acts4, dz4
// How the per-sample kernels read the rows of eight samples (fused_step.wgsl and
// fused_update.wgsl import it for the plain and wide families): every invocation loads all
// eight itself. For any
// adapter. The subgroup flavour is sample_subgroup.wgsl.

// Two 4 x 4 blocks: column j of `a` (`b`) is sample c0 + j (+ 4).
struct Rows8 {
    a: mat4x4<f32>,
    b: mat4x4<f32>,
}

// The vec4 at column k4 of the rows c0 .. c0 + 8 of acts (offset `at`, rows of `ld4` vec4;
// rows past `last` read row `last`).
fn acts8(at: u32, ld4: u32, c0: u32, k4: u32, last: u32, li: u32) -> Rows8 {
    return Rows8(acts4(at, ld4, c0, k4, last), acts4(at, ld4, c0 + 4u, k4, last));
}

// The same from dz.
fn dz8(at: u32, ld4: u32, c0: u32, k4: u32, last: u32, li: u32) -> Rows8 {
    return Rows8(dz4(at, ld4, c0, k4, last), dz4(at, ld4, c0 + 4u, k4, last));
}
