//! Every kernel against its CPU twin, on random data and on shapes that are and are not
//! multiples of the workgroup and tile sizes. `mnist-wgpu selftest` runs these on the user's
//! adapter and tests/kernels.rs runs the same functions, so a driver that miscompiles a kernel
//! is caught the same way in both places. The checks live beside their launchers in `ops`.

use anyhow::Result;
use futures_util::future::join;

use futures_util::future::try_join3;

use crate::gpu::buffers::{OptimizerState, Split, hyper_buffer, normalisation_table, zeros};
use crate::gpu::check::{Check, FUSED_LR, FUSED_MOMENTUM, FusedCase, FusedOutputs, FusedVerdicts};
use crate::gpu::check::{Pending, Tally, buffer, read, run_dispatch, together};
use crate::gpu::device::Gpu;
use crate::gpu::fused::{FusedActs, FusedSample, FusedUpdate, SampleOutputs};
use crate::gpu::layout::{layer_rows, pad4};
use crate::gpu::ops::{KINDS, Modules, evaluate, gather, linear, nll_head, optimizer, rows};
use crate::gpu::plan::{PerSample, Schedule, default_kernels, runnable_kernels};
use crate::gpu::wgsl::Kernels;
use crate::optim::{Hyper, Optimizer};
/// The linear products' checks for every family of kernels the device can run, not only the
/// one it trains with.
pub async fn linear_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    let modules: Vec<Modules> = runnable_kernels(gpu)
        .into_iter()
        .map(|k| Modules::new(gpu, k))
        .collect::<Result<_>>()?;
    let all: Pending<'_> = modules
        .iter()
        .map(|m| Box::pin(linear::checks(gpu, m)) as _)
        .collect();
    Ok(together(all).await)
}

/// The fused schedule's checks in every flavour the device can run (subgroup, plain).
pub async fn fused_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    let mut flavours: Vec<Kernels> = runnable_kernels(gpu).iter().map(|k| k.fused()).collect();
    flavours.dedup();
    let modules: Vec<Modules> = flavours
        .into_iter()
        .map(|k| Modules::new(gpu, k))
        .collect::<Result<_>>()?;
    let all: Pending<'_> = modules
        .iter()
        .map(|m| Box::pin(fused_step_checks(gpu, m)) as _)
        .collect();
    Ok(together(all).await)
}

/// Every check of both schedules.
pub async fn all_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    checks(gpu, default_kernels(gpu), &Schedule::ALL).await
}

/// The checks of the kernels `schedules` run: layered, the linear products for every family
/// of kernels and then the other kernels (compiled as `kernels`); fused, its two dispatches op
/// by op. All run together (`check::together`), listed in this order.
pub async fn checks(gpu: &Gpu, kernels: Kernels, schedules: &[Schedule]) -> Result<Vec<Check>> {
    let m = Modules::new(gpu, kernels)?;
    let layered = async {
        if !schedules.contains(&Schedule::Layered) {
            return Ok::<_, anyhow::Error>(Vec::new());
        }
        let mut others: Pending<'_> = vec![
            Box::pin(gather::checks(gpu, &m)),
            Box::pin(nll_head::checks(gpu, &m)),
            Box::pin(evaluate::checks(gpu, &m)),
            Box::pin(optimizer::checks(gpu, &m)),
        ];
        others.extend(KINDS.iter().map(|k| (k.checks)(gpu, &m)));
        others.push(Box::pin(rows::checks(gpu, &m)));
        let (linear, others) = join(linear_checks(gpu), together(others)).await;
        let mut out = linear?;
        out.extend(others);
        Ok(out)
    };
    let fused = async {
        match schedules.contains(&Schedule::Fused) {
            true => fused_checks(gpu).await,
            false => Ok(Vec::new()),
        }
    };
    let (layered, fused) = join(layered, fused).await;
    let mut out = layered?;
    out.extend(fused?);
    Ok(out)
}

/// Ok when `checks` all passed; otherwise every failure, one per line.
pub fn failures(checks: &[Check]) -> Result<(), String> {
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            c.failure
                .as_ref()
                .map(|f| format!("{} {}: {f}", c.kernel, c.shape))
        })
        .collect();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("\n")),
    }
}

