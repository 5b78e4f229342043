//! What a run is: its recipe and inputs (stored in every checkpoint, so `--resume` needs no
//! flags) and its outputs (chosen anew on every invocation, resumed or not).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use mnist_wgpu::checkpoint::{self, Checkpoint};
use mnist_wgpu::data::{Kind, Normalize};
use mnist_wgpu::flags;
use mnist_wgpu::model::Arch;
use mnist_wgpu::model::DropP;
use mnist_wgpu::modelfile::{self, DEFAULT_MODEL_FILE};
use mnist_wgpu::optim::Optimizer;
use mnist_wgpu::recipe::{Preset, Recipe};
use mnist_wgpu::sweep::{Sweep, floats, floats_string, seeds, seeds_string};

use super::args::TrainArgs;
use crate::cli::args::{UsageError, hidden, hidden_string};

/// Everything that defines a run; a checkpoint stores it so `--resume` needs no flags.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// `--recipe`: the model and where the defaults below came from.
    pub preset: Preset,
    /// `--dropout`: every dropout layer's probability, when not the model's own.
    pub dropout: Option<DropP>,
    /// The first model's recipe: a single run's, or what every model of a set shares.
    pub recipe: Recipe,
    /// The lists of a set; one value each for a single run.
    pub sweep: Sweep,
    pub hidden: Option<Vec<usize>>,
    /// How the pixels of both splits become inputs.
    pub normalize: Normalize,
    pub dataset: Kind,
    pub data_dir: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub save: Option<PathBuf>,
    pub metrics: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

