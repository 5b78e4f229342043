//! Batch assembly: the step's shuffled images, gathered from the resident u8 data set and
//! normalised, written feature-major for the first forward product and batch-major for the
//! first weight gradient (shaders/batch.wgsl). CPU twin: `cpu::gather`.

use anyhow::Result;

use crate::cpu;
use crate::data::Dataset;
use crate::gpu::buffers::pack_images;
use crate::gpu::check::{
    Check, Pending, Tally, buffer, read, run_dispatch, steps_buffer, together,
};
use crate::gpu::check::{FusedCase, FusedOutputs, block, padding_is_zero};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::{
    Bind, Dispatch, DispatchDesc, ModelAxis, need, need_batch, no_corrections,
};
use crate::gpu::layout::pad4;
use crate::gpu::ops::{Modules, WG};
use crate::rng::Rng;

pub struct Gather<'a> {
    pub pixels: usize,
    pub bp: usize,
    /// images: [split size, ceil(pixels / 4)] u32, from `buffers::pack_images`
    pub images: &'a wgpu::Buffer,
    /// order: [split size], the epoch's order of the split
    pub order: &'a wgpu::Buffer,
    /// table: [256] f32, `data::Normalize::table`
    pub table: &'a wgpu::Buffer,
    /// steps: the split's step uniforms
    pub steps: &'a wgpu::Buffer,
    /// x_t: X^T [pixels, bp]
    pub x_t: &'a wgpu::Buffer,
    /// x_rows: X [bp, pad4(pixels)]
    pub x_rows: &'a wgpu::Buffer,
    /// A set: X^T and X per model, one order per model `axis.order` apart.
    pub axis: ModelAxis,
}

impl Gather<'_> {
    pub fn dispatch(&self, gpu: &Gpu, m: &Modules, label: &str) -> Result<Dispatch> {
        let (p, bp) = (self.pixels, self.bp);
        need_batch(label, bp)?;
        let words = p.div_ceil(4);
        need(label, "table", self.table, 256 * 4)?;
        let (x, models) = (self.axis, self.axis.models);
        x.need_acts(label, "X^T", self.x_t, p * bp)?;
        x.need_acts(label, "X", self.x_rows, bp * pad4(p))?;
        Dispatch::new(
            gpu,
            DispatchDesc {
                label: label.to_string(),
                module: &m.gather,
                entry: "gather",
                constants: &[
                    ("PIXELS", p as f64),
                    ("WORDS", words as f64),
                    ("BP", bp as f64),
                    ("LDX", pad4(p) as f64),
                    ("WG", WG as f64),
                    x.o_stride(),
                ],
                bindings: &[
                    (0, Bind::Read(self.images)),
                    (1, Bind::Read(self.order)),
                    (2, Bind::Read(self.table)),
                    (3, Bind::Step(self.steps)),
                    (4, Bind::ReadWrite(self.x_t)),
                    (5, Bind::ReadWrite(self.x_rows)),
                ],
                groups: [(words as u32).div_ceil(WG), bp as u32 / 4, models as u32],
            },
        )
    }
}

fn dataset(rng: &mut Rng, n: usize, rows: usize, cols: usize) -> Dataset {
    Dataset {
        images: (0..n * rows * cols).map(|_| rng.below(256) as u8).collect(),
        labels: (0..n).map(|_| rng.below(10) as u8).collect(),
        rows,
        cols,
        normalize: crate::data::Normalize::TUTORIAL,
    }
}

/// The gather of a partial last batch equals `cpu::gather` bit for bit, with zero columns past
/// the valid count; 7x13 images are no whole number of u32 words; the last case normalises as
/// pytorch/examples does.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let mut rng = Rng::new(11, 0);
    let mut all: Pending<'_> = Vec::new();
    let examples = crate::data::Normalize {
        mean: 0.1307,
        std: 0.3081,
    };
    let tutorial = crate::data::Normalize::TUTORIAL;
    for (rows, cols, batch, norm, models) in [
        (28, 28, 32, tutorial, 1),
        (7, 13, 7, tutorial, 1),
        (7, 13, 33, examples, 1),
        (7, 13, 7, examples, 2),
    ] {
        let data = dataset(&mut rng, 50, rows, cols).normalized(norm);
        let orders: Vec<Vec<u32>> = (0..models)
            .map(|_| {
                let mut order: Vec<u32> = (0..50).collect();
                rng.shuffle(&mut order);
                order
            })
            .collect();
        all.push(Box::pin(async move {
            let shape = format!("{rows}x{cols} batch {batch}, {}", models_word(models));
            vec![
                check_one(gpu, m, &data, &orders, batch)
                    .await
                    .unwrap_or_else(|e| Tally::broken("gather+normalise", shape, e)),
            ]
        }));
    }
    together(all).await
}