/// A case: seed, image rows and columns, hidden sizes, classes, batch, the step to run, and
/// the per-sample workgroups (samples, invocations).
type CaseShape = (
    u64,
    (usize, usize),
    &'static [usize],
    usize,
    usize,
    usize,
    (u32, u32),
);

/// The fused schedule's kernels against their CPU twins, one check per operation: a step of
/// each dispatch on random weights, momentum and images, then every tensor it wrote handed to
/// its operation's check (`ops::*::check_fused`), which compares it with the operation's twin
/// in `cpu` (in f64) computed from the tensors the dispatch read, so that a fault is named by
/// the operation that made it and errors do not compound. Shapes include widths that are no
/// multiple of 4 or 8, a last partial batch, a batch past a workgroup's samples, a batch of
/// one, and the tutorial's model, with the default per-sample workgroups and with fewer
/// samples and invocations than a tile of 8 samples (each case's rows start NaN, so a row no
/// workgroup writes fails); each case's checks come in dispatch order.
pub async fn fused_step_checks(gpu: &Gpu, m: &Modules) -> Vec<Check> {
    let cases: [CaseShape; 7] = [
        // widths no multiple of 4, a last partial batch of 3 in 40 columns
        (1, (7, 13), &[13, 6], 5, 37, 1, (16, 64)),
        // 36 columns: a workgroup holds 4 of its 8 samples
        (2, (7, 13), &[9], 10, 33, 0, (16, 64)),
        (3, (5, 3), &[5, 3], 3, 1, 2, (16, 64)),
        (4, (28, 28), &[128, 128, 64, 64], 10, 32, 0, (16, 64)),
        // one sample per workgroup, each of its tiles of 8 storing one
        (1, (7, 13), &[13, 6], 5, 37, 1, (1, 32)),
        // 4 samples, the last workgroup's 36 - 32 of them
        (2, (7, 13), &[9], 10, 33, 0, (4, 64)),
        (4, (28, 28), &[128, 128, 64, 64], 10, 32, 0, (2, 32)),
    ];
    let mut all: Pending<'_> = Vec::new();
    for (seed, image, hidden, classes, batch, step, (samples, invocations)) in cases {
        all.push(Box::pin(async move {
            let mut case = FusedCase::new(seed, image, hidden, classes);
            case.batch = batch;
            case.step = step;
            case.per_sample = PerSample::new(samples, invocations);
            let mut out = match run(gpu, m, &case).await {
                Ok(o) => compare(&case, &o),
                Err(e) => vec![Tally::broken("fused step", case.shape(), e)],
            };
            out.push(
                check_eval(gpu, m, &case)
                    .await
                    .unwrap_or_else(|e| Tally::broken("fused evaluate", case.shape(), e)),
            );
            // Which flavour and workgroups ran, as the layered checks name their family.
            let how = format!("{}, {}", m.kernels.fused().name(), case.per_sample.name());
            for c in &mut out {
                c.kernel = format!("{} ({how})", c.kernel);
            }
            out
        }));
    }
    together(all).await
}

