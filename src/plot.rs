//! The training chart (`train --plot PATH.png`): training and test loss per epoch beside the
//! test accuracy, drawn with plotters into memory and written as a PNG atomically. A set of
//! models draws each figure's mean across the models, in a band from the lowest model to the
//! highest.

use std::path::Path;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::metrics::MetricsRow;
use crate::modelfile::write_atomic;

/// DejaVu Sans (Bitstream Vera license, assets/fonts/DejaVuSans.LICENSE), so that the chart's
/// text looks the same on every machine, with no system font needed.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 480;
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const TEST: RGBColor = RGBColor(214, 39, 40);
const ACCURACY: RGBColor = RGBColor(44, 160, 44);

/// Draws `models` (each model's rows, epoch by epoch; one model for a single run) under
/// `title` and writes the PNG to `path`.
pub fn write_png(path: &Path, models: &[Vec<MetricsRow>], title: &str) -> Result<(), String> {
    let png = render(models, title)?;
    write_atomic(path, &png).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// The chart as PNG bytes.
pub fn render(models: &[Vec<MetricsRow>], title: &str) -> Result<Vec<u8>, String> {
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled font is valid"));
    });
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut rgb, models, title).map_err(|e| format!("drawing the chart: {e}"))?;
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, rgb).expect("buffer of WIDTH x HEIGHT");
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageOutputFormat::Png)
        .map_err(|e| format!("encoding the chart: {e}"))?;
    Ok(png.into_inner())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type Failure = Box<dyn std::error::Error>;
