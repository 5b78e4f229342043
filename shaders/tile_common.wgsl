// What both matmul inner loops share: the accumulators of one tile, ROWS rows by one vec4 of
// columns. ROWS is a const (it sizes arrays); the host's `gpu::ops::linear::ROWS` is held to it
// by tests/shaders.rs.

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
