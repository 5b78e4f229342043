//#needs b_row, depth
// What the three matmul inner loops share (tile_plain.wgsl, tile_subgroup.wgsl and
// tile_shared.wgsl, one of which a module imports after this file, by its kernel family): the
// accumulators of one tile, ROWS rows by one vec4 of columns, and how a block of A is added to
// them. ROWS is a const (it sizes arrays); the host's `gpu::ops::linear::ROWS` is held to it by
// tests/shaders.rs.
//
// The tile contract. The importing module (linear_forward.wgsl, linear_backward.wgsl) computes
// C = A B for product p through four functions of its own:
// - depth(p): K, the inner size of product p;
// - a_rows(p, m0, k): A[m0 .. m0 + ROWS, k] as a vec4, zero outside A;
// - a_block(p, m0, k0): a mat4x4 whose column j is a_rows(p, m0, k0 + j), read as whole vec4
//   where A's rows run along k (columns past K may hold anything: fma_block zeroes them);
// - b_row(p, k, col4): B[k, 4 col4 .. 4 col4 + 4], the row clamped into B.
// Each loop fills a Tile for rows m0 .. m0 + ROWS and one vec4 of columns per invocation, the
// sums over k in the same order, so plain and wide give the same sums; the workgroup is LANES
// invocations along the columns (times ROW_GROUPS along the rows where the loop has them).

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
