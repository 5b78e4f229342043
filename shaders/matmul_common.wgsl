// What every matmul module shares, appended after it (matmul.wgsl, matmul_pair.wgsl) and
// before its inner loop: the accumulators of one tile of ROWS rows by one vec4 of columns.

const ROWS: u32 = 4u;

struct Tile {
    // acc[r][j] = C[m0 + r, 4 * col4 + j]
    acc: array<vec4<f32>, 4>,
    // rowsum[r] = sum over k of A[m0 + r, k] (used for the bias gradient)
    rowsum: vec4<f32>,
}

fn fma_rows(t: ptr<function, Tile>, av: vec4<f32>, bv: vec4<f32>) {
    (*t).acc[0] += av.x * bv;
    (*t).acc[1] += av.y * bv;
    (*t).acc[2] += av.z * bv;
    (*t).acc[3] += av.w * bv;
}
