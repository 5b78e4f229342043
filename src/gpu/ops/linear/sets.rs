//! The linear kernels on a set of two models, side by side in one dispatch: each model's every
//! output, bit for bit, what the same kernel writes for that model alone (which
//! `linear::checks` holds to the CPU twin), so no model reads or writes another's floats and
//! the strides (`ModelAxis`) are the buffers'.

use anyhow::Result;

use super::{Backward, Forward, InputGrad, test_layer};
use crate::gpu::check::{Check, Tally, buffer, random, read, run_dispatch};
use crate::gpu::device::Gpu;
use crate::gpu::dispatch::ModelAxis;
use crate::gpu::layout::{LayerAt, pad4};
use crate::gpu::ops::Modules;
use crate::rng::Rng;

/// One model's data: its layer (the same place in every model), parameters in the device
/// layout, and random H^T [in, bp], dZ^T [out, bp] and H [bp, ldw].
struct Model {
    at: LayerAt,
    params: Vec<f32>,
    h: Vec<f32>,
    dz: Vec<f32>,
    h_rows: Vec<f32>,
}

/// What a dispatch wrote, per buffer: (name, every model's floats).
type Written = Vec<(&'static str, Vec<f32>)>;

/// Forward and backward (with the input gradient) on two models of a 10 -> 13 layer at batch
/// 7 (8 columns), each against its own run.
pub async fn checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let (batch, inp, out) = (7, 10, 13);
    let bp = pad4(batch);
    let mut rng = Rng::new(4242, 9);
    let models: Vec<Model> = (0..2)
        .map(|_| {
            let (at, params) = test_layer(&mut rng, inp, out);
            Model {
                at,
                params,
                h: random(&mut rng, inp * bp, -1.0, 1.0),
                dz: random(&mut rng, out * bp, -1.0, 1.0),
                h_rows: random(&mut rng, bp * at.ldw, -1.0, 1.0),
            }
        })
        .collect();
    let shape = format!("[{out},{inp}]x[{inp},{bp}], 2 models");
    let mut checks = Vec::new();
    for (kind, backward) in [("forward", false), ("backward", true)] {
        let name = format!("{kind} set ({})", m.kernels.name());
        let check = compare(gpu, m, (&models, bp, backward), (&name, &shape)).await;
        checks.push(check.unwrap_or_else(|e| Tally::broken(name.as_str(), shape.as_str(), e)));
    }
    checks
}

/// Runs the set, then each model alone, and compares every buffer bit for bit.
async fn compare(
    gpu: &Gpu,
    m: &Modules,
    (models, bp, backward): (&[Model], usize, bool),
    (name, shape): (&str, &str),
) -> Result<Check> {
    let mut t = Tally::new(name, shape);
    let set = run(gpu, m, models, bp, backward).await?;
    for (k, model) in models.iter().enumerate() {
        let one = run(gpu, m, std::slice::from_ref(model), bp, backward).await?;
        for ((buf, all), (_, own)) in set.iter().zip(&one) {
            let n = own.len();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            if bits(&all[k * n..(k + 1) * n]) != bits(own) {
                t.fail(format!("model {k}: {buf} differs from its own run"));
            }
        }
    }
    Ok(t.done())
}

/// One dispatch over `models` side by side: forward (Z^T, Z) or backward (grads, dX^T).
async fn run(
    gpu: &Gpu,
    m: &Modules,
    models: &[Model],
    bp: usize,
    backward: bool,
) -> Result<Written> {
    let cat = |f: fn(&Model) -> &Vec<f32>| models.iter().flat_map(f).copied().collect::<Vec<_>>();
    let (k, at) = (models.len(), models[0].at);
    let len = models[0].params.len();
    let axis = ModelAxis {
        models: k,
        params: len,
        order: 0,
    };
    let nan = |n: usize| vec![f32::NAN; n];
    let pb = buffer(gpu, "params", &cat(|m| &m.params));
    let hb = buffer(gpu, "H^T", &cat(|m| &m.h));
    if !backward {
        let (n_z, n_rows) = (k * at.out * bp, k * bp * pad4(at.out));
        let (zb, zr) = (
            buffer(gpu, "Z^T", &nan(n_z)),
            buffer(gpu, "Z", &nan(n_rows)),
        );
        let f = Forward {
            at,
            bp,
            relu: true,
            params: &pb,
            h: &hb,
            z: &zb,
            z_rows: &zr,
            models: axis,
        };
        run_dispatch(gpu, &f.dispatch(gpu, m, "forward set")?, 0)?;
        return Ok(vec![
            ("Z^T", read(gpu, &zb, n_z).await?),
            ("Z", read(gpu, &zr, n_rows).await?),
        ]);
    }
    let dzb = buffer(gpu, "dZ^T", &cat(|m| &m.dz));
    let rows = buffer(gpu, "H", &cat(|m| &m.h_rows));
    let (gb, dxb) = (
        buffer(gpu, "grads", &nan(k * len)),
        buffer(gpu, "dX^T", &nan(k * at.inp * bp)),
    );
    let b = Backward {
        at,
        bp,
        params: &pb,
        dz: &dzb,
        h_rows: &rows,
        grads: &gb,
        input: Some(InputGrad {
            dx: &dxb,
            mask: &hb,
        }),
        models: axis,
    };
    run_dispatch(gpu, &b.dispatch(gpu, m, "backward set")?, 0)?;
    Ok(vec![
        ("grads", read(gpu, &gb, k * len).await?),
        ("dX^T", read(gpu, &dxb, k * at.inp * bp).await?),
    ])
}
