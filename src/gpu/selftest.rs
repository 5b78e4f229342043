//! Every kernel against its CPU twin, on random data and on shapes that are and are not
//! multiples of the workgroup and tile sizes. `mnist-wgpu selftest` runs these on the user's
//! adapter and tests/kernels.rs runs the same functions, so a driver that miscompiles a kernel
//! is caught the same way in both places. The checks live beside their launchers in `ops`.

use anyhow::Result;
use futures_util::future::join;

use crate::gpu::check::{Check, Pending, together};
use crate::gpu::context::Gpu;
use crate::gpu::fused_check;
use crate::gpu::ops::{Modules, evaluate, gather, linear, nll_head, sgd};
use crate::gpu::program::{Kernels, Schedule};
/// The linear products' checks for every family of kernels the device can run, not only the
/// one it trains with.
pub async fn linear_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    let modules: Vec<Modules> = gpu
        .runnable_kernels()
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
    let mut flavours: Vec<Kernels> = gpu.runnable_kernels().iter().map(|k| k.fused()).collect();
    flavours.dedup();
    let modules: Vec<Modules> = flavours
        .into_iter()
        .map(|k| Modules::new(gpu, k))
        .collect::<Result<_>>()?;
    let all: Pending<'_> = modules
        .iter()
        .map(|m| Box::pin(fused_check::checks(gpu, m)) as _)
        .collect();
    Ok(together(all).await)
}

/// Every check of both schedules.
pub async fn all_checks(gpu: &Gpu) -> Result<Vec<Check>> {
    checks(gpu, &Schedule::ALL).await
}

/// The checks of the kernels `schedules` run: layered, the linear products for every family
/// of kernels and then the other kernels; fused, its two dispatches op by op. All run
/// together (`check::together`), listed in this order.
pub async fn checks(gpu: &Gpu, schedules: &[Schedule]) -> Result<Vec<Check>> {
    let m = Modules::new(gpu, gpu.kernels)?;
    let layered = async {
        if !schedules.contains(&Schedule::Layered) {
            return Ok::<_, anyhow::Error>(Vec::new());
        }
        let others: Pending<'_> = vec![
            Box::pin(gather::checks(gpu, &m)),
            Box::pin(nll_head::checks(gpu, &m)),
            Box::pin(evaluate::checks(gpu, &m)),
            Box::pin(sgd::checks(gpu, &m)),
        ];
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