/// Paths are stored absolute, so a run resumes from any working directory.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl RunSpec {
    fn from_args(a: &TrainArgs) -> Result<RunSpec, UsageError> {
        let d = a.recipe.defaults();
        let name = a.optimizer.as_deref().unwrap_or(d.optimizer);
        let optimizer = Optimizer::named(name, d.momentum).map_err(UsageError)?;
        let lr = d.lr_for(&optimizer);
        let hidden = a.hidden.as_ref().map(|h| &h.0[..]);
        a.recipe.check_hidden(hidden).map_err(UsageError)?;
        if let (Some(p), Preset::Mlp) = (a.dropout, a.recipe) {
            let msg = format!("--dropout {}: --recipe mlp has no dropout layer", p.get());
            return Err(UsageError(msg));
        }
        if let (Some(m), false) = (&a.momentum, matches!(optimizer, Optimizer::Sgd { .. })) {
            return Err(UsageError(format!(
                "--momentum {m}: --optimizer {name} has no momentum (only sgd has)"
            )));
        }
        let sweep = Sweep {
            seeds: a.seeds.as_ref().map_or(vec![a.seed], |s| s.0.clone()),
            lrs: a.lr.as_ref().map_or(vec![lr], |l| l.0.clone()),
            momenta: a
                .momentum
                .as_ref()
                .map_or(vec![optimizer.momentum()], |m| m.0.clone()),
        };
        let base = Recipe {
            epochs: a.epochs.unwrap_or(d.epochs),
            batch_size: a.batch_size.unwrap_or(d.batch_size),
            lr: sweep.lrs[0],
            optimizer,
            weight_decay: a.weight_decay,
            gamma: a.gamma.unwrap_or(d.gamma),
            shuffle: !a.no_shuffle,
            seed: sweep.seeds[0],
        };
        Ok(RunSpec {
            preset: a.recipe,
            dropout: a.dropout,
            recipe: sweep.recipes(&base).remove(0),
            sweep,
            hidden: a.hidden.as_ref().map(|h| h.0.clone()),
            normalize: a.normalize.unwrap_or(d.normalize),
            dataset: a.run.dataset,
            data_dir: a.run.data_dir.as_deref().map(absolute),
            init: a.init.as_deref().map(absolute),
            save: None,
            metrics: None,
            plot: None,
        }
        .with_outputs(a, None))
    }

    /// The output choices of `a` (`--save`, `--no-save`, `--metrics`, `--plot`) over those of
    /// `stored` (a resumed run's), or the defaults.
    fn with_outputs(mut self, a: &TrainArgs, stored: Option<&RunSpec>) -> RunSpec {
        let default_save = || Some(absolute(Path::new(self.preset.model_file())));
        self.save = match (a.no_save, &a.save, stored) {
            (true, _, _) => None,
            (false, Some(p), _) => Some(absolute(p)),
            (false, None, Some(s)) => s.save.clone(),
            (false, None, None) => default_save(),
        };
        self.metrics = a
            .metrics
            .as_deref()
            .map(absolute)
            .or_else(|| stored.and_then(|s| s.metrics.clone()));
        self.plot = a
            .plot
            .as_deref()
            .map(absolute)
            .or_else(|| stored.and_then(|s| s.plot.clone()));
        self
    }

    /// Every model's recipe, in the set's order (one for a single run).
    pub fn recipes(&self) -> Vec<Recipe> {
        self.sweep.recipes(&self.recipe)
    }

    pub fn settings(&self, arch: &Arch) -> BTreeMap<String, String> {
        let r = &self.recipe;
        let mut m: BTreeMap<String, String> = [
            ("epochs", r.epochs.to_string()),
            ("batch_size", r.batch_size.to_string()),
            ("lr", r.lr.to_string()),
            ("momentum", r.momentum().to_string()),
            ("optimizer", r.optimizer.name().to_string()),
            ("weight_decay", r.weight_decay.to_string()),
            ("gamma", r.gamma.to_string()),
            ("shuffle", r.shuffle.to_string()),
            ("normalize", self.normalize.name()),
            ("seed", r.seed.to_string()),
            ("dataset", self.dataset.name().to_string()),
            ("recipe", self.preset.name().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if self.preset == Preset::Mlp {
            m.insert("hidden".into(), hidden_string(arch));
        }
        if let Some(p) = self.dropout {
            m.insert("dropout".into(), p.get().to_string());
        }
        if self.sweep.len() > 1 {
            // A set's lists; `lr`, `momentum` and `seed` above are its first model's.
            m.insert("seeds".into(), seeds_string(&self.sweep.seeds));
            m.insert("lrs".into(), floats_string(&self.sweep.lrs));
            m.insert("momenta".into(), floats_string(&self.sweep.momenta));
        }
        for (k, p) in [
            ("data_dir", &self.data_dir),
            ("init", &self.init),
            ("save", &self.save),
            ("metrics", &self.metrics),
            ("plot", &self.plot),
        ] {
            if let Some(p) = p {
                m.insert(k.to_string(), p.display().to_string());
            }
        }
        m
    }

    fn from_settings(m: &BTreeMap<String, String>) -> Result<RunSpec, String> {
        let get = |k: &str| m.get(k).ok_or_else(|| format!("no setting `{k}`"));
        let num = |k: &str| -> Result<f64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("setting `{k}` is not a number"))
        };
        let path = |k: &str| m.get(k).map(PathBuf::from);
        let dataset = match get("dataset")?.as_str() {
            "mnist" => Kind::Mnist,
            "fashion-mnist" => Kind::FashionMnist,
            "idx" => Kind::Idx,
            other => return Err(format!("unknown dataset `{other}`")),
        };
        // Settings a checkpoint written before they existed lacks: the tutorial's values.
        let or = |k: &str, default: f64| m.get(k).map_or(Ok(default), |_| num(k));
        let name = m.get("optimizer").map_or("sgd", String::as_str);
        let optimizer = Optimizer::named(name, num("momentum")?)
            .map_err(|e| format!("setting `optimizer` `{name}`: {e}"))?;
        let normalize = match m.get("normalize") {
            Some(v) => Normalize::parse(v).map_err(|e| format!("setting `normalize`: {e}"))?,
            None => Normalize::TUTORIAL,
        };
        let recipe = Recipe {
            epochs: num("epochs")? as usize,
            batch_size: num("batch_size")? as usize,
            lr: num("lr")?,
            optimizer,
            weight_decay: or("weight_decay", 0.0)?,
            gamma: or("gamma", 1.0)?,
            shuffle: m.get("shuffle").is_none_or(|v| v == "true"),
            seed: get("seed")?
                .parse()
                .map_err(|_| "setting `seed`".to_string())?,
        };
        let number = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("`{v}` is not a number"))
        };
        let sweep = match (m.get("seeds"), m.get("lrs"), m.get("momenta")) {
            (Some(s), Some(l), Some(mu)) => Sweep {
                seeds: seeds(s).map_err(|e| format!("setting `seeds`: {e}"))?,
                lrs: floats(l, number).map_err(|e| format!("setting `lrs`: {e}"))?,
                momenta: floats(mu, number).map_err(|e| format!("setting `momenta`: {e}"))?,
            },
            _ => Sweep::single(recipe.seed, recipe.lr, recipe.momentum()),
        };
        let preset = match m.get("recipe") {
            Some(r) => Preset::parse(r).ok_or_else(|| format!("unknown recipe `{r}`"))?,
            None => Preset::Mlp,
        };
        let dropout = match m.get("dropout") {
            Some(p) => Some(flags::dropout(p).map_err(|e| format!("setting `dropout`: {e}"))?),
            None => None,
        };
        Ok(RunSpec {
            preset,
            dropout,
            sweep,
            recipe,
            hidden: match preset {
                Preset::Mlp => Some(hidden(get("hidden")?)?.0),
                _ => None,
            },
            normalize,
            dataset,
            data_dir: path("data_dir"),
            init: path("init"),
            save: path("save"),
            metrics: path("metrics"),
            plot: path("plot"),
        })
    }
}

