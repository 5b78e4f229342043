//! Run directories and checkpoints (what `recorder::Recorder` writes after every epoch).
//!
//! A checkpoint is one safetensors file, written atomically: the model under the tutorial's
//! state_dict keys (so `eval --model` reads it), the optimizer's state tensors under PyTorch's
//! names, `optimizer.<name>.<key>` (`momentum_buffer`; `exp_avg`, `exp_avg_sq`; `square_avg`,
//! `acc_delta`), Adam's `optimizer.step`, the current epoch's step losses under
//! `optimizer.epoch_losses`, and in the metadata the position (epoch, step), the epoch's
//! learning rate, the run's settings (the optimizer among them) and the metrics so far.
//! A set of models keeps the same for its first model, and each further model k under
//! `optimizer.model<k>.` (weights, `<name>.<key>`, `epoch_losses`), with `models` and the
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
use crate::train::Position;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const METRICS_FILE: &str = "metrics.csv";

/// Everything a run needs to continue.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub arch: Arch,
    /// params: [models, param_count], each model the flat table of `arch`
    pub params: Vec<f32>,
    /// The optimizer's state tensors (`Optimizer::state_names` of `optimizer()`), each as params.
    pub state: Vec<Vec<f32>>,
    pub position: Position,
    /// Optimizer steps taken before `position` (PyTorch's `step` of Adam's state).
    pub steps_done: u64,
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

    /// The optimizer the run trains with, from its settings (SGD in checkpoints written before
    /// there was a choice).
    pub fn optimizer(&self) -> &'static str {
        optimizer_of(&self.settings)
    }
}

fn optimizer_of(settings: &BTreeMap<String, String>) -> &'static str {
    let name = settings.get("optimizer").map_or("sgd", String::as_str);
    crate::optim::NAMES
        .into_iter()
        .find(|n| *n == name)
        .unwrap_or("sgd")
}

/// The names of `optimizer`'s state tensors.
fn state_names(optimizer: &str) -> &'static [&'static str] {
    crate::optim::Optimizer::named(optimizer, 0.0).map_or(&["momentum_buffer"], |o| o.state_names())
}

/// Where checkpoints written before the optimizer was a choice kept SGD's momentum buffers.
const LEGACY_MOMENTUM: &str = "momentum";
/// Adam's step count, as PyTorch's `state[p]["step"]` (one value for every tensor).
const STEP: &str = "step";
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
        (
            "epoch_lr".to_string(),
            epoch_lr(&c.settings, c.position.epoch),
        ),
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
    let names = state_names(c.optimizer());
    let step = [c.steps_done as f32];
    let mut extra: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    if c.optimizer() == "adam" {
        extra.push((state_key(0, STEP), vec![1], &step));
    }
    for k in 0..models {
        let params = &c.params[k * n..][..n];
        for e in &table {
            if k > 0 {
                extra.push((state_key(k, &e.name), e.shape.clone(), &params[e.range()]));
            }
            for (name, values) in names.iter().zip(&c.state) {
                let key = state_key(k, &format!("{name}.{}", e.name));
                extra.push((key, e.shape.clone(), &values[k * n..][..n][e.range()]));
            }
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

/// The learning rate of `epoch` under the run's settings (`lr`, and StepLR's `gamma`).
fn epoch_lr(settings: &BTreeMap<String, String>, epoch: usize) -> String {
    let number = |k: &str, default: f64| {
        settings
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let lr = number("lr", crate::flags::LR);
    crate::optim::lr_at(lr, number("gamma", 1.0), epoch).to_string()
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
    let settings: BTreeMap<String, String> = meta
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("setting.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    let optimizer = optimizer_of(&settings);
    let names = state_names(optimizer);
    // Checkpoints written before the optimizer was a choice keep SGD's buffers as `momentum.`.
    let first = model.arch.table()[0].name.clone();
    let legacy = !tensors.contains_key(&state_key(0, &format!("{}.{first}", names[0])))
        && tensors.contains_key(&state_key(0, &format!("{LEGACY_MOMENTUM}.{first}")));
    let mut params = vec![0f32; models * n];
    let mut state = vec![vec![0f32; models * n]; names.len()];
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
            for (name, values) in names.iter().zip(&mut state) {
                let name = if legacy { LEGACY_MOMENTUM } else { name };
                read(format!("{name}.{}", e.name), values)?;
            }
        }
        losses.push(f32s(state_key(k, EPOCH_LOSSES))?);
    }
    let position = position(meta, losses).map_err(bad)?;
    let metrics = parse_metrics_csv(field("metrics")?).map_err(bad)?;
    let set_metrics = match models {
        1 => Vec::new(),
        _ => crate::metrics::parse_set_metrics_csv(field(SET_METRICS)?).map_err(bad)?,
    };
    let steps_done = match optimizer {
        "adam" => f32s(state_key(0, STEP))?.first().copied().unwrap_or(0.0) as u64,
        _ => 0,
    };
    Ok(Checkpoint {
        arch: model.arch,
        params,
        state,
        steps_done,
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
        let arch = Arch::mlp(784, &[16, 8], 10);
        let params = arch.init(4);
        let momentum: Vec<f32> = params.iter().map(|p| p * 0.5 - 1e-9).collect();
        let c = Checkpoint {
            arch: arch.clone(),
            params,
            state: vec![momentum],
            steps_done: 0,
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
        set.state = vec![set.params.iter().map(|p| -p * 0.25).collect()];
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
        // Adam's set: both state tensors of every model under PyTorch's names, and its step.
        let mut adam = set.clone();
        adam.settings.insert("optimizer".into(), "adam".into());
        adam.state.push(set.params.iter().map(|p| p * p).collect());
        adam.steps_done = 1234;
        let back = round_trip(&adam, "adam");
        assert_eq!(back.optimizer(), "adam");
        let dir = std::env::temp_dir().join(format!("mnist-wgpu-ckpt-keys-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        save(&dir, &adam).unwrap();
        let bytes = fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
        let keys: Vec<String> = SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        for key in [
            "optimizer.exp_avg.0.weight",
            "optimizer.model2.exp_avg_sq.2.bias",
            "optimizer.step",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
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
        assert_eq!(back.state, c.state);
        assert_eq!(back.steps_done, c.steps_done);
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
