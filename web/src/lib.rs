//! The page's side of mnist-wgpu: what `web/www/app.js` calls. Training runs the library's own
//! epoch loop (`train::run`) on the library's backends, so the browser records the same
//! dispatches of the same WGSL kernels as the native program, on the browser's WebGPU; where
//! there is none, on the CPU reference compiled to wasm.
//!
//! Everything here runs on the page's one thread: the state lives in a thread-local, and no
//! borrow of it is held across an `await` (a Stop or a drawn digit may come in meanwhile).

mod events;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::Function;
use wasm_bindgen::prelude::*;
use web_time::Instant;

use mnist_wgpu::data::{self, CLASSES, Kind, Mnist, Normalize};
use mnist_wgpu::gpu::device::{Gpu, browser_gpu};
use mnist_wgpu::gpu::error::GpuError;
use mnist_wgpu::gpu::plan::{Request, Schedule};
use mnist_wgpu::gpu::wgsl::Kernels;
use mnist_wgpu::model::Arch;
use mnist_wgpu::optim::Optimizer;
use mnist_wgpu::predict::SIDE;
use mnist_wgpu::recipe::{Preset, Recipe};
use mnist_wgpu::sweep::{self, Sweep};
use mnist_wgpu::train::{self, LoopOptions, Position};
use mnist_wgpu::{backends, flags, gpu, modelfile};

use events::{Page, error, obj};

