//! Any bytes as an IDX image file and label file (plain or gzip): a data set or an error,
//! never a panic, an abort or an allocation the input's length does not justify.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mnist_wgpu::data::{CLASSES, parse_split};

fuzz_target!(|input: &[u8]| {
    // The first byte chooses where the images end and the labels begin.
    let Some((&cut, rest)) = input.split_first() else {
        return;
    };
    let at = (cut as usize * rest.len()) / 255;
    let (images, labels) = rest.split_at(at);
    if let Ok(d) = parse_split(
        Path::new("images"),
        images.to_vec(),
        Path::new("labels"),
        labels.to_vec(),
    ) {
        assert_eq!(d.images.len(), d.len() * d.pixels());
        assert!(d.labels.iter().all(|&l| (l as usize) < CLASSES));
    }
});
