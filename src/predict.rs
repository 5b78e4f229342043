//! Your own digits: any PNG or JPEG of a digit, made to look like an MNIST image the way
//! MNIST itself was made (NIST's digits were size-normalised to fit a 20x20 box keeping their
//! aspect ratio, anti-aliased, and centred by their centre of mass in a 28x28 field).
//!
//! Convention: images are row-major, one f32 per pixel in [0, 1] while processing, with ink
//! bright on a dark background as in MNIST; the result is `[28 * 28]` u8.

use std::path::Path;

use image::imageops::FilterType;
use image::{GrayImage, Luma};

/// Side of MNIST's images and of the box the digit is scaled to fit.
pub const SIDE: usize = 28;
pub const BOX: usize = 20;

/// A pixel counts as ink above this fraction of the brightest ink (after the background is
/// removed); it only decides the crop, not the values. NIST's digits were boxed while still
/// binary and anti-aliased afterwards, so the box follows a mid level, not the faintest
/// grey: over 1,000 redrawn test images, 0.3 to 0.4 kept the model's answer most often
/// (97.7 to 98.6 %, against 92 to 97 % at 0.02).
const INK: f32 = 0.35;

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{path}: cannot read the image: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: no digit found: the image is {what}")]
    Empty { path: String, what: &'static str },
}

/// Reads `path` and returns its digit as an MNIST image.
pub fn load_digit(path: &Path) -> Result<[u8; SIDE * SIDE], PredictError> {
    let name = path.display().to_string();
    let img = image::open(path).map_err(|e| PredictError::Read {
        path: name.clone(),
        reason: e.to_string(),
    })?;
    to_mnist(&img.to_luma8()).map_err(|what| PredictError::Empty { path: name, what })
}

/// Grayscale image to MNIST image: polarity, background, crop, fit to 20x20, centre of mass.
pub fn to_mnist(gray: &GrayImage) -> Result<[u8; SIDE * SIDE], &'static str> {
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    if w == 0 || h == 0 {
        return Err("empty (0 pixels)");
    }
    let mut v: Vec<f32> = gray.pixels().map(|p| p.0[0] as f32 / 255.0).collect();
    // The border is background: a light one means dark ink on paper, so invert.
    let border: Vec<f32> = (0..w)
        .flat_map(|x| [v[x], v[(h - 1) * w + x]])
        .chain((0..h).flat_map(|y| [v[y * w], v[y * w + w - 1]]))
        .collect();
    let mut sorted = border.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    if median > 0.5 {
        v.iter_mut().for_each(|x| *x = 1.0 - *x);
    }
    let bg = if median > 0.5 { 1.0 - median } else { median };
    // Remove the background level and stretch the ink to [0, 1].
    let peak = v.iter().cloned().fold(0.0f32, f32::max);
    if peak - bg < 0.1 {
        return Err("blank (no ink stands out from the background)");
    }
    v.iter_mut()
        .for_each(|x| *x = ((*x - bg) / (peak - bg)).clamp(0.0, 1.0));

    // Crop to the ink.
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if v[y * w + x] > INK {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x + 1);
                y1 = y1.max(y + 1);
            }
        }
    }
    let (cw, ch) = (x1 - x0, y1 - y0);
    let crop = GrayImage::from_fn(cw as u32, ch as u32, |x, y| {
        let p = v[(y0 + y as usize) * w + x0 + x as usize];
        Luma([(p * 255.0).round() as u8])
    });

    // Fit the longer side to 20 pixels, keeping the aspect ratio; the filter anti-aliases.
    let scale = BOX as f64 / cw.max(ch) as f64;
    let (sw, sh) = (
        ((cw as f64 * scale).round() as u32).clamp(1, BOX as u32),
        ((ch as f64 * scale).round() as u32).clamp(1, BOX as u32),
    );
    let fitted = image::imageops::resize(&crop, sw, sh, FilterType::Triangle);

    // Put its centre of mass at the centre of the 28x28 field.
    let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (x, y, p) in fitted.enumerate_pixels() {
        let m = p.0[0] as f64;
        mass += m;
        mx += m * (x as f64 + 0.5);
        my += m * (y as f64 + 0.5);
    }
    if mass == 0.0 {
        return Err("blank after scaling");
    }
    // MNIST's centres of mass sit at the middle of pixel 14 (14.5 in pixel-edge coordinates,
    // measured over its test set: 14.51, 14.49), not at the field's geometric centre.
    let place = |centre: f64, size: u32| -> i64 {
        let at = (SIDE as f64 / 2.0 + 0.5 - centre).round() as i64;
        at.clamp(0, SIDE as i64 - size as i64)
    };
    let (ox, oy) = (place(mx / mass, sw), place(my / mass, sh));
    let mut out = [0u8; SIDE * SIDE];
    for (x, y, p) in fitted.enumerate_pixels() {
        let (tx, ty) = (ox + x as i64, oy + y as i64);
        out[ty as usize * SIDE + tx as usize] = p.0[0];
    }
    Ok(out)
}

