//! Data sets in the IDX format (MNIST, Fashion-MNIST, or any four files laid out the same):
//! find the four files, decompress, verify, parse. Downloading missing files is
//! [`crate::fetch`]'s job.
//!
//! Convention: images are kept as raw `u8` pixels, row-major, one image after another
//! (`[count, rows * cols]`); labels as one `u8` each. Normalisation happens on the device
//! (or in the CPU reference) through the 256-entry table of [`Normalize::table`].

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod idx;

use idx::format_err;
pub use idx::{parse_images, parse_labels, parse_split};

/// Big-endian magic numbers of the IDX files: 0x00000803 (u8, 3 dims), 0x00000801 (u8, 1 dim).
pub const IMAGES_MAGIC: u32 = 2051;
pub const LABELS_MAGIC: u32 = 2049;

/// Number of classes; labels must lie in `0..CLASSES`.
pub const CLASSES: usize = 10;

/// The four files of the data set and the SHA-256 of each one's decompressed content
/// (the same hashes as `SHA256SUMS` of the shared MNIST copy).
pub const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Fashion-MNIST's four files (the same names and layout as MNIST's) and the SHA-256 of each
/// one's decompressed content, as in Debian's package `dataset-fashion-mnist`. The hashes are
/// over the content, not the .gz bytes, so a file recompressed by a mirror or a distribution
/// still verifies.
pub const FASHION_MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// Which data set (`--dataset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// MNIST handwritten digits.
    Mnist,
    /// Zalando's Fashion-MNIST: ten kinds of clothing, the same layout.
    FashionMnist,
    /// Any four IDX files with MNIST's names in --data-dir; no known hashes, never downloaded.
    Idx,
}

impl Kind {
    /// The name of its cache subdirectory and of its metadata entries.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mnist => "mnist",
            Kind::FashionMnist => "fashion-mnist",
            Kind::Idx => "idx",
        }
    }
    /// The four file names (without .gz) and, where known, their content hashes.
    pub fn files(self) -> [(&'static str, Option<&'static str>); 4] {
        match self {
            Kind::Mnist => MNIST_FILES.map(|(n, h)| (n, Some(h))),
            Kind::FashionMnist => FASHION_MNIST_FILES.map(|(n, h)| (n, Some(h))),
            Kind::Idx => MNIST_FILES.map(|(n, _)| (n, None)),
        }
    }
    /// Public mirrors serving `<mirror><file>.gz`, in the order they are tried.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            // The original site, yann.lecun.com, answers 403 today.
            Kind::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ],
            Kind::FashionMnist => &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
            Kind::Idx => &[],
        }
    }
}

/// The data directory committed with the repository (MNIST only).
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/mnist")
}

/// Where a file of the data set is: the plain file if there is one, else the .gz, else None.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if plain.is_file() {
        Some(plain)
    } else if gz.is_file() {
        Some(gz)
    } else {
        None
    }
}

/// Whether all four files of `kind` are in `dir` (verified or not).
pub fn has_all_files(dir: &Path, kind: Kind) -> bool {
    kind.files()
        .iter()
        .all(|(n, _)| find_file(dir, n).is_some())
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "{dir}: no `{name}` or `{name}.gz` there (expected the four IDX files of the data set; pass --data-dir DIR)"
    )]
    Missing { dir: PathBuf, name: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt gzip stream: {source}")]
    Gzip {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: SHA-256 of the content is {actual}, expected {expected} (corrupt, or not the data set named by --dataset)"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {problem}")]
    Format { path: PathBuf, problem: String },
}

/// One split of the data set.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `[count, rows * cols]` raw pixels.
    pub images: Vec<u8>,
    /// `[count]`, each in `0..CLASSES`.
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
    /// How its pixels become inputs.
    pub normalize: Normalize,
}

