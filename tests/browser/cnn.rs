//! A CNN in the page: `recipe=cnn-small` trains pytorch/examples' 2018 network for one epoch
//! on the CPU backend compiled to wasm (these browsers' WebGPU adapters are software ones, on
//! which the CPU backend is faster, and the page says so in its log), downloads as
//! `mnist_cnn-small.safetensors`, which natively evaluates to the accuracy the page showed,
//! and the pad reads a drawn 7 with it as native `predict` reads the same pixels; with
//! `schedule=layered` it trains on WebGPU with the conv, pool and dropout kernels.

use std::time::Duration;

use serde_json::Value;

use super::sets::wait_for_download;
use super::{
    Browser, DRAW_SEVEN, Engine, assert_clean, decode_base64, run_native, scratch, serve, site,
};

pub fn a_cnn_trains_in_the_page_and_reads_a_drawn_digit(engine: Engine) {
    let (_server, url) = serve(site());
    let downloads = scratch("downloads-cnn");
    let b = Browser::start(engine, true, &downloads);
    b.open(&format!("{url}?recipe=cnn-small&epochs=1&autostart=1"));
    let state = b.wait_phase(&["done", "stopped"], Duration::from_secs(600));
    assert_clean(&b, &state, true);
    assert_eq!(state["phase"], "done");
    let log = state["log"].to_string();
    assert!(log.contains("is a software adapter"), "{log}");
    let line = state["result"]["line"].as_str().unwrap().to_string();
    let accuracy: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let seconds = state["epochs"][0]["seconds"].as_f64().unwrap();
    println!(
        "cnn-small in {}: {line}; epoch {seconds:.1} s",
        engine.name()
    );
    assert!(accuracy >= 90.0, "{line}");

    b.run("document.getElementById('download').click()");
    let file = downloads.join("mnist_cnn-small.safetensors");
    wait_for_download(&file);
    let (code, stdout, stderr) = run_native(&["eval", "--device", "cpu", "--model"], &file);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with(&line)),
        "the page showed {line}; native eval of its download: {stdout}"
    );

    b.run(DRAW_SEVEN);
    let prediction = b.eval("window.mnist.prediction");
    let png = b.eval("document.getElementById('pad').toDataURL('image/png')");
    let png = decode_base64(
        png.as_str()
            .unwrap()
            .trim_start_matches("data:image/png;base64,"),
    );
    let seven = downloads.join("seven.png");
    std::fs::write(&seven, png).unwrap();
    let model = file.to_str().unwrap();
    let args = ["predict", "--json", "--device", "cpu", "--model", model];
    let (code, stdout, stderr) = run_native(&args, &seven);
    assert_eq!(code, 0, "{stderr}");
    let native: Value = serde_json::from_str(&stdout).unwrap();
    let native = &native[0]["top"];
    println!("drawn 7 with the CNN: page {prediction}, native {native}");
    for i in 0..3 {
        assert_eq!(
            prediction[i]["digit"], native[i]["digit"],
            "{prediction} {native}"
        );
        let (p, q) = (
            prediction[i]["probability"].as_f64().unwrap(),
            native[i]["probability"].as_f64().unwrap(),
        );
        assert!((p - q).abs() < 1e-4, "top {i}: page {p}, native {q}");
    }
}

/// `schedule=layered` trains the CNN on WebGPU: 250 steps or more, then Stop; Evaluate runs
/// the weights so far on WebGPU, and the download evaluates natively (the CPU backend) to
/// within a few test images of the page's count.
pub fn a_cnn_trains_on_webgpu_with_schedule_layered(engine: Engine) {
    let (_server, url) = serve(site());
    let downloads = scratch("downloads-cnn-webgpu");
    let b = Browser::start(engine, true, &downloads);
    b.open(&format!("{url}?recipe=cnn-small&schedule=layered&epochs=1"));
    b.wait_phase(&["ready"], Duration::from_secs(120));
    b.run("document.getElementById('start').click()");
    let step =
        "Number(document.getElementById('progress').textContent.match(/step (\\d+)/)?.[1] ?? 0)";
    let t0 = std::time::Instant::now();
    while b.eval(step).as_f64().unwrap() < 250.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(400),
            "no step 250 on WebGPU"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.run("document.getElementById('stop').click()");
    let state = b.wait_phase(&["stopped", "done"], Duration::from_secs(300));
    assert_clean(&b, &state, true);
    let (log, device) = (state["log"].to_string(), state["device"].to_string());
    assert!(!log.contains("CPU backend"), "{log}");
    assert!(device.contains("schedule: layered"), "{device}");
    b.run("document.getElementById('evaluate').click()");
    let state = b.wait_phase(&["done"], Duration::from_secs(300));
    assert_clean(&b, &state, true);
    let line = state["result"]["line"].as_str().unwrap().to_string();
    println!(
        "cnn-small on WebGPU in {}, stopped and evaluated: {line} ({device})",
        engine.name()
    );
    let correct = |l: &str| -> i64 {
        let inside = l.split('(').nth(1).unwrap().split('/').next().unwrap();
        inside.parse().unwrap()
    };
    b.run("document.getElementById('download').click()");
    let file = downloads.join("mnist_cnn-small.safetensors");
    wait_for_download(&file);
    let (code, stdout, stderr) = run_native(&["eval", "--device", "cpu", "--model"], &file);
    assert_eq!(code, 0, "{stderr}");
    let native = stdout
        .lines()
        .find(|l| l.starts_with("Model Accuracy"))
        .unwrap();
    assert!(
        (correct(native) - correct(&line)).abs() <= 3,
        "the page (WebGPU) counted {line}; native eval (CPU) of its download: {native}"
    );
}
