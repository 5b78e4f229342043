//! `--schedule auto`: measured, not guessed. On the first use of an adapter and a shape, every
//! schedule and kernel family the adapter can run is timed for a fraction of a second the way
//! the command runs it (training steps with their loss read-backs, or one evaluation of the
//! test set), the fastest is kept in a cache file keyed by adapter, driver and shape, and one
//! line says what was chosen and from what. Later runs read the choice back (`--retune`
//! measures again); `mnist-wgpu adapters` lists it. In the browser the page's local storage
//! keeps the choice (`retune=1` in the URL measures again).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;

use crate::data::Dataset;
use crate::gpu::backend::{GpuBackend, Trainer};
use crate::gpu::buffers::Split;
use crate::gpu::device::Gpu;
use crate::gpu::evaluator::Evaluator;
use crate::gpu::ops::Modules;
use crate::gpu::plan::{Plan, Request};
use crate::gpu::wgsl::Kernels;
use crate::model::Arch;
use crate::train::{Evaluate, Recipe};

/// Training steps timed per round, and rounds per candidate (the fastest round counts).
const STEPS: usize = 40;
const ROUNDS: usize = 3;

/// The part of a cache key that names the adapter: name, API, driver, vendor and device ids.
pub fn adapter_key(i: &wgpu::AdapterInfo) -> String {
    format!(
        "{} | {:?} | {} {} | {:04x}:{:04x} | ",
        i.name, i.backend, i.driver, i.driver_info, i.vendor, i.device
    )
    .replace('\t', " ")
}

/// The cache key: the adapter, the shape a choice is for, and which families it chose from.
pub fn key(info: &wgpu::AdapterInfo, request: &Request, shape: &str) -> String {
    let family = request.kernels.map_or("any", Kernels::name);
    format!("{}{shape} | kernels {family}", adapter_key(info)).replace('\t', " ")
}

/// Measured figures: each candidate and its milliseconds (per step, or per evaluation).
pub type Figures = Vec<(Plan, f64)>;

/// The fastest candidate.
pub fn fastest(figures: &Figures) -> Option<Plan> {
    figures
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| *c)
}

fn figures_text(figures: &Figures, unit: &str) -> String {
    let parts: Vec<String> = figures
        .iter()
        .map(|(c, ms)| format!("{} {ms:.2}", c.name()))
        .collect();
    format!("{} ({unit})", parts.join(", "))
}

/// The line that says what auto chose, from what, and how (measured now, or cached).
fn chosen_line(gpu: &Gpu, choice: Plan, figures: &Figures, how: &str, unit: &str) -> String {
    format!(
        "schedule: auto chose {} on {}: {}; {how}",
        choice.name(),
        gpu.info.name,
        figures_text(figures, unit)
    )
}

/// The cached choice for `key` unless `--retune`, with its line.
fn cached(gpu: &Gpu, request: &Request, key: &str, unit: &str) -> Option<(Plan, String)> {
    if request.retune {
        return None;
    }
    let (choice, figures) = cache::lookup(key)?;
    let line = chosen_line(gpu, choice, &figures, &cache::cached_how(), unit);
    Some((choice, line))
}

/// The chosen plan from measured `figures`, stored in the cache, with its line.
fn chosen(gpu: &Gpu, key: &str, figures: &Figures, unit: &str) -> Result<(Plan, String)> {
    let Some(best) = fastest(figures) else {
        anyhow::bail!(
            "--schedule auto: no schedule could be built on {}",
            gpu.info.name
        );
    };
    let how = cache::store(key, best, figures);
    Ok((best, chosen_line(gpu, best, figures, &how, unit)))
}

/// The modules of each kernel family, compiled once for every candidate that uses it.
#[derive(Default)]
struct ModuleSets(HashMap<Kernels, Arc<Modules>>);

impl ModuleSets {
    fn of(&mut self, gpu: &Gpu, kernels: Kernels) -> Result<Arc<Modules>> {
        if let Some(m) = self.0.get(&kernels) {
            return Ok(m.clone());
        }
        let m = Arc::new(Modules::new(gpu, kernels)?);
        self.0.insert(kernels, m.clone());
        Ok(m)
    }
}