/// A line of the loss chart: its name, colour and value per epoch.
type Series = (&'static str, RGBColor, fn(&MetricsRow) -> f64);

fn draw(rgb: &mut [u8], models: &[Vec<MetricsRow>], title: &str) -> Result<(), Failure> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    let rows = models.first().map_or(&[][..], |m| m.as_slice());
    draw_losses(&left, models, rows)?;
    draw_accuracy(&right, models, rows)?;
    root.present()?;
    Ok(())
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// One figure of one epoch across the models: (epoch, mean, lowest, highest).
type Point = (f64, f64, f64, f64);

/// `value` of every epoch across the models that have a finite figure for it (a diverged
/// model of a set has none).
fn across(models: &[Vec<MetricsRow>], value: impl Fn(&MetricsRow) -> f64) -> Vec<Point> {
    let epochs = models.iter().map(Vec::len).min().unwrap_or(0);
    (0..epochs)
        .filter_map(|e| {
            let v: Vec<f64> = models.iter().filter_map(|m| finite(value(&m[e]))).collect();
            (!v.is_empty()).then(|| {
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let low = v.iter().copied().fold(f64::INFINITY, f64::min);
                let high = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (models[0][e].epoch as f64, mean, low, high)
            })
        })
        .collect()
}

/// A chart's caption, which says what a set's line and band are.
fn caption(what: &str, models: usize) -> String {
    match models {
        1 => what.to_string(),
        n => format!("{what}: mean of {n} models, band lowest to highest"),
    }
}

/// The band from the lowest model to the highest, as one closed polygon.
fn band(points: &[Point]) -> Vec<(f64, f64)> {
    let upper = points.iter().map(|p| (p.0, p.3));
    upper
        .chain(points.iter().rev().map(|p| (p.0, p.2)))
        .collect()
}

/// A chart over the epochs of `rows` with whole-epoch labels, from `low` to `high`.
fn epoch_chart<'a, 'b>(
    area: &'a Area<'b>,
    rows: &[MetricsRow],
    (caption, y_desc): (&str, &str),
    (low, high): (f64, f64),
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>, Failure>
{
    let epochs = rows.len().max(1);
    let epoch_label = |x: &f64| match (x - x.round()).abs() < 1e-6 {
        true => format!("{}", x.round() as i64),
        false => String::new(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(-0.5f64..(epochs as f64 - 0.5), low..high)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(epochs.min(12) * 2 + 1)
        .x_label_formatter(&epoch_label)
        .label_style(("sans-serif", 13))
        .max_light_lines(1)
        .draw()?;
    Ok(chart)
}

/// Training and test loss per epoch.
fn draw_losses(
    area: &Area<'_>,
    models: &[Vec<MetricsRow>],
    rows: &[MetricsRow],
) -> Result<(), Failure> {
    let series: [Series; 2] = [
        ("training", TRAIN, |r| r.train_loss),
        ("test", TEST, |r| r.test_loss),
    ];
    let points = series.map(|(_, _, value)| across(models, value));
    let top = points
        .iter()
        .flatten()
        .map(|p| p.3)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let caption = caption("NLL loss", models.len());
    let mut chart = epoch_chart(area, rows, (&caption, "mean loss"), (0.0, top))?;
    for ((name, color, _), points) in series.into_iter().zip(points) {
        if models.len() > 1 {
            chart.draw_series(std::iter::once(Polygon::new(
                band(&points),
                color.mix(0.2).filled(),
            )))?;
        }
        let pts: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .border_style(BLACK.mix(0.4))
        .background_style(WHITE.mix(0.9))
        .draw()?;
    Ok(())
}

/// Test accuracy per epoch, in percent, each point labelled.
fn draw_accuracy(
    area: &Area<'_>,
    models: &[Vec<MetricsRow>],
    rows: &[MetricsRow],
) -> Result<(), Failure> {
    let points = across(models, |r| 100.0 * r.test_accuracy);
    let accs: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    let low = points.iter().map(|p| p.2).fold(100.0f64, f64::min);
    let low = (low - (100.0 - low).max(1.0) * 0.25)
        .clamp(0.0, 99.0)
        .floor();
    let caption = caption("test accuracy", models.len());
    let mut chart = epoch_chart(area, rows, (&caption, "accuracy (%)"), (low, 100.0))?;
    if models.len() > 1 {
        let fill = ACCURACY.mix(0.2).filled();
        chart.draw_series(std::iter::once(Polygon::new(band(&points), fill)))?;
    }
    chart.draw_series(LineSeries::new(accs.clone(), ACCURACY.stroke_width(2)))?;
    chart.draw_series(accs.iter().map(|&p| Circle::new(p, 4, ACCURACY.filled())))?;
    chart.draw_series(accs.iter().map(|&(x, y)| {
        let font = ("sans-serif", 13).into_font().color(&BLACK.mix(0.8));
        EmptyElement::at((x, y)) + Text::new(format!("{y:.2} %"), (-22, -24), font)
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_a_png_of_the_right_size() {
        let rows: Vec<MetricsRow> = (0..5)
            .map(|e| MetricsRow {
                epoch: e,
                train_loss: 0.8 / (e + 1) as f64,
                test_loss: 0.3 / (e + 1) as f64 + 0.05,
                test_accuracy: 0.9 + 0.015 * e as f64,
                seconds: 6.0,
                images_per_s: 10_000.0,
            })
            .collect();
        for n in [1, 5] {
            let png = render(&[rows[..n].to_vec()], "784-128-128-64-64-10 on MNIST").unwrap();
            let img = image::load_from_memory(&png).unwrap();
            assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
            // Something was drawn in each colour of the series.
            let rgb = img.to_rgb8();
            for c in [TRAIN, TEST, ACCURACY] {
                assert!(
                    rgb.pixels().any(|p| p.0 == [c.0, c.1, c.2]),
                    "no pixel of {c:?} with {n} epochs"
                );
            }
        }
    }

    /// Pixels tinted but not white: the bands, the light grid lines, anti-aliased edges.
    fn tinted(png: &[u8]) -> usize {
        let img = image::load_from_memory(png).unwrap().to_rgb8();
        let light = |p: &image::Rgb<u8>| p.0.iter().all(|&c| c > 170) && p.0 != [255; 3];
        img.pixels().filter(|p| light(p)).count()
    }

    #[test]
    fn a_set_draws_a_band_around_its_mean() {
        let model = |k: usize| -> Vec<MetricsRow> {
            let spread = 1.0 + 0.2 * k as f64;
            (0..5)
                .map(|e| MetricsRow {
                    epoch: e,
                    train_loss: 0.8 * spread / (e + 1) as f64,
                    test_loss: 0.3 * spread / (e + 1) as f64 + 0.05,
                    test_accuracy: 0.9 + 0.01 * spread * e as f64,
                    seconds: 6.0,
                    images_per_s: 10_000.0,
                })
                .collect()
        };
        let set: Vec<Vec<MetricsRow>> = (0..3).map(model).collect();
        let one = render(&set[1..2], "one").unwrap();
        let three = render(&set, "three").unwrap();
        let (one, three) = (tinted(&one), tinted(&three));
        // Three bands, each tens of pixels tall over most of the chart's width.
        assert!(three > one + 5_000, "{three} tinted pixels against {one}");
    }
}
