//! How often `predict`'s preprocessing keeps the model's answer: the first 1,000 MNIST test
//! images are redrawn at several sizes (with a margin, alternating polarity), preprocessed
//! back to 28x28, and classified by the PyTorch-trained fixture model; each line gives how
//! many get the class the original image gets. This is how the crop threshold and the
//! centre-of-mass target in src/predict.rs were chosen.
//! Run: `cargo run --release --example predict_agreement`.

use std::path::Path;

use mnist_wgpu::cpu;
use mnist_wgpu::data::{Normalize, default_data_dir, load_mnist};
use mnist_wgpu::modelfile;
use mnist_wgpu::predict::{render_digit, to_mnist};

fn main() -> anyhow::Result<()> {
    let test = load_mnist(&default_data_dir())?.test;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = modelfile::load(
        &root.join("tests/parity/torch_tutorial.safetensors"),
        784,
        10,
    )?;
    let params: Vec<f64> = model.params.iter().map(|&v| v as f64).collect();
    let table = Normalize::TUTORIAL.table();
    let classify = |imgs: &[Vec<u8>]| -> Vec<usize> {
        let x: Vec<f64> = imgs
            .iter()
            .flat_map(|im| im.iter().map(|&p| table[p as usize] as f64))
            .collect();
        let acts = cpu::forward(&model.arch, &params, &x, imgs.len());
        // LogSoftmax's input, the logits.
        acts[acts.len() - 2].chunks(10).map(cpu::argmax).collect()
    };
    let n = 1000;
    let original = classify(&(0..n).map(|i| test.image(i).to_vec()).collect::<Vec<_>>());
    for size in [22u32, 28, 40, 64, 100, 180] {
        let redrawn: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                to_mnist(&render_digit(test.image(i), size, 10, i % 2 == 0)).map(|m| m.to_vec())
            })
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        let same = classify(&redrawn)
            .iter()
            .zip(&original)
            .filter(|(a, b)| a == b)
            .count();
        println!("{size:>4} px: {same}/{n} keep the original's class");
    }
    Ok(())
}