/// The training backend of `recipe` on `gpu`, with the plan the cache holds for this adapter
/// and shape, or the fastest when each candidate is timed on the run's own data. Every
/// candidate trains on the one upload of the training split, and the chosen one's pipelines
/// are built once.
pub async fn for_training(
    gpu: &Gpu,
    request: Request,
    arch: &Arch,
    recipe: &Recipe,
    params: &[f32],
    train: &Dataset,
    test: &Dataset,
) -> Result<GpuBackend> {
    let shape = format!(
        "train {} batch {}",
        crate::flags::arch_string(arch),
        recipe.batch_size
    );
    let key = key(&gpu.info, &request, &shape);
    let unit = "ms per step";
    let split = Split::new(gpu, "train", train, recipe.batch_size);
    let mut modules = ModuleSets::default();
    let (plan, line) = match cached(gpu, &request, &key, unit) {
        Some(found) => found,
        None => {
            let mut figures = Figures::new();
            for c in request.candidates(gpu) {
                // A candidate the device cannot build (a limit, a driver's refusal) is left out.
                let built = modules
                    .of(gpu, c.kernels)
                    .and_then(|m| Trainer::new(gpu, c, m, arch, recipe, params, split.clone()));
                let Ok(mut t) = built else {
                    continue;
                };
                let best = figures.iter().map(|f| f.1).fold(f64::INFINITY, f64::min);
                figures.push((c, time_steps(&mut t, recipe, best).await?));
            }
            chosen(gpu, &key, &figures, unit)?
        }
    };
    let modules = modules.of(gpu, plan.kernels)?;
    let trainer = Trainer::new(gpu, plan, modules, arch, recipe, params, split)?;
    let mut backend = GpuBackend::from_trainer(trainer, test)?;
    backend.set_tuned(Some(line));
    Ok(backend)
}

/// Milliseconds per training step as `train` runs them (a loss read-back after each
/// submission): a few steps to warm up, then the fastest of [`ROUNDS`] rounds of [`STEPS`];
/// a candidate twice as slow as `rival` in a first short round, or half again as slow after a
/// full one, is not timed further.
async fn time_steps(t: &mut Trainer, recipe: &Recipe, rival: f64) -> Result<f64> {
    let n = t.split_len();
    let steps = STEPS.min(recipe.steps_per_epoch(n));
    t.begin_epoch(&crate::rng::epoch_order(recipe.seed, 0, n))?;
    // Five steps to warm up (the first use of a pipeline compiles it on some drivers), then
    // five timed: a candidate twice as slow as the best so far is not timed further.
    let probe = 5.min(steps);
    t.run_steps(0..probe).await?;
    t.losses(0..probe).await?;
    let t0 = web_time::Instant::now();
    t.run_steps(0..probe).await?;
    t.losses(0..probe).await?;
    let first = t0.elapsed().as_secs_f64() * 1e3 / probe as f64;
    if first > 2.0 * rival {
        return Ok(first);
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let t0 = web_time::Instant::now();
        t.run_steps(0..steps).await?;
        t.losses(0..steps).await?;
        best = best.min(t0.elapsed().as_secs_f64() * 1e3 / steps as f64);
        if best > 1.5 * rival {
            break;
        }
    }
    Ok(best)
}

/// The evaluator of `test` in batches of `batch` with the plan the cache holds, or the fastest
/// of one evaluation per candidate after one to warm it.
pub async fn for_evaluation(
    gpu: &Gpu,
    request: Request,
    arch: &Arch,
    params: &[f32],
    test: &Dataset,
    batch: usize,
) -> Result<Evaluator> {
    let shape = format!(
        "eval {} batch {batch} of {}",
        crate::flags::arch_string(arch),
        test.len()
    );
    let key = key(&gpu.info, &request, &shape);
    let unit = "ms per evaluation";
    let (plan, line) = match cached(gpu, &request, &key, unit) {
        Some(found) => found,
        None => {
            let mut figures = Figures::new();
            for c in request.candidates(gpu) {
                let Ok(mut e) = Evaluator::of_model(gpu, c, arch, params, test, batch) else {
                    continue;
                };
                e.evaluate().await?;
                let t0 = web_time::Instant::now();
                e.evaluate().await?;
                figures.push((c, t0.elapsed().as_secs_f64() * 1e3));
            }
            chosen(gpu, &key, &figures, unit)?
        }
    };
    let mut evaluator = Evaluator::of_model(gpu, plan, arch, params, test, batch)?;
    evaluator.set_tuned(Some(line));
    Ok(evaluator)
}

