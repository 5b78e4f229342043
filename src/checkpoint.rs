//! Run directories, checkpoints and the per-epoch metrics.
//!
//! A checkpoint is one safetensors file, written atomically: the model under the tutorial's
//! state_dict keys (so `eval --model` reads it), the momentum buffers under
//! `optimizer.momentum.<key>`, the current epoch's step losses under `optimizer.epoch_losses`,
//! and in the metadata the position (epoch, step), the run's settings and the metrics so far.
//! A set of models keeps the same for its first model, and each further model k under
//! `optimizer.model<k>.` (weights, `momentum.<key>`, `epoch_losses`), with `models` and the
//! per-model metrics in the metadata: one file, written atomically, so that no crash leaves the
//! models of a set at different epochs.
//! The shuffles need no stored generator state: epoch `e`'s order is a function of the seed
//! and `e` alone (see [`crate::rng::epoch_order`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

pub use crate::metrics::{METRICS_HEADER, MetricsRow, metrics_csv, parse_metrics_csv};
use crate::model::Arch;
use crate::modelfile::{self, ModelFileError, OPTIMIZER_PREFIX};
use crate::train::{Backend, EpochReport, Position};

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const METRICS_FILE: &str = "metrics.csv";

/// Everything a run needs to continue.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub arch: Arch,
    /// params, momentum: [models, param_count], each model the flat table of `arch`
    pub params: Vec<f32>,
    pub momentum: Vec<f32>,
    pub position: Position,
    /// The run's flags, to resume with (see the `train` command).
    pub settings: BTreeMap<String, String>,
    /// The first model's metrics (a single run's).
    pub metrics: Vec<MetricsRow>,
    /// A set's metrics, each row with its model's name; empty for a single run.
    pub set_metrics: Vec<(String, MetricsRow)>,
}

impl Checkpoint {
    pub fn models(&self) -> usize {
        self.params.len() / self.arch.param_count().max(1)
    }
}

const MOMENTUM: &str = "momentum.";
const EPOCH_LOSSES: &str = "epoch_losses";
const MODELS: &str = "models";
const SET_METRICS: &str = "set_metrics";

/// Where model k's optimizer state (and, past the first model, its weights) is kept: `name`
/// after `optimizer.` for the first model, after `optimizer.model<k>.` for the others.
fn state_key(k: usize, name: &str) -> String {
    match k {
        0 => format!("{OPTIMIZER_PREFIX}{name}"),
        _ => format!("{OPTIMIZER_PREFIX}model{k}.{name}"),
    }
}

