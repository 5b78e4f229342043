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

/// Training steps in one timed block, rounds of blocks at most, the seconds the rounds may
/// take in all, and how much slower than the best a candidate may be and still be timed.
const BLOCK: usize = 16;
const ROUNDS: usize = 8;
const BUDGET_S: f64 = 1.0;
const DROP: f64 = 1.3;
/// Steps each candidate runs once before the rounds (the first use of its pipelines).
const WARM_UP: usize = 2;

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

/// What auto chose: the plan, the line that says so, and the plan's measured milliseconds.
struct Choice {
    plan: Plan,
    line: String,
    ms: Option<f64>,
}

impl Choice {
    fn new(gpu: &Gpu, plan: Plan, figures: &Figures, how: &str, unit: &str) -> Choice {
        Choice {
            plan,
            line: chosen_line(gpu, plan, figures, how, unit),
            ms: figures.iter().find(|(p, _)| *p == plan).map(|f| f.1),
        }
    }
}

/// The cached choice for `key` unless `--retune`.
fn cached(gpu: &Gpu, request: &Request, key: &str, unit: &str) -> Option<Choice> {
    if request.retune {
        return None;
    }
    let (plan, figures) = cache::lookup(key)?;
    Some(Choice::new(gpu, plan, &figures, &cache::cached_how(), unit))
}