/// One cached choice as text: `choice \t figures` (the file adds the key in front).
fn entry_text(choice: Plan, figures: &Figures) -> String {
    let figs: Vec<String> = figures
        .iter()
        .map(|(c, ms)| format!("{} {ms:.4}", c.name()))
        .collect();
    format!("{}\t{}", choice.name(), figs.join(", "))
}

/// The inverse of [`entry_text`]; None for text that does not parse (measured again).
fn parse_entry(choice: &str, figs: &str) -> Option<(Plan, Figures)> {
    let figures = figs
        .split(", ")
        .map(|f| {
            let (c, ms) = f.split_once(' ')?;
            Some((Plan::parse(c)?, ms.parse().ok()?))
        })
        .collect::<Option<Figures>>()?;
    Some((Plan::parse(choice)?, figures))
}

/// The cache file: one line per key, `key \t choice \t figures`, rewritten whole through a
/// temporary file. A line that does not parse is ignored (measured again).
#[cfg(not(target_arch = "wasm32"))]
pub mod cache {
    use std::path::PathBuf;

    use super::{Figures, Plan, entry_text, parse_entry};

    /// `$MNIST_WGPU_CACHE_DIR/schedules.tsv`, else the user cache directory's
    /// `mnist-wgpu/schedules.tsv`.
    pub fn path() -> Option<PathBuf> {
        let dir = match std::env::var_os("MNIST_WGPU_CACHE_DIR") {
            Some(d) => PathBuf::from(d),
            None => dirs::cache_dir()?.join("mnist-wgpu"),
        };
        Some(dir.join("schedules.tsv"))
    }

    /// Every entry: (key, choice, figures).
    pub fn entries() -> Vec<(String, Plan, Figures)> {
        let Some(text) = path().and_then(|p| std::fs::read_to_string(p).ok()) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let (key, choice, figs) = (cols.next()?, cols.next()?, cols.next()?);
                let (c, f) = parse_entry(choice, figs)?;
                Some((key.to_string(), c, f))
            })
            .collect()
    }

    pub fn lookup(key: &str) -> Option<(Plan, Figures)> {
        entries()
            .into_iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, c, f)| (c, f))
    }

    pub fn cached_how() -> String {
        let at = path().map_or("the cache".into(), |p| p.display().to_string());
        format!("measured earlier, cached in {at} (--retune measures again)")
    }

    /// Records `choice` for `key`; says where, or why it could not.
    pub fn store(key: &str, choice: Plan, figures: &Figures) -> String {
        let Some(path) = path() else {
            return "measured now; no cache directory to keep it in".into();
        };
        let mut lines: Vec<String> = entries()
            .into_iter()
            .filter(|(k, _, _)| k != key)
            .map(|(k, c, f)| format!("{k}\t{}", entry_text(c, &f)))
            .collect();
        lines.push(format!("{key}\t{}", entry_text(choice, figures)));
        let write = std::fs::create_dir_all(path.parent().unwrap()).and_then(|_| {
            crate::modelfile::write_atomic(&path, (lines.join("\n") + "\n").as_bytes())
        });
        match write {
            Ok(()) => format!("measured now, cached in {}", path.display()),
            Err(e) => format!("measured now; {}: not cached ({e})", path.display()),
        }
    }
}

/// In the browser the choice is kept in the page's local storage, one item per key.
#[cfg(target_arch = "wasm32")]
pub mod cache {
    use super::{Figures, Plan, entry_text, parse_entry};

    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok()?
    }

    fn item(key: &str) -> String {
        format!("mnist-wgpu schedule | {key}")
    }

    pub fn lookup(key: &str) -> Option<(Plan, Figures)> {
        let text = storage()?.get_item(&item(key)).ok()??;
        let (choice, figs) = text.split_once('\t')?;
        parse_entry(choice, figs)
    }

    pub fn cached_how() -> String {
        "measured earlier, kept in this browser's local storage (retune=1 measures again)".into()
    }

    pub fn store(key: &str, choice: Plan, figures: &Figures) -> String {
        let kept =
            storage().and_then(|s| s.set_item(&item(key), &entry_text(choice, figures)).ok());
        match kept {
            Some(()) => "measured now, kept in this browser's local storage".into(),
            None => "measured now (this browser keeps no local storage for the page)".into(),
        }
    }
}
