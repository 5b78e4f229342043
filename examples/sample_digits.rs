//! Writes assets/digits/: MNIST test images redrawn as "photos" at several sizes, in both
//! polarities, for the README's `predict` example. Run: `cargo run --release --example sample_digits`.

use std::path::Path;

use mnist_wgpu::data::{default_data_dir, load_mnist};
use mnist_wgpu::predict::render_digit;

fn main() -> anyhow::Result<()> {
    let test = load_mnist(&default_data_dir())?.test;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/digits");
    std::fs::create_dir_all(&out)?;
    // (test image index, size in pixels, margin, dark ink on light paper)
    let picks = [
        (0, 64, 8, true),
        (1, 150, 30, false),
        (2, 40, 4, true),
        (3, 220, 20, true),
        (4, 96, 40, false),
        (8, 120, 10, true),
    ];
    for (i, size, margin, dark) in picks {
        let img = render_digit(test.image(i), size, margin, dark);
        let name = format!(
            "test{i:04}-label{}-{}px-{}.png",
            test.labels[i],
            size + 2 * margin,
            if dark {
                "dark-on-light"
            } else {
                "light-on-dark"
            }
        );
        img.save(out.join(&name))?;
        println!("{}", out.join(name).display());
    }
    Ok(())
}
