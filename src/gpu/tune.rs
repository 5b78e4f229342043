//! `--schedule auto`: measured, not guessed. On the first use of an adapter and a shape, every
//! schedule and kernel family the adapter can run is timed for a fraction of a second the way
//! the command runs it (training steps with their loss read-backs, or one evaluation of the
//! test set), the fastest is kept in a cache file keyed by adapter, driver and shape, and one
//! line says what was chosen and from what. Later runs read the choice back (`--retune`
//! measures again); `mnist-wgpu adapters` lists it. In the browser the page's local storage
//! keeps the choice (`retune=1` in the URL measures again).

use anyhow::Result;

use crate::data::Dataset;
use crate::gpu::context::{Gpu, Tuning};
use crate::gpu::program::{Kernels, Schedule};
use crate::gpu::trainer::GpuBackend;
use crate::model::Arch;
use crate::train::{Backend, Recipe};

/// Training steps timed per round, and rounds per candidate (the fastest round counts).
const STEPS: usize = 40;
const ROUNDS: usize = 3;

/// One way to run: a kernel family with a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub kernels: Kernels,
    pub schedule: Schedule,
}

impl Candidate {
    /// `layered/subgroup`, `fused/plain`.
    pub fn name(self) -> String {
        format!("{}/{}", self.schedule.name(), self.kernels.name())
    }

    fn parse(s: &str) -> Option<Candidate> {
        let (schedule, kernels) = s.split_once('/')?;
        let schedule = Schedule::ALL.into_iter().find(|x| x.name() == schedule)?;
        let kernels = Kernels::ALL.into_iter().find(|k| k.name() == kernels)?;
        Some(Candidate { kernels, schedule })
    }
}

