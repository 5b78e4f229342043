//! `mnist-wgpu selftest`.

use std::time::Instant;

use anyhow::Result;
use clap::Args;

use mnist_wgpu::gpu::device::{Gpu, pick_adapter};
use mnist_wgpu::gpu::plan::{Schedule, default_kernels, runnable_kernels};
use mnist_wgpu::gpu::selftest;

use super::args::AdapterArgs;

#[derive(Args, Debug)]
pub struct SelftestArgs {
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

/// The header after the adapter's name: API, type, and what the checks cover.
fn adapter_line(gpu: &Gpu) -> String {
    let families: Vec<&str> = runnable_kernels(gpu).iter().map(|k| k.name()).collect();
    format!(
        " | {:?} | {:?} | kernels: {}",
        gpu.info.backend,
        gpu.info.device_type,
        families.join(", ")
    )
}

pub fn run(args: SelftestArgs) -> Result<()> {
    let t0 = Instant::now();
    let adapter = pick_adapter(&args.adapter.query())?;
    let first = Gpu::open(&adapter)?;
    args.adapter.request().fixed(&first)?;
    let kernels = args
        .adapter
        .kernels
        .unwrap_or_else(|| default_kernels(&first));
    println!(
        "adapter: {}",
        first.info.name.clone() + &adapter_line(&first)
    );
    // Every matmul inner loop the adapter can run, not only the one training picks; with
    // --schedule auto, both schedules.
    let schedules = match args.adapter.schedule.0 {
        Some(s) => vec![s],
        None => Schedule::ALL.to_vec(),
    };
    let checks = pollster::block_on(selftest::checks(&first, kernels, &schedules))?;
    println!(
        "{:<40} {:<30} {:>10} {:>10}  ok",
        "kernel", "shape", "max error", "tolerance"
    );
    for c in &checks {
        println!(
            "{:<40} {:<30} {:>10.2e} {:>10.2e}  {}",
            c.kernel,
            c.shape,
            c.max_err,
            c.tol,
            if c.ok() { "ok" } else { "FAIL" }
        );
    }
    let failed: Vec<_> = checks.iter().filter(|c| !c.ok()).collect();
    for c in &failed {
        eprintln!(
            "FAIL {} {}: {}",
            c.kernel,
            c.shape,
            c.failure.as_deref().unwrap_or("")
        );
    }
    println!(
        "{} checks, {} failed, {:.1} s",
        checks.len(),
        failed.len(),
        t0.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} kernel checks failed on {}: do not trust training results on this adapter",
            failed.len(),
            checks.len(),
            first.info.name
        );
    }
    Ok(())
}
