// Philox4x32-10 (Salmon et al., SC 2011), the counter-based generator dropout draws from: a
// draw is a pure function of its counter and key, so any invocation computes its own in any
// order, and the CPU twin (`philox::philox4x32_10`, `philox::Mask::keeps`) gets the same bits.

// (high, low) 32-bit words of the 64-bit product a * b; WGSL has no 64-bit integers, so the
// high word is put together from 16-bit halves.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let hi = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Whether dropout keeps unit `element` of layer `layer` at step `run` of the run for the model
// of seed `key`, dropping with probability p: the first word's top 24 bits as a uniform number
// in [0, 1), kept when at least p (as `Mask::keeps`).
fn keeps(element: u32, layer: u32, run: u32, key: vec2<u32>, p: f32) -> bool {
    let r = philox4x32_10(vec4<u32>(element, layer, run, 0u), key);
    return f32(r.x >> 8u) * (1.0 / 16777216.0) >= p;
}
