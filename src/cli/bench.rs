//! `mnist-wgpu bench`: training and evaluation speed on the chosen device, the per-kernel
//! profile, and a scaling table across batch sizes and widths.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use mnist_wgpu::bench::{
    Timing, peak_rss_bytes, submissions_per_epoch, time_evaluation, time_training,
};
use mnist_wgpu::data::{self, Mnist};
use mnist_wgpu::fetch::Need;
use mnist_wgpu::gpu::plan::PerSample;
use mnist_wgpu::model::Arch;
use mnist_wgpu::recipe::{Preset, Recipe};

use super::args::{
    Floats, Hidden, RunArgs, Seeds, UsageError, arch_string, at_least_one, data_dir, hidden,
    json_str, lr_list, momentum_list, open_device_for, positive_finite, seeds, usage,
};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The model and recipe to time, as train's --recipe: mlp, cnn-small or cnn.
    #[arg(long, value_enum, default_value_t = Preset::Mlp)]
    pub recipe: Preset,
    /// Images per step [default: the recipe's: mlp 32, the CNNs 64]
    #[arg(long, value_parser = at_least_one)]
    pub batch_size: Option<usize>,
    /// Hidden layer sizes [default: 128,128,64,64]
    #[arg(long, value_parser = hidden)]
    pub hidden: Option<Hidden>,
    /// Untimed steps first (pipelines warm, caches filled).
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Seconds of timed training steps (at least 20 steps, however long they take), and at
    /// most of the evaluations after them (at least one, at most three).
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = positive_finite)]
    pub seconds: f64,
    /// One JSON object (with --scaling, an array) for machines.
    #[arg(long)]
    pub json: bool,
    /// Also time every kernel with timestamp queries over 250 steps.
    #[arg(long)]
    pub profile: bool,
    /// Time a set of models side by side, one per seed: `1-8`, `1,4,9` (with lists of --lr
    /// and --momentum, every combination).
    #[arg(long, value_name = "LIST", value_parser = seeds)]
    pub seeds: Option<Seeds>,
    /// Learning rates of the set (a comma list) [default: the recipe's]
    #[arg(long, value_name = "LR[,LR...]", value_parser = lr_list)]
    pub lr: Option<Floats>,
    /// SGD momenta of the set (a comma list) [default: the recipe's]
    #[arg(long, value_name = "M[,M...]", value_parser = momentum_list)]
    pub momentum: Option<Floats>,
    /// Instead: a table across batch sizes 32 to 1024 and hidden widths 128 to 1024.
    #[arg(long)]
    pub scaling: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The set the flags ask for (one model by default), one epoch each.
fn recipes(args: &BenchArgs, batch_size: usize) -> Vec<Recipe> {
    let d = args.recipe.defaults();
    let sweep = mnist_wgpu::sweep::Sweep {
        seeds: args.seeds.as_ref().map_or(vec![1], |s| s.0.clone()),
        lrs: args.lr.as_ref().map_or(vec![d.lr], |l| l.0.clone()),
        momenta: args
            .momentum
            .as_ref()
            .map_or(vec![d.momentum], |m| m.0.clone()),
    };
    let optimizer = mnist_wgpu::optim::Optimizer::named(d.optimizer, sweep.momenta[0])
        .expect("a recipe names a known optimizer");
    let base = Recipe {
        epochs: 1,
        batch_size,
        optimizer,
        gamma: d.gamma,
        ..Recipe::tutorial(sweep.lrs[0], sweep.momenta[0], sweep.seeds[0])
    };
    sweep.recipes(&base)
}

/// One configuration, timed.
struct Measured {
    device: String,
    schedule: String,
    kernels: String,
    /// the fused schedule's per-sample workgroups (`16x64`); None for the others
    per_sample: Option<String>,
    arch: Arch,
    timing: Timing,
    /// The fastest evaluation of the test set, and how many were timed.
    eval_s: f64,
    eval_runs: usize,
    dispatches: usize,
    submissions: usize,
    buffers: Vec<(String, u64)>,
    profile: Option<String>,
}

/// How long to measure one configuration.
#[derive(Clone, Copy)]
struct Effort {
    warmup: usize,
    min_steps: usize,
    seconds: f64,
}

