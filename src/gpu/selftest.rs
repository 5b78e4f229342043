//! Every kernel against its CPU twin, on random data and on shapes that are and are not
//! multiples of the workgroup and tile sizes. `mnist-wgpu selftest` runs these on the user's
//! adapter and tests/kernels.rs runs the same functions, so a driver that miscompiles a kernel
//! is caught the same way in both places. The checks live beside their launchers in `ops`.

use anyhow::Result;

use crate::gpu::check::Check;
use crate::gpu::context::Gpu;
use crate::gpu::fused_check;
use crate::gpu::ops::{Modules, evaluate, gather, linear, nll_head, sgd};
use crate::gpu::program::{Kernels, Schedule};
/// The linear products' checks for every family of kernels the device can run, not only the
/// one it trains with.
pub async fn linear_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for kernels in gpu.runnable_kernels() {
        out.extend(linear::checks(gpu, &Modules::new(gpu, kernels)?).await);
    }
    Ok(out)
}

/// The fused schedule's checks in every flavour the device can run (subgroup, plain).
pub async fn fused_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    let mut flavours: Vec<Kernels> = gpu.runnable_kernels().iter().map(|k| k.fused()).collect();
    flavours.dedup();
    let mut out = Vec::new();
    for k in flavours {
        out.extend(fused_check::checks(gpu, &Modules::new(gpu, k)?).await);
    }
    Ok(out)
}

/// Every check of both schedules.
pub async fn all_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    checks(gpu, &Schedule::ALL).await
}

/// The checks of the kernels `schedules` run: layered, the linear products for every family
/// of kernels and then the other kernels; fused, its two dispatches op by op.
pub async fn checks(gpu: &Gpu, schedules: &[Schedule]) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let m = Modules::new(gpu, gpu.kernels)?;
    if schedules.contains(&Schedule::Layered) {
        out.extend(linear_checks(gpu).await?);
        out.extend(gather::checks(gpu, &m).await);
        out.extend(nll_head::checks(gpu, &m).await);
        out.extend(evaluate::checks(gpu, &m).await);
        out.extend(sgd::checks(gpu, &m).await);
    }
    if schedules.contains(&Schedule::Fused) {
        out.extend(fused_checks(gpu).await?);
    }
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
