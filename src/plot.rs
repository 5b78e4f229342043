//! The training chart (`train --plot PATH.png`): training and test loss per epoch beside the
//! test accuracy, drawn with plotters into memory and written as a PNG atomically.

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

/// Draws `rows` under `title` and writes the PNG to `path`.
pub fn write_png(path: &Path, rows: &[MetricsRow], title: &str) -> Result<(), String> {
    let png = render(rows, title)?;
    write_atomic(path, &png).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// The chart as PNG bytes.
pub fn render(rows: &[MetricsRow], title: &str) -> Result<Vec<u8>, String> {
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled font is valid"));
    });
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut rgb, rows, title).map_err(|e| format!("drawing the chart: {e}"))?;
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

fn draw(rgb: &mut [u8], rows: &[MetricsRow], title: &str) -> Result<(), Failure> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    draw_losses(&left, rows)?;
    draw_accuracy(&right, rows)?;
    root.present()?;
    Ok(())
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
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
fn draw_losses(area: &Area<'_>, rows: &[MetricsRow]) -> Result<(), Failure> {
    let top = rows
        .iter()
        .flat_map(|r| [finite(r.train_loss), finite(r.test_loss)])
        .flatten()
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let mut chart = epoch_chart(area, rows, ("NLL loss", "mean loss"), (0.0, top))?;
    let series: [Series; 2] = [
        ("training", TRAIN, |r| r.train_loss),
        ("test", TEST, |r| r.test_loss),
    ];
    for (name, color, value) in series {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| finite(value(r)).map(|v| (r.epoch as f64, v)))
            .collect();
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
fn draw_accuracy(area: &Area<'_>, rows: &[MetricsRow]) -> Result<(), Failure> {
    let accs: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| finite(r.test_accuracy).map(|a| (r.epoch as f64, 100.0 * a)))
        .collect();
    let low = accs.iter().map(|p| p.1).fold(100.0f64, f64::min);
    let low = (low - (100.0 - low).max(1.0) * 0.25)
        .clamp(0.0, 99.0)
        .floor();
    let mut chart = epoch_chart(area, rows, ("test accuracy", "accuracy (%)"), (low, 100.0))?;
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
            let png = render(&rows[..n], "784-128-128-64-64-10 on MNIST").unwrap();
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
}
