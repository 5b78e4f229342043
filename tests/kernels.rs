//! Every WGSL kernel against the CPU reference (in f64) on random data, on shapes that are and
//! are not multiples of the workgroup and tile sizes, with both matmul inner loops where the
//! adapter has subgroups. Needs a wgpu adapter (lavapipe will do).

mod common;

use common::*;
use mnist_wgpu::cpu;
use mnist_wgpu::data::{Dataset, normalize_table};
use mnist_wgpu::gpu::Gpu;
use mnist_wgpu::gpu::kernels::{Kernels, LossInput, MatmulSpec, Product};
use mnist_wgpu::gpu::trainer::{pack_images, pad4};
use mnist_wgpu::rng::Rng;

const BATCHES: [usize; 4] = [1, 7, 32, 33];
const INNER: [usize; 5] = [1, 10, 64, 784, 785];
/// Neither a multiple of the 4 rows of a matmul workgroup nor of its 32 columns.
const OTHER: usize = 13;

fn spec(product: Product, m: usize, n: usize, k: usize) -> MatmulSpec {
    MatmulSpec {
        product,
        m,
        n,
        k,
        a_off: 0,
        a_sm: 0,
        a_sk: 0,
        ldb: 0,
        c_off: 0,
        ldc: 0,
        aux_off: 0,
        aux_ld: 0,
        ldc2: 0,
        bg_off: 0,
    }
}

fn variant(gpu: &Gpu) -> &'static str {
    if gpu.subgroups { "subgroup" } else { "plain" }
}

/// Z^T [o, bp] = W [o, i] * H^T [i, bp] + bias, ReLU; and its batch-major copy.
fn check_forward(gpu: &Gpu, k: &Kernels, batch: usize, i: usize, o: usize, relu: bool) -> f64 {
    let mut rng = Rng::new(batch as u64 * 1000 + i as u64, o as u64);
    let bp = pad4(batch);
    let off = 5; // the weight does not start at 0 in the flat buffer
    let params = random(&mut rng, off + o * i + o, -1.0, 1.0);
    let ht = random(&mut rng, i * bp, -1.0, 1.0);
    let pb = buffer(gpu, "params", &params);
    let hb = buffer(gpu, "H^T", &ht);
    let cb = buffer(gpu, "Z^T", &vec![0f32; o * bp]);
    let c2b = buffer(gpu, "Z", &vec![0f32; bp * pad4(o)]);
    let s = MatmulSpec {
        a_off: off,
        a_sm: i,
        a_sk: 1,
        ldb: bp,
        ldc: bp,
        aux_off: off + o * i,
        ldc2: pad4(o),
        ..spec(Product::Forward { relu }, o, bp, i)
    };
    let op = k.matmul(gpu, "forward", s, &pb, &hb, &cb, Some(&pb), Some(&c2b));
    run(gpu, &op, 0);
    let got: Vec<f32> = read(gpu, &cb, o * bp);
    let got2: Vec<f32> = read(gpu, &c2b, bp * pad4(o));
    let (mut reference, mut scale) = (vec![0f64; o * bp], vec![0f64; o * bp]);
    for m in 0..o {
        for n in 0..bp {
            let (mut z, mut sc) = (params[off + o * i + m] as f64, 0f64);
            for kk in 0..i {
                let t = params[off + m * i + kk] as f64 * ht[kk * bp + n] as f64;
                z += t;
                sc += t.abs();
            }
            reference[m * bp + n] = if relu && z <= 0.0 { 0.0 } else { z };
            scale[m * bp + n] = sc + z.abs();
        }
    }
    let e = compare(
        &format!("forward {} b{batch} i{i} o{o}", variant(gpu)),
        &got,
        &reference,
        &scale,
        i,
    );
    let copy: Vec<f32> = (0..o * bp)
        .map(|x| got2[(x % bp) * pad4(o) + x / bp])
        .collect();
    assert_eq!(copy, got, "batch-major copy differs from Z^T");
    e.worst_ratio
}