/// The fastest plan of the measured `figures`, stored in the cache.
fn chosen(gpu: &Gpu, key: &str, figures: &Figures, unit: &str) -> Result<Choice> {
    let Some(best) = fastest(figures) else {
        anyhow::bail!(
            "--schedule auto: no schedule could be built on {}",
            gpu.info.name
        );
    };
    let how = cache::store(key, best, figures);
    Ok(Choice::new(gpu, best, figures, &how, unit))
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

/// The training backend of `recipes` (one per model of a set) on `gpu`, with the plan the
/// cache holds for this adapter and shape (a set's model count is part of it), or the fastest
/// when each candidate is timed on the run's own data. Every
/// candidate trains on the one upload of the training split, and the chosen one's pipelines
/// are built once.
pub async fn for_training(
    gpu: &Gpu,
    request: Request,
    arch: &Arch,
    recipes: &[Recipe],
    params: &[f32],
    train: &Dataset,
    test: &Dataset,
) -> Result<GpuBackend> {
    let recipe = &recipes[0];
    let mut shape = format!(
        "train {} batch {}",
        crate::flags::arch_string(arch),
        recipe.batch_size
    );
    if recipes.len() > 1 {
        shape += &format!(" models {}", recipes.len());
    }
    let key = key(&gpu.info, &request, &shape);
    let unit = "ms per step";
    let split = Split::new(gpu, "train", train, recipe.batch_size);
    let mut modules = ModuleSets::default();
    let choice = match cached(gpu, &request, &key, unit) {
        Some(found) => found,
        None => {
            // A candidate the device cannot build (a limit, a driver's refusal) is left out.
            let mut built = Vec::new();
            for c in request.candidates(gpu) {
                let m = modules.of(gpu, c.kernels);
                if let Ok(t) =
                    m.and_then(|m| Trainer::new(gpu, c, m, arch, recipes, params, split.clone()))
                {
                    built.push((c, t));
                }
            }
            let figures = time_training(built, recipes).await?;
            chosen(gpu, &key, &figures, unit)?
        }
    };
    let plan = choice.plan;
    let modules = modules.of(gpu, plan.kernels)?;
    let trainer = Trainer::new(gpu, plan, modules, arch, recipes, params, split)?;
    let mut backend = GpuBackend::from_trainer(trainer, test)?;
    backend.set_tuned(choice.line, choice.ms);
    Ok(backend)
}

/// Milliseconds per training step of each candidate, as `train` runs them: each block of
/// steps is two submissions, the second queued before the first one's losses are awaited.
/// After [`WARM_UP`] steps (some drivers compile a pipeline on its first use), the
/// candidates take turns, a block each per round, so that a busy moment of the machine falls
/// on all of them; each keeps its fastest block. After every round a candidate slower than
/// [`DROP`] times the best is not timed further; the rounds end after [`ROUNDS`], when one
/// candidate is left, or when [`BUDGET_S`] seconds of timing have passed.
async fn time_training(mut built: Vec<(Plan, Trainer)>, recipes: &[Recipe]) -> Result<Figures> {
    let Some(n) = built.first().map(|(_, t)| t.split_len()) else {
        return Ok(Figures::new());
    };
    let steps = BLOCK.min(recipes[0].steps_per_epoch(n));
    let order = crate::train::epoch_orders(recipes, 0, n);
    for (_, t) in &mut built {
        t.begin_epoch(&order)?;
        time_block(t, WARM_UP.min(steps)).await?;
    }
    let mut best = vec![f64::INFINITY; built.len()];
    let mut alive: Vec<usize> = (0..built.len()).collect();
    let t0 = web_time::Instant::now();
    for _ in 0..ROUNDS {
        for &i in &alive {
            best[i] = best[i].min(time_block(&mut built[i].1, steps).await?);
        }
        let fastest = alive.iter().map(|&i| best[i]).fold(f64::INFINITY, f64::min);
        alive.retain(|&i| best[i] <= DROP * fastest);
        if alive.len() <= 1 || t0.elapsed().as_secs_f64() > BUDGET_S {
            break;
        }
    }
    Ok(built.iter().map(|(c, _)| *c).zip(best).collect())
}

/// Milliseconds per step of one block of `steps`.
async fn time_block(t: &mut Trainer, steps: usize) -> Result<f64> {
    let (first, second) = (0..steps / 2, steps / 2..steps);
    let t0 = web_time::Instant::now();
    t.run_steps(first.clone()).await?;
    if !second.is_empty() {
        t.run_steps(second.clone()).await?;
    }
    t.losses(first).await?;
    if !second.is_empty() {
        t.losses(second).await?;
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3 / steps as f64)
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
    let choice = match cached(gpu, &request, &key, unit) {
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
    let mut evaluator = Evaluator::of_model(gpu, choice.plan, arch, params, test, batch)?;
    evaluator.set_tuned(choice.line, choice.ms);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::plan::Schedule;

    fn info() -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: "test\tadapter".into(),
            vendor: 0x10005,
            device: 0,
            device_type: wgpu::DeviceType::Cpu,
            device_pci_bus_id: String::new(),
            driver: "driver".into(),
            driver_info: "1.0".into(),
            backend: wgpu::Backend::Vulkan,
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            transient_saves_memory: Some(false),
            limit_bucket: None,
        }
    }

    #[test]
    fn the_fastest_is_chosen_and_the_cache_entry_reads_back() {
        let (l, f) = (
            Plan::new(Schedule::Layered, Kernels::Plain),
            Plan::new(Schedule::Fused, Kernels::Subgroup),
        );
        let figures: Figures = vec![(l, 3.25), (f, 2.5)];
        assert_eq!(fastest(&figures), Some(f));
        assert_eq!(fastest(&Figures::new()), None);
        let text = entry_text(f, &figures);
        let (choice, figs) = text.split_once('\t').unwrap();
        assert_eq!(parse_entry(choice, figs), Some((f, figures)));
        assert_eq!(parse_entry("fused/none", figs), None);
    }

    #[test]
    fn the_key_names_the_adapter_the_shape_and_the_families() {
        let any = key(&info(), &Request::default(), "train 784-10 batch 32");
        assert!(!any.contains('\t'), "{any}");
        assert!(
            any.starts_with("test adapter | Vulkan | driver 1.0 | 10005:0000 | "),
            "{any}"
        );
        assert!(
            any.ends_with("train 784-10 batch 32 | kernels any"),
            "{any}"
        );
        let plain = Request {
            kernels: Some(Kernels::Plain),
            ..Request::default()
        };
        let fixed = key(&info(), &plain, "train 784-10 batch 32");
        assert!(fixed.ends_with("| kernels plain"), "{fixed}");
    }
}
