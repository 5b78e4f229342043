//! The web page in real browsers: every test runs in headless Chromium (WebGPU on SwiftShader,
//! through ChromeDriver) and in headless Firefox (WebGPU on lavapipe, through geckodriver), as
//! `TEST::chromium` and `TEST::firefox`. They need the page built (`web/build.sh`) and the
//! browsers with their drivers, so they are `#[ignore]`d in a plain `cargo test`; `.ci/run`
//! builds the page and runs them with
//! `cargo test --release --test browser -- --ignored --test-threads=1`. A missing browser or
//! page fails them with how to get it.

mod cnn;
#[path = "../common/mod.rs"]
mod common;
mod sets;
mod webdriver;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use mnist_wgpu::cpu::CpuBackend;
use mnist_wgpu::data::{self, Normalize, default_data_dir};
use mnist_wgpu::model::Arch;
use mnist_wgpu::optim::Optimizer;
use mnist_wgpu::recipe::Recipe;
use mnist_wgpu::train;
use mnist_wgpu::{flags, modelfile};

use webdriver::{Browser, Engine, decode_base64, serve};

/// Each test `$name(engine)` becomes `$name::chromium` and `$name::firefox`.
macro_rules! in_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Engine;
            #[test]
            #[ignore = "needs Chromium, ChromeDriver and web/build.sh; .ci/run runs it"]
            fn chromium() {
                super::$name(Engine::Chromium)
            }
            #[test]
            #[ignore = "needs Firefox, geckodriver and web/build.sh; .ci/run runs it"]
            fn firefox() {
                super::$name(Engine::Firefox)
            }
        }
    )*};
}

in_both_engines!(
    kernel_checks_pass,
    one_layered_epoch_matches_the_native_run,
    one_fused_epoch_matches_the_native_run,
    one_adam_epoch_matches_the_native_run,
    pytorch_model_is_read_as_pytorch_reads_it,
    without_webgpu_the_page_trains_on_the_cpu,
    training_stays_responsive_and_stops,
);

use sets::four_seeds_train_side_by_side_with_a_band;
in_both_engines!(four_seeds_train_side_by_side_with_a_band);

use cnn::a_cnn_trains_in_the_page_and_reads_a_drawn_digit;
in_both_engines!(a_cnn_trains_in_the_page_and_reads_a_drawn_digit);

use cnn::a_cnn_trains_on_webgpu_with_schedule_layered;
in_both_engines!(a_cnn_trains_on_webgpu_with_schedule_layered);

