//! What a run writes after every epoch: its checkpoint (`checkpoint::save`), `metrics.csv` in
//! the run directory, and optionally a second metrics file and the chart.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint::{CHECKPOINT_FILE, Checkpoint, METRICS_FILE, MetricsRow, metrics_csv, save};
use crate::model::Arch;
use crate::modelfile;
use crate::train::{Backend, EpochReport, Position};

/// Writes what a run keeps after every epoch: the checkpoint, `metrics.csv` in the run
/// directory, and optionally a second metrics file and the chart.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub run_dir: PathBuf,
    pub arch: Arch,
    pub settings: BTreeMap<String, String>,
    pub metrics: Vec<MetricsRow>,
    /// `--metrics PATH`
    pub metrics_copy: Option<PathBuf>,
    /// `--plot PATH` and the chart's title
    pub plot: Option<(PathBuf, String)>,
    /// A set's models, by the values that vary (`seed3-lr0.01`); empty for a single run. A
    /// set writes its metrics with a model column.
    pub set: Vec<String>,
    /// A set's rows so far, each with its model's name.
    pub set_rows: Vec<(String, MetricsRow)>,
    /// Steps in one epoch (Adam's step count of a position).
    pub steps_per_epoch: usize,
}

impl Recorder {
    /// Records a finished epoch: its metrics, then a checkpoint at the start of the next.
    pub async fn epoch_done(
        &mut self,
        backend: &mut dyn Backend,
        report: &EpochReport,
    ) -> anyhow::Result<()> {
        self.metrics.push(MetricsRow::from_report(report));
        if !self.set.is_empty() {
            self.set_rows.extend(
                self.set
                    .iter()
                    .enumerate()
                    .map(|(k, name)| (name.clone(), MetricsRow::of_model(report, k))),
            );
        }
        let next = Position {
            epoch: report.epoch + 1,
            ..Default::default()
        };
        self.save(backend, next).await?;
        self.write_metrics()
    }

    /// Writes the metrics so far: `metrics.csv` in the run directory, `--metrics`, `--plot`.
    pub fn write_metrics(&self) -> anyhow::Result<()> {
        let csv = match self.set.is_empty() {
            true => metrics_csv(&self.metrics),
            false => crate::metrics::set_metrics_csv(&self.set_rows),
        };
        let write = |path: &Path| {
            modelfile::write_atomic(path, csv.as_bytes())
                .map_err(|e| anyhow::anyhow!("{}: cannot write the metrics: {e}", path.display()))
        };
        write(&self.run_dir.join(METRICS_FILE))?;
        if let Some(path) = &self.metrics_copy {
            write(path)?;
        }
        if let Some((path, title)) = &self.plot {
            let models = match self.set.is_empty() {
                true => vec![self.metrics.clone()],
                false => self.per_model(),
            };
            crate::plot::write_png(path, &models, title).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// A set's rows by model, in the set's order.
    pub fn per_model(&self) -> Vec<Vec<MetricsRow>> {
        let rows = |name: &String| {
            let mine = self.set_rows.iter().filter(move |(n, _)| n == name);
            mine.map(|(_, r)| r.clone()).collect()
        };
        self.set.iter().map(rows).collect()
    }

    /// Optimizer steps before `position`.
    fn steps_done(&self, position: &Position) -> u64 {
        (position.epoch * self.steps_per_epoch + position.step) as u64
    }

    /// Writes the checkpoint of `position` with the backend's weights and optimizer state.
    pub async fn save(&self, backend: &mut dyn Backend, position: Position) -> anyhow::Result<()> {
        let c = Checkpoint {
            arch: self.arch.clone(),
            params: backend.params().await?,
            state: backend.state().await?,
            steps_done: self.steps_done(&position),
            position,
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            set_metrics: self.set_rows.clone(),
        };
        // What a write cut short by kill -9 left: write_atomic's temporary files.
        if let Ok(entries) = fs::read_dir(&self.run_dir) {
            let stale = format!(".{CHECKPOINT_FILE}.tmp-");
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&stale) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        save(&self.run_dir, &c)?;
        Ok(())
    }
}
