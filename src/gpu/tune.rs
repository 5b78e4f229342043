//! `--schedule auto`: measured, not guessed. On the first use of an adapter and a shape, every
//! schedule and kernel family the adapter can run, the fused schedule with each of its
//! per-sample workgroup shapes (`PerSample::CANDIDATES`), is timed for a fraction of a second the way
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
use crate::gpu::plan::{Plan, Request, Schedule};
use crate::gpu::wgsl::Kernels;
use crate::model::Arch;
use crate::recipe::Recipe;
use crate::train::Evaluate;

pub mod cache;

/// Training steps in one timed block, rounds of blocks at most, the seconds the rounds may
/// take in all, and how much slower than the best a candidate may be and still be timed.
const BLOCK: usize = 16;
const ROUNDS: usize = 8;
const BUDGET_S: f64 = 1.0;
/// The rounds' seconds when the request is quick (`Request::quick`).
const QUICK_BUDGET_S: f64 = 0.25;
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

/// The cache key: the adapter, the shape a choice is for, and which families and per-sample
/// workgroups it chose from (a key without the latter, from before auto measured them, is
/// not found and measured again).
pub fn key(info: &wgpu::AdapterInfo, request: &Request, shape: &str) -> String {
    let family = request.kernels.map_or("any", Kernels::name);
    let per_sample = request.per_sample.map_or("any".into(), |p| p.name());
    let quick = if request.quick { " | quick" } else { "" };
    let key = format!(
        "{}{shape} | kernels {family} | per-sample {per_sample}{quick}",
        adapter_key(info)
    );
    key.replace('\t', " ")
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

/// The fastest plan of the measured `figures`, stored in the cache; `took` says how long the
/// measuring took, where it is known.
fn chosen(gpu: &Gpu, key: &str, figures: &Figures, unit: &str, took: &str) -> Result<Choice> {
    let Some(best) = fastest(figures) else {
        anyhow::bail!(
            "--schedule auto: no schedule could be built on {}",
            gpu.info.name
        );
    };
    let how = cache::store(key, best, figures) + took;
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
            let t0 = web_time::Instant::now();
            let run = Run {
                gpu,
                arch,
                recipes,
                params,
                split: &split,
                building_s: std::cell::Cell::new(0.0),
                quick: request.quick,
            };
            let mut figures = run.time(&mut modules, request.candidates(gpu)).await?;
            figures.extend(run.smaller_shapes(&mut modules, &request, &figures).await?);
            let took = format!(
                " ({:.1} s, {:.1} s of it building the candidates)",
                t0.elapsed().as_secs_f64(),
                run.building_s.get()
            );
            chosen(gpu, &key, &figures, unit, &took)?
        }
    };
    let plan = choice.plan;
    let modules = modules.of(gpu, plan.kernels)?;
    let trainer = Trainer::new(gpu, plan, modules, arch, recipes, params, split)?;
    let mut backend = GpuBackend::from_trainer(trainer, test)?;
    backend.set_tuned(choice.line, choice.ms);
    Ok(backend)
}

/// What a training candidate is built for: the run's device, model, recipes, first weights
/// and training split.
struct Run<'a> {
    gpu: &'a Gpu,
    arch: &'a Arch,
    recipes: &'a [Recipe],
    params: &'a [f32],
    split: &'a Split,
    /// Seconds spent building candidates (their pipelines and buffers) so far.
    building_s: std::cell::Cell<f64>,
    /// Time the rounds for [`QUICK_BUDGET_S`] rather than [`BUDGET_S`].
    quick: bool,
}

impl Run<'_> {
    /// Milliseconds per step of each of `plans` the device can build (a limit or a driver's
    /// refusal leaves one out), timed together (`time_training`).
    async fn time(&self, modules: &mut ModuleSets, plans: Vec<Plan>) -> Result<Figures> {
        let t0 = web_time::Instant::now();
        let mut built = Vec::new();
        for c in plans {
            let m = modules.of(self.gpu, c.kernels);
            let (arch, recipes, params) = (self.arch, self.recipes, self.params);
            let split = self.split.clone();
            if let Ok(t) =
                m.and_then(|m| Trainer::new(self.gpu, c, m, arch, recipes, params, split))
            {
                built.push((c, t));
            }
        }
        let building = self.building_s.get() + t0.elapsed().as_secs_f64();
        self.building_s.set(building);
        let budget = if self.quick { QUICK_BUDGET_S } else { BUDGET_S };
        time_training(built, self.recipes, budget).await
    }

    /// The fastest fused plan of `figures` with fewer samples per workgroup, one shape after
    /// another, until one is slower than [`DROP`] times the best so far: on a software adapter
    /// fewer samples than a tile of 8 only repeat work, while a wide GPU gains workgroups until
    /// it is full, so the search stops where the device does.
    async fn smaller_shapes(
        &self,
        modules: &mut ModuleSets,
        request: &Request,
        figures: &Figures,
    ) -> Result<Figures> {
        let fused = figures
            .iter()
            .filter(|(p, _)| p.schedule() == Schedule::Fused);
        let Some(&(base, mut best)) = fused.min_by(|a, b| a.1.total_cmp(&b.1)) else {
            return Ok(Figures::new());
        };
        let mut out = Figures::new();
        for shape in request.smaller_shapes(self.gpu) {
            let Some(&(plan, ms)) = self.time(modules, vec![base.with(shape)]).await?.first()
            else {
                break;
            };
            out.push((plan, ms));
            if ms > DROP * best {
                break;
            }
            best = best.min(ms);
        }
        Ok(out)
    }
}

/// Milliseconds per training step of each candidate, as `train` runs them: each block of
/// steps is two submissions, the second queued before the first one's losses are awaited.
/// After [`WARM_UP`] steps (some drivers compile a pipeline on its first use), the
/// candidates take turns, a block each per round, so that a busy moment of the machine falls
/// on all of them; each keeps its fastest block. After every round a candidate slower than
/// [`DROP`] times the best is not timed further; the rounds end after [`ROUNDS`], when one
/// candidate is left, or when `budget_s` seconds of timing have passed.
async fn time_training(
    mut built: Vec<(Plan, Trainer)>,
    recipes: &[Recipe],
    budget_s: f64,
) -> Result<Figures> {
    let Some(n) = built.first().map(|(_, t)| t.split_len()) else {
        return Ok(Figures::new());
    };
    let steps = BLOCK.min(recipes[0].steps_per_epoch(n));
    let order = crate::train::epoch_orders(recipes, 0, n);
    for (_, t) in &mut built {
        t.begin_epoch(0, &order)?;
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
        if alive.len() <= 1 || t0.elapsed().as_secs_f64() > budget_s {
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
            chosen(gpu, &key, &figures, unit, "")?
        }
    };
    let mut evaluator = Evaluator::of_model(gpu, choice.plan, arch, params, test, batch)?;
    evaluator.set_tuned(choice.line, choice.ms);
    Ok(evaluator)
}

#[cfg(test)]
mod tests {
    use super::cache::{entry_text, parse_entry};
    use super::*;
    use crate::gpu::plan::{PerSample, Schedule};

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
            any.ends_with("train 784-10 batch 32 | kernels any | per-sample any"),
            "{any}"
        );
        let plain = Request {
            kernels: Some(Kernels::Plain),
            per_sample: Some(PerSample::new(2, 32)),
            ..Request::default()
        };
        let fixed = key(&info(), &plain, "train 784-10 batch 32");
        assert!(
            fixed.ends_with("| kernels plain | per-sample 2x32"),
            "{fixed}"
        );
    }
}
