//! A set of models in the page: `seeds=1-4` trains four models side by side in the same
//! dispatches, the chart draws each figure's band, and each model downloads as its own file,
//! which natively evaluates to the accuracy the page showed for it.

use std::path::Path;
use std::time::Duration;

use super::{
    Browser, Engine, assert_clean, native_cpu_losses, run_native, scratch, serve, site, tutorial,
};

/// Waits until the browser has finished writing `file` (Firefox fills it through `.part`).
pub fn wait_for_download(file: &Path) {
    let part = file.with_extension("safetensors.part");
    for _ in 0..200 {
        if std::fs::metadata(file).is_ok_and(|m| m.len() > 0) && !part.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} was not downloaded", file.display());
}

pub fn four_seeds_train_side_by_side_with_a_band(engine: Engine) {
    let (_server, url) = serve(site());
    let downloads = scratch("downloads-set");
    let b = Browser::start(engine, true, &downloads);
    b.open(&format!("{url}?epochs=1&autostart=1&seeds=1-4"));
    let state = b.wait_phase(&["done", "stopped"], Duration::from_secs(900));
    assert_clean(&b, &state, true);
    assert_eq!(state["phase"], "done");
    let log = state["log"].to_string();
    assert!(
        log.contains("set: 4 models: seeds 1-4, side by side"),
        "{log}"
    );
    let epoch = &state["epochs"][0];
    assert_eq!(epoch["models"], 4);
    assert_eq!(state["chartBands"], 3, "the chart drew no band per figure");
    let accuracy: Vec<f64> = (0..4)
        .map(|k| epoch["models_accuracy"][k].as_f64().unwrap())
        .collect();
    assert!(accuracy.iter().all(|&a| a > 0.85), "{accuracy:?}");
    assert!(
        accuracy.windows(2).any(|w| w[0] != w[1]),
        "four seeds gave one accuracy: {accuracy:?}"
    );
    // The first model is seed 1's: its steps follow the native CPU run of seed 1.
    let page: Vec<f32> = epoch["step_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let native = native_cpu_losses(tutorial());
    let rel = |a: f32, b: f32| ((a as f64 - b as f64) / b as f64).abs();
    let first = (0..250)
        .map(|i| rel(page[i], native[i]))
        .fold(0.0, f64::max);
    assert!(
        first < 1e-5,
        "model 1's first 250 steps differ by up to {first:.2e}"
    );
    println!(
        "in {}: {} | accuracies {accuracy:?} | epoch {:.1} s",
        engine.name(),
        state["result"]["line"],
        epoch["seconds"].as_f64().unwrap()
    );

    // Each model downloads as its own file, named as `train --save` names a set's.
    let files: Vec<String> = (1..=4)
        .map(|s| format!("mnist_mlp-seed{s}.safetensors"))
        .collect();
    assert_eq!(state["result"]["files"], serde_json::json!(files));
    for (k, f) in files.iter().enumerate() {
        // One button at a time, as a person clicks them.
        b.run(&format!(
            "document.querySelectorAll('.model-download')[{k}].click()"
        ));
        let file = downloads.join(f);
        wait_for_download(&file);
        let (code, stdout, stderr) = run_native(&["eval", "--device", "cpu", "--model"], &file);
        assert_eq!(code, 0, "{stderr}");
        let shown = format!("Model Accuracy {:.2} %", 100.0 * accuracy[k]);
        assert!(
            stdout.lines().any(|l| l.starts_with(&shown)),
            "the page showed {shown} for model {}; native eval of {f}: {stdout}",
            k + 1
        );
    }
}
