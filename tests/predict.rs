//! `predict` on real image files: MNIST test images redrawn at other sizes, with margins, in
//! both polarities, as PNG and JPEG, must get the class the model gives the original 28x28
//! image in at least 97 % of cases; unreadable and blank images get one line naming them.

mod common;

use std::path::{Path, PathBuf};

use mnist_wgpu::cpu;
use mnist_wgpu::data::{default_data_dir, load_mnist};
use mnist_wgpu::modelfile;
use mnist_wgpu::predict::render_digit;

fn model_path() -> PathBuf {
    // The whole recipe trained by PyTorch (tests/parity/make_fixtures.py tutorial).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/torch_tutorial.safetensors")
}

fn predict(args: &[&str], images: &[PathBuf]) -> (i32, String, String) {
    common::outcome(
        common::bin()
            .arg("predict")
            .args(args)
            .arg("--model")
            .arg(model_path())
            .args(images)
            .output()
            .unwrap(),
    )
}

#[test]
fn redrawn_test_images_get_the_originals_class() {
    let test = load_mnist(&default_data_dir()).unwrap().test;
    let model = modelfile::load(&model_path(), 784, 10).unwrap();
    let dir = common::scratch("agree");
    let n = 200;
    let sizes = [22, 40, 64, 100, 180];
    let mut files = Vec::new();
    for i in 0..n {
        let size = sizes[i % sizes.len()];
        let margin = (i * 7 % 30) as u32;
        let dark = i % 2 == 0;
        let img = render_digit(test.image(i), size, margin, dark);
        let ext = if i % 4 == 3 { "jpg" } else { "png" };
        let path = dir.join(format!("{i:03}.{ext}"));
        img.save(&path).unwrap();
        files.push(path);
    }
    // The model on the original images (the CPU reference, in f64 for a clean argmax).
    let x: Vec<f64> = cpu::gather(&test, &(0..n as u32).collect::<Vec<_>>())
        .iter()
        .map(|&v| v as f64)
        .collect();
    let params: Vec<f64> = model.params.iter().map(|&v| v as f64).collect();
    let acts = cpu::forward(&model.arch, &params, &x, n);
    // LogSoftmax's input.
    let logits = &acts[acts.len() - 2];
    let original: Vec<usize> = logits.chunks(10).map(cpu::argmax).collect();

    for device in ["gpu", "cpu"] {
        let (code, stdout, stderr) = predict(&["--json", "--device", device], &files);
        assert_eq!(code, 0, "{stderr}");
        let digits: Vec<usize> = stdout
            .lines()
            .filter_map(|l| l.split("\"digit\": ").nth(1))
            .map(|rest| rest.split(',').next().unwrap().trim().parse().unwrap())
            .collect();
        assert_eq!(digits.len(), n, "{stdout}");
        let same = digits.iter().zip(&original).filter(|(a, b)| a == b).count();
        let share = same as f64 / n as f64;
        eprintln!("{device}: {same}/{n} redrawn images get the original's class");
        assert!(share >= 0.97, "{device}: only {same}/{n} agree");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_images_get_one_line_naming_them() {
    let dir = common::scratch("bad");
    let text = dir.join("notes.png");
    std::fs::write(&text, b"this is not a PNG").unwrap();
    let blank = dir.join("blank.png");
    image::GrayImage::from_pixel(50, 50, image::Luma([250]))
        .save(&blank)
        .unwrap();
    let missing = dir.join("missing.jpg");
    for (path, expect) in [
        (&text, "cannot read the image"),
        (&blank, "no digit found: the image is blank"),
        (&missing, "cannot read the image"),
    ] {
        let (code, stdout, stderr) = predict(&["--device", "cpu"], std::slice::from_ref(path));
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(&path.display().to_string()) && lines[0].contains(expect),
            "{}",
            lines[0]
        );
        assert!(stdout.is_empty());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sample_digits_are_read_as_their_labels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/digits");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    assert!(files.len() >= 5);
    let (code, stdout, stderr) = predict(&["--device", "cpu"], &files);
    assert_eq!(code, 0, "{stderr}");
    for (line, file) in stdout.lines().zip(&files) {
        let name = file.file_name().unwrap().to_string_lossy();
        let label = name.split("label").nth(1).unwrap().chars().next().unwrap();
        let got = line.split_whitespace().nth(1).unwrap();
        assert_eq!(got, label.to_string(), "{line}");
        let probs: Vec<&str> = line.split('|').collect();
        assert_eq!(probs.len(), 3, "top three in: {line}");
    }
}