fn measure(
    args: &BenchArgs,
    mnist: &Mnist,
    arch: &Arch,
    batch: usize,
    effort: Effort,
) -> Result<Measured> {
    let gpu = open_device_for(args.run.device, &args.run.adapter, arch)?;
    let r = recipes(args, batch);
    let mut backend = pollster::block_on(mnist_wgpu::backends::for_set(
        gpu,
        arch,
        &r,
        r.iter().map(|r| arch.init(r.seed)).collect(),
        mnist.train.clone(),
        mnist.test.clone(),
    ))
    .map_err(usage)?;
    if let Some(line) = &backend.about().tuned {
        eprintln!("{line}");
    }
    let n = mnist.train.len();
    let timing = pollster::block_on(time_training(
        backend.as_mut(),
        arch,
        &r,
        n,
        effort.warmup,
        effort.min_steps,
        effort.seconds,
    ))?;
    let (eval_s, eval_runs) =
        pollster::block_on(time_evaluation(backend.as_mut(), 3, effort.seconds))?;
    let profile = if args.profile {
        Some(if backend.start_profile() {
            pollster::block_on(time_training(backend.as_mut(), arch, &r, n, 0, 250, 0.0))?;
            backend.profile().map(|p| p.table()).unwrap_or_default()
        } else {
            "no per-kernel profile: this device has no timestamp queries inside compute passes \
             (or is the CPU backend)\n"
                .to_string()
        })
    } else {
        None
    };
    let about = backend.about();
    Ok(Measured {
        schedule: about.schedule.to_string(),
        kernels: about.kernels.to_string(),
        per_sample: match about.schedule {
            "fused" => Some(
                about
                    .per_sample
                    .clone()
                    .unwrap_or(PerSample::DEFAULT.name()),
            ),
            _ => None,
        },
        device: about.device.clone(),
        arch: arch.clone(),
        timing,
        eval_s,
        eval_runs,
        dispatches: about.dispatches_per_step,
        submissions: submissions_per_epoch(r[0].steps_per_epoch(n)),
        buffers: about.buffers.clone(),
        profile,
    })
}

pub fn run(args: BenchArgs) -> Result<()> {
    let t_start = Instant::now();
    let kind = args.run.dataset;
    let dir = data_dir(&args.run, Need::All)?;
    let mnist = data::load(&dir, kind)
        .with_context(|| format!("loading {} from {}", kind.name(), dir.display()))?;
    if mnist.train.pixels() != 28 * 28 {
        return Err(UsageError(format!("{}: bench needs 28x28 images", dir.display())).into());
    }
    if args.scaling {
        return scaling(&args, &mnist);
    }
    let hidden = args
        .hidden
        .as_ref()
        .map_or(mnist_wgpu::flags::HIDDEN.to_vec(), |h| h.0.clone());
    let arch = args.recipe.arch(&hidden);
    let effort = Effort {
        warmup: args.warmup,
        min_steps: 20,
        seconds: args.seconds,
    };
    let batch = args.batch_size.unwrap_or(args.recipe.defaults().batch_size);
    let m = measure(&args, &mnist, &arch, batch, effort)?;
    let evals = m.eval_runs as f64 * m.eval_s;
    let startup = t_start.elapsed().as_secs_f64() - m.timing.seconds - evals;
    let rss = peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / 1e6);
    match args.json {
        true => print_json(&m, rss),
        false => print_report(&m, (startup, args.warmup, rss), mnist.test.len()),
    }
    Ok(())
}

/// One JSON object with every figure.
fn print_json(m: &Measured, rss: f64) {
    let t = &m.timing;
    let buffers: Vec<String> = m
        .buffers
        .iter()
        .map(|(name, size)| format!("{{\"name\": {}, \"bytes\": {size}}}", json_str(name)))
        .collect();
    println!(
        "{{\"device\": {}, \"schedule\": {}, \"kernels\": {}, \"per_sample\": {}, \"model\": {}, \"models\": {}, \"batch_size\": {}, \"steps\": {}, \"seconds\": {:.4}, \
         \"images_per_s\": {:.1}, \"ms_per_step\": {:.4}, \"gflops\": {:.3}, \
         \"dispatches_per_step\": {}, \"submissions_per_epoch\": {}, \"eval_seconds\": {:.4}, \
         \"peak_rss_mb\": {:.1}, \"buffers\": [{}]}}",
        json_str(&m.device),
        json_str(&m.schedule),
        json_str(&m.kernels),
        m.per_sample.as_deref().map_or("null".into(), json_str),
        json_str(&arch_string(&m.arch)),
        t.models,
        t.batch_size,
        t.steps,
        t.seconds,
        t.images_per_s(),
        t.ms_per_step(),
        t.gflops(),
        m.dispatches,
        m.submissions,
        m.eval_s,
        rss,
        buffers.join(", ")
    );
}

