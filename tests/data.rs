//! Hostile data files: each gets one line naming the file and the problem, and exit code 1,
//! never a panic. Then a property test: thousands of mutated files (flipped bytes, truncated,
//! extended, plain and gzip) parse or fail cleanly.

use std::io::Write;
use std::path::{Path, PathBuf};
mod common;

use mnist_wgpu::data::{CLASSES, parse_split};
use mnist_wgpu::rng::Rng;

const NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fn idx_images(n: u32, rows: u32, cols: u32, rng: &mut Rng) -> Vec<u8> {
    let mut b = [2051u32, n, rows, cols]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>();
    b.extend((0..n * rows * cols).map(|_| rng.below(256) as u8));
    b
}

fn idx_labels(n: u32, rng: &mut Rng) -> Vec<u8> {
    let mut b = [2049u32, n]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect::<Vec<u8>>();
    b.extend((0..n).map(|_| rng.below(CLASSES as u64) as u8));
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A valid small data set (64 training, 16 test images of 28x28), plain files.
fn valid_set(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mnist-wgpu-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng::new(5, 0);
    let files = [
        idx_images(64, 28, 28, &mut rng),
        idx_labels(64, &mut rng),
        idx_images(16, 28, 28, &mut rng),
        idx_labels(16, &mut rng),
    ];
    for (n, b) in NAMES.iter().zip(files) {
        std::fs::write(dir.join(n), b).unwrap();
    }
    dir
}

fn train_on(dir: &Path) -> (i32, String, String) {
    common::outcome(
        common::bin()
            .args([
                "train",
                "--dataset",
                "idx",
                "--device",
                "cpu",
                "--epochs",
                "1",
                "--no-save",
            ])
            .arg("--data-dir")
            .arg(dir)
            .output()
            .unwrap(),
    )
}

#[test]
fn a_valid_idx_data_set_trains() {
    let dir = valid_set("valid");
    let (code, stdout, stderr) = train_on(&dir);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Model Accuracy"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn be(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// Rewrites one file of the data set in `dir` through `f`.
fn modify(dir: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let p = dir.join(name);
    let mut b = std::fs::read(&p).unwrap();
    f(&mut b);
    std::fs::write(&p, b).unwrap();
}

/// (file named in the message, problem named in the message, how to spoil a valid set)
type Case = (&'static str, &'static str, fn(&Path));

#[test]
fn hostile_files_get_one_line_naming_file_and_problem() {
    let cases: Vec<Case> = vec![
        ("train-images-idx3-ubyte", "magic number 2049", |d| {
            modify(d, "train-images-idx3-ubyte", |b| {
                b[..4].copy_from_slice(&be(2049))
            })
        }),
        ("t10k-images-idx3-ubyte", "but the content is", |d| {
            modify(d, "t10k-images-idx3-ubyte", |b| b.truncate(b.len() - 100))
        }),
        ("train-images-idx3-ubyte", "but the content is", |d| {
            modify(d, "train-images-idx3-ubyte", |b| b.extend([0u8; 7]))
        }),
        // a count that would need 3 TB: refused from the header, before any allocation
        ("train-images-idx3-ubyte", "4294967295 images", |d| {
            modify(d, "train-images-idx3-ubyte", |b| {
                b[4..8].copy_from_slice(&be(u32::MAX))
            })
        }),
        ("train-labels-idx1-ubyte", "63 labels but", |d| {
            modify(d, "train-labels-idx1-ubyte", |b| {
                b[4..8].copy_from_slice(&be(63));
                b.pop();
            })
        }),
        (
            "t10k-labels-idx1-ubyte",
            "label 10 at index 3 is outside 0..10",
            |d| modify(d, "t10k-labels-idx1-ubyte", |b| b[8 + 3] = 10),
        ),
        ("train-labels-idx1-ubyte.gz", "corrupt gzip stream", |d| {
            let p = d.join("train-labels-idx1-ubyte");
            let mut gz = gzip(&std::fs::read(&p).unwrap());
            std::fs::remove_file(&p).unwrap();
            gz.truncate(gz.len() - 12); // the deflate stream ends early
            std::fs::write(d.join("train-labels-idx1-ubyte.gz"), gz).unwrap();
        }),
        ("t10k-labels-idx1-ubyte", "the file is empty", |d| {
            modify(d, "t10k-labels-idx1-ubyte", |b| b.clear())
        }),
        ("", "images are 20x20, the model takes 28x28", |d| {
            let mut rng = Rng::new(9, 0);
            modify(d, "train-images-idx3-ubyte", |b| {
                *b = idx_images(64, 20, 20, &mut rng)
            });
            modify(d, "t10k-images-idx3-ubyte", |b| {
                *b = idx_images(16, 20, 20, &mut rng)
            });
        }),
    ];
    for (i, (file, expect, spoil)) in cases.into_iter().enumerate() {
        let dir = valid_set(&format!("case{i}"));
        spoil(&dir);
        let (code, stdout, stderr) = train_on(&dir);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(code, 1, "case {i} ({expect}): {stderr}");
        assert_eq!(lines.len(), 1, "case {i}: {lines:?}");
        assert!(
            lines[0].contains(expect) && lines[0].contains(file),
            "case {i}: expected {file:?} and {expect:?} in {}",
            lines[0]
        );
        assert!(
            !stderr.contains("panicked") && stdout.is_empty(),
            "case {i}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Flipped bytes, truncation and extension of valid files, plain and gzip: each mutation
/// parses to a consistent data set or fails with an error; never a panic.
#[test]
fn mutated_files_parse_or_fail_never_panic() {
    let mut rng = Rng::new(77, 0);
    let images = idx_images(12, 5, 7, &mut rng);
    let labels = idx_labels(12, &mut rng);
    let (pi, pl) = (Path::new("images"), Path::new("labels"));
    let (mut ok, mut err) = (0, 0);
    for round in 0..4000 {
        let compress = round % 2 == 1;
        let (mut a, mut b) = if compress {
            (gzip(&images), gzip(&labels))
        } else {
            (images.clone(), labels.clone())
        };
        let target = if rng.below(2) == 0 { &mut a } else { &mut b };
        match rng.below(4) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(target.len() as u64) as usize;
                    target[i] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let keep = rng.below(target.len() as u64) as usize;
                target.truncate(keep);
            }
            2 => {
                for _ in 0..=rng.below(40) {
                    target.push(rng.below(256) as u8);
                }
            }
            _ => {
                // a header field set to something large
                let at = 4 * (1 + rng.below(3)) as usize;
                if !compress && target.len() >= at + 4 {
                    let v = [u32::MAX, 1 << 31, 65536, 0][rng.below(4) as usize];
                    target[at..at + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
        match parse_split(pi, a, pl, b) {
            Ok(d) => {
                ok += 1;
                assert_eq!(d.images.len(), d.len() * d.pixels());
                assert!(d.labels.iter().all(|&l| (l as usize) < CLASSES));
                assert!(!d.is_empty());
            }
            Err(e) => {
                err += 1;
                let m = e.to_string();
                assert!(
                    m.starts_with("images: ") || m.starts_with("labels: "),
                    "{m}"
                );
            }
        }
    }
    eprintln!("4000 mutations: {ok} parsed, {err} rejected");
    assert!(ok > 0 && err > 0);
}