/// dX^T [i, bp] = W^T * dZ^T [o, bp], masked by H^T > 0.
fn check_backward_input(gpu: &Gpu, k: &Kernels, batch: usize, i: usize, o: usize) -> f64 {
    let mut rng = Rng::new(batch as u64 * 7 + i as u64, 100 + o as u64);
    let bp = pad4(batch);
    let off = 3;
    let params = random(&mut rng, off + o * i, -1.0, 1.0);
    let dz = random(&mut rng, o * bp, -1.0, 1.0);
    let h = random(&mut rng, i * bp, -1.0, 1.0);
    let pb = buffer(gpu, "params", &params);
    let dzb = buffer(gpu, "dZ^T", &dz);
    let hb = buffer(gpu, "H^T", &h);
    let cb = buffer(gpu, "dX^T", &vec![0f32; i * bp]);
    let s = MatmulSpec {
        a_off: off,
        a_sm: 1,
        a_sk: i,
        ldb: bp,
        ldc: bp,
        aux_ld: bp,
        ..spec(Product::BackwardInput, i, bp, o)
    };
    let op = k.matmul(gpu, "backward input", s, &pb, &dzb, &cb, Some(&hb), None);
    run(gpu, &op, 0);
    let got: Vec<f32> = read(gpu, &cb, i * bp);
    let (mut reference, mut scale) = (vec![0f64; i * bp], vec![0f64; i * bp]);
    for m in 0..i {
        for n in 0..bp {
            let (mut z, mut sc) = (0f64, 0f64);
            for kk in 0..o {
                let t = params[off + kk * i + m] as f64 * dz[kk * bp + n] as f64;
                z += t;
                sc += t.abs();
            }
            reference[m * bp + n] = if h[m * bp + n] > 0.0 { z } else { 0.0 };
            scale[m * bp + n] = sc;
        }
    }
    compare(
        &format!("backward input {} b{batch} i{i} o{o}", variant(gpu)),
        &got,
        &reference,
        &scale,
        o,
    )
    .worst_ratio
}

/// dW [o, i] = dZ^T [o, bp] * H [bp, i] and db [o] = row sums of dZ^T, into a flat buffer.
fn check_backward_weight(gpu: &Gpu, k: &Kernels, batch: usize, i: usize, o: usize) -> f64 {
    let mut rng = Rng::new(batch as u64 * 31 + i as u64, 200 + o as u64);
    let bp = pad4(batch);
    let ldh = pad4(i);
    let off = 3;
    let dz = random(&mut rng, o * bp, -1.0, 1.0);
    let h = random(&mut rng, bp * ldh, -1.0, 1.0);
    let dzb = buffer(gpu, "dZ^T", &dz);
    let hb = buffer(gpu, "H", &h);
    let total = off + o * i + o + 2;
    let cb = buffer(gpu, "grads", &vec![f32::NAN; total]);
    let s = MatmulSpec {
        a_sm: bp,
        a_sk: 1,
        ldb: ldh,
        c_off: off,
        ldc: i,
        bg_off: off + o * i,
        ..spec(Product::BackwardWeight, o, i, bp)
    };
    let op = k.matmul(gpu, "backward weight", s, &dzb, &hb, &cb, None, None);
    run(gpu, &op, 0);
    let got: Vec<f32> = read(gpu, &cb, total);
    let (mut reference, mut scale) = (vec![0f64; o * i + o], vec![0f64; o * i + o]);
    for m in 0..o {
        for n in 0..i {
            for b in 0..bp {
                let t = dz[m * bp + b] as f64 * h[b * ldh + n] as f64;
                reference[m * i + n] += t;
                scale[m * i + n] += t.abs();
            }
        }
        for b in 0..bp {
            reference[o * i + m] += dz[m * bp + b] as f64;
            scale[o * i + m] += (dz[m * bp + b] as f64).abs();
        }
    }
    assert!(
        got[..off]
            .iter()
            .chain(&got[off + o * i + o..])
            .all(|v| v.is_nan()),
        "wrote outside dW, db"
    );
    compare(
        &format!("backward weight {} b{batch} i{i} o{o}", variant(gpu)),
        &got[off..off + o * i + o],
        &reference,
        &scale,
        bp,
    )
    .worst_ratio
}

#[test]
fn matmul_products_match_reference() {
    for gpu in gpus() {
        let k = Kernels::new(&gpu);
        let mut worst: f64 = 0.0;
        for &b in &BATCHES {
            for &i in &INNER {
                worst = worst.max(check_forward(&gpu, &k, b, i, OTHER, true));
                worst = worst.max(check_backward_input(&gpu, &k, b, i, OTHER));
                worst = worst.max(check_backward_weight(&gpu, &k, b, i, OTHER));
            }
        }
        // The tutorial's own shapes, and the logits layer without ReLU.
        worst = worst.max(check_forward(&gpu, &k, 32, 784, 128, true));
        worst = worst.max(check_forward(&gpu, &k, 32, 64, 10, false));
        worst = worst.max(check_backward_input(&gpu, &k, 32, 128, 128));
        worst = worst.max(check_backward_weight(&gpu, &k, 32, 784, 128));
        eprintln!(
            "matmul {}: largest error / tolerance {worst:.3}",
            variant(&gpu)
        );
    }
}