impl Dataset {
    /// A split with no images of `rows` x `cols` (a backend that only evaluates).
    pub fn empty(rows: usize, cols: usize) -> Dataset {
        Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            rows,
            cols,
            normalize: Normalize::TUTORIAL,
        }
    }

    /// The same split, its pixels normalised with `n`.
    pub fn normalized(mut self, n: Normalize) -> Dataset {
        self.normalize = n;
        self
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The first `n` samples (all of them when there are fewer).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.pixels()].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
            normalize: self.normalize,
        }
    }

    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }
}

#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: Dataset,
    pub test: Dataset,
}

/// torchvision's `Normalize((mean,), (std,))` after `ToTensor()`: how a pixel value becomes an
/// input. The tutorial's is (0.5, 0.5); pytorch/examples' MNIST is (0.1307, 0.3081).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: f32,
    pub std: f32,
}

impl Normalize {
    pub const TUTORIAL: Normalize = Normalize {
        mean: 0.5,
        std: 0.5,
    };

    /// `MEAN,STD`, the std above 0.
    pub fn parse(s: &str) -> Result<Normalize, String> {
        let parts: Vec<Option<f32>> = s.split(',').map(|p| p.trim().parse().ok()).collect();
        match parts[..] {
            [Some(mean), Some(std)] if mean.is_finite() && std.is_finite() && std > 0.0 => {
                Ok(Normalize { mean, std })
            }
            _ => Err("expected MEAN,STD, two numbers with STD above 0, e.g. 0.1307,0.3081".into()),
        }
    }

    /// As the flag and the model file write it: `0.5,0.5`.
    pub fn name(&self) -> String {
        format!("{},{}", self.mean, self.std)
    }

    /// The value each pixel value becomes, computed in f32 in the same order as PyTorch
    /// (`x / 255`, then `(x - mean) / std`), so that the device and the CPU see bit-identical
    /// inputs.
    pub fn table(&self) -> [f32; 256] {
        let mut t = [0f32; 256];
        for (v, out) in t.iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - self.mean) / self.std;
        }
        t
    }
}

/// Loads and verifies only the two test files of `kind` from `dir` (for evaluation).
pub fn load_test(dir: &Path, kind: Kind) -> Result<Dataset, DataError> {
    let [_, _, (ti, th), (tl, lh)] = kind.files();
    pair(load_verified(dir, ti, th)?, load_verified(dir, tl, lh)?)
}

/// Loads and verifies the four files of `kind` from `dir` (each plain or `.gz`).
pub fn load(dir: &Path, kind: Kind) -> Result<Mnist, DataError> {
    let [tri, trl, tei, tel] = kind
        .files()
        .map(|(name, sha)| load_verified(dir, name, sha));
    assemble(dir, [tri?, trl?, tei?, tel?])
}

/// The four files of `kind` as fetched (each plain or `.gz`, named by where they came from),
/// verified and parsed as [`load`] does: how the web page loads MNIST.
pub fn from_fetched(kind: Kind, files: [(String, Vec<u8>); 4]) -> Result<Mnist, DataError> {
    let mut loaded = Vec::with_capacity(4);
    for ((url, raw), (_, sha)) in files.into_iter().zip(kind.files()) {
        let path = PathBuf::from(url);
        let bytes = decompress(&path, raw)?;
        if let Some(sha) = sha {
            verify(&path, &bytes, sha)?;
        }
        loaded.push(Loaded { path, bytes });
    }
    let [tri, trl, tei, tel]: [Loaded; 4] = loaded.try_into().ok().expect("four files");
    assemble(Path::new("the fetched files"), [tri, trl, tei, tel])
}

/// The training and test splits from their four files, with matching image sizes.
fn assemble(dir: &Path, [tri, trl, tei, tel]: [Loaded; 4]) -> Result<Mnist, DataError> {
    let train = pair(tri, trl)?;
    let test = pair(tei, tel)?;
    if train.pixels() != test.pixels() {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            problem: format!(
                "training images are {}x{} but test images are {}x{}",
                train.rows, train.cols, test.rows, test.cols
            ),
        });
    }
    Ok(Mnist { train, test })
}