/// Both dispatches of step `case.step`, with NaN in every row buffer beforehand (so that an
/// element left unwritten fails).
async fn run(gpu: &Gpu, m: &Modules, case: &FusedCase) -> Result<FusedOutputs> {
    let (layout, bp) = (&case.layout, pad4(case.batch));
    let params = buffer(gpu, "params", &layout.to_device(&case.params));
    let split = Split::new(gpu, "fused check", &case.data, case.batch);
    gpu.queue
        .write_buffer(&split.order, 0, bytemuck::cast_slice(&case.order));
    let acts = FusedActs::new(gpu, layout, bp, true, 1)?;
    let dz_rows = acts.dz.as_ref().expect("training buffers hold gradients");
    for b in [&acts.acts, dz_rows, &acts.sample_loss] {
        let nan = vec![f32::NAN; b.size() as usize / 4];
        gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(&nan));
    }
    let norm = normalisation_table(gpu, wgpu::BufferUsages::UNIFORM, &split);
    let steps = case.data.len().div_ceil(case.batch);
    let losses = zeros(gpu, "losses", steps);
    let sample = FusedSample {
        params: &params,
        acts: &acts,
        split: &split,
        norm: &norm,
        outputs: SampleOutputs::Train,
        per_sample: case.per_sample,
    };
    run_dispatch(
        gpu,
        &sample.dispatch(gpu, m, "fused per-sample")?,
        case.step,
    )?;
    let (rows, _) = layer_rows(layout, bp);
    let floats = |b: &wgpu::Buffer| b.size() as usize / 4;
    let (acts_v, dz, sample_loss) = try_join3(
        read(gpu, &acts.acts, floats(&acts.acts)),
        read(gpu, dz_rows, floats(dz_rows)),
        read(gpu, &acts.sample_loss, bp),
    )
    .await?;
    let one = Hyper {
        lr: FUSED_LR,
        momentum: FUSED_MOMENTUM,
        weight_decay: 0.0,
    };
    let hyper = hyper_buffer(gpu, &[one]);
    let state = OptimizerState::new(
        gpu,
        Optimizer::Sgd {
            momentum: FUSED_MOMENTUM,
        },
        layout.len,
    );
    let momentum = layout.to_device(&case.momentum);
    gpu.queue
        .write_buffer(&state.a, 0, bytemuck::cast_slice(&momentum));
    let update = FusedUpdate {
        acts: &acts,
        params: &params,
        state: &state,
        steps: &split.steps,
        losses: &losses,
        steps_per_epoch: steps,
        hyper: &hyper,
    };
    run_dispatch(gpu, &update.dispatch(gpu, m, "fused update")?, case.step)?;
    let (losses, params, momentum): (Vec<f32>, _, _) = try_join3(
        read(gpu, &losses, steps),
        read(gpu, &params, layout.len),
        read(gpu, &state.a, layout.len),
    )
    .await?;
    Ok(FusedOutputs {
        rows,
        bp,
        acts: acts_v,
        dz,
        sample_loss,
        params,
        momentum,
        loss: losses[case.step],
    })
}

fn compare(case: &FusedCase, o: &FusedOutputs) -> Vec<Check> {
    let mut out = vec![gather::check_fused(case, o)];
    let linears = case.arch.linear_dims().len();
    for l in 0..linears {
        out.push(linear::fused::check_forward(case, o, l));
    }
    out.push(nll_head::check_fused(case, o));
    for l in (1..linears).rev() {
        out.push(linear::fused::check_input_grad(case, o, l));
    }
    for l in 0..linears {
        out.push(linear::fused::check_update(case, o, l));
    }
    out
}

/// The fused evaluation of step `case.step`, handed to `ops::evaluate::check_fused`.
async fn check_eval(gpu: &Gpu, m: &Modules, case: &FusedCase) -> Result<Check> {
    let (layout, bp, n) = (&case.layout, pad4(case.batch), case.data.len());
    let classes = case.arch.output();
    let params = buffer(gpu, "params", &layout.to_device(&case.params));
    let split = Split::new(gpu, "fused eval check", &case.data, case.batch);
    gpu.queue
        .write_buffer(&split.order, 0, bytemuck::cast_slice(&case.order));
    let rows = FusedActs::new(gpu, layout, bp, false, 1)?;
    let norm = normalisation_table(gpu, wgpu::BufferUsages::UNIFORM, &split);
    let correct = buffer(gpu, "correct", &vec![u32::MAX; n]);
    let log_probs = buffer(gpu, "log-probs", &vec![f32::NAN; n * classes]);
    let op = FusedSample {
        params: &params,
        acts: &rows,
        split: &split,
        norm: &norm,
        outputs: SampleOutputs::Eval {
            correct: &correct,
            log_probs: &log_probs,
        },
        per_sample: case.per_sample,
    }
    .dispatch(gpu, m, "fused evaluate")?;
    run_dispatch(gpu, &op, case.step)?;
    let (correct, log_probs, acts): (Vec<u32>, Vec<f32>, Vec<f32>) = try_join3(
        read(gpu, &correct, n),
        read(gpu, &log_probs, n * classes),
        read(gpu, &rows.acts, rows.acts.size() as usize / 4),
    )
    .await?;
    let v = FusedVerdicts {
        correct,
        log_probs,
        acts,
    };
    Ok(evaluate::check_fused(case, &v))
}