/// The last (partial) step of an epoch for each model of `orders`, its own order each
/// (`O_STRIDE` apart), against the twin on that model's order.
async fn check_one(
    gpu: &Gpu,
    m: &Modules,
    data: &Dataset,
    orders: &[Vec<u32>],
    batch: usize,
) -> Result<Check> {
    let (p, bp, n, k) = (data.pixels(), pad4(batch), data.len(), orders.len());
    let images = buffer(gpu, "images", &pack_images(data));
    let orderb = buffer(gpu, "order", &orders.concat());
    let table = buffer(gpu, "table", &data.normalize.table());
    let x_t = buffer(gpu, "X^T", &vec![f32::NAN; k * p * bp]);
    let x_rows = buffer(gpu, "X", &vec![f32::NAN; k * bp * pad4(p)]);
    let steps = steps_buffer(gpu, n, batch, no_corrections);
    let g = Gather {
        pixels: p,
        bp,
        images: &images,
        order: &orderb,
        table: &table,
        steps: &steps,
        x_t: &x_t,
        x_rows: &x_rows,
        axis: ModelAxis {
            models: k,
            params: 0,
            order: if k > 1 { n } else { 0 },
        },
    };
    let last = n.div_ceil(batch) - 1;
    run_dispatch(gpu, &g.dispatch(gpu, m, "gather")?, last)?;
    let start = last * batch;
    let valid = (n - start).min(batch);
    let all_t: Vec<f32> = read(gpu, &x_t, k * p * bp).await?;
    let all_b: Vec<f32> = read(gpu, &x_rows, k * bp * pad4(p)).await?;
    let shape = format!(
        "{}x{} batch {batch}, {}",
        data.rows,
        data.cols,
        models_word(k)
    );
    let mut t = Tally::new("gather+normalise", shape);
    for (model, order) in orders.iter().enumerate() {
        let reference = cpu::gather(data, &order[start..start + valid]);
        let got_t = &all_t[model * p * bp..][..p * bp];
        let got_b = &all_b[model * bp * pad4(p)..][..bp * pad4(p)];
        compare(&mut t, model, (got_t, got_b), &reference, (p, bp, valid));
    }
    Ok(t.done())
}

fn models_word(k: usize) -> String {
    match k {
        1 => "1 model".into(),
        k => format!("{k} models"),
    }
}

/// One model's X^T [p, bp] and X [bp, pad4(p)] against the twin's rows: exact, zero past
/// `valid` and in the padding.
fn compare(
    t: &mut Tally,
    model: usize,
    (got_t, got_b): (&[f32], &[f32]),
    reference: &[f32],
    (p, bp, valid): (usize, usize, usize),
) {
    for col in 0..bp {
        for px in 0..pad4(p) {
            let want = if col < valid && px < p {
                reference[col * p + px]
            } else {
                0.0
            };
            let what = || format!("model {model}: pixel {px} of column {col}");
            if px < p {
                t.close(what, got_t[px * bp + col] as f64, want as f64, 0.0);
            }
            t.close(what, got_b[col * pad4(p) + px] as f64, want as f64, 0.0);
        }
    }
}

/// gather_samples against cpu::gather: exact, zero past `valid` and in the padding.
pub fn check_fused(case: &FusedCase, o: &FusedOutputs) -> Check {
    let mut t = Tally::new("fused gather+normalise", case.shape());
    let (start, valid) = (case.step * case.batch, case.valid());
    let want = cpu::gather(&case.data, &case.order[start..start + valid]);
    let r0 = o.rows[0];
    let (p, ld) = (case.data.pixels(), r0.ldw as usize);
    let got = block(&o.acts, r0.x_off as usize, (o.bp, ld, p));
    for c in 0..o.bp {
        for i in 0..p {
            let w = if c < valid {
                want[c * p + i] as f64
            } else {
                0.0
            };
            t.close(|| format!("X[{c},{i}]"), got[c * p + i], w, 0.0);
        }
    }
    if !padding_is_zero(&o.acts, r0.x_off as usize, (o.bp, ld, p)) {
        t.fail("X's padding pixels are not zero".into());
    }
    t.done()
}
