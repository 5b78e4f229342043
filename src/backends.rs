//! A backend for a run: the GPU one on a device, the CPU reference without one. The command
//! line and the web page both build theirs here.

use anyhow::Result;

use crate::cpu::{CpuBackend, CpuEvaluator};
use crate::data::Dataset;
use crate::gpu::backend::{GpuBackend, check_limits};
use crate::gpu::device::Gpu;
use crate::gpu::evaluator::Evaluator;
use crate::gpu::plan::Request;
use crate::gpu::tune;
use crate::model::Arch;
use crate::recipe::Recipe;
use crate::train::{Backend, Evaluate};

/// A model or batch the adapter's limits cannot hold: the user's choice to change, not a
/// failure of the device.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unfit(pub String);

/// The training backend of a set of models trained side by side (one for a single run),
/// `recipes[k]` from `params[k]`, for `gpu` (or the CPU backend when None), after checking the
/// adapter's limits for this model, batch and data, with the plan `request` fixes or, with
/// `--schedule auto`, the one measured for this adapter and shape (`gpu::tune`).
pub async fn for_set(
    gpu: Option<(Gpu, Request)>,
    arch: &Arch,
    recipes: &[Recipe],
    mut params: Vec<Vec<f32>>,
    train: Dataset,
    test: Dataset,
) -> Result<Box<dyn Backend>> {
    crate::train::check_set(recipes)?;
    let Some((gpu, request)) = gpu else {
        let cpu = CpuBackend::set(arch.clone(), recipes.to_vec(), params, train, test);
        return Ok(Box::new(cpu));
    };
    let recipe = &recipes[0];
    let params: Vec<f32> = params.drain(..).flatten().collect();
    let n = train.len().max(test.len());
    check_limits(&gpu, arch, recipe.batch_size, Some(n), recipes.len()).map_err(Unfit)?;
    let (p, train, test) = (params.as_slice(), &train, &test);
    Ok(Box::new(match request.fixed(&gpu)? {
        Some(plan) => GpuBackend::new(&gpu, plan, arch, recipes, p, train, test)?,
        None => tune::for_training(&gpu, request, arch, recipes, p, train, test).await?,
    }))
}

/// An evaluator of `test` in batches of `batch` (`eval`, `predict`, the page).
pub async fn for_evaluation(
    gpu: Option<(Gpu, Request)>,
    arch: &Arch,
    params: Vec<f32>,
    test: Dataset,
    batch: usize,
) -> Result<Box<dyn Evaluate>> {
    let Some((gpu, request)) = gpu else {
        return Ok(Box::new(CpuEvaluator::new(arch.clone(), params, test)));
    };
    check_limits(&gpu, arch, batch, Some(test.len()), 1).map_err(Unfit)?;
    let p = params.as_slice();
    Ok(Box::new(match request.fixed(&gpu)? {
        Some(plan) => Evaluator::of_model(&gpu, plan, arch, p, &test, batch)?,
        None => tune::for_evaluation(&gpu, request, arch, p, &test, batch).await?,
    }))
}