/// Where a run starts: a fresh spec from the flags, or a checkpoint's.
pub struct Start {
    pub spec: RunSpec,
    pub arch: Arch,
    /// params: [models][param_count], each model's starting weights (after [`Start::initialise`])
    pub params: Vec<Vec<f32>>,
    /// `--init`'s weights, which every model starts from
    init: Option<Vec<f32>>,
    pub run_dir: Option<PathBuf>,
    pub resumed: Option<Checkpoint>,
}

impl Start {
    /// Each model's starting weights: the checkpoint's, --init's, or its seed's initialisation,
    /// made only once the limits are checked (a model too large never allocates).
    pub fn initialise(&mut self) {
        if !self.params.is_empty() {
            return;
        }
        let recipes = self.spec.recipes();
        self.params = match self.init.take() {
            Some(p) => vec![p; recipes.len()],
            None => recipes.iter().map(|r| self.arch.init(r.seed)).collect(),
        };
    }
}

/// The run in `dir`, from its checkpoint, with the outputs `args` choose anew.
fn resumed(args: &TrainArgs, dir: &Path, (input, classes): (usize, usize)) -> Result<Start> {
    let c = checkpoint::load(dir, input, classes)?;
    let file = dir.join(checkpoint::CHECKPOINT_FILE);
    let stored = RunSpec::from_settings(&c.settings)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let spec = stored.clone().with_outputs(args, Some(&stored));
    let stored_name = spec.recipe.optimizer.name();
    if let Some(asked) = args.optimizer.as_deref().filter(|a| *a != stored_name) {
        let msg = format!(
            "--optimizer {asked}: the run in {} trains with {stored_name}; resume it without --optimizer, or start a new run",
            dir.display()
        );
        return Err(UsageError(msg).into());
    }
    if let (Some(save), false) = (&args.save, args.no_save) {
        check_save_path(save)?;
    }
    if c.models() != spec.sweep.len() {
        let (got, want) = (c.models(), spec.sweep.len());
        let msg = format!("holds {got} models; its settings describe {want}");
        anyhow::bail!("{}: {msg}", file.display());
    }
    let n = c.arch.param_count();
    let arch = spec
        .dropout
        .map_or(c.arch.clone(), |p| c.arch.with_dropout(p));
    Ok(Start {
        spec,
        arch,
        params: c.params.chunks(n).map(<[f32]>::to_vec).collect(),
        init: None,
        run_dir: Some(dir.to_path_buf()),
        resumed: Some(c),
    })
}

