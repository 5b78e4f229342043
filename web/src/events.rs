//! What the page hears from a run: log lines, progress and epochs, as plain JS objects sent to
//! one callback whose returned promise is awaited, so the page can paint and take a Stop.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use mnist_wgpu::data::Normalize;
use mnist_wgpu::flags;
use mnist_wgpu::model::Arch;
use mnist_wgpu::recipe::Recipe;
use mnist_wgpu::recipe::recipe_words;
use mnist_wgpu::sweep::{Sweep, floats_string, seeds_string};
use mnist_wgpu::train::{
    self, Backend, EpochReport, ModelEpoch, Outcome, Progress, Spread, TestFigures,
};

/// A JS object of `pairs`.
pub fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        // Setting a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

/// An error for the page: one line (an anyhow chain joined by ": ").
pub fn error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&format!("{e:#}"))
}

/// Calls `on_event(value)` and awaits it when it returns a promise.
async fn emit(on_event: &Function, value: JsValue) {
    if let Ok(r) = on_event.call1(&JsValue::NULL, &value)
        && let Ok(p) = r.dyn_into::<Promise>()
    {
        let _ = JsFuture::from(p).await;
    }
}

/// The page's callback.
pub struct Page {
    pub on_event: Function,
}

impl Page {
    pub fn new(on_event: Function) -> Page {
        Page { on_event }
    }

    /// One line of the log, as the native program would print it.
    pub async fn log(&self, line: String) {
        emit(
            &self.on_event,
            obj(&[("kind", "log".into()), ("line", line.into())]),
        )
        .await;
    }

    /// The native `train`'s first lines, then `{kind: "ready"}`: everything is built, `setup`
    /// seconds after the run was asked for.
    pub async fn announce(
        &self,
        adapter: &str,
        arch: &Arch,
        sweep: &Sweep,
        r: &Recipe,
        normalize: Normalize,
        setup: f64,
    ) {
        self.log(format!("adapter: {adapter}")).await;
        let hyper = match sweep.len() {
            1 => format!("{} | seed {}", recipe_words(r, normalize), r.seed),
            _ => format!(
                "lr {} | momentum {} | seeds {}",
                floats_string(&sweep.lrs),
                floats_string(&sweep.momenta),
                seeds_string(&sweep.seeds)
            ),
        };
        self.log(format!(
            "model: {} | {} parameters | batch {} | {hyper} | init random | start-up {setup:.2} s",
            flags::arch_string(arch),
            arch.param_count(),
            r.batch_size,
        ))
        .await;
        if let Some(set) = sweep.describe() {
            self.log(format!("set: {set}, side by side")).await;
        }
        let ready = obj(&[("kind", "ready".into()), ("seconds", setup.into())]);
        emit(&self.on_event, ready).await;
    }
}

/// The epoch loop's observer in the page.
pub struct Observer<F: Fn() -> bool> {
    pub page: Page,
    stop: F,
    /// The last epoch done.
    pub last: Option<EpochReport>,
    /// Training seconds of the epochs done.
    pub seconds: f64,
}

impl<F: Fn() -> bool> Observer<F> {
    pub fn new(page: Page, stop: F) -> Self {
        Observer {
            page,
            stop,
            last: None,
            seconds: 0.0,
        }
    }
    /// The native `train`'s closing lines (or where a Stop left the run), logged; whether it
    /// was stopped, and the last line.
    pub async fn closing(&self, outcome: &Outcome, steps: usize) -> (bool, String) {
        let last = self.last.as_ref();
        let (stopped, line) = match (outcome, last.and_then(|r| r.first().test)) {
            (Outcome::Interrupted(p), _) => (
                true,
                format!(
                    "stopped in epoch {} after step {} of {steps}; the weights so far are kept",
                    p.epoch, p.step
                ),
            ),
            (Outcome::Finished, Some(_)) if let Some(r) = last.filter(|r| r.models.len() > 1) => {
                let time = format!(
                    "Training time {:.1} s for {} models",
                    self.seconds,
                    r.models.len()
                );
                self.page.log(time).await;
                (false, set_line(r))
            }
            (Outcome::Finished, Some(t)) => {
                let time = format!(
                    "Training time {:.1} s | test loss {:.4}",
                    self.seconds, t.loss
                );
                self.page.log(time).await;
                (false, train::accuracy_line(t.correct, t.total))
            }
            (Outcome::Finished, None) => (false, String::new()),
        };
        self.page.log(line.clone()).await;
        (stopped, line)
    }

