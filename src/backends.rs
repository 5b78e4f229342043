//! A backend for a run: the GPU one on a device, the CPU reference without one. The command
//! line and the web page both build theirs here.

use anyhow::Result;

use crate::cpu::CpuBackend;
use crate::data::Dataset;
use crate::gpu::trainer::{GpuBackend, check_limits};
use crate::gpu::{Gpu, tune};
use crate::model::Arch;
use crate::train::{Backend, Recipe};

/// A model or batch the adapter's limits cannot hold: the user's choice to change, not a
/// failure of the device.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unfit(pub String);

/// The training backend for `gpu` (or the CPU backend when None), after checking the
/// adapter's limits for this model and batch; with `--schedule auto`, the schedule and kernels
/// measured for this adapter and shape (`gpu::tune`).
pub async fn for_training(
    gpu: Option<Gpu>,
    arch: &Arch,
    recipe: &Recipe,
    params: Vec<f32>,
    train: Dataset,
    test: Dataset,
) -> Result<Box<dyn Backend>> {
    Ok(match gpu {
        Some(mut gpu) => {
            let n = train.len().max(test.len());
            check_limits(&gpu, arch, recipe.batch_size, n).map_err(Unfit)?;
            if let Some(t) = gpu.tuning {
                let run = (arch, recipe, params.as_slice());
                tune::for_training(&mut gpu, t, run, &train, &test).await?;
            }
            Box::new(GpuBackend::new(gpu, arch, recipe, &params, &train, &test)?)
        }
        None => Box::new(CpuBackend::new(
            arch.clone(),
            recipe.clone(),
            params,
            train,
            test,
        )),
    })
}

/// A backend that only evaluates `test` in batches of `batch` (`eval`, `predict`, the page).
pub async fn for_evaluation(
    gpu: Option<Gpu>,
    arch: &Arch,
    params: Vec<f32>,
    test: Dataset,
    batch: usize,
) -> Result<Box<dyn Backend>> {
    Ok(match gpu {
        Some(mut gpu) => {
            check_limits(&gpu, arch, batch, test.len()).map_err(Unfit)?;
            if let Some(t) = gpu.tuning {
                tune::for_evaluation(&mut gpu, t, (arch, &params), &test, batch).await?;
            }
            Box::new(GpuBackend::evaluator(gpu, arch, &params, &test, batch)?)
        }
        None => {
            let train = Dataset::empty(test.rows, test.cols);
            let recipe = Recipe {
                epochs: 0,
                batch_size: batch,
                lr: 0.0,
                momentum: 0.0,
                seed: 0,
            };
            Box::new(CpuBackend::new(arch.clone(), recipe, params, train, test))
        }
    })
}
