//! `mnist-wgpu eval`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use mnist_wgpu::data;
use mnist_wgpu::fetch::Need;
use mnist_wgpu::modelfile;
use mnist_wgpu::train::Eval;

use mnist_wgpu::backends;

use super::args::{RunArgs, arch_string, at_least_one, data_dir, open_device, usage};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model file: written by `mnist-wgpu train`, or by PyTorch with
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Test images per evaluation step.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    pub batch_size: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let t_start = Instant::now();
    let (input, classes) = (28 * 28, mnist_wgpu::data::CLASSES);
    let model = modelfile::load(&args.model, input, classes)?;
    let arch = model.arch.clone();
    let gpu = open_device(args.run.device, &args.run.adapter)?;
    let kind = args.run.dataset;
    let dir = data_dir(&args.run, Need::TestOnly)?;
    let test = data::load_test(&dir, kind)
        .with_context(|| format!("loading {} from {}", kind.name(), dir.display()))?;
    let mut backend = pollster::block_on(backends::for_evaluation(
        gpu,
        &arch,
        model.params.clone(),
        test,
        args.batch_size,
    ))
    .map_err(usage)?;
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
        args.model.display(),
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