const PYTORCH_MODEL: &str = "torch_tutorial.safetensors";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch copy of the built page (web/dist, or `$MNIST_WGPU_SITE` to time another build)
/// plus the PyTorch-written model, served as one site.
fn site() -> &'static Path {
    static SITE: OnceLock<PathBuf> = OnceLock::new();
    SITE.get_or_init(|| {
        let dist = std::env::var_os("MNIST_WGPU_SITE")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("web/dist"));
        assert!(
            dist.join("pkg/mnist_wgpu_web_bg.wasm").exists(),
            "the page is not built: run web/build.sh first"
        );
        let site = std::env::temp_dir().join(format!("mnist-wgpu-site-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&site);
        copy_dir(&dist, &site);
        let model = root().join("tests/parity").join(PYTORCH_MODEL);
        std::fs::copy(model, site.join(PYTORCH_MODEL)).unwrap();
        site
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        match e.file_type().unwrap().is_dir() {
            true => copy_dir(&e.path(), &target),
            false => drop(std::fs::copy(e.path(), target).unwrap()),
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mnist-wgpu-browser-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page's state must show no error, a WebGPU device (not the CPU fallback) when `webgpu`,
/// a first line naming the browser and the adapter, and the console no WebGPU error or
/// warning, nor any error at all.
fn assert_clean(b: &Browser, state: &Value, webgpu: bool) {
    assert_eq!(
        state["errors"],
        Value::Array(vec![]),
        "page errors in {}; log: {}",
        b.engine.name(),
        state["log"]
    );
    let first = b.eval("document.getElementById('device').textContent");
    let first = first.as_str().unwrap();
    assert!(
        first.starts_with(&format!("{} ", b.engine.name())),
        "the first line does not name {}: {first:?}",
        b.engine.name()
    );
    if webgpu {
        assert_eq!(
            state["webgpu"], true,
            "the page fell back to the CPU backend: {}",
            state["note"]
        );
        assert!(state["device"].as_str().unwrap().contains("BrowserWebGpu"));
        let adapter = first.split("WebGPU: ").nth(1).unwrap_or("");
        assert!(
            !adapter.split('|').next().unwrap().trim().is_empty(),
            "no adapter named in the first line: {first:?}"
        );
    }
    for (level, message) in b.console() {
        let gpu = ["webgpu", "validation", "gpu"]
            .iter()
            .any(|w| message.to_lowercase().contains(w));
        let expected_fallback = !webgpu && level == "WARNING";
        assert!(
            !(level == "SEVERE" || gpu && !expected_fallback),
            "the console logged {level}: {message}"
        );
    }
}

/// Every kernel check of `selftest`, run inside the browser's WebGPU against the CPU
/// reference.
fn kernel_checks_pass(engine: Engine) {
    let (_server, url) = serve(site());
    let b = Browser::start(engine, true, &scratch("selftest"));
    b.open(&format!("{url}?selftest=1"));
    let state = b.wait_phase(&["done"], Duration::from_secs(300));
    assert_clean(&b, &state, true);
    let st = &state["selftest"];
    println!(
        "in {}: {} checks, {} failed, {:.1} s on {}",
        engine.name(),
        st["checks"],
        st["failed"],
        st["seconds"],
        st["device"]
    );
    assert_eq!(st["failed"], 0, "failed kernel checks: {}", st["failures"]);
    assert!(
        st["checks"].as_u64().unwrap() >= 150,
        "only {} checks ran",
        st["checks"]
    );
}

/// The tutorial's recipe for one epoch from the default seed.
fn tutorial() -> (Recipe, Normalize) {
    let r = Recipe {
        epochs: 1,
        ..Recipe::tutorial(flags::LR, flags::MOMENTUM, flags::SEED)
    };
    (r, Normalize::TUTORIAL)
}

/// Adam with weight decay and pytorch/examples' normalisation, as `EXAMPLES_QUERY` asks.
fn adam_examples() -> (Recipe, Normalize) {
    let adam = Optimizer::named("adam", 0.0).unwrap();
    let r = Recipe {
        lr: adam.default_lr(),
        optimizer: adam,
        weight_decay: 0.0001,
        ..tutorial().0
    };
    (
        r,
        Normalize {
            mean: 0.1307,
            std: 0.3081,
        },
    )
}

const EXAMPLES_QUERY: &str = "&optimizer=adam&weight-decay=0.0001&normalize=0.1307,0.3081";

/// The CPU backend's per-step losses of epoch 0 of `recipe`, natively.
fn native_cpu_losses((recipe, normalize): (Recipe, Normalize)) -> Vec<f32> {
    let mnist = data::load_mnist(&default_data_dir()).unwrap();
    let arch = Arch::mlp(784, &flags::HIDDEN, 10);
    let n = mnist.train.len();
    let mut cpu = CpuBackend::new(
        arch.clone(),
        recipe.clone(),
        arch.init(recipe.seed),
        mnist.train.normalized(normalize),
        mnist.test.normalized(normalize),
    );
    let reports = pollster::block_on(train::train(
        &mut cpu,
        std::slice::from_ref(&recipe),
        n,
        |_| {},
    ))
    .unwrap();
    reports[0].first().step_losses.clone()
}

/// One epoch from the default seed on the page's WebGPU with the layered schedule: each step's
/// loss as the native CPU backend's, at least 90 %, and the model the Download button saves
/// evaluates natively to the accuracy the page showed.
fn one_layered_epoch_matches_the_native_run(engine: Engine) {
    let native = native_cpu_losses(tutorial());
    one_epoch_matches_the_native_run(engine, "&schedule=layered", "downloads", &native);
}

/// The same with the fused schedule asked for in the URL.
fn one_fused_epoch_matches_the_native_run(engine: Engine) {
    let native = native_cpu_losses(tutorial());
    one_epoch_matches_the_native_run(engine, "&schedule=fused", "downloads-fused", &native);
}

/// The same with Adam, weight decay and pytorch/examples' normalisation from the URL; the
/// download names them, and native `eval` normalises as it says.
fn one_adam_epoch_matches_the_native_run(engine: Engine) {
    let native = native_cpu_losses(adam_examples());
    let query = format!("{EXAMPLES_QUERY}&schedule=fused");
    one_epoch_matches_the_native_run(engine, &query, "downloads-adam", &native);
}

fn one_epoch_matches_the_native_run(engine: Engine, query: &str, name: &str, native: &[f32]) {
    let (_server, url) = serve(site());
    let downloads = scratch(name);
    let b = Browser::start(engine, true, &downloads);
    b.open(&format!("{url}?epochs=1&autostart=1{query}"));
    let state = b.wait_phase(&["done", "stopped"], Duration::from_secs(600));
    assert_clean(&b, &state, true);
    let schedule = query.rsplit('=').next().unwrap();
    let device = state["device"].as_str().unwrap();
    assert!(
        device.ends_with(&format!("schedule: {schedule}")),
        "{device}"
    );
    assert_eq!(state["phase"], "done");
    let page: Vec<f32> = state["epochs"][0]["step_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(page.len(), native.len());
    // Step by step the two runs agree to rounding until the differences of f32 sums grow
    // (SGD amplifies them); the epoch's mean loss stays within a fraction of a per mille.
    let rel = |a: f64, b: f64| ((a - b) / b).abs();
    let first = (0..250)
        .map(|i| rel(page[i] as f64, native[i] as f64))
        .fold(0.0, f64::max);
    let apart = (0..page.len()).find(|&i| rel(page[i] as f64, native[i] as f64) > 1e-4);
    let mean = |l: &[f32]| l.iter().map(|&x| x as f64).sum::<f64>() / l.len() as f64;
    let (pm, nm) = (mean(&page), mean(native));
    println!(
        "step losses vs the native CPU backend: up to {first:.2e} apart (relative) in steps \
         0-249, first step more than 1e-4 apart: {apart:?}; epoch mean {pm:.6} vs {nm:.6}"
    );
    assert!(
        first < 1e-5,
        "the first 250 steps differ by up to {first:.2e}"
    );
    assert!(
        rel(pm, nm) < 2e-3,
        "epoch mean loss {pm} in the page, {nm} natively"
    );
    let line = state["result"]["line"].as_str().unwrap().to_string();
    let accuracy: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(accuracy >= 90.0, "{line}");
    let seconds = state["epochs"][0]["seconds"].as_f64().unwrap();
    println!(
        "in {} ({}): {line}; epoch {seconds:.1} s, {:.2} ms per step; first step {:.2} s \
         after page load",
        engine.name(),
        state["device"],
        1e3 * seconds / page.len() as f64,
        state["timeToFirstStep"]
    );

    b.run("document.getElementById('download').click()");
    // Firefox creates the file empty and fills it through a `.part` file.
    let file = downloads.join("mnist_mlp.safetensors");
    let part = downloads.join("mnist_mlp.safetensors.part");
    for _ in 0..200 {
        if std::fs::metadata(&file).is_ok_and(|m| m.len() > 0) && !part.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, stdout, stderr) = run_native(&["eval", "--device", "cpu", "--model"], &file);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with(&line)),
        "the page showed {line}; native eval of its download: {stdout}"
    );
}

/// `mnist-wgpu ARGS FILE`: exit code, stdout, stderr.
fn run_native(args: &[&str], file: &Path) -> (i32, String, String) {
    common::outcome(common::bin().args(args).arg(file).output().unwrap())
}

/// Draws a 7 on the pad with pointer events, as a finger or mouse would.
const DRAW_SEVEN: &str = "
    const pad = document.getElementById('pad');
    const r = pad.getBoundingClientRect();
    const at = ([x, y]) => ({clientX: r.left + x, clientY: r.top + y, pointerId: 1, bubbles: true});
    const stroke = [[70, 60], [140, 58], [210, 62], [185, 120], [160, 175], [140, 230]];
    pad.dispatchEvent(new PointerEvent('pointerdown', at(stroke[0])));
    for (const p of stroke.slice(1)) pad.dispatchEvent(new PointerEvent('pointermove', at(p)));
    pad.dispatchEvent(new PointerEvent('pointerup', at(stroke[stroke.length - 1])));
";

/// A model PyTorch wrote, loaded by URL: the page evaluates it to PyTorch's own accuracy on
/// WebGPU, and predicts a drawn digit as `mnist-wgpu predict` does from the same pixels; the
/// three guesses sit beside the pad, not over it.
fn pytorch_model_is_read_as_pytorch_reads_it(engine: Engine) {
    let (_server, url) = serve(site());
    let b = Browser::start(engine, true, &scratch("pytorch"));
    b.open(&format!("{url}?model={PYTORCH_MODEL}&autostart=1"));
    let state = b.wait_phase(&["done"], Duration::from_secs(300));
    assert_clean(&b, &state, true);
    let model = root().join("tests/parity").join(PYTORCH_MODEL);
    let meta = modelfile::load(&model, 784, 10).unwrap().metadata;
    let torch = 100.0 * meta["accuracy"].parse::<f64>().unwrap();
    let line = state["result"]["line"].as_str().unwrap();
    assert!(
        line.starts_with(&format!(
            "Model Accuracy {torch:.2} %   ({}/10000)",
            meta["correct"]
        )),
        "the page: {line}; PyTorch: {torch:.2} %"
    );

    b.run(DRAW_SEVEN);
    let prediction = b.eval("window.mnist.prediction");
    let png = b.eval("document.getElementById('pad').toDataURL('image/png')");
    let png = decode_base64(
        png.as_str()
            .unwrap()
            .trim_start_matches("data:image/png;base64,"),
    );
    let dir = scratch("drawn");
    std::fs::write(dir.join("seven.png"), png).unwrap();
    let args = [
        "predict",
        "--json",
        "--device",
        "cpu",
        "--model",
        model.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = run_native(&args, &dir.join("seven.png"));
    assert_eq!(code, 0, "{stderr}");
    let native: Value = serde_json::from_str(&stdout).unwrap();
    let native = &native[0]["top"];
    println!("drawn 7: page {prediction}, native {native}");
    assert_eq!(
        prediction[0]["digit"], 7,
        "the page read the drawn 7 as {prediction}"
    );
    for i in 0..3 {
        assert_eq!(prediction[i]["digit"], native[i]["digit"]);
        let (p, q) = (
            prediction[i]["probability"].as_f64().unwrap(),
            native[i]["probability"].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 1e-5, "top {i}: page {p}, native {q}");
    }
    assert_no_overlap(&b);
}

/// The boxes of the drawing pad, the three guesses (their numbers inside them) and the chart
/// must not overlap, and the guesses must stay inside their panel.
fn assert_no_overlap(b: &Browser) {
    let boxes = b.eval(
        "(() => {
            const r = (e) => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
            const lis = [...document.querySelectorAll('#top li')];
            const outside = lis.some((li) => { const s = getComputedStyle(li);
                return s.listStylePosition === 'outside' && s.listStyleType !== 'none'; });
            return { pad: r(document.getElementById('pad')), chart: r(document.getElementById('chart')),
                     panel: r(document.getElementById('draw-box')), items: lis.map(r), outside };
        })()",
    );
    let rect = |v: &Value| -> [f64; 4] {
        let a = v.as_array().unwrap();
        std::array::from_fn(|i| a[i].as_f64().unwrap())
    };
    let overlap =
        |a: [f64; 4], b: [f64; 4]| a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
    let (pad, chart, panel) = (
        rect(&boxes["pad"]),
        rect(&boxes["chart"]),
        rect(&boxes["panel"]),
    );
    // A marker drawn outside its item is in no box measured here: it once reached over the pad.
    assert_eq!(
        boxes["outside"],
        false,
        "in {}: the guesses' numbers are drawn outside their boxes",
        b.engine.name()
    );
    assert!(
        !overlap(pad, chart),
        "the pad {pad:?} overlaps the chart {chart:?}"
    );
    for item in boxes["items"].as_array().unwrap().iter().map(rect) {
        assert!(
            !overlap(item, pad),
            "in {}: a guess {item:?} overlaps the pad {pad:?}",
            b.engine.name()
        );
        assert!(
            item[0] >= panel[0] && item[2] <= panel[2],
            "in {}: a guess {item:?} leaves its panel {panel:?}",
            b.engine.name()
        );
    }
}

/// Without WebGPU the page says so in one line and trains on the CPU backend compiled to wasm.
fn without_webgpu_the_page_trains_on_the_cpu(engine: Engine) {
    let (_server, url) = serve(site());
    let b = Browser::start(engine, false, &scratch("cpu"));
    b.open(&format!("{url}?epochs=1&autostart=1"));
    let state = b.wait_phase(&["done"], Duration::from_secs(300));
    assert_clean(&b, &state, false);
    assert_eq!(state["webgpu"], false);
    let note = state["note"].as_str().unwrap();
    assert!(
        note.contains("no WebGPU adapter") && note.contains("CPU backend"),
        "{note}"
    );
    let line = state["result"]["line"].as_str().unwrap();
    let accuracy: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    println!(
        "without WebGPU: {line} ({:.1} s)",
        state["epochs"][0]["seconds"]
    );
    assert!(accuracy >= 90.0, "{line}");
}

/// The tab answers while training on WebGPU (it yields at every read-back), and Stop ends the
/// run after the submission already queued behind the one running, keeping the weights so
/// far. With no `schedule=`, the run starts by measuring the schedules and logs its choice.
fn training_stays_responsive_and_stops(engine: Engine) {
    let (_server, url) = serve(site());
    let b = Browser::start(engine, true, &scratch("stop"));
    b.open(&format!("{url}?epochs=1"));
    b.wait_phase(&["ready"], Duration::from_secs(120));
    b.run("document.getElementById('start').click()");
    // A frozen tab would not answer until the epoch ends (15 s or more on SwiftShader).
    let mut slowest = Duration::ZERO;
    let step = || {
        b.eval("window.mnist.epochs.length ? 1e9 : Number(document.getElementById('progress').textContent.match(/step (\\d+)/)?.[1] ?? 0)")
    };
    loop {
        let t0 = std::time::Instant::now();
        let at = step().as_f64().unwrap();
        slowest = slowest.max(t0.elapsed());
        if at >= 500.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let clicked_at = step().as_f64().unwrap();
    b.run("document.getElementById('stop').click()");
    let state = b.wait_phase(&["stopped", "done"], Duration::from_secs(120));
    assert_clean(&b, &state, true);
    let log = state["log"].to_string();
    assert!(
        log.contains("schedule: auto chose "),
        "no measured choice in {log}"
    );
    println!(
        "slowest answer while training: {slowest:?}; Stop clicked after step {clicked_at}; \
         first step {:.2} s after page load (the schedules measured first)",
        state["timeToFirstStep"]
    );
    assert!(
        slowest < Duration::from_secs(3),
        "the page took {slowest:?} to answer"
    );
    assert_eq!(state["phase"], "stopped");
    let line = state["result"]["line"].as_str().unwrap();
    let stopped_at: f64 = line.split_whitespace().nth(6).unwrap().parse().unwrap();
    // Shown: step S. Running: S..S+250; queued: S+250..S+500 at most.
    assert!(
        stopped_at <= clicked_at + 500.0,
        "Stop after step {clicked_at}, the run ended after step {stopped_at}: {line}"
    );
    assert_eq!(
        b.eval("document.getElementById('download').disabled"),
        false
    );
    // A second run of the same shape reads the choice back from the browser's local storage.
    b.run("document.getElementById('start').click()");
    let t0 = std::time::Instant::now();
    let again = "measured earlier, kept in this browser's local storage";
    while !b
        .eval("window.mnist.log.join('\\n')")
        .as_str()
        .unwrap()
        .contains(again)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no cached choice in the second run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.run("document.getElementById('stop').click()");
    let state = b.wait_phase(&["stopped", "done"], Duration::from_secs(120));
    assert_clean(&b, &state, true);
}

/// The picture in README: the page in epoch 3 of 4, with a drawn digit read by the
/// PyTorch-written model loaded before Start. Not a check; run it by name to refresh
/// docs/web-page.png (`.ci/run` skips it).
#[test]
#[ignore = "refreshes docs/web-page.png; run by name"]
fn screenshot_for_readme() {
    let (_server, url) = serve(site());
    let b = Browser::start(Engine::Chromium, true, &scratch("shot"));
    b.open(&format!("{url}?epochs=4&model={PYTORCH_MODEL}"));
    b.wait_phase(&["ready"], Duration::from_secs(120));
    b.run(DRAW_SEVEN);
    b.run("document.getElementById('start').click()");
    let t0 = std::time::Instant::now();
    while b.eval("window.mnist.epochs.length").as_u64() < Some(2)
        || b.eval("document.getElementById('bar').value").as_f64() < Some(0.62)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "training did not get far enough"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::write(root().join("docs/web-page.png"), b.screenshot()).unwrap();
    b.run("document.getElementById('stop').click()");
}

/// Figures for bench/web.sh, not a check: one epoch in each engine with each schedule and the
/// plain kernels (what both browsers here can run), one line each with the page's ms per step.
/// Run by name; `.ci/run` skips it.
#[test]
#[ignore = "bench/web.sh runs it by name"]
fn page_speed_for_bench() {
    let (_server, url) = serve(site());
    for engine in [Engine::Chromium, Engine::Firefox] {
        for schedule in ["layered", "fused"] {
            let b = Browser::start(engine, true, &scratch("speed"));
            b.open(&format!(
                "{url}?epochs=1&autostart=1&kernels=plain&schedule={schedule}"
            ));
            let state = b.wait_phase(&["done"], Duration::from_secs(600));
            // Not assert_clean: this also times builds of the page from before it named the
            // browser.
            assert_eq!(state["errors"], Value::Array(vec![]), "{}", state["log"]);
            assert_eq!(state["webgpu"], true, "{}", state["note"]);
            let epoch = &state["epochs"][0];
            let steps = epoch["step_losses"].as_array().unwrap().len() as f64;
            let ms = 1e3 * epoch["seconds"].as_f64().unwrap() / steps;
            println!(
                "page {} {schedule}/plain: {ms:.2} ms per step ({})",
                engine.name().to_lowercase(),
                state["device"].as_str().unwrap()
            );
        }
    }
}

/// What `--schedule auto` costs a new visitor: seconds from navigation to the first step done,
/// in a fresh profile (nothing cached), with a fixed schedule and with auto, in each engine
/// (bench/web.sh's second table; not a check).
#[test]
#[ignore = "a benchmark, not a check: bench/web.sh runs it"]
fn first_step_with_auto_for_bench() {
    let (_server, url) = serve(site());
    for engine in [Engine::Chromium, Engine::Firefox] {
        for schedule in ["fused", "auto"] {
            let b = Browser::start(engine, true, &scratch("first-step"));
            b.open(&format!("{url}?epochs=1&autostart=1&schedule={schedule}"));
            let state = b.wait_phase(&["done"], Duration::from_secs(600));
            assert_eq!(state["errors"], Value::Array(vec![]), "{}", state["log"]);
            println!(
                "page {} {schedule}: first step {:.2} s after load ({})",
                engine.name().to_lowercase(),
                state["timeToFirstStep"].as_f64().unwrap(),
                state["device"].as_str().unwrap()
            );
            if schedule == "auto" {
                let log = state["log"].as_array().unwrap();
                log.iter()
                    .take(4)
                    .for_each(|l| println!("  {}", l.as_str().unwrap()));
            }
        }
    }
}
