//! The note for a software adapter picked by `--device auto`: what a training step costs there
//! against the CPU backend, both measured on this machine; and the lines before the header.

use std::time::Instant;

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::Dataset;
use mnist_wgpu::gpu::device::Gpu;
use mnist_wgpu::gpu::plan::Request;
use mnist_wgpu::model::Arch;
use mnist_wgpu::train::{About, Backend};
use wgpu::DeviceType;

use super::spec::RunSpec;

/// Training steps the CPU backend runs to warm up, then times, for the note on software
/// adapters (about 30 ms in all).
const CPU_WARM_UP: usize = 10;
const CPU_PROBE_STEPS: usize = 50;

/// For a software adapter picked by `--device auto` (`gpu`), its name and what a step of the
/// CPU backend costs on this machine now, for the note on what the adapter costs.
pub fn software_probe(
    gpu: Option<&(Gpu, Request)>,
    arch: &Arch,
    spec: &RunSpec,
    params: &[f32],
    train: &Dataset,
) -> Option<(String, f64)> {
    let info = &gpu?.0.info;
    (info.device_type == DeviceType::Cpu).then(|| {
        (
            info.name.clone(),
            cpu_ms_per_step(arch, spec, params, train),
        )
    })
}

/// Milliseconds per training step of the CPU backend on this machine, now: a few steps of
/// the run's own recipe on the head of its training set.
fn cpu_ms_per_step(arch: &Arch, spec: &RunSpec, params: &[f32], train: &Dataset) -> f64 {
    let recipe = &spec.recipe;
    let all = recipe.steps_per_epoch(train.len());
    let (warm, steps) = (
        CPU_WARM_UP.min(all / 2),
        CPU_PROBE_STEPS.min(all - all / 2).max(1),
    );
    let head = train.head((warm + steps) * recipe.batch_size);
    let order: Vec<u32> = (0..head.len() as u32).collect();
    let empty = Dataset::empty(train.rows, train.cols);
    let mut cpu = CpuBackend::new(arch.clone(), recipe.clone(), params.to_vec(), head, empty);
    let run = async {
        cpu.begin_epoch(0, &order)?;
        cpu.run_steps(0..warm).await?;
        let t0 = Instant::now();
        cpu.run_steps(warm..warm + steps).await?;
        anyhow::Ok(t0.elapsed().as_secs_f64() * 1e3 / steps as f64)
    };
    pollster::block_on(run).unwrap_or(f64::NAN)
}

/// The lines before the header: the software adapter's note (its name and the CPU backend's
/// ms per step), and what `--schedule auto` chose.
pub fn announce(note: Option<(String, f64)>, about: &About, quiet: bool) {
    if let Some((name, cpu_ms)) = note {
        eprintln!("{}", software_note(&name, cpu_ms, about.step_ms));
    }
    if let (Some(line), false) = (&about.tuned, quiet) {
        eprintln!("{line}");
    }
}

/// The note for a software adapter picked by `--device auto`: what a step costs there against
/// the CPU backend, both measured on this machine (the adapter's by `--schedule auto`, now or
/// when it was cached).
fn software_note(name: &str, cpu_ms: f64, gpu_ms: Option<f64>) -> String {
    let against = match gpu_ms {
        Some(g) => format!(
            "a training step took {g:.2} ms here as auto measured it, {:.1} times the {cpu_ms:.2} ms \
             of --device cpu measured now",
            g / cpu_ms
        ),
        None => format!("--device cpu measured now takes {cpu_ms:.2} ms a training step"),
    };
    format!("note: {name} is a software adapter (the CPU emulating a GPU): {against}")
}
