//! `mnist-wgpu predict`: the digit in each of your images, with the top three probabilities.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use mnist_wgpu::data::{CLASSES, Dataset};
use mnist_wgpu::modelfile;
use mnist_wgpu::predict::{SIDE, load_digit, top3};

use mnist_wgpu::backends;

use super::args::{AdapterArgs, DeviceChoice, json_str, open_device_for, usage};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The model file (ours or PyTorch's state_dict as safetensors).
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// PNG or JPEG images of one digit each: any size, dark on light or light on dark.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON array for machines instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub adapter: AdapterArgs,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let model = modelfile::load(&args.model, SIDE * SIDE, CLASSES)?;
    // Every image is read before any work, so that a bad one is reported alone.
    let mut pixels = Vec::with_capacity(args.images.len() * SIDE * SIDE);
    for path in &args.images {
        pixels.extend_from_slice(&load_digit(path)?);
    }
    let n = args.images.len();
    let set = Dataset {
        images: pixels,
        labels: vec![0; n],
        rows: SIDE,
        cols: SIDE,
        normalize: model
            .normalize()
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.model.display()))?,
    };
    let gpu = open_device_for(args.device, &args.adapter, &model.arch)?;
    let mut backend = pollster::block_on(backends::for_evaluation(
        gpu,
        &model.arch,
        model.params,
        set,
        n.min(1000),
    ))
    .map_err(usage)?;
    let ev = pollster::block_on(backend.evaluate())?;
    let mut rows = Vec::new();
    for (path, logp) in args.images.iter().zip(ev.log_probs.chunks(CLASSES)) {
        rows.push((path.display().to_string(), top3(logp)));
    }
    if args.json {
        let items: Vec<String> = rows
            .iter()
            .map(|(path, top)| {
                let t: Vec<String> = top
                    .iter()
                    .map(|(d, p)| format!("{{\"digit\": {d}, \"probability\": {p:.6}}}"))
                    .collect();
                format!(
                    "  {{\"image\": {}, \"digit\": {}, \"top\": [{}]}}",
                    json_str(path),
                    top[0].0,
                    t.join(", ")
                )
            })
            .collect();
        println!("[\n{}\n]", items.join(",\n"));
    } else {
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (path, top) in &rows {
            let t: Vec<String> = top
                .iter()
                .map(|(d, p)| format!("{d} {:6.2} %", 100.0 * p))
                .collect();
            println!("{path:<width$}  {}   ({})", top[0].0, t.join(" | "));
        }
    }
    Ok(())
}