fn dataset(rng: &mut Rng, n: usize, rows: usize, cols: usize) -> Dataset {
    Dataset {
        images: (0..n * rows * cols).map(|_| rng.below(256) as u8).collect(),
        labels: (0..n).map(|_| rng.below(10) as u8).collect(),
        rows,
        cols,
    }
}

#[test]
fn gather_matches_reference_exactly() {
    let gpu = gpu(true);
    let k = Kernels::new(&gpu);
    let mut rng = Rng::new(11, 0);
    // 7x13 = 91 pixels: not a whole number of u32 words per image.
    for (rows, cols, batch) in [(28, 28, 32), (7, 13, 7), (7, 13, 33)] {
        let data = dataset(&mut rng, 50, rows, cols);
        let p = data.pixels();
        let mut order: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut order);
        let bp = pad4(batch);
        let ldx = pad4(p);
        let images = buffer(&gpu, "images", &pack_images(&data));
        let orderb = buffer(&gpu, "order", &order);
        let table = buffer(&gpu, "table", &normalize_table());
        let xt = buffer(&gpu, "x^T", &vec![f32::NAN; p * bp]);
        let xb = buffer(&gpu, "x", &vec![f32::NAN; bp * ldx]);
        let steps = steps_buffer(&gpu, 50, batch);
        let op = k.gather(
            &gpu, "gather", p, bp, ldx, &images, &orderb, &table, &xt, &xb, &steps,
        );
        // The last step of the epoch: a partial batch.
        let last = 50usize.div_ceil(batch) - 1;
        run(&gpu, &op, last);
        let start = last * batch;
        let valid = (50 - start).min(batch);
        let reference = cpu::gather(&data, &order[start..start + valid]);
        let got_t: Vec<f32> = read(&gpu, &xt, p * bp);
        let got_b: Vec<f32> = read(&gpu, &xb, bp * ldx);
        for col in 0..bp {
            for px in 0..p {
                let want = if col < valid {
                    reference[col * p + px]
                } else {
                    0.0
                };
                assert_eq!(
                    got_t[px * bp + col],
                    want,
                    "x^T pixel {px} col {col} ({rows}x{cols}, batch {batch})"
                );
                assert_eq!(got_b[col * ldx + px], want, "x pixel {px} col {col}");
            }
        }
    }
}

/// Device buffers of a loss kernel's inputs: logits `[classes, bp]`, labels, order, steps.
struct LossBuffers {
    logits: wgpu::Buffer,
    labels: wgpu::Buffer,
    order: wgpu::Buffer,
    steps: wgpu::Buffer,
}

impl LossBuffers {
    fn new(gpu: &Gpu, logits: &[f32], labels: &[u32], order: &[u32], batch: usize) -> Self {
        LossBuffers {
            logits: buffer(gpu, "logits", logits),
            labels: buffer(gpu, "labels", labels),
            order: buffer(gpu, "order", order),
            steps: steps_buffer(gpu, order.len(), batch),
        }
    }
    fn input(&self, classes: usize, bp: usize) -> LossInput<'_> {
        LossInput {
            classes,
            bp,
            logits: &self.logits,
            labels: &self.labels,
            order: &self.order,
            steps: &self.steps,
        }
    }
}

#[test]
fn nll_loss_and_gradient_match_reference() {
    let gpu = gpu(true);
    let k = Kernels::new(&gpu);
    let mut rng = Rng::new(12, 0);
    for (batch, classes) in [(1usize, 10usize), (7, 10), (32, 10), (33, 3), (200, 10)] {
        let bp = pad4(batch);
        let n = 3 * batch; // three steps; test the last
        let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        let logits = random(&mut rng, classes * bp, -8.0, 8.0);
        let bufs = LossBuffers::new(&gpu, &logits, &labels, &order, batch);
        let grad = buffer(&gpu, "grad", &vec![f32::NAN; classes * bp]);
        let losses = buffer(&gpu, "losses", &[f32::NAN; 3]);
        let op = k.nll(&gpu, "nll", &bufs.input(classes, bp), &grad, &losses);
        run(&gpu, &op, 2);
        // Reference in f64, batch-major.
        let z: Vec<f64> = (0..batch * classes)
            .map(|x| logits[(x % classes) * bp + x / classes] as f64)
            .collect();
        let lab: Vec<u8> = (0..batch)
            .map(|b| labels[order[2 * batch + b] as usize] as u8)
            .collect();
        let logp = cpu::log_softmax(&z, classes);
        let (loss, dz) = cpu::nll_loss_grad(&logp, &lab, classes);
        let got_loss: Vec<f32> = read(&gpu, &losses, 3);
        assert!(
            got_loss[0].is_nan() && got_loss[1].is_nan(),
            "wrote another step's loss"
        );
        let rel = (got_loss[2] as f64 - loss).abs() / loss;
        assert!(
            rel < 1e-5,
            "batch {batch}: loss {} vs {loss} (rel {rel:e})",
            got_loss[2]
        );
        let got: Vec<f32> = read(&gpu, &grad, classes * bp);
        for b in 0..bp {
            for c in 0..classes {
                let g = got[c * bp + b] as f64;
                let want = if b < batch { dz[b * classes + c] } else { 0.0 };
                // exp and log on the device are accurate to a few ulp of their result; the
                // gradient is a difference of values up to 1/batch.
                assert!(
                    (g - want).abs() <= 1e-6 / batch as f64,
                    "batch {batch}: dz[{b},{c}] = {g}, expected {want}"
                );
            }
        }
    }
}

