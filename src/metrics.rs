//! The per-epoch metrics of a run, as `metrics.csv`, the checkpoint and the chart hold them.

use crate::train::EpochReport;

/// One epoch's figures, as the metrics CSV and the plot hold them.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsRow {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    /// In [0, 1].
    pub test_accuracy: f64,
    pub seconds: f64,
    pub images_per_s: f64,
}

impl MetricsRow {
    /// The row of a single run's epoch (the first model of a set).
    pub fn from_report(r: &EpochReport) -> MetricsRow {
        MetricsRow::of_model(r, 0)
    }

    /// Model k's row of an epoch of a set; seconds and images per second are the set's. A
    /// diverged model's test figures are NaN, as its training loss is.
    pub fn of_model(r: &EpochReport, k: usize) -> MetricsRow {
        let m = &r.models[k];
        let (test_loss, test_accuracy) = m
            .fair_test()
            .map_or((f64::NAN, f64::NAN), |t| (t.loss, t.accuracy));
        MetricsRow {
            epoch: r.epoch,
            train_loss: m.loss,
            test_loss,
            test_accuracy,
            seconds: r.seconds,
            images_per_s: r.images_per_s,
        }
    }
}

pub const METRICS_HEADER: &str = "epoch,train_loss,test_loss,test_accuracy,seconds,images_per_s";

pub fn metrics_csv(rows: &[MetricsRow]) -> String {
    let mut out = format!("{METRICS_HEADER}\n");
    for r in rows {
        out += &format!(
            "{},{:.6},{:.6},{:.6},{:.3},{:.1}\n",
            r.epoch, r.train_loss, r.test_loss, r.test_accuracy, r.seconds, r.images_per_s
        );
    }
    out
}

/// A set's metrics: the same columns after a model column naming the model by what varies
/// (`seed3-lr0.01`).
pub fn set_metrics_csv(rows: &[(String, MetricsRow)]) -> String {
    let mut out = format!("model,{METRICS_HEADER}\n");
    for (name, r) in rows {
        out += &format!(
            "{name},{},{:.6},{:.6},{:.6},{:.3},{:.1}\n",
            r.epoch, r.train_loss, r.test_loss, r.test_accuracy, r.seconds, r.images_per_s
        );
    }
    out
}

pub fn parse_metrics_csv(text: &str) -> Result<Vec<MetricsRow>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(METRICS_HEADER) {
        return Err(format!("metrics: the first line is not `{METRICS_HEADER}`"));
    }
    lines
        .enumerate()
        .map(|(i, l)| parse_row(l, i + 2))
        .collect()
}

/// The rows of [`set_metrics_csv`], each with its model's name.
pub fn parse_set_metrics_csv(text: &str) -> Result<Vec<(String, MetricsRow)>, String> {
    let mut lines = text.lines();
    let header = format!("model,{METRICS_HEADER}");
    if lines.next() != Some(header.as_str()) {
        return Err(format!("set metrics: the first line is not `{header}`"));
    }
    lines
        .enumerate()
        .map(|(i, l)| match l.split_once(',') {
            Some((name, rest)) if !name.is_empty() => {
                Ok((name.to_string(), parse_row(rest, i + 2)?))
            }
            _ => Err(format!("set metrics line {}: no model name: `{l}`", i + 2)),
        })
        .collect()
}

/// One row of the six metrics columns; `line` counts from 1 for the messages.
fn parse_row(l: &str, line: usize) -> Result<MetricsRow, String> {
    let f: Vec<&str> = l.split(',').collect();
    let num = |j: usize| -> Result<f64, String> {
        f.get(j)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("metrics line {line}: `{l}`"))
    };
    if f.len() != 6 {
        return Err(format!("metrics line {line}: expected 6 fields: `{l}`"));
    }
    Ok(MetricsRow {
        epoch: num(0)? as usize,
        train_loss: num(1)?,
        test_loss: num(2)?,
        test_accuracy: num(3)?,
        seconds: num(4)?,
        images_per_s: num(5)?,
    })
}