    /// Model k's test figures after the last epoch done.
    pub fn test_of(&self, k: usize) -> Option<TestFigures> {
        self.last.as_ref().and_then(|r| r.models.get(k)?.test)
    }
}

/// A set's closing line: its test accuracy's mean ± std and range.
fn set_line(r: &EpochReport) -> String {
    // A diverged model's figures count in no mean.
    let tests: Vec<TestFigures> = r.models.iter().filter_map(|m| m.fair_test()).collect();
    let acc = Spread::of(tests.iter().map(|t| 100.0 * t.accuracy));
    let gone = match r.models.len() - tests.len() {
        0 => String::new(),
        n => format!(" ({n} diverged, left out)"),
    };
    format!(
        "mean ± std of {} models{gone}: test accuracy {:.2} ± {:.2} % ({:.2} .. {:.2})",
        tests.len(),
        acc.mean,
        acc.std,
        acc.min,
        acc.max
    )
}

fn floats(values: &[f32]) -> JsValue {
    js_sys::Float32Array::from(values).into()
}

/// Each model's figure, as JS numbers.
fn per_model(r: &EpochReport, f: impl Fn(&ModelEpoch) -> f64) -> JsValue {
    let values: Vec<f64> = r.models.iter().map(f).collect();
    js_sys::Float64Array::from(&values[..]).into()
}

#[async_trait::async_trait(?Send)]
impl<F: Fn() -> bool> train::Observer for Observer<F> {
    async fn progress(&mut self, p: &Progress<'_>) {
        let (running, rate) = (p.running_loss(), p.images_per_s());
        let event = obj(&[
            ("kind", "progress".into()),
            ("epoch", (p.epoch as u32).into()),
            ("epochs", (p.epochs as u32).into()),
            ("step", (p.step as u32).into()),
            ("steps", (p.steps as u32).into()),
            ("loss", running.into()),
            ("images_per_s", rate.into()),
            ("seconds", p.seconds.into()),
        ]);
        emit(&self.page.on_event, event).await;
    }

    /// The epoch in the native program's line; its figures are the first model's (a single
    /// run's), and for a set each model's in `models_*` (the chart's band spans them).
    async fn epoch_done(&mut self, _: &mut dyn Backend, r: &EpochReport) -> anyhow::Result<()> {
        let m = r.first();
        self.last = Some(r.clone());
        self.seconds += r.seconds;
        let test = |m: &ModelEpoch| {
            let t = m.fair_test();
            t.map_or((f64::NAN, f64::NAN), |t| (t.loss, t.accuracy))
        };
        let (test_loss, accuracy) = test(m);
        let event = obj(&[
            ("kind", "epoch".into()),
            ("line", r.line().into()),
            ("epoch", (r.epoch as u32).into()),
            ("train_loss", m.loss.into()),
            ("test_loss", test_loss.into()),
            ("accuracy", accuracy.into()),
            ("seconds", r.seconds.into()),
            ("step_losses", floats(&m.step_losses)),
            ("models", (r.models.len() as u32).into()),
            ("models_train_loss", per_model(r, |m| m.loss)),
            ("models_test_loss", per_model(r, |m| test(m).0)),
            ("models_accuracy", per_model(r, |m| test(m).1)),
        ]);
        emit(&self.page.on_event, event).await;
        Ok(())
    }

    fn interrupted(&self) -> bool {
        (self.stop)()
    }
}