/// Writes `dir/checkpoint.safetensors` atomically.
pub fn save(dir: &Path, c: &Checkpoint) -> Result<(), ModelFileError> {
    let path = dir.join(CHECKPOINT_FILE);
    let mut meta = BTreeMap::from([
        (
            "checkpoint".to_string(),
            format!("mnist-wgpu {}", env!("CARGO_PKG_VERSION")),
        ),
        ("epoch".to_string(), c.position.epoch.to_string()),
        ("step".to_string(), c.position.step.to_string()),
        ("seconds".to_string(), c.position.seconds.to_string()),
        ("metrics".to_string(), metrics_csv(&c.metrics)),
        (
            "rng".to_string(),
            "SplitMix64: epoch e's order from (setting.seed, stream 1 + e)".to_string(),
        ),
    ]);
    for (k, v) in &c.settings {
        meta.insert(format!("setting.{k}"), v.clone());
    }
    let models = c.models();
    if models > 1 {
        meta.insert(MODELS.to_string(), models.to_string());
        let csv = crate::metrics::set_metrics_csv(&c.set_metrics);
        meta.insert(SET_METRICS.to_string(), csv);
    }
    let (table, n) = (c.arch.table(), c.arch.param_count());
    let mut extra: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for k in 0..models {
        let (params, momentum) = (&c.params[k * n..][..n], &c.momentum[k * n..][..n]);
        for e in &table {
            if k > 0 {
                extra.push((state_key(k, &e.name), e.shape.clone(), &params[e.range()]));
            }
            let name = format!("{MOMENTUM}{}", e.name);
            extra.push((state_key(k, &name), e.shape.clone(), &momentum[e.range()]));
        }
        let losses = c.position.losses.get(k).map_or(&[][..], |l| l.as_slice());
        extra.push((state_key(k, EPOCH_LOSSES), vec![losses.len()], losses));
    }
    let bytes = modelfile::to_bytes_with(&c.arch, &c.params[..n], &extra, &meta).map_err(|e| {
        ModelFileError::Write {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    modelfile::write_atomic(&path, &bytes).map_err(|source| ModelFileError::Write { path, source })
}

/// Reads `dir/checkpoint.safetensors`.
pub fn load(dir: &Path, input: usize, classes: usize) -> Result<Checkpoint, ModelFileError> {
    let path = dir.join(CHECKPOINT_FILE);
    let model = modelfile::load(&path, input, classes)?;
    let bad = |problem: String| ModelFileError::Content {
        path: path.clone(),
        problem,
    };
    let bytes = fs::read(&path).map_err(|source| ModelFileError::Read {
        path: path.clone(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let tensors: HashMap<String, _> = st.tensors().into_iter().collect();
    let f32s = |key: String| f32_tensor(&tensors, &key).map_err(bad);
    let meta = &model.metadata;
    let field = |k: &str| -> Result<&String, ModelFileError> {
        meta.get(k)
            .ok_or_else(|| bad(format!("not a checkpoint: no `{k}` in the metadata")))
    };
    let models = model_count(meta).map_err(bad)?;
    let n = model.arch.param_count();
    let mut params = vec![0f32; models * n];
    let mut momentum = vec![0f32; models * n];
    let mut losses = Vec::with_capacity(models);
    params[..n].copy_from_slice(&model.params);
    for k in 0..models {
        for e in model.arch.table() {
            let read = |name: String, to: &mut [f32]| {
                let v = f32s(state_key(k, &name))?;
                if v.len() != e.len() {
                    let (got, want) = (v.len(), e.len());
                    return Err(bad(format!("`{name}` has {got} values, expected {want}")));
                }
                to[k * n + e.offset..][..e.len()].copy_from_slice(&v);
                Ok(())
            };
            if k > 0 {
                read(e.name.clone(), &mut params)?;
            }
            read(format!("{MOMENTUM}{}", e.name), &mut momentum)?;
        }
        losses.push(f32s(state_key(k, EPOCH_LOSSES))?);
    }
    let position = position(meta, losses).map_err(bad)?;
    let metrics = parse_metrics_csv(field("metrics")?).map_err(bad)?;
    let set_metrics = match models {
        1 => Vec::new(),
        _ => crate::metrics::parse_set_metrics_csv(field(SET_METRICS)?).map_err(bad)?,
    };
    let settings = meta
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("setting.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    Ok(Checkpoint {
        arch: model.arch,
        params,
        momentum,
        position,
        settings,
        metrics,
        set_metrics,
    })
}

/// The f32 tensor `key`'s values.
fn f32_tensor(tensors: &HashMap<String, TensorView<'_>>, key: &str) -> Result<Vec<f32>, String> {
    let t = tensors
        .get(key)
        .ok_or_else(|| format!("not a checkpoint: no tensor `{key}`"))?;
    if t.dtype() != Dtype::F32 {
        return Err(format!("tensor `{key}` is {:?}, expected F32", t.dtype()));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// How many models the checkpoint holds: 1 unless the metadata says more.
fn model_count(meta: &BTreeMap<String, String>) -> Result<usize, String> {
    match meta.get(MODELS) {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|&m| m >= 1)
            .ok_or_else(|| format!("metadata `{MODELS}` is not a model count: `{m}`")),
        None => Ok(1),
    }
}

/// The position stored in a checkpoint's metadata, with its epoch's step losses per model.
fn position(meta: &BTreeMap<String, String>, losses: Vec<Vec<f32>>) -> Result<Position, String> {
    let number = |k: &str| -> Result<f64, String> {
        let v = meta
            .get(k)
            .ok_or_else(|| format!("not a checkpoint: no `{k}` in the metadata"))?;
        v.parse::<f64>()
            .map_err(|_| format!("metadata `{k}` is not a number"))
    };
    let position = Position {
        epoch: number("epoch")? as usize,
        step: number("step")? as usize,
        losses,
        seconds: number("seconds")?,
    };
    if let Some(l) = position.losses.iter().find(|l| l.len() != position.step) {
        let n = l.len();
        return Err(format!("holds {n} step losses for step {}", position.step));
    }
    Ok(position)
}

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

    /// Writes the checkpoint of `position` with the backend's weights and momentum.
    pub async fn save(&self, backend: &mut dyn Backend, position: Position) -> anyhow::Result<()> {
        let c = Checkpoint {
            arch: self.arch.clone(),
            params: backend.params().await?,
            momentum: backend.momentum().await?,
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

/// A new directory under `parent` for a run: `run-001`, `run-002`, ..., the first that does not
/// exist, so that no earlier run is overwritten.
pub fn new_run_dir(parent: &Path) -> std::io::Result<PathBuf> {
    fs::create_dir_all(parent)?;
    for i in 1..100_000 {
        let dir = parent.join(format!("run-{i:03}"));
        // create_dir (not _all) fails if it exists, so two runs never share one.
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free run-NNN name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trip_is_exact() {
        let arch = Arch::new(784, &[16, 8], 10);
        let params = arch.init(4);
        let momentum: Vec<f32> = params.iter().map(|p| p * 0.5 - 1e-9).collect();
        let c = Checkpoint {
            arch: arch.clone(),
            params,
            momentum,
            position: Position {
                epoch: 2,
                step: 3,
                losses: vec![vec![0.5, 0.25, f32::MIN_POSITIVE]],
                seconds: 1.25,
            },
            settings: BTreeMap::from([("lr".to_string(), "0.003".to_string())]),
            metrics: vec![MetricsRow {
                epoch: 0,
                train_loss: 0.75,
                test_loss: 0.5,
                test_accuracy: 0.9,
                seconds: 2.0,
                images_per_s: 30000.0,
            }],
            set_metrics: Vec::new(),
        };
        round_trip(&c, "one");
        // A set of three: each model's weights, momentum and step losses come back as its own.
        let mut set = c.clone();
        let n = arch.param_count();
        set.params = (0..3).flat_map(|k| arch.init(10 + k)).collect();
        set.momentum = set.params.iter().map(|p| -p * 0.25).collect();
        set.position.losses = (0..3).map(|k| vec![k as f32, 0.5, 1.5]).collect();
        let rows = c.metrics.iter().cloned();
        set.set_metrics = ["seed10", "seed11", "seed12"]
            .iter()
            .flat_map(|name| rows.clone().map(|r| (name.to_string(), r)))
            .collect();
        let back = round_trip(&set, "set");
        assert_eq!(back.models(), 3);
        assert_eq!(back.set_metrics, set.set_metrics);
        assert_ne!(back.params[..n], back.params[n..2 * n]);
    }

    /// Saves and loads `c`; checks every field and that a model reader sees the first model.
    fn round_trip(c: &Checkpoint, name: &str) -> Checkpoint {
        let id = std::process::id();
        let dir = std::env::temp_dir().join(format!("mnist-wgpu-ckpt-{name}-{id}"));
        fs::create_dir_all(&dir).unwrap();
        save(&dir, c).unwrap();
        let back = load(&dir, 784, 10).unwrap();
        assert_eq!(back.arch, c.arch);
        assert_eq!(back.params, c.params);
        assert_eq!(back.momentum, c.momentum);
        assert_eq!(back.position, c.position);
        assert_eq!(back.settings, c.settings);
        assert_eq!(back.metrics, c.metrics);
        assert_eq!(back.set_metrics, c.set_metrics);
        // A model reader sees just the (first) model.
        let m = modelfile::load(&dir.join(CHECKPOINT_FILE), 784, 10).unwrap();
        assert_eq!(m.params, c.params[..c.arch.param_count()]);
        fs::remove_dir_all(&dir).unwrap();
        back
    }

    #[test]
    fn run_dirs_never_collide() {
        let parent = std::env::temp_dir().join(format!("mnist-wgpu-runs-{}", std::process::id()));
        let a = new_run_dir(&parent).unwrap();
        let b = new_run_dir(&parent).unwrap();
        assert_ne!(a, b);
        assert!(a.ends_with("run-001") && b.ends_with("run-002"));
        fs::remove_dir_all(&parent).unwrap();
    }
}
