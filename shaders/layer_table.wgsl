// The fused schedule's table of layers: where each layer's parameters, activations and output
// gradient live, read from a uniform buffer by both fused dispatches. Host twin:
// `gpu::fused::LayerRow` (#[repr(C)], held to this layout by tests/shaders.rs). Offsets are in
// floats and multiples of 4; every row of a batch-major tensor is padded to a multiple of 4.
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
    // the layer's first weight tile (4 rows by one vec4 of columns) in the update dispatch
    tile0: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

// The most layers the uniform table holds (host twin `gpu::fused::MAX_LAYERS`).
const MAX_LAYERS: u32 = 32u;

// The offsets 0 .. 3 of a vec4's components, for masks.
const LANE4 = vec4<u32>(0u, 1u, 2u, 3u);
