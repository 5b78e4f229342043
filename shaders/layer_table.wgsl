//#needs A_STRIDE, D_STRIDE, P_STRIDE, acts, dz, layers
// The fused schedule's table of layers: where each layer's parameters, activations and output
// gradient live, read from a uniform buffer by both fused dispatches; and how both read four
// samples' rows. Host twin: `gpu::layout::LayerRow` (#[repr(C)], held to this layout by
// tests/shaders.rs). Offsets are in floats and multiples of 4; every row of a batch-major
// tensor is padded to a multiple of 4.
struct Layer {
    // in and out features of the layer
    inp: u32,
    out: u32,
    // W [out, ldw] at w_off, bias [out] at b_off, in the device layout (`gpu::layout`)
    w_off: u32,
    b_off: u32,
    // ldw = pad4(inp): the row length of W and of the layer's input rows
    ldw: u32,
    // acts: the layer's input X [BP, ldw] at x_off, its output Y [BP, pad4(out)] at y_off
    x_off: u32,
    y_off: u32,
    // dz: the gradient of its output dZ [BP, pad4(out)] at dz_off
    dz_off: u32,
    // the layer's first weight tile (8 rows by two vec4 of columns) in the update dispatch
    tile0: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// The most layers the uniform table holds (host twin `gpu::fused::MAX_LAYERS`).
const MAX_LAYERS: u32 = 32u;

// The model the invocation works on (the grid's z), set first thing by the entry point. A set
// of models trained side by side keeps model k's parameters (and optimizer state) at k * P_STRIDE
// floats, its rows at k * A_STRIDE in acts and k * D_STRIDE in dz; the table is every
// model's, so one table serves the set.
var<private> model: u32;

// Layer l of the invocation's model: the table's row, its offsets moved to that model's.
fn layer(l: u32) -> Layer {
    var ly = layers[l];
    ly.w_off += model * P_STRIDE;
    ly.b_off += model * P_STRIDE;
    ly.x_off += model * A_STRIDE;
    ly.y_off += model * A_STRIDE;
    ly.dz_off += model * D_STRIDE;
    return ly;
}

// The offsets 0 .. 3 of a vec4's components, for masks.
const LANE4 = vec4<u32>(0u, 1u, 2u, 3u);

// The vec4 at column k4 of rows c0 .. c0 + 4 of a batch-major tensor at vec4 offset `at`
// with rows of `ld4` vec4, as the columns of a matrix; rows past `last` read row `last` (the
// caller masks them). `last` is BP - 1 for the whole batch, or a per-sample workgroup's last
// sample, so that it never reads rows another workgroup is writing. Matrices, not arrays:
// SwiftShader keeps a local array in memory and clamps every access to it.
fn acts4(at: u32, ld4: u32, c0: u32, k4: u32, last: u32) -> mat4x4<f32> {
    let r = vec4<u32>(at) + min(vec4<u32>(c0) + LANE4, vec4<u32>(last)) * ld4 + vec4<u32>(k4);
    return mat4x4<f32>(acts[r.x], acts[r.y], acts[r.z], acts[r.w]);
}

// The same from dz.
fn dz4(at: u32, ld4: u32, c0: u32, k4: u32, last: u32) -> mat4x4<f32> {
    let r = vec4<u32>(at) + min(vec4<u32>(c0) + LANE4, vec4<u32>(last)) * ld4 + vec4<u32>(k4);
    return mat4x4<f32>(dz[r.x], dz[r.y], dz[r.z], dz[r.w]);
}