/// MNIST from `dir`, verified.
pub fn load_mnist(dir: &Path) -> Result<Mnist, DataError> {
    load(dir, Kind::Mnist)
}

struct Loaded {
    path: PathBuf,
    bytes: Vec<u8>,
}

fn load_verified(dir: &Path, name: &str, sha: Option<&str>) -> Result<Loaded, DataError> {
    let path = find_file(dir, name).ok_or_else(|| DataError::Missing {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    })?;
    let bytes = read_maybe_gz(&path)?;
    if let Some(sha) = sha {
        verify(&path, &bytes, sha)?;
    }
    Ok(Loaded { path, bytes })
}

/// Checks decompressed content against its SHA-256.
pub fn verify(path: &Path, content: &[u8], sha: &str) -> Result<(), DataError> {
    let actual = sha256_hex(content);
    if actual != sha {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: sha.to_string(),
            actual,
        });
    }
    Ok(())
}

/// No IDX file this program can train on decompresses to more than this; a gzip stream that
/// does is refused rather than allowed to fill memory.
pub const MAX_CONTENT: u64 = 1 << 30;

/// Reads a file, decompressing it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decompress(path, raw)
}

/// `raw` itself, or its decompressed content when it is gzip (at most [`MAX_CONTENT`] bytes).
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(5).min(MAX_CONTENT as usize));
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_CONTENT + 1)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > MAX_CONTENT {
        return Err(format_err(
            path,
            format!(
                "decompresses to more than {MAX_CONTENT} bytes; not an IDX file this program can use"
            ),
        ));
    }
    Ok(out)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pair(images: Loaded, labels: Loaded) -> Result<Dataset, DataError> {
    let (n, rows, cols) = parse_images(&images.path, &images.bytes)?;
    let nl = parse_labels(&labels.path, &labels.bytes)?;
    if n != nl {
        return Err(format_err(
            &labels.path,
            format!("{nl} labels but {} holds {n} images", images.path.display()),
        ));
    }
    if n == 0 {
        return Err(format_err(&images.path, "holds no images".into()));
    }
    let mut img = images.bytes;
    img.drain(..16);
    let mut lab = labels.bytes;
    lab.drain(..8);
    Ok(Dataset {
        images: img,
        labels: lab,
        rows,
        cols,
        normalize: crate::data::Normalize::TUTORIAL,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_torch_formula() {
        let t = Normalize::TUTORIAL.table();
        assert_eq!(t[0], -1.0);
        assert_eq!(t[255], 1.0);
        assert!((t[128] - 0.003_921_628).abs() < 1e-7);
    }

    #[test]
    fn header_checks() {
        let p = Path::new("x");
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        img.extend([0u8; 12]);
        assert_eq!(parse_images(p, &img).unwrap(), (2, 2, 3));
        // 2^31 * 2^31 * 4 = 2^64: a 64-bit product wraps to 0 and would match a bare header.
        let mut wrap = img[..16].to_vec();
        wrap[4..8].copy_from_slice(&(1u32 << 31).to_be_bytes());
        wrap[8..12].copy_from_slice(&(1u32 << 31).to_be_bytes());
        wrap[12..16].copy_from_slice(&4u32.to_be_bytes());
        let e = parse_images(p, &wrap).unwrap_err().to_string();
        assert!(e.contains("18446744073709551632 bytes"), "{e}");
        img.pop();
        let e = parse_images(p, &img).unwrap_err().to_string();
        assert!(e.contains("27 bytes"), "{e}");
        let mut huge = img[..16].to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_images(p, &huge).is_err());
        assert!(
            parse_images(p, &[0, 0, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .unwrap_err()
                .to_string()
                .contains("magic number 2049")
        );
        let lab = [0, 0, 8, 1, 0, 0, 0, 2, 3, 10];
        let e = parse_labels(p, &lab).unwrap_err().to_string();
        assert!(e.contains("label 10 at index 1"), "{e}");
    }
}