/// The figures for a person, one per line.
fn print_report(m: &Measured, (startup, warmup, rss): (f64, usize, f64), n_test: usize) {
    let t = &m.timing;
    println!("adapter: {}", m.device);
    println!(
        "model: {} | {} parameters | batch {} | {:.2} MFLOP per image per step | {} model{} side by side",
        arch_string(&m.arch),
        m.arch.param_count(),
        t.batch_size,
        t.flops_per_image / 1e6,
        t.models,
        if t.models == 1 { "" } else { "s" }
    );
    println!(
        "start-up       {startup:.2} s (data, device, buffers, pipelines, warm-up {warmup} steps)"
    );
    println!(
        "training       {} steps in {:.2} s: {:.1}k img/s, {:.3} ms/step, {:.2} GFLOP/s",
        t.steps,
        t.seconds,
        t.images_per_s() / 1e3,
        t.ms_per_step(),
        t.gflops()
    );
    if m.dispatches > 0 {
        println!(
            "dispatches     {} per step; {} submissions per epoch ({} of steps, as many loss read-backs)",
            m.dispatches,
            m.submissions,
            m.submissions / 2
        );
    }
    let per_s = n_test as f64 / m.eval_s / 1e3;
    println!(
        "evaluation     {n_test} images in {:.3} s ({per_s:.1}k img/s, fastest of {})",
        m.eval_s, m.eval_runs
    );
    println!("peak memory    {rss:.0} MB resident");
    if !m.buffers.is_empty() {
        let total: u64 = m.buffers.iter().map(|b| b.1).sum();
        println!("GPU buffers    {:.1} MB in all", total as f64 / 1e6);
        for (name, size) in &m.buffers {
            println!("  {name:<32} {:>10.3} MB", *size as f64 / 1e6);
        }
    }
    if let Some(p) = &m.profile {
        println!(
            "\nper-kernel GPU time over {} steps (timestamp queries):",
            250
        );
        print!("{p}");
    }
}

fn scaling(args: &BenchArgs, mnist: &Mnist) -> Result<()> {
    let widths: [&[usize]; 4] = [
        &[128, 128, 64, 64],
        &[256, 256, 256, 256],
        &[512, 512, 512, 512],
        &[1024, 1024, 1024, 1024],
    ];
    let batches = [32, 128, 512, 1024];
    let mut rows = Vec::new();
    if !args.json {
        println!(
            "{:<28} {:>6} {:>11} {:>10} {:>9} {:>10}",
            "model", "batch", "img/s", "ms/step", "GFLOP/s", "MFLOP/img"
        );
    }
    for hidden in widths {
        let arch = Arch::mlp(28 * 28, hidden, data::CLASSES);
        for batch in batches {
            // Wide models take tenths of a second per step on a software adapter: a few
            // warm-up steps and about two seconds each keep the table to a few minutes.
            let effort = Effort {
                warmup: args.warmup.min(5),
                min_steps: 3,
                seconds: args.seconds.min(2.0),
            };
            let m = measure(args, mnist, &arch, batch, effort)?;
            let t = &m.timing;
            if args.json {
                rows.push(format!(
                    "  {{\"model\": {}, \"batch_size\": {batch}, \"images_per_s\": {:.1}, \"ms_per_step\": {:.4}, \"gflops\": {:.3}}}",
                    json_str(&arch_string(&arch)),
                    t.images_per_s(),
                    t.ms_per_step(),
                    t.gflops()
                ));
            } else {
                println!(
                    "{:<28} {batch:>6} {:>11.0} {:>10.3} {:>9.2} {:>10.3}",
                    arch_string(&arch),
                    t.images_per_s(),
                    t.ms_per_step(),
                    t.gflops(),
                    t.flops_per_image / 1e6
                );
            }
        }
    }
    if args.json {
        println!("[\n{}\n]", rows.join(",\n"));
    }
    Ok(())
}
