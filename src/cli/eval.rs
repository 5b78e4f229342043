//! `mnist-wgpu eval`: one model file's accuracy, per-class table and confusion matrix, or the
//! table of several files (a set saved by `train --seeds ...`) with their mean ± std.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use mnist_wgpu::data;
use mnist_wgpu::fetch::Need;
use mnist_wgpu::modelfile::{self, ModelFile};
use mnist_wgpu::train::{Eval, Evaluate, Spread};

use mnist_wgpu::backends;

use super::args::{RunArgs, arch_string, at_least_one, data_dir, open_device_for, usage};
use mnist_wgpu::gpu::net::runnable;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model file: written by `mnist-wgpu train`, or by PyTorch with
    /// `safetensors.torch.save_file(model.state_dict(), path)`; several files print one row
    /// each and their mean ± std.
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    pub model: Vec<PathBuf>,
    /// Test images per evaluation step.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    pub batch_size: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let t_start = Instant::now();
    let (input, classes) = (28 * 28, mnist_wgpu::data::CLASSES);
    // Every file is read and checked before the device or the data is touched.
    let models = args
        .model
        .iter()
        .map(|p| modelfile::load(p, input, classes))
        .collect::<Result<Vec<_>, _>>()?;
    // A model the GPU schedules do not run takes every file to the CPU backend.
    let arch = (models.iter())
        .map(|m| &m.arch)
        .find(|a| runnable(a).is_err())
        .unwrap_or(&models[0].arch);
    let gpu = open_device_for(args.run.device, &args.run.adapter, arch)?;
    let kind = args.run.dataset;
    let dir = data_dir(&args.run, Need::TestOnly)?;
    let test = data::load_test(&dir, kind)
        .with_context(|| format!("loading {} from {}", kind.name(), dir.display()))?;
    let evaluator = |m: &ModelFile| {
        // The file's own normalisation (the tutorial's where it names none, as PyTorch's do).
        let normalize = m.normalize().map_err(anyhow::Error::msg)?;
        let (gpu, test) = (gpu.clone(), test.clone().normalized(normalize));
        let params = m.params.clone();
        let built = backends::for_evaluation(gpu, &m.arch, params, test, args.batch_size);
        pollster::block_on(built).map_err(usage)
    };
    if models.len() > 1 {
        return table(&args.model, &models, evaluator);
    }
    let (model, path) = (&models[0], &args.model[0]);
    let arch = model.arch.clone();
    let mut backend = evaluator(model)?;
    if let Some(line) = &backend.about().tuned {
        eprintln!("{line}");
    }
    println!("adapter: {}", backend.about().device);
    let meta = &model.metadata;
    let writer = match (meta.get("program"), meta.get("torch")) {
        (Some(p), _) => format!(" | written by {p}"),
        (None, Some(t)) => format!(" | written by PyTorch {t}"),
        _ => String::new(),
    };
    let recorded = match meta.get("accuracy").and_then(|a| a.parse::<f64>().ok()) {
        Some(a) => format!(" | recorded accuracy {:.2} %", 100.0 * a),
        None => String::new(),
    };
    let origin = format!("{writer}{recorded}");
    println!(
        "model: {} | {} | {} parameters{origin}",
        path.display(),
        arch_string(&arch),
        arch.param_count()
    );
    let t_eval = Instant::now();
    let ev = pollster::block_on(backend.evaluate())?;
    let eval_s = t_eval.elapsed().as_secs_f64();
    println!(
        "{} | test loss {:.4} | evaluation {:.2} s | total {:.2} s",
        mnist_wgpu::train::accuracy_line(ev.correct, ev.total),
        ev.mean_loss(),
        eval_s,
        t_start.elapsed().as_secs_f64()
    );
    print!("{}", report_tables(&ev));
    Ok(())
}

/// Several model files: one row each (its recipe from the file's metadata, its test loss and
/// accuracy now, and the accuracy it recorded), then the mean ± standard deviation.
fn table(
    paths: &[PathBuf],
    models: &[ModelFile],
    evaluator: impl Fn(&ModelFile) -> Result<Box<dyn Evaluate>>,
) -> Result<()> {
    let w = paths
        .iter()
        .map(|p| p.display().to_string().len())
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:>5}  {:<w$}  {:>6}  {:>8}  {:>8}  {:>9}  {:>13}  {:>8}\n",
        "model", "file", "seed", "lr", "momentum", "test loss", "test accuracy", "recorded",
    );
    let mut figures = Vec::new();
    for (k, (path, m)) in paths.iter().zip(models).enumerate() {
        let mut backend = evaluator(m)?;
        if k == 0 {
            println!("adapter: {}", backend.about().device);
        }
        let ev = pollster::block_on(backend.evaluate())?;
        let meta = |key: &str| m.metadata.get(key).map_or("-", String::as_str);
        let recorded = match meta("accuracy").parse::<f64>() {
            Ok(a) => format!("{:.2} %", 100.0 * a),
            Err(_) => "-".to_string(),
        };
        out += &format!(
            "{:>5}  {:<w$}  {:>6}  {:>8}  {:>8}  {:>9.4}  {:>11.2} %  {recorded:>8}\n",
            k + 1,
            path.display(),
            meta("seed"),
            meta("lr"),
            meta("momentum"),
            ev.mean_loss(),
            100.0 * ev.accuracy()
        );
        figures.push((ev.mean_loss(), 100.0 * ev.accuracy()));
    }
    let loss = Spread::of(figures.iter().map(|f| f.0));
    let acc = Spread::of(figures.iter().map(|f| f.1));
    println!(
        "{out}mean ± std of {} models: test loss {:.4} ± {:.4} | test accuracy {:.2} ± {:.2} % \
         ({:.2} .. {:.2})",
        models.len(),
        loss.mean,
        loss.std,
        acc.mean,
        acc.std,
        acc.min,
        acc.max
    );
    Ok(())
}

/// Per-class accuracy and the confusion matrix, fixed-width.
fn report_tables(ev: &Eval) -> String {
    let classes = ev.confusion.len();
    let mut out = String::from("\nclass  correct  total  accuracy\n");
    for c in 0..classes {
        let (ok, n) = ev.class_counts(c);
        out += &format!(
            "{c:>5}  {ok:>7}  {n:>5}  {:>6.2} %\n",
            100.0 * ok as f64 / n.max(1) as f64
        );
    }
    out += "\nconfusion matrix (rows: true class, columns: predicted class)\n      ";
    for c in 0..classes {
        out += &format!("{c:>6}");
    }
    out += "\n";
    for (c, row) in ev.confusion.iter().enumerate() {
        out += &format!("{c:>5} ");
        for v in row {
            out += &format!("{v:>6}");
        }
        out += "\n";
    }
    out
}
