//#needs BP, LANE4, LAYERS, Layer, Rows8, SAMPLES, WG, acts, acts4, acts8, dz, dz8, layer, params
// Linear layers for the fused schedule, per sample (the twins of linear_forward.wgsl and the
// input product of linear_backward.wgsl). CPU twins: `cpu::linear_forward`,
// `cpu::linear_backward` (dx), `cpu::relu_backward`. Activations and gradients are batch-major,
// one row per sample (`layer_table.wgsl`), so a sample's row and a row of W both run along the
// layer's inputs. One invocation takes a tile of 4 features by 8 samples: per 4 inputs it reads
// four vec4 of W and eight of the samples for 128 multiply-adds. The workgroup's invocations
// take the tiles of a layer in turn; what a layer writes, the next reads after a storageBarrier
// in the entry point. A workgroup takes the samples s0 .. end (end = min(s0 + SAMPLES, BP)); a
// tile's samples past `end` (SAMPLES or a batch that is no multiple of 8) read the row end - 1,
// never another workgroup's, and store nothing, so that one or two samples per workgroup work
// the same arithmetic on each sample as sixteen do. What it uses of its importer is its
// `//#needs` line.

// W[min(o, out - 1), 4 k4 .. 4 k4 + 4]: one vec4 of a row (rows past `out` are clamped, so
// every load stays inside W; their products are masked by the caller).
fn w_vec(ly: Layer, o: u32, k4: u32) -> vec4<f32> {
    return params[(ly.w_off + min(o, ly.out - 1u) * ly.ldw) / 4u + k4];
}

// Stores column j of `v` to row c0 + j of dz at vec4 offset `at` (rows of `ld4` vec4), for the
// rows before `end`.
fn store_dz4(at: u32, ld4: u32, c0: u32, end: u32, v: mat4x4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if (c0 + j < end) {
            dz[at + (c0 + j) * ld4] = v[j];
        }
    }
}

// Stores column j of `v` to row c0 + j of acts at vec4 offset `at` (rows of `ld4` vec4),
// for the rows before `end`.
fn store_acts4(at: u32, ld4: u32, c0: u32, end: u32, v: mat4x4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        if (c0 + j < end) {
            acts[at + (c0 + j) * ld4] = v[j];
        }
    }
}

// Y = X W^T + bias, ReLU unless l is the logits layer, for the workgroup's samples s0 ..
// s0 + SAMPLES, eight at a time. Y's padding features are written 0. Invocation li takes the
// row tiles li, li + WG, ... of each eight samples; every loop runs the same trips in the whole
// workgroup, as the subgroup flavour of sample_rows (sample_subgroup.wgsl) needs.
fn forward_layer(l: u32, s0: u32, li: u32) {
    let ly = layer(l);
    let o4s = (ly.out + 3u) / 4u;
    let k4s = ly.ldw / 4u;
    let relu = l + 1u < LAYERS;
    let x_at = ly.x_off / 4u;
    let end = min(s0 + SAMPLES, BP);
    for (var c0 = s0; c0 < end; c0 += 8u) {
        for (var base = 0u; base < o4s; base += WG) {
            // A tile past the last is computed on the last one's rows and not stored; eight
            // invocations wholly past it (a subgroup, in the subgroup flavour) skip it.
            let t = base + li;
            if (t - t % 8u >= o4s) {
                continue;
            }
            let o0 = min(t, o4s - 1u) * 4u;
            // column j of acc.a (acc.b) = Y[c0 + j (+ 4), o0 .. o0 + 4]
            var acc = Rows8(mat4x4<f32>(), mat4x4<f32>());
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
                let x = acts8(x_at, k4s, c0, k4, end - 1u, li);
                acc.a += w * x.a;
                acc.b += w * x.b;
            }
            if (t < o4s) {
                let y_at = ly.y_off / 4u + t;
                store_acts4(y_at, o4s, c0, end, epilogue(ly, o0, relu, acc.a));
                store_acts4(y_at, o4s, c0 + 4u, end, epilogue(ly, o0, relu, acc.b));
            }
        }
    }
}

// Bias, ReLU (when `relu`) and zero past `out`, for the features o0 .. o0 + 4 of 4 samples.
fn epilogue(ly: Layer, o0: u32, relu: bool, acc: mat4x4<f32>) -> mat4x4<f32> {
    let rows = vec4<u32>(o0) + LANE4 < vec4<u32>(ly.out);
    let bias = select(vec4<f32>(0.0), params[(ly.b_off + o0) / 4u], rows);
    var y = acc + mat4x4<f32>(bias, bias, bias, bias);
    for (var j = 0u; j < 4u; j++) {
        if (relu) {
            y[j] = select(vec4<f32>(0.0), y[j], y[j] > vec4<f32>(0.0));
        }
        y[j] = select(vec4<f32>(0.0), y[j], rows);
    }
    return y;
}

// dZ of layer l - 1 = (dZ_l W_l) masked where the layer's input X was not positive (the ReLU
// of the layer below), for the workgroup's samples, eight at a time; padding features are
// written 0. Invocation li takes the input tiles li, li + WG, ...; loops as in forward_layer.
fn input_grad_layer(l: u32, s0: u32, li: u32) {
    let ly = layer(l);
    let below = layer(l - 1u);
    let o4s = (ly.out + 3u) / 4u;
    let k4s = ly.ldw / 4u;
    let d_at = ly.dz_off / 4u;
    let end = min(s0 + SAMPLES, BP);
    for (var c0 = s0; c0 < end; c0 += 8u) {
        for (var base = 0u; base < k4s; base += WG) {
            let t = base + li;
            if (t - t % 8u >= k4s) {
                continue;
            }
            let i4 = min(t, k4s - 1u);
            // column j of acc.a (acc.b) = dX[c0 + j (+ 4), 4 i4 .. 4 i4 + 4]; dZ's padding
            // features are zero, so the clamped rows of W past `out` add nothing.
            var acc = Rows8(mat4x4<f32>(), mat4x4<f32>());
            for (var o4 = 0u; o4 < o4s; o4++) {
                let o = o4 * 4u;
                let w = mat4x4<f32>(w_vec(ly, o, i4), w_vec(ly, o + 1u, i4), w_vec(ly, o + 2u, i4), w_vec(ly, o + 3u, i4));
                let d = dz8(d_at, o4s, c0, o4, end - 1u, li);
                acc.a += w * d.a;
                acc.b += w * d.b;
            }
            let inside = vec4<u32>(i4 * 4u) + LANE4 < vec4<u32>(ly.inp);
            let h_a = acts4(ly.x_off / 4u, k4s, c0, i4, end - 1u);
            let h_b = acts4(ly.x_off / 4u, k4s, c0 + 4u, i4, end - 1u);
            let zero = vec4<f32>(0.0);
            for (var j = 0u; j < 4u; j++) {
                acc.a[j] = select(zero, acc.a[j], inside & (h_a[j] > zero));
                acc.b[j] = select(zero, acc.b[j], inside & (h_b[j] > zero));
            }
            if (t < k4s) {
                let out_at = below.dz_off / 4u + i4;
                store_dz4(out_at, k4s, c0, end, acc.a);
                store_dz4(out_at, k4s, c0 + 4u, end, acc.b);
            }
        }
    }
}
