//#needs BP, O_STRIDE, PIXELS, SAMPLES, WG, WORDS, acts, images, layer, model, order, step, table
// Batch assembly for the fused schedule (the per-sample twin of batch.wgsl): the workgroup's
// samples fetched through the epoch's order and normalised into X [BP, 4 WORDS], batch-major,
// one word (four pixels) per vec4. Samples past step.valid (a last, partial batch) and the
// padding pixels are zeros. CPU twin: `cpu::gather`. What it uses of its importer is its
// `//#needs` line.

fn normalised(v: u32) -> f32 {
    return table[v / 4u][v % 4u];
}

fn gather_samples(s0: u32, li: u32) {
    let x4 = layer(0u).x_off / 4u;
    for (var t = li; t < SAMPLES * WORDS; t += WG) {
        let col = s0 + t / WORDS;
        let w = t % WORDS;
        if (col >= BP) {
            break;
        }
        var v = vec4<f32>(0.0);
        if (col < step.valid) {
            let word = images[order[model * O_STRIDE + step.start + col] * WORDS + w];
            for (var j = 0u; j < 4u; j++) {
                if (w * 4u + j < PIXELS) {
                    v[j] = normalised((word >> (8u * j)) & 255u);
                }
            }
        }
        acts[x4 + col * WORDS + w] = v;
    }
}
