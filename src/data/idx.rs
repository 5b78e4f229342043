//! The IDX format's headers: magic numbers, dimensions, and their agreement with a file's
//! length, checked before anything is allocated.

use std::path::Path;

use super::{CLASSES, DataError, Dataset, IMAGES_MAGIC, LABELS_MAGIC, Loaded, decompress, pair};

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn format_err(path: &Path, problem: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        problem,
    }
}

/// Parses an IDX image file: magic 2051, then count, rows, cols (big-endian u32), then pixels.
/// The header is checked against the length before anything is allocated.
pub fn parse_images(path: &Path, b: &[u8]) -> Result<(usize, usize, usize), DataError> {
    if b.is_empty() {
        return Err(format_err(path, "the file is empty".into()));
    }
    if b.len() < 16 {
        return Err(format_err(
            path,
            format!(
                "{} bytes is too short for an IDX image header (16)",
                b.len()
            ),
        ));
    }
    let magic = be_u32(b, 0);
    if magic != IMAGES_MAGIC {
        return Err(format_err(
            path,
            format!("magic number {magic}, expected {IMAGES_MAGIC} (IDX u8 images)"),
        ));
    }
    let (n, rows, cols) = (
        be_u32(b, 4) as u128,
        be_u32(b, 8) as u128,
        be_u32(b, 12) as u128,
    );
    // Three u32 factors need up to 96 bits: in u64 the product could wrap around to the
    // file's length and pass (found by the fuzzer, fuzz/fuzz_targets/idx.rs).
    let expected = 16 + n * rows * cols;
    if expected != b.len() as u128 {
        return Err(format_err(
            path,
            format!(
                "header says {n} images of {rows}x{cols} ({expected} bytes) but the content is {} bytes",
                b.len()
            ),
        ));
    }
    Ok((n as usize, rows as usize, cols as usize))
}

/// Parses an IDX label file: magic 2049, then count, then one byte per label.
pub fn parse_labels(path: &Path, b: &[u8]) -> Result<usize, DataError> {
    if b.is_empty() {
        return Err(format_err(path, "the file is empty".into()));
    }
    if b.len() < 8 {
        return Err(format_err(
            path,
            format!("{} bytes is too short for an IDX label header (8)", b.len()),
        ));
    }
    let magic = be_u32(b, 0);
    if magic != LABELS_MAGIC {
        return Err(format_err(
            path,
            format!("magic number {magic}, expected {LABELS_MAGIC} (IDX u8 labels)"),
        ));
    }
    let n = be_u32(b, 4) as u64;
    if 8 + n != b.len() as u64 {
        return Err(format_err(
            path,
            format!(
                "header says {n} labels but the content holds {}",
                b.len() - 8
            ),
        ));
    }
    if let Some((i, &l)) = b[8..]
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= CLASSES)
    {
        return Err(format_err(
            path,
            format!("label {l} at index {i} is outside 0..{CLASSES}"),
        ));
    }
    Ok(n as usize)
}

/// Parses one split from the raw bytes of its two files (each plain or gzip), without hashes:
/// any input gives a data set or an error naming the file, never a panic.
pub fn parse_split(
    images_path: &Path,
    images_raw: Vec<u8>,
    labels_path: &Path,
    labels_raw: Vec<u8>,
) -> Result<Dataset, DataError> {
    pair(
        Loaded {
            path: images_path.to_path_buf(),
            bytes: decompress(images_path, images_raw)?,
        },
        Loaded {
            path: labels_path.to_path_buf(),
            bytes: decompress(labels_path, labels_raw)?,
        },
    )
}
