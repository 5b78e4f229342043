// Linear layers for the fused schedule, per sample (the twins of linear_forward.wgsl and the
// input product of linear_backward.wgsl). CPU twins: `cpu::linear_forward`,
// `cpu::linear_backward` (dx), `cpu::relu_backward`.
//
// Activations and gradients are batch-major, one row per sample (`layer_table.wgsl`), so a
// sample's row and a row of W both run along the layer's inputs. One invocation takes a tile of
// 4 features by 8 samples: per 4 inputs it reads four vec4 of W and eight of the samples for
// 128 multiply-adds. The workgroup's invocations take the tiles of a layer in turn; what a
// layer writes, the next reads after a storageBarrier in the entry point. Samples past BP
// (a batch that is no multiple of 8) read a clamped row and store nothing. Uses the importing
// module's `params`, `acts`, `dz`, `layers`, LAYERS, SAMPLES, WG and BP.

// W[min(o, out - 1), 4 k4 .. 4 k4 + 4]: one vec4 of a row (rows past `out` are clamped, so
// every load stays inside W; their products are masked by the caller).
fn w_vec(ly: Layer, o: u32, k4: u32) -> vec4<f32> {
    return params[(ly.w_off + min(o, ly.out - 1u) * ly.ldw) / 4u + k4];
}

// The vec4 at column k4 of rows c0 .. c0 + 4 of a batch-major tensor at vec4 offset `at`
// with rows of `ld4` vec4, as the columns of a matrix (rows past BP clamped). Matrices, not
// arrays: SwiftShader keeps a local array in memory and clamps every access to it.
fn acts4(at: u32, ld4: u32, c0: u32, k4: u32) -> mat4x4<f32> {
    let r = vec4<u32>(at) + min(vec4<u32>(c0) + LANE4, vec4<u32>(BP - 1u)) * ld4 + vec4<u32>(k4);
    return mat4x4<f32>(acts[r.x], acts[r.y], acts[r.z], acts[r.w]);
}

// The same from dz.
fn dz4(at: u32, ld4: u32, c0: u32, k4: u32) -> mat4x4<f32> {
    let r = vec4<u32>(at) + min(vec4<u32>(c0) + LANE4, vec4<u32>(BP - 1u)) * ld4 + vec4<u32>(k4);
    return mat4x4<f32>(dz[r.x], dz[r.y], dz[r.z], dz[r.w]);
}

// Stores column j of `v` to row c0 + j of acts at vec4 offset `at` (rows of `ld4` vec4),
// for the rows before BP.
fn store_acts4(at: u32, ld4: u32, c0: u32, v: mat4x4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if (c0 + j < BP) {
            acts[at + (c0 + j) * ld4] = v[j];
        }
    }
}

// Y = X W^T + bias, ReLU unless l is the logits layer, for the workgroup's samples s0 ..
// s0 + SAMPLES. Y's padding features are written 0.
fn forward_layer(l: u32, s0: u32, li: u32) {
    let ly = layers[l];
    let o4s = (ly.out + 3u) / 4u;
    let k4s = ly.ldw / 4u;
    let relu = l + 1u < LAYERS;
    for (var t = li; t < o4s * (SAMPLES / 8u); t += WG) {
        let o0 = (t % o4s) * 4u;
        let c0 = s0 + (t / o4s) * 8u;
        if (c0 >= BP) {
            break;
        }
        // column j of acc_a (acc_b) = Y[c0 + j (+ 4), o0 .. o0 + 4]
        var acc_a = mat4x4<f32>();
        var acc_b = mat4x4<f32>();
        let x_at = ly.x_off / 4u;
        for (var k4 = 0u; k4 < k4s; k4++) {
            // W's padding columns are zero in the device layout; masked all the same.
            let inside = vec4<u32>(k4 * 4u) + LANE4 < vec4<u32>(ly.inp);
            let zero = vec4<f32>(0.0);
            let w = transpose(mat4x4<f32>(
                select(zero, w_vec(ly, o0, k4), inside),
                select(zero, w_vec(ly, o0 + 1u, k4), inside),
                select(zero, w_vec(ly, o0 + 2u, k4), inside),
                select(zero, w_vec(ly, o0 + 3u, k4), inside),
            ));
            acc_a += w * acts4(x_at, k4s, c0, k4);
            acc_b += w * acts4(x_at, k4s, c0 + 4u, k4);
        }
        let rows = vec4<u32>(o0) + LANE4 < vec4<u32>(ly.out);
        let bias = select(vec4<f32>(0.0), params[(ly.b_off + o0) / 4u], rows);
        let b4 = mat4x4<f32>(bias, bias, bias, bias);
        var ya = acc_a + b4;
        var yb = acc_b + b4;
        for (var j = 0u; j < 4u; j++) {
            if (relu) {
                ya[j] = select(vec4<f32>(0.0), ya[j], ya[j] > vec4<f32>(0.0));
                yb[j] = select(vec4<f32>(0.0), yb[j], yb[j] > vec4<f32>(0.0));
            }
            ya[j] = select(vec4<f32>(0.0), ya[j], rows);
            yb[j] = select(vec4<f32>(0.0), yb[j], rows);
        }
        let y_at = ly.y_off / 4u + o0 / 4u;
        store_acts4(y_at, o4s, c0, ya);
        store_acts4(y_at, o4s, c0 + 4u, yb);
    }
}

// dZ of layer l - 1 = (dZ_l W_l) masked where the layer's input X was not positive (the ReLU
// of the layer below), for the workgroup's samples; padding features are written 0.
fn input_grad_layer(l: u32, s0: u32, li: u32) {
    let ly = layers[l];
    let below = layers[l - 1u];
    let o4s = (ly.out + 3u) / 4u;
    let k4s = ly.ldw / 4u;
    for (var t = li; t < k4s * (SAMPLES / 8u); t += WG) {
        let i4 = t % k4s;
        let c0 = s0 + (t / k4s) * 8u;
        if (c0 >= BP) {
            break;
        }
        // column j of acc_a (acc_b) = dX[c0 + j (+ 4), 4 i4 .. 4 i4 + 4]; dZ's padding
        // features are zero, so the clamped rows of W past `out` add nothing.
        var acc_a = mat4x4<f32>();
        var acc_b = mat4x4<f32>();
        let d_at = ly.dz_off / 4u;
        for (var o4 = 0u; o4 < o4s; o4++) {
            let o = o4 * 4u;
            let w = mat4x4<f32>(w_vec(ly, o, i4), w_vec(ly, o + 1u, i4), w_vec(ly, o + 2u, i4), w_vec(ly, o + 3u, i4));
            acc_a += w * dz4(d_at, o4s, c0, o4);
            acc_b += w * dz4(d_at, o4s, c0 + 4u, o4);
        }
        let inside = vec4<u32>(i4 * 4u) + LANE4 < vec4<u32>(ly.inp);
        let h_a = acts4(ly.x_off / 4u, k4s, c0, i4);
        let h_b = acts4(ly.x_off / 4u, k4s, c0 + 4u, i4);
        let out_at = below.dz_off / 4u + i4;
        for (var j = 0u; j < 4u; j++) {
            let zero = vec4<f32>(0.0);
            acc_a[j] = select(zero, acc_a[j], inside & (h_a[j] > zero));
            acc_b[j] = select(zero, acc_b[j], inside & (h_b[j] > zero));
            if (c0 + j < BP) {
                dz[out_at + (c0 + j) * k4s] = acc_a[j];
            }
            if (c0 + 4u + j < BP) {
                dz[out_at + (c0 + 4u + j) * k4s] = acc_b[j];
            }
        }
    }
}
