// What the matmul inner loops share: the accumulators of one tile, ROWS rows by one vec4 of
// columns, and how a block of A is added to them. ROWS is a const (it sizes arrays); the host's
// `gpu::ops::linear::ROWS` is held to it by tests/shaders.rs. Uses depth(p) and b_row of the
// importing module (see tile_plain.wgsl).

const ROWS: u32 = 4u;

struct Tile {
    // acc[r][j] = C[m0 + r, 4 * col4 + j]
    acc: array<vec4<f32>, ROWS>,
    // rowsum[r] = sum over k of A[m0 + r, k] (the bias gradient, where A is dZ^T)
    rowsum: vec4<f32>,
}

fn fma_rows(t: ptr<function, Tile>, av: vec4<f32>, bv: vec4<f32>) {
    (*t).acc[0] += av.x * bv;
    (*t).acc[1] += av.y * bv;
    (*t).acc[2] += av.z * bv;
    (*t).acc[3] += av.w * bv;
}

// Adds A block `a` (column j = rows m0 .. m0 + ROWS at k0 + j) times B's rows k0 .. k0 + 4 to
// the tile, one k after the other. Columns past K are zeroed: B's row index is clamped there,
// so A must be zero.
fn fma_block(t: ptr<function, Tile>, p: u32, a: mat4x4<f32>, k0: u32, col4: u32) {
    let kk = depth(p);
    let a0 = a[0];
    let a1 = select(vec4<f32>(0.0), a[1], vec4<bool>(k0 + 1u < kk));
    let a2 = select(vec4<f32>(0.0), a[2], vec4<bool>(k0 + 2u < kk));
    let a3 = select(vec4<f32>(0.0), a[3], vec4<bool>(k0 + 3u < kk));
    (*t).rowsum += a0;
    (*t).rowsum += a1;
    (*t).rowsum += a2;
    (*t).rowsum += a3;
    fma_rows(t, a0, b_row(p, k0, col4));
    fma_rows(t, a1, b_row(p, k0 + 1u, col4));
    fma_rows(t, a2, b_row(p, k0 + 2u, col4));
    fma_rows(t, a3, b_row(p, k0 + 3u, col4));
}