/// The three most likely digits of one image's log-probabilities, highest first (equal
/// probabilities keep the lower digit first).
pub fn top3(log_probs: &[f32]) -> Vec<(usize, f64)> {
    let mut top: Vec<(usize, f64)> = log_probs
        .iter()
        .enumerate()
        .map(|(c, &l)| (c, (l as f64).exp()))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(3);
    top
}

/// A drawn digit as the model sees it, and its answer.
pub struct Prediction {
    pub top: Vec<(usize, f64)>,
    /// image: [28 * 28], the MNIST image the drawing became
    pub image: [u8; SIDE * SIDE],
}

/// A digit given as RGBA pixels (a canvas), read as [`load_digit`] reads a file (to gray as
/// the `image` crate converts, then [`to_mnist`]), and the model's three most likely digits
/// from the CPU reference's forward pass (`predict --device cpu`).
pub fn predict_rgba(
    (arch, params, normalize): (&crate::model::Arch, &[f32], crate::data::Normalize),
    rgba: Vec<u8>,
    width: u32,
    height: u32,
) -> Result<Prediction, String> {
    let n = rgba.len();
    let img = image::RgbaImage::from_raw(width, height, rgba)
        .ok_or_else(|| format!("{n} bytes are not {width}x{height} RGBA pixels"))?;
    let gray = image::DynamicImage::ImageRgba8(img).to_luma8();
    let image = to_mnist(&gray).map_err(|what| format!("no digit found: the drawing is {what}"))?;
    let table = normalize.table();
    let x: Vec<f32> = image.iter().map(|&v| table[v as usize]).collect();
    let log_probs = crate::cpu::forward(arch, params, &x, 1).pop().unwrap();
    Ok(Prediction {
        top: top3(&log_probs),
        image,
    })
}

/// An MNIST image drawn at `size` x `size` pixels with `margin` background pixels around it,
/// light ink on dark or (`dark_on_light`) dark ink on light: how the tests and
/// `assets/digits/` make "photos" of known digits.
pub fn render_digit(mnist: &[u8], size: u32, margin: u32, dark_on_light: bool) -> GrayImage {
    let src = GrayImage::from_raw(SIDE as u32, SIDE as u32, mnist.to_vec()).expect("28x28");
    let big = image::imageops::resize(&src, size, size, FilterType::CatmullRom);
    let side = size + 2 * margin;
    GrayImage::from_fn(side, side, |x, y| {
        let inside = x >= margin && y >= margin && x < margin + size && y < margin + size;
        let v = if inside {
            big.get_pixel(x - margin, y - margin).0[0]
        } else {
            0
        };
        Luma([if dark_on_light { 255 - v } else { v }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stroke() -> GrayImage {
        // A dark vertical bar on white, off-centre: a "1".
        GrayImage::from_fn(60, 90, |x, y| {
            Luma([if (30..38).contains(&x) && (10..80).contains(&y) {
                20
            } else {
                250
            }])
        })
    }

    #[test]
    fn a_bar_is_inverted_fitted_and_centred() {
        let m = to_mnist(&stroke()).unwrap();
        let at = |x: usize, y: usize| m[y * SIDE + x];
        // Light ink on black now, 20 pixels tall, centred.
        assert_eq!(at(0, 0), 0);
        assert!(at(14, 14) > 200, "{}", at(14, 14));
        let rows: Vec<usize> = (0..SIDE)
            .filter(|&y| (0..SIDE).any(|x| at(x, y) > 0))
            .collect();
        assert_eq!(rows.len(), BOX, "{rows:?}");
        // Its centre of mass (row 14.5 of 0..20 shifted by 4.5, rounded away from zero) lands
        // on the middle of pixel 14 to within half a pixel.
        assert_eq!((rows[0], rows[rows.len() - 1]), (5, 24));
    }

    #[test]
    fn both_polarities_give_the_same_digit() {
        let dark = stroke();
        let mut light = dark.clone();
        image::imageops::invert(&mut light);
        assert_eq!(to_mnist(&dark).unwrap(), to_mnist(&light).unwrap());
    }

    #[test]
    fn a_blank_image_is_refused() {
        let blank = GrayImage::from_pixel(40, 40, Luma([255]));
        assert!(to_mnist(&blank).unwrap_err().contains("blank"));
    }
}