#[test]
fn evaluate_matches_reference() {
    let gpu = gpu(true);
    let k = Kernels::new(&gpu);
    let mut rng = Rng::new(13, 0);
    let (batch, classes, n) = (33usize, 10usize, 40usize);
    let bp = pad4(batch);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    let order: Vec<u32> = (0..n as u32).collect();
    let mut logits = random(&mut rng, classes * bp, -4.0, 4.0);
    // a tie: the first largest wins, as in the tutorial's list.index(max(...))
    logits[3 * bp] = 9.0;
    logits[5 * bp] = 9.0;
    let bufs = LossBuffers::new(&gpu, &logits, &labels, &order, batch);
    let correct = buffer(&gpu, "correct", &vec![u32::MAX; n]);
    let loss = buffer(&gpu, "loss", &vec![f32::NAN; n]);
    let op = k.evaluate(&gpu, "evaluate", &bufs.input(classes, bp), &correct, &loss);
    run(&gpu, &op, 0);
    let got_c: Vec<u32> = read(&gpu, &correct, n);
    let got_l: Vec<f32> = read(&gpu, &loss, n);
    for b in 0..batch {
        let z: Vec<f64> = (0..classes).map(|c| logits[c * bp + b] as f64).collect();
        let pred = cpu::argmax(&z);
        let lp = cpu::log_softmax(&z, classes);
        let l = labels[b] as usize;
        assert_eq!(
            got_c[b],
            (pred == l) as u32 | (pred as u32) << 8,
            "sample {b}"
        );
        assert!(
            (got_l[b] as f64 + lp[l]).abs() < 1e-5 * (1.0 + lp[l].abs()),
            "sample {b} loss"
        );
    }
    assert_eq!(got_c[0] >> 8, 3, "tie broken towards the first class");
    assert!(
        got_c[batch..].iter().all(|&c| c == u32::MAX),
        "wrote past the step"
    );
}

#[test]
fn sgd_matches_reference() {
    let gpu = gpu(true);
    let k = Kernels::new(&gpu);
    let mut rng = Rng::new(14, 0);
    for count in [1usize, 255, 257, 130_058] {
        let p = random(&mut rng, count, -1.0, 1.0);
        let v = random(&mut rng, count, -1.0, 1.0);
        let g = random(&mut rng, count, -1.0, 1.0);
        let (pb, vb, gb) = (
            buffer(&gpu, "p", &p),
            buffer(&gpu, "v", &v),
            buffer(&gpu, "g", &g),
        );
        let op = k.sgd(&gpu, "sgd", count, 0.003, 0.9, &pb, &gb, &vb);
        run(&gpu, &op, 0);
        let (mut rp, mut rv) = (p.clone(), v.clone());
        cpu::sgd(&mut rp, &mut rv, &g, 0.003f32, 0.9f32);
        let gp: Vec<f32> = read(&gpu, &pb, count);
        let gv: Vec<f32> = read(&gpu, &vb, count);
        for i in 0..count {
            // The device may fuse a multiply-add (one rounding less): one ulp of the terms.
            let tv = 2.0 * f32::EPSILON * (0.9 * v[i].abs() + g[i].abs());
            assert!(
                (gv[i] - rv[i]).abs() <= tv,
                "v[{i}]: {} vs {}",
                gv[i],
                rv[i]
            );
            let tp = 2.0 * f32::EPSILON * (p[i].abs() + 0.003 * rv[i].abs()) + 0.003 * tv;
            assert!(
                (gp[i] - rp[i]).abs() <= tp,
                "p[{i}]: {} vs {}",
                gp[i],
                rp[i]
            );
        }
    }
}