/// The run the flags ask for, checked before any device or data is touched.
pub fn start(args: &TrainArgs, (input, classes): (usize, usize)) -> Result<Start> {
    if let Some(dir) = &args.resume {
        return resumed(args, dir, (input, classes));
    }
    let spec = RunSpec::from_args(args)?;
    if !args.no_save {
        check_save_path(
            args.save
                .as_deref()
                .unwrap_or(Path::new(spec.preset.model_file())),
        )?;
    }
    if let Some(dir) = &args.run_dir
        && dir.join(checkpoint::CHECKPOINT_FILE).exists()
    {
        let msg = format!(
            "--run-dir {}: holds a run already; continue it with --resume {0}, or pick another directory",
            dir.display()
        );
        return Err(UsageError(msg).into());
    }
    let init = match &spec.init {
        Some(path) => Some(modelfile::load(path, input, classes)?),
        None => None,
    };
    let arch = match (&init, &spec.hidden) {
        (Some(m), _) if Preset::of(&m.arch) != Some(spec.preset) => {
            let kind = Preset::of(&m.arch).map_or("another", Preset::name);
            let msg = format!(
                "--init {}: holds a model of --recipe {kind}, not of --recipe {}",
                args.init.as_ref().unwrap().display(),
                spec.preset.name()
            );
            return Err(UsageError(msg).into());
        }
        (Some(m), Some(h)) if m.arch != Arch::mlp(input, h, classes) => {
            let flag: Vec<String> = h.iter().map(|x| x.to_string()).collect();
            let msg = format!(
                "--hidden {}: the model in --init {} has hidden sizes {}",
                flag.join(","),
                args.init.as_ref().unwrap().display(),
                hidden_string(&m.arch)
            );
            return Err(UsageError(msg).into());
        }
        (Some(m), _) => m.arch.clone(),
        (None, h) => spec
            .preset
            .arch(h.as_deref().unwrap_or(&mnist_wgpu::flags::HIDDEN)),
    };
    let arch = spec.dropout.map_or(arch.clone(), |p| arch.with_dropout(p));
    Ok(Start {
        spec,
        arch,
        params: Vec::new(),
        init: init.map(|m| m.params),
        run_dir: args.run_dir.clone(),
        resumed: None,
    })
}

/// A save path that cannot work is found before training, not after.
fn check_save_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        let msg = format!(
            "--save {}: is a directory; give a file name such as {}",
            path.display(),
            path.join(DEFAULT_MODEL_FILE).display()
        );
        return Err(UsageError(msg).into());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        let msg = format!(
            "--save {}: the directory {} does not exist",
            path.display(),
            parent.display()
        );
        return Err(UsageError(msg).into());
    }
    Ok(())
}

/// The flags that put a resumed run on the device and plan this one ran on, so that it ends
/// bit-identical (a checkpoint keeps the recipe, not the device: `--resume` alone picks a
/// device and plan as a new run does): ` --device cpu`, or the adapter flags given and
/// ` --schedule fused --kernels subgroup` (with ` --per-sample 2x32` where auto chose other
/// than the default).
pub fn same_device(run: &crate::cli::args::RunArgs, about: &mnist_wgpu::train::About) -> String {
    if about.schedule == "cpu" {
        return " --device cpu".to_string();
    }
    let a = &run.adapter;
    let mut out = String::new();
    if let Some(api) = a
        .backend
        .and_then(|b| clap::ValueEnum::to_possible_value(&b))
    {
        out += &format!(" --backend {}", api.get_name());
    }
    if let Some(name) = &a.adapter {
        out += &format!(" --adapter '{name}'");
    }
    out += &format!(" --schedule {} --kernels {}", about.schedule, about.kernels);
    if let Some(p) = &about.per_sample {
        out += &format!(" --per-sample {p}");
    }
    out
}