/// What the tuner times: each schedule with every family it may choose (the fused schedule
/// runs `wide` as `plain`, so that pair is timed once).
pub fn candidates(gpu: &Gpu, t: Tuning) -> Vec<Candidate> {
    let families = match t.kernels {
        true => gpu.runnable_kernels(),
        false => vec![gpu.kernels],
    };
    let mut out = Vec::new();
    for schedule in Schedule::ALL {
        for &k in &families {
            let kernels = match schedule {
                Schedule::Layered => k,
                Schedule::Fused => k.fused(),
            };
            let c = Candidate { kernels, schedule };
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// The part of a cache key that names the adapter: name, API, driver, vendor and device ids.
pub fn adapter_key(i: &wgpu::AdapterInfo) -> String {
    format!(
        "{} | {:?} | {} {} | {:04x}:{:04x} | ",
        i.name, i.backend, i.driver, i.driver_info, i.vendor, i.device
    )
    .replace('\t', " ")
}

/// The cache key: the adapter, the shape a choice is for, and which families it chose from.
pub fn key(gpu: &Gpu, t: Tuning, shape: &str) -> String {
    let family = match t.kernels {
        true => "any",
        false => gpu.kernels.name(),
    };
    format!("{}{shape} | kernels {family}", adapter_key(&gpu.info)).replace('\t', " ")
}

/// Measured figures: each candidate and its milliseconds (per step, or per evaluation).
pub type Figures = Vec<(Candidate, f64)>;

fn fastest(figures: &Figures) -> Option<Candidate> {
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

/// Applies a choice to `gpu` and records the line that says it.
fn apply(gpu: &mut Gpu, choice: Candidate, figures: &Figures, how: &str, unit: &str) {
    gpu.kernels = choice.kernels;
    gpu.schedule = choice.schedule;
    gpu.tuning = None;
    gpu.tuned = Some(format!(
        "schedule: auto chose {} on {}: {}; {how}",
        choice.name(),
        gpu.info.name,
        figures_text(figures, unit)
    ));
}

/// Chooses the schedule and kernels of a training run of `arch` with `recipe`, from the cache
/// or by timing each candidate on the run's own data.
pub async fn for_training(
    gpu: &mut Gpu,
    t: Tuning,
    (arch, recipe, params): (&Arch, &Recipe, &[f32]),
    train: &Dataset,
    test: &Dataset,
) -> Result<()> {
    let shape = format!(
        "train {} batch {}",
        crate::flags::arch_string(arch),
        recipe.batch_size
    );
    let key = key(gpu, t, &shape);
    if let (false, Some((choice, figures))) = (t.retune, cache::lookup(&key)) {
        apply(gpu, choice, &figures, &cache::cached_how(), "ms per step");
        return Ok(());
    }
    let mut figures = Figures::new();
    for c in candidates(gpu, t) {
        let mut g = gpu.clone();
        (g.kernels, g.schedule, g.tuning) = (c.kernels, c.schedule, None);
        // A candidate the device cannot build (a limit, a driver's refusal) is left out.
        let Ok(mut b) = GpuBackend::new(g, arch, recipe, params, train, test) else {
            continue;
        };
        let best = figures.iter().map(|f| f.1).fold(f64::INFINITY, f64::min);
        figures.push((c, time_steps(&mut b, recipe, train.len(), best).await?));
    }
    let Some(best) = fastest(&figures) else {
        anyhow::bail!(
            "--schedule auto: no schedule could be built on {}",
            gpu.info.name
        );
    };
    let how = cache::store(&key, best, &figures);
    apply(gpu, best, &figures, &how, "ms per step");
    Ok(())
}

/// Milliseconds per training step as `train` runs them (a loss read-back after each
/// submission): a few steps to warm up, then the fastest of [`ROUNDS`] rounds of [`STEPS`];
/// a candidate twice as slow as `rival` in a first short round, or half again as slow after a
/// full one, is not timed further.
async fn time_steps(b: &mut GpuBackend, recipe: &Recipe, n: usize, rival: f64) -> Result<f64> {
    let steps = STEPS.min(recipe.steps_per_epoch(n));
    b.begin_epoch(&crate::rng::epoch_order(recipe.seed, 0, n))?;
    // Five steps to warm up (the first use of a pipeline compiles it on some drivers), then
    // five timed: a candidate twice as slow as the best so far is not timed further.
    let probe = 5.min(steps);
    b.run_steps(0..probe).await?;
    b.losses(0..probe).await?;
    let t0 = web_time::Instant::now();
    b.run_steps(0..probe).await?;
    b.losses(0..probe).await?;
    let first = t0.elapsed().as_secs_f64() * 1e3 / probe as f64;
    if first > 2.0 * rival {
        return Ok(first);
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let t0 = web_time::Instant::now();
        b.run_steps(0..steps).await?;
        b.losses(0..steps).await?;
        best = best.min(t0.elapsed().as_secs_f64() * 1e3 / steps as f64);
        if best > 1.5 * rival {
            break;
        }
    }
    Ok(best)
}

/// Chooses the schedule and kernels of an evaluation of `test` in batches of `batch`: one
/// evaluation per candidate after one to warm it.
pub async fn for_evaluation(
    gpu: &mut Gpu,
    t: Tuning,
    (arch, params): (&Arch, &[f32]),
    test: &Dataset,
    batch: usize,
) -> Result<()> {
    let shape = format!(
        "eval {} batch {batch} of {}",
        crate::flags::arch_string(arch),
        test.len()
    );
    let key = key(gpu, t, &shape);
    if let (false, Some((choice, figures))) = (t.retune, cache::lookup(&key)) {
        apply(
            gpu,
            choice,
            &figures,
            &cache::cached_how(),
            "ms per evaluation",
        );
        return Ok(());
    }
    let mut figures = Figures::new();
    for c in candidates(gpu, t) {
        let mut g = gpu.clone();
        (g.kernels, g.schedule, g.tuning) = (c.kernels, c.schedule, None);
        let Ok(mut b) = GpuBackend::evaluator(g, arch, params, test, batch) else {
            continue;
        };
        b.evaluate().await?;
        let t0 = web_time::Instant::now();
        b.evaluate().await?;
        figures.push((c, t0.elapsed().as_secs_f64() * 1e3));
    }
    let Some(best) = fastest(&figures) else {
        anyhow::bail!(
            "--schedule auto: no schedule could be built on {}",
            gpu.info.name
        );
    };
    let how = cache::store(&key, best, &figures);
    apply(gpu, best, &figures, &how, "ms per evaluation");
    Ok(())
}

/// One cached choice as text: `choice \t figures` (the file adds the key in front).
fn entry_text(choice: Candidate, figures: &Figures) -> String {
    let figs: Vec<String> = figures
        .iter()
        .map(|(c, ms)| format!("{} {ms:.4}", c.name()))
        .collect();
    format!("{}\t{}", choice.name(), figs.join(", "))
}

/// The inverse of [`entry_text`]; None for text that does not parse (measured again).
fn parse_entry(choice: &str, figs: &str) -> Option<(Candidate, Figures)> {
    let figures = figs
        .split(", ")
        .map(|f| {
            let (c, ms) = f.split_once(' ')?;
            Some((Candidate::parse(c)?, ms.parse().ok()?))
        })
        .collect::<Option<Figures>>()?;
    Some((Candidate::parse(choice)?, figures))
}

/// The cache file: one line per key, `key \t choice \t figures`, rewritten whole through a
/// temporary file. A line that does not parse is ignored (measured again).
#[cfg(not(target_arch = "wasm32"))]
pub mod cache {
    use std::path::PathBuf;

    use super::{Candidate, Figures, entry_text, parse_entry};

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
    pub fn entries() -> Vec<(String, Candidate, Figures)> {
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

    pub fn lookup(key: &str) -> Option<(Candidate, Figures)> {
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
    pub fn store(key: &str, choice: Candidate, figures: &Figures) -> String {
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
    use super::{Candidate, Figures, entry_text, parse_entry};

    fn storage() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok()?
    }

    fn item(key: &str) -> String {
        format!("mnist-wgpu schedule | {key}")
    }

    pub fn lookup(key: &str) -> Option<(Candidate, Figures)> {
        let text = storage()?.get_item(&item(key)).ok()??;
        let (choice, figs) = text.split_once('\t')?;
        parse_entry(choice, figs)
    }

    pub fn cached_how() -> String {
        "measured earlier, kept in this browser's local storage (retune=1 measures again)".into()
    }

    pub fn store(key: &str, choice: Candidate, figures: &Figures) -> String {
        let kept =
            storage().and_then(|s| s.set_item(&item(key), &entry_text(choice, figures)).ok());
        match kept {
            Some(()) => "measured now, kept in this browser's local storage".into(),
            None => "measured now (this browser keeps no local storage for the page)".into(),
        }
    }
}
