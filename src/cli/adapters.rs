//! `mnist-wgpu adapters`: every adapter wgpu finds, what matters about it here, and the one
//! `--device auto` would pick.

use anyhow::Result;
use clap::Args;

use mnist_wgpu::gpu::device::{adapter_has_subgroups, all_adapters, pick_adapter};
use mnist_wgpu::gpu::plan::{auto_kernels, kernels_that_fit};

use mnist_wgpu::gpu::tune;

use super::args::AdapterArgs;

#[derive(Args, Debug)]
pub struct AdaptersArgs {
    /// Mark the adapter these would pick (the same flags as train's).
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub fn run(args: AdaptersArgs) -> Result<()> {
    let all = all_adapters();
    let picked = pick_adapter(&args.adapter.query()).ok().map(|a| {
        let i = a.get_info();
        (i.name, i.backend)
    });
    if all.is_empty() {
        println!("no adapters found; train and eval would run on the CPU backend");
        return Ok(());
    }
    for a in &all {
        let i = a.get_info();
        let l = a.limits();
        let f = a.features();
        let mark = if picked.as_ref() == Some(&(i.name.clone(), i.backend)) {
            "*"
        } else {
            " "
        };
        let subgroups = adapter_has_subgroups(a);
        let kernels = (args.adapter.kernels).unwrap_or_else(|| auto_kernels(&i, subgroups, &l));
        println!(
            "{mark} {} | {:?} | {:?} | kernels: {}",
            i.name,
            i.backend,
            i.device_type,
            kernels.name()
        );
        println!(
            "    driver: {} {}",
            if i.driver.is_empty() { "?" } else { &i.driver },
            i.driver_info
        );
        println!(
            "    storage binding {} MiB | workgroups per dimension {} | invocations per workgroup {} | workgroup memory {} KiB",
            l.max_storage_buffer_binding_size / (1 << 20),
            l.max_compute_workgroups_per_dimension,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_storage_size / 1024
        );
        let sub = match (
            f.contains(wgpu::Features::SUBGROUP),
            adapter_has_subgroups(a),
        ) {
            (true, true) => format!(
                "subgroups {}..{} lanes",
                i.subgroup_min_size, i.subgroup_max_size
            ),
            (true, false) => format!(
                "subgroups {}..{} lanes (too narrow for the subgroup kernels)",
                i.subgroup_min_size, i.subgroup_max_size
            ),
            (false, _) => "no subgroups".to_string(),
        };
        let runnable: Vec<&str> = kernels_that_fit(adapter_has_subgroups(a), &l)
            .into_iter()
            .map(|k| k.name())
            .collect();
        let runnable = runnable.join(", ");
        let ts = if f.contains(wgpu::Features::TIMESTAMP_QUERY) {
            "timestamp queries"
        } else {
            "no timestamp queries"
        };
        println!("    {sub} | {ts}");
        println!("    kernels it can run: {runnable} | schedules: layered, fused");
        print_cached(&i);
    }
    if picked.is_some() {
        println!("(* marks the adapter --device auto picks with these flags)");
    }
    Ok(())
}

/// The choices `--schedule auto` measured and cached for this adapter, one line per shape.
fn print_cached(i: &wgpu::AdapterInfo) {
    let prefix = tune::adapter_key(i);
    let mine: Vec<_> = tune::cache::entries()
        .into_iter()
        .filter(|(k, _, _)| k.starts_with(&prefix))
        .collect();
    if mine.is_empty() {
        println!("    --schedule auto: nothing measured yet (the first run measures)");
    }
    for (key, choice, figures) in mine {
        let figs: Vec<String> = figures
            .iter()
            .map(|(c, ms)| format!("{} {ms:.2}", c.name()))
            .collect();
        println!(
            "    --schedule auto, {}: {} ({} ms)",
            &key[prefix.len()..],
            choice.name(),
            figs.join(", ")
        );
    }
}