/// A model the page holds: trained here, or loaded from a file.
struct Model {
    arch: Arch,
    /// params: [param_count], PyTorch's flat layout
    params: Vec<f32>,
    metadata: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    /// The kernels (`kernels=` in the URL; None: chosen for the adapter) and schedule asked
    /// for (`schedule=`; None: auto, measured once per shape and kept in local storage,
    /// `retune=1`: measured again).
    request: Request,
    /// The adapter's name as the page found it.
    name: String,
    /// Whether the browser gave a WebGPU device (else the CPU backend runs).
    webgpu: bool,
    /// A device opened and not yet used: each run consumes one, the next opens another.
    gpu: Option<Gpu>,
    /// The four data files as fetched, until `load_data` parses them.
    fetched: Vec<(String, Vec<u8>)>,
    mnist: Option<Rc<Mnist>>,
    /// The model drawn on and evaluated: the one loaded, or the first of those trained.
    model: Option<Rc<Model>>,
    /// Every model of the last run, with the file name it downloads as
    /// (`mnist_mlp-seed3.safetensors` in a set, as `train --save` names them).
    trained: Vec<(String, Rc<Model>)>,
    busy: bool,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    static STOP: Cell<bool> = const { Cell::new(false) };
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// The `train` flags' defaults with `--recipe recipe` (none: mlp), by their command-line
/// names; a CNN's hidden sizes are empty (it has none to set).
#[wasm_bindgen]
pub fn defaults(recipe: Option<String>) -> Result<JsValue, JsError> {
    let preset = match recipe.as_deref() {
        None | Some("") => Preset::Mlp,
        Some(r) => parse_recipe(r).map_err(error)?,
    };
    let d = preset.defaults();
    let hidden = match preset {
        Preset::Mlp => flags::HIDDEN.map(|h| h.to_string()).join(","),
        _ => String::new(),
    };
    Ok(obj(&[
        ("recipe", preset.name().into()),
        ("epochs", d.epochs.to_string().into()),
        ("batch-size", d.batch_size.to_string().into()),
        ("optimizer", d.optimizer.into()),
        // Empty: the recipe's own (with another optimizer, that optimizer's default).
        ("lr", "".into()),
        ("momentum", d.momentum.to_string().into()),
        ("weight-decay", "0".into()),
        ("gamma", d.gamma.to_string().into()),
        ("normalize", d.normalize.name().into()),
        ("hidden", hidden.into()),
        ("seeds", flags::SEED.to_string().into()),
    ]))
}

fn parse_recipe(s: &str) -> Result<Preset, String> {
    Preset::parse(s).ok_or_else(|| "expected mlp, cnn-small or cnn".to_string())
}

/// Opens the browser's WebGPU device with `kernels` ("" or "auto": chosen for the adapter) and
/// `schedule` ("" or "auto": measured at the start of the first run of a shape and kept in
/// local storage, `gpu::tune`; `retune` measures again);
/// `{webgpu, device, note}`, where `note` says why the CPU backend runs instead. `name` names
/// the adapter where wgpu cannot (it maps only the adapter's description, often empty): the
/// page passes the vendor and architecture of `GPUAdapter.info`, or says it is not reported.
#[wasm_bindgen]
pub async fn open_device(
    kernels: String,
    schedule: String,
    retune: bool,
    name: String,
) -> Result<JsValue, JsError> {
    let kernels = match kernels.as_str() {
        "" | "auto" => None,
        "plain" => Some(Kernels::Plain),
        "wide" => Some(Kernels::Wide),
        "subgroup" => Some(Kernels::Subgroup),
        other => {
            return Err(error(format!(
                "kernels={other}: expected auto, plain or wide"
            )));
        }
    };
    let schedule = match schedule.as_str() {
        "" | "auto" => None,
        "layered" => Some(Schedule::Layered),
        "fused" => Some(Schedule::Fused),
        other => {
            return Err(error(format!(
                "schedule={other}: expected auto, layered or fused"
            )));
        }
    };
    // The fused schedule's per-sample workgroups: the default with a fixed schedule, measured
    // with auto.
    let request = Request {
        schedule,
        kernels,
        per_sample: None,
        retune,
        // A first visit measures quickly, a retune everything.
        quick: !retune,
    };
    with(|s| (s.request, s.name) = (request, name));
    let (webgpu, device, note) = match open_gpu().await {
        Ok((gpu, request)) => {
            let line = format!("{gpu} | {}", request.describe(&gpu).map_err(error)?);
            with(|s| (s.webgpu, s.gpu) = (true, Some(gpu)));
            (true, line, String::new())
        }
        // Asked-for kernels the adapter cannot run are the user's to change, not a fallback.
        Err(e @ GpuError::Kernels { .. }) => return Err(error(e)),
        Err(e) => {
            let cpu = mnist_wgpu::cpu::CpuBackend::DESCRIPTION.to_string();
            (
                false,
                cpu,
                format!("{e}; training on the CPU backend (wasm) instead"),
            )
        }
    };
    Ok(obj(&[
        ("webgpu", webgpu.into()),
        ("device", device.into()),
        ("note", note.into()),
    ]))
}

/// Keeps one fetched data file (`url`, plain or .gz) for [`load_data`].
#[wasm_bindgen]
pub fn add_data_file(url: String, bytes: Vec<u8>) {
    with(|s| s.fetched.push((url, bytes)));
}

/// Verifies (SHA-256, as natively) and parses the four files added, in the order of
/// `MNIST_FILES`; one line describing them.
#[wasm_bindgen]
pub fn load_data() -> Result<String, JsError> {
    let fetched = with(|s| std::mem::take(&mut s.fetched));
    let files: [(String, Vec<u8>); 4] = fetched
        .try_into()
        .map_err(|f: Vec<_>| error(format!("expected 4 MNIST files, got {}", f.len())))?;
    let mnist = data::from_fetched(Kind::Mnist, files).map_err(error)?;
    let line = format!(
        "MNIST: {} training and {} test images, SHA-256 verified",
        mnist.train.len(),
        mnist.test.len()
    );
    with(|s| s.mnist = Some(Rc::new(mnist)));
    Ok(line)
}

/// The browser's device, named as the page found the adapter where wgpu leaves the name
/// empty, with what the page asks of it (kernels it cannot run are refused here).
async fn open_gpu() -> Result<(Gpu, Request), GpuError> {
    let (request, name) = with(|s| (s.request, s.name.clone()));
    let gpu = browser_gpu(&name).await?;
    request.fixed(&gpu)?;
    Ok((gpu, request))
}

/// A device for the next run, with what the page asks of it: the one opened and unused, or a
/// new one.
async fn take_gpu() -> Result<Option<(Gpu, Request)>, JsError> {
    let (webgpu, gpu, request) = with(|s| (s.webgpu, s.gpu.take(), s.request));
    match (webgpu, gpu) {
        (false, _) => Ok(None),
        (true, Some(g)) => Ok(Some((g, request))),
        (true, None) => Ok(Some(open_gpu().await.map_err(error)?)),
    }
}

/// The device for a run of `arch`: WebGPU where the GPU's schedules run the model, else the
/// CPU backend (the device kept for the next run), with the line that says so; as native
/// `--device auto`, a convolutional model on a software adapter trains on the CPU backend
/// too, unless `schedule=` names a schedule.
async fn gpu_for(arch: &Arch) -> Result<(Option<(Gpu, Request)>, Option<String>), JsError> {
    let Some((g, request)) = take_gpu().await? else {
        return Ok((None, None));
    };
    let software = g.software();
    let line = match gpu::net::runnable(arch) {
        Err(why) => format!("{why}; running on the CPU backend (wasm)"),
        Ok(_) if arch.mlp_sizes().is_none() && request.schedule.is_none() && software => {
            format!(
                "{} is a software adapter, on which the CPU backend (wasm) trains {} faster; \
                 running there (schedule=layered runs it on WebGPU)",
                g.info.name,
                flags::arch_string(arch)
            )
        }
        Ok(_) => return Ok((Some((g, request)), None)),
    };
    with(|s| s.gpu = Some(g));
    Ok((None, Some(line)))
}

/// How a model's inputs are normalised: as its file says, else as its recipe's are.
fn model_normalize(model: &Model) -> Result<Normalize, JsError> {
    modelfile::normalize_of(&model.arch, &model.metadata).map_err(error)
}

fn mnist() -> Result<Rc<Mnist>, JsError> {
    with(|s| s.mnist.clone()).ok_or_else(|| error("MNIST is not loaded yet"))
}

/// Marks the page busy for one run; a second Start or Evaluate meanwhile is refused.
struct Busy;

impl Busy {
    fn claim() -> Result<Busy, JsError> {
        with(|s| match s.busy {
            true => Err(error("a run is in progress")),
            false => {
                s.busy = true;
                Ok(Busy)
            }
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        with(|s| s.busy = false);
    }
}

/// One flag's value from the form or the URL (by its command-line name), checked by the same
/// rule as the flag; the default where it is missing or empty.
fn flag<T>(
    values: &JsValue,
    name: &str,
    parse: fn(&str) -> Result<T, String>,
    default: T,
) -> Result<T, JsError> {
    let v = js_sys::Reflect::get(values, &name.into()).unwrap_or(JsValue::UNDEFINED);
    match v.as_string().filter(|s| !s.trim().is_empty()) {
        None => Ok(default),
        Some(s) => parse(s.trim()).map_err(|e| error(format!("--{name} {s}: {e}"))),
    }
}

/// What the form asks for: every model's recipe (one per combination of the seeds, lr and
/// momentum lists, as `train --seeds` makes them), the set, the hidden sizes and the
/// normalisation.
struct Asked {
    preset: Preset,
    recipes: Vec<Recipe>,
    sweep: Sweep,
    hidden: Vec<usize>,
    normalize: Normalize,
}

fn recipes(values: &JsValue) -> Result<Asked, JsError> {
    let preset = flag(values, "recipe", parse_recipe, Preset::Mlp)?;
    let d = preset.defaults();
    let name = flag(
        values,
        "optimizer",
        flags::optimizer,
        d.optimizer.to_string(),
    )?;
    let optimizer = Optimizer::named(&name, d.momentum).map_err(error)?;
    let lr = d.lr_for(&optimizer);
    let sgd = matches!(optimizer, Optimizer::Sgd { .. });
    let sweep = Sweep {
        seeds: flag(values, "seeds", sweep::seeds, vec![flags::SEED])?,
        lrs: flag(
            values,
            "lr",
            |s| sweep::floats(s, flags::positive_finite),
            vec![lr],
        )?,
        // Only SGD has a momentum: the others ignore the field (which keeps its default).
        momenta: match sgd {
            true => flag(
                values,
                "momentum",
                |s| sweep::floats(s, flags::momentum),
                vec![d.momentum],
            )?,
            false => vec![0.0],
        },
    };
    let base = Recipe {
        epochs: flag(values, "epochs", flags::at_least_one, d.epochs)?,
        batch_size: flag(values, "batch-size", flags::at_least_one, d.batch_size)?,
        optimizer,
        weight_decay: flag(values, "weight-decay", flags::weight_decay, 0.0)?,
        gamma: flag(values, "gamma", flags::gamma, d.gamma)?,
        ..Recipe::tutorial(sweep.lrs[0], sweep.momenta[0], sweep.seeds[0])
    };
    let hidden = flag(values, "hidden", |s| flags::hidden(s).map(Some), None)?;
    preset.check_hidden(hidden.as_deref()).map_err(error)?;
    Ok(Asked {
        preset,
        recipes: sweep.recipes(&base),
        sweep,
        hidden: hidden.unwrap_or(flags::HIDDEN.to_vec()),
        normalize: flag(values, "normalize", Normalize::parse, d.normalize)?,
    })
}

/// Trains the recipes in `values` (the `train` flags by name; lists of seeds, lr and
/// momentum train a set side by side) from their seeds' initial weights, sending `{kind:
/// "log" | "ready" | "progress" | "epoch", ...}` to `on_event` and awaiting what it returns;
/// keeps the weights (also when stopped) for drawing and download.
#[wasm_bindgen]
pub async fn train(values: JsValue, on_event: Function) -> Result<JsValue, JsError> {
    let _busy = Busy::claim()?;
    let Asked {
        preset,
        recipes,
        sweep,
        hidden,
        normalize,
    } = recipes(&values)?;
    let mnist = mnist()?;
    let arch = preset.arch(&hidden);
    let (gpu, note) = gpu_for(&arch).await?;
    let t0 = Instant::now();
    let (train_set, test_set) = (
        mnist.train.clone().normalized(normalize),
        mnist.test.clone().normalized(normalize),
    );
    let params = recipes.iter().map(|r| arch.init(r.seed)).collect();
    let built = backends::for_set(gpu, &arch, &recipes, params, train_set, test_set);
    let mut backend = built.await.map_err(error)?;
    let page = Page::new(on_event);
    for line in note.into_iter().chain(backend.about().tuned.clone()) {
        page.log(line).await;
    }
    let setup = t0.elapsed().as_secs_f64();
    let about = backend.about().device.clone();
    page.announce(&about, &arch, &sweep, &recipes[0], normalize, setup)
        .await;
    STOP.with(|s| s.set(false));
    let interval = match backend.about().queues_work {
        false => 25, // the CPU backend runs on the page's thread: yield often
        true => gpu::backend::STEPS_PER_SUBMIT,
    };
    let options = LoopOptions {
        interval,
        evaluate: true,
    };
    let mut observer = events::Observer::new(page, || STOP.with(|s| s.get()));
    let n = mnist.train.len();
    let run = train::run(
        backend.as_mut(),
        &recipes,
        n,
        Position::default(),
        options,
        &mut observer,
    );
    let outcome = run.await.map_err(error)?;
    let params = backend.params().await.map_err(error)?;
    let steps = recipes[0].steps_per_epoch(n);
    let (stopped, line) = observer.closing(&outcome, steps).await;
    let adapter = backend.about().device.clone();
    let program = "mnist-wgpu web page";
    let p = arch.param_count();
    // A diverged model of a set (NaN weights) is no model to draw on or download.
    let diverged = |k: usize| {
        observer
            .last
            .as_ref()
            .is_some_and(|r| r.models[k].diverged())
    };
    let trained: Vec<(String, Rc<Model>)> = recipes
        .iter()
        .enumerate()
        .filter(|&(k, _)| !diverged(k))
        .map(|(k, r)| {
            let test = observer.test_of(k).map(|t| (t.loss, t.accuracy));
            let mut metadata = modelfile::training_metadata(
                program,
                ("mnist", normalize),
                &arch,
                r,
                &adapter,
                test,
            );
            if let Some(set) = sweep.describe() {
                metadata.insert("set".into(), set);
            }
            let params = params[k * p..(k + 1) * p].to_vec();
            let model = Model {
                arch: arch.clone(),
                params,
                metadata,
            };
            let file = sweep.file_for(std::path::Path::new(preset.model_file()), r);
            (file.display().to_string(), Rc::new(model))
        })
        .collect();
    let files = js_sys::Array::new();
    for (name, _) in &trained {
        files.push(&name.into());
    }
    with(|s| {
        s.model = trained.first().map(|t| t.1.clone());
        s.trained = trained;
    });
    Ok(obj(&[
        ("stopped", stopped.into()),
        ("line", line.into()),
        ("files", files.into()),
    ]))
}

/// Stops a training run after its current submission.
#[wasm_bindgen]
pub fn stop() {
    STOP.with(|s| s.set(true));
}

/// Loads a model file (ours, or PyTorch's state_dict as safetensors) to evaluate and draw on;
/// one line describing it.
#[wasm_bindgen]
pub fn load_model(name: String, bytes: Vec<u8>) -> Result<String, JsError> {
    let m = modelfile::from_bytes(&bytes, SIDE * SIDE, CLASSES)
        .map_err(|p| error(p.at(std::path::Path::new(&name))))?;
    let line = format!(
        "model: {} from {name} ({} parameters)",
        flags::arch_string(&m.arch),
        m.params.len()
    );
    let model = Model {
        arch: m.arch,
        params: m.params,
        metadata: m.metadata,
    };
    with(|s| {
        s.model = Some(Rc::new(model));
        s.trained.clear();
    });
    Ok(line)
}

/// Evaluates the model the page holds on the test set, on the device (or the CPU backend);
/// `{line, correct, total, loss}` with `line` in the tutorial's words.
#[wasm_bindgen]
pub async fn evaluate(on_event: Function) -> Result<JsValue, JsError> {
    let _busy = Busy::claim()?;
    let model = with(|s| s.model.clone()).ok_or_else(|| error("no model: train or load one"))?;
    let test = mnist()?.test.clone();
    let (arch, params) = (&model.arch, model.params.clone());
    let (gpu, note) = gpu_for(arch).await?;
    let test = test.normalized(model_normalize(&model)?);
    let mut backend = backends::for_evaluation(gpu, arch, params, test, 1000)
        .await
        .map_err(error)?;
    let page = Page::new(on_event);
    for line in note.into_iter().chain(backend.about().tuned.clone()) {
        page.log(line).await;
    }
    page.log(format!("evaluating on {}", backend.about().device))
        .await;
    let ev = backend.evaluate().await.map_err(error)?;
    let line = train::accuracy_line(ev.correct, ev.total);
    page.log(format!("{line} | test loss {:.4}", ev.mean_loss()))
        .await;
    Ok(obj(&[
        ("line", line.into()),
        ("correct", (ev.correct as u32).into()),
        ("total", (ev.total as u32).into()),
        ("loss", ev.mean_loss().into()),
    ]))
}

/// A model as safetensors with PyTorch's keys (what `train --save` writes): model `k` of the
/// last run (its file name is `files[k]` of `train`'s result), or with no `k` the one the page
/// holds.
#[wasm_bindgen]
pub fn model_bytes(k: Option<usize>) -> Result<Vec<u8>, JsError> {
    let model = with(|s| match k {
        Some(k) => s.trained.get(k).map(|t| t.1.clone()),
        None => s.model.clone(),
    })
    .ok_or_else(|| error("no model: train or load one"))?;
    modelfile::to_bytes(&model.arch, &model.params, &model.metadata).map_err(error)
}

/// The digit drawn on a canvas (`rgba`: `width` x `height` pixels, as `getImageData` gives
/// them), made an MNIST image exactly as `mnist-wgpu predict` makes one from a PNG, and the
/// model's three most likely digits: `{top: [[digit, probability], ...], image: [784 bytes]}`.
#[wasm_bindgen]
pub fn predict(rgba: Vec<u8>, width: u32, height: u32) -> Result<JsValue, JsError> {
    let model = with(|s| s.model.clone()).ok_or_else(|| error("no model: train or load one"))?;
    let how = (&model.arch, &model.params[..], model_normalize(&model)?);
    let top = mnist_wgpu::predict::predict_rgba(how, rgba, width, height).map_err(error)?;
    let list = js_sys::Array::new();
    for (digit, p) in &top.top {
        list.push(&js_sys::Array::of2(&(*digit as u32).into(), &(*p).into()));
    }
    let image = js_sys::Uint8Array::from(&top.image[..]);
    Ok(obj(&[("top", list.into()), ("image", image.into())]))
}

/// Every kernel check of `mnist-wgpu selftest`, on the browser's device, against the CPU
/// reference: `{device, checks, failed, failures: [lines], seconds}`.
#[wasm_bindgen]
pub async fn selftest() -> Result<JsValue, JsError> {
    let _busy = Busy::claim()?;
    let (gpu, request) = take_gpu()
        .await?
        .ok_or_else(|| error("no WebGPU device: the kernel checks need one"))?;
    let t0 = Instant::now();
    let kernels = request.kernels_on(&gpu);
    let checks = gpu::selftest::checks(&gpu, kernels, &Schedule::ALL)
        .await
        .map_err(error)?;
    let device = format!("{gpu} | {}", request.describe(&gpu).map_err(error)?);
    let failures = js_sys::Array::new();
    if let Err(lines) = gpu::selftest::failures(&checks) {
        for l in lines.lines() {
            failures.push(&l.into());
        }
    }
    let result = obj(&[
        ("device", device.into()),
        ("checks", (checks.len() as u32).into()),
        ("failed", failures.length().into()),
        ("failures", failures.into()),
        ("seconds", t0.elapsed().as_secs_f64().into()),
    ]);
    with(|s| s.gpu = Some(gpu));
    Ok(result)
}
